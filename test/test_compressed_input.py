"""Compressed camera input: sensor_msgs/CompressedImage from a real publisher to the node process.

With ``rgb_transport:=compressed`` and ``thermal_transport:=compressed`` the node subscribes
``<topic>/compressed`` (after remapping, as image_transport names it). A JPEG RGB frame and a
16-bit PNG thermal frame are fused exactly as the same pixels sent raw (the PNG keeps the
thermal counts); bytes that do not decode are dropped and counted, and the node goes on.
"""
import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy (ROS 2) not installed')
cv2 = pytest.importorskip('cv2')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402, I100
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from ssvif_ros import frames, node_params  # noqa: E402
from ssvif_ros.backends import create_backend  # noqa: E402
from ssvif_ros.ros_image import image_to_numpy, numpy_to_image  # noqa: E402
from ssvif_ros.synthetic import synthetic_scene  # noqa: E402

from ros_helpers import (node_log, process_env, ros_env, set_stamp,  # noqa: E402, I100
                         SpinningNode, start_node, stop, wait_until)

DOMAIN_ID = 200 + os.getpid() % 30
NS = '/cmp'


def _jpeg(rgb):
    ok, buf = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return CompressedImage(format='rgb8; jpeg compressed bgr8', data=buf.tobytes())


def _png16(th16):
    ok, buf = cv2.imencode('.png', th16)
    assert ok
    return CompressedImage(format='mono16; png compressed', data=buf.tobytes())


def _scene():
    rgb, th8 = synthetic_scene(0, 160, 120)
    th16 = (7000 + 8 * th8.astype(np.uint16)).astype(np.uint16)  # radiometric counts
    return rgb, th16


def test_decoding_keeps_16_bit_thermal_and_refuses_garbage():
    rgb, th16 = _scene()
    cfg = node_params.make_config(dict(node_params.defaults(), rgb_transport='compressed',
                                       thermal_transport='compressed'))
    assert frames.input_types(cfg) == (frames.COMPRESSED_TYPE, frames.COMPRESSED_TYPE)
    raw = frames.decode_thermal(_png16(th16), frames.COMPRESSED_TYPE)
    assert raw.dtype == np.uint16 and np.array_equal(raw, th16)
    bad = CompressedImage(format='png', data=b'\x89PNG not really' * 20)
    for stream, decode in ((frames.THERMAL, lambda m: frames.decode_thermal(
            m, frames.COMPRESSED_TYPE)), (frames.RGB, lambda m: frames.decode_visible(
                m, frames.COMPRESSED_TYPE))):
        frames.check_frame(stream, bad, frames.COMPRESSED_TYPE)  # metadata is fine
        with pytest.raises(frames.FrameError) as err:
            decode(bad)
        assert err.value.reason == f'{frames.STREAM_NAMES[stream]}.decode_failed'
    with pytest.raises(ValueError, match='rgb_transport'):
        node_params.make_config(dict(node_params.defaults(), rgb_transport='theora'))


class Side(SpinningNode):
    """Publishes compressed pairs into NS, records fused images and the node's diagnostics."""

    def __init__(self):
        super().__init__('compressed_test', ros_env(DOMAIN_ID))
        self.fused, self.diag = [], []
        self.node.create_subscription(Image, f'{NS}/fused/image', self._on_fused,
                                      QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 50)
        # remapped base topics: the node subscribes <remapped>/compressed
        self.pub_rgb = self.node.create_publisher(CompressedImage, '/cam/color/compressed', 10)
        self.pub_th = self.node.create_publisher(CompressedImage, '/cam/ir/compressed', 10)

    def _on_fused(self, msg):
        with self.lock:
            self.fused.append(msg)

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name == f'{NS}/fusion_node: fusion':
                with self.lock:
                    self.diag.append({kv.key: kv.value for kv in st.values})

    def connected(self):
        return (self.pub_rgb.get_subscription_count() > 0
                and self.pub_th.get_subscription_count() > 0
                and self.node.count_subscribers(f'{NS}/fused/image') > 0
                and self.node.count_publishers(f'{NS}/fused/image') > 0)

    def publish(self, m_rgb, m_th, ns):
        self.pub_rgb.publish(set_stamp(m_rgb, ns))
        self.pub_th.publish(set_stamp(m_th, ns))


def test_jpeg_rgb_and_16_bit_png_thermal_are_fused_as_the_same_pixels_raw(tmp_path):
    rgb, th16 = _scene()
    m_rgb, m_th = _jpeg(rgb), _png16(th16)
    # What the node must publish: the JPEG's decoded pixels and the PNG's exact 16-bit counts,
    # sent as raw Images through the same decode/register/backend path.
    cfg = node_params.make_config(node_params.defaults())
    decoded_rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(m_rgb.data, np.uint8),
                                            cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    vis, ir = frames.check_and_prepare(numpy_to_image(decoded_rgb, 'rgb8'),
                                       numpy_to_image(th16, 'mono16'), cfg)
    expected8, _ = create_backend('maxluma', None).infer(vis, ir)  # H x W x 3 uint8

    proc = start_node(tmp_path / 'node.log', ['backend:=maxluma', 'rgb_transport:=compressed',
                                              'thermal_transport:=compressed'],
                      process_env(DOMAIN_ID), namespace=NS,
                      ros_args=('-r', 'rgb/image_raw:=/cam/color',
                                '-r', 'thermal/image_raw:=/cam/ir'))
    side = Side()
    try:
        assert wait_until(side.connected, 30.0), node_log(proc)
        time.sleep(0.5)
        sent = []
        end = time.monotonic() + 20.0
        while time.monotonic() < end and not side.fused:
            t = time.time_ns()
            side.publish(m_rgb, m_th, t)
            sent.append(t)
            time.sleep(0.1)
        with side.lock:
            got = list(side.fused)
        assert got, node_log(proc)
        msg = got[0]
        assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec in sent
        out = image_to_numpy(msg)  # H x W x 3 uint8
        assert out.shape == expected8.shape
        assert np.abs(out.astype(int) - expected8.astype(int)).max() <= 1

        # Bytes that do not decode: dropped by reason, counted; the node keeps fusing.
        junk = CompressedImage(format='jpeg', data=b'\xff\xd8 not a jpeg' * 50)
        for i in range(5):
            side.publish(junk, m_th, time.time_ns())
            time.sleep(0.05)

        def counted():
            with side.lock:
                return side.diag and int(side.diag[-1].get('drops.rgb.decode_failed', 0)) >= 1
        assert wait_until(counted, 15.0), (side.diag[-1:], node_log(proc))
        with side.lock:
            side.fused.clear()
        end = time.monotonic() + 15.0
        while time.monotonic() < end and not side.fused:
            side.publish(m_rgb, m_th, time.time_ns())
            time.sleep(0.1)
        assert side.fused, 'the node stopped fusing after undecodable input'
        assert proc.poll() is None and 'Traceback' not in node_log(proc), node_log(proc)
        assert '/cam/color/compressed' in node_log(proc)
    finally:
        side.close()
        assert stop(proc) == 0, node_log(proc)
