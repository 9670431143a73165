"""The fusion node as a real ROS 2 process, talking to this test process over DDS.

The node runs as ``python -m ssvif_ros.fusion_node --ros-args -p backend:=maxluma ...`` with the
package's Fast DDS shared-memory profile, on a ROS domain private to this test session; this
process publishes image pairs, subscribes to the outputs and /diagnostics, and calls the node's
parameter service.
"""
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy (ROS 2) not installed')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402, I100
from rcl_interfaces.srv import (GetParameters, SetParameters,  # noqa: E402
                                SetParametersAtomically)
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from ssvif_ros import imaging  # noqa: E402
from ssvif_ros.dataset_paths import load_pairs, shared_data_dir  # noqa: E402
from ssvif_ros.ros_image import image_to_numpy, numpy_to_image  # noqa: E402
from ssvif_ros.synthetic import synthetic_scene  # noqa: E402

import ros_helpers  # noqa: E402, I100
from ros_helpers import (node_log, process_env, ros_env, set_stamp, SpinningNode,  # noqa: E402
                         stamp_ns, wait_until)

REPO = Path(__file__).resolve().parents[1]
MSRS_VAL = shared_data_dir() / 'msrs' / 'val'
DOMAIN_ID = 20 + os.getpid() % 80
OUTPUTS = ('fused/image', 'fused/segmentation', 'fused/segmentation_color', 'fused/camera_info')


def start_node(log_path, *params, namespace=None):
    """Start the node process; ``params`` are 'name:=value' strings."""
    return ros_helpers.start_node(log_path, params, process_env(DOMAIN_ID), namespace)


class RosSide(SpinningNode):
    """This process's ROS node: publishers, output recorders and parameter clients."""

    def __init__(self):
        super().__init__('fusion_node_test', ros_env(DOMAIN_ID))
        self.received = {t: [] for t in OUTPUTS}
        self.diag = []
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for t in OUTPUTS:
            kind = CameraInfo if t.endswith('camera_info') else Image
            self.node.create_subscription(kind, t, self._cb(t), rel)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 50)
        self.pub_rgb = self.node.create_publisher(Image, 'rgb/image_raw', 10)
        self.pub_th = self.node.create_publisher(Image, 'thermal/image_raw', 10)
        self.pub_info = self.node.create_publisher(CameraInfo, 'rgb/camera_info', 10)
        self.set_client = self.node.create_client(SetParameters, '/fusion_node/set_parameters')
        self.get_client = self.node.create_client(GetParameters, '/fusion_node/get_parameters')
        self.atomic_client = self.node.create_client(
            SetParametersAtomically, '/fusion_node/set_parameters_atomically')

    def _cb(self, topic):
        def cb(msg):
            with self.lock:
                self.received[topic].append(msg)
        return cb

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name == '/fusion_node: fusion':
                with self.lock:
                    self.diag.append({kv.key: kv.value for kv in st.values})

    def clear(self):
        with self.lock:
            for v in self.received.values():
                v.clear()

    def outputs(self, topic):
        with self.lock:
            return list(self.received[topic])

    def last_diag(self):
        with self.lock:
            return dict(self.diag[-1]) if self.diag else {}

    def wait_diag(self, predicate, timeout=8.0):
        """Wait for a diagnostics message satisfying ``predicate``; return it (or the last)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            d = self.last_diag()
            if d and predicate(d):
                return d
            time.sleep(0.1)
        return self.last_diag()

    def wait_connected(self, timeout=15.0):
        if wait_until(lambda: self.pub_rgb.get_subscription_count()
                      and self.pub_th.get_subscription_count()
                      and all(self.node.count_publishers(f'/{t}') for t in OUTPUTS), timeout):
            time.sleep(0.5)  # let the node see this process's subscriptions too
            return True
        return False

    def set_params(self, **values):
        req = SetParameters.Request()
        req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        return self.call(self.set_client, req).results

    def set_params_atomically(self, **values):
        req = SetParametersAtomically.Request()
        req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        return self.call(self.atomic_client, req).result

    def get_param(self, name):
        req = GetParameters.Request(names=[name])
        return Parameter.from_parameter_msg(
            _named(name, self.call(self.get_client, req).values[0])).value


def _named(name, value_msg):
    from rcl_interfaces.msg import Parameter as ParameterMsg
    return ParameterMsg(name=name, value=value_msg)


@pytest.fixture(scope='module')
def ros():
    side = RosSide()
    yield side
    side.close()


@pytest.fixture(scope='module')
def fusion(ros, tmp_path_factory):
    """One node for most tests: maxluma, reject size mismatches, camera_info passthrough."""
    log = tmp_path_factory.mktemp('node') / 'fusion_node.log'
    proc = start_node(log, 'backend:=maxluma', 'size_mismatch:=reject', 'slop:=0.005',
                      'publish_camera_info:=true', 'queue_size:=10')
    if not ros.wait_connected():
        proc.kill()
        pytest.fail(f'fusion node did not come up:\n{node_log(proc)}')
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def publish_pairs(ros, pairs, rgb_encoding='rgb8', thermal_encoding='mono8', rate=30.0,
                  rgb_step=None, thermal_step=None, thermal_bigendian=False):
    """Publish (rgb, thermal) pairs at ``rate``; return {RGB stamp: pair}.

    The thermal stamp is 2 ms later and its frame_id differs, so that outputs carrying the RGB
    header can be told apart (the node under test has slop 5 ms).
    """
    sent = {}
    period = 1.0 / rate
    t0 = time.monotonic()
    for i, (rgb, th) in enumerate(pairs):
        delay = t0 + i * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.time_ns()
        m_rgb = set_stamp(numpy_to_image(rgb, rgb_encoding, step=rgb_step), now)
        m_th = set_stamp(numpy_to_image(th, thermal_encoding, step=thermal_step,
                                        bigendian=thermal_bigendian), now + 2_000_000,
                         'thermal_cam')
        ros.pub_rgb.publish(m_rgb)
        ros.pub_th.publish(m_th)
        sent[now] = (rgb, th)
    return sent


def wait_outputs(ros, n, topic='fused/image', timeout=8.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and len(ros.outputs(topic)) < n:
        time.sleep(0.05)
    return ros.outputs(topic)


def expected_fused(vis, th, norm=None):
    v, t = imaging.preprocess_pair(vis, th, norm)
    return imaging.to_uint8(imaging.max_luma_fusion(v, t))


def changed_fraction(a, b):
    return float((np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 2).mean())


def check_outputs(ros, sent, as_rgb):
    """Common assertions on the three image outputs for the pairs in ``sent``."""
    fused = wait_outputs(ros, max(5, len(sent) // 4))
    time.sleep(0.5)  # let the other two outputs of the last pair arrive
    fused = ros.outputs('fused/image')
    seg = {stamp_ns(m.header): m for m in ros.outputs('fused/segmentation')}
    color = {stamp_ns(m.header): m for m in ros.outputs('fused/segmentation_color')}
    assert len(fused) >= max(5, len(sent) // 4), f'only {len(fused)} of {len(sent)} fused'
    for msg in fused:
        st = stamp_ns(msg.header)
        assert st in sent, 'output stamp is not an input stamp'
        assert msg.header.frame_id == 'cam'
        rgb, th = sent[st]
        vis = as_rgb(rgb)
        assert (msg.encoding, msg.height, msg.width) == ('rgb8',) + vis.shape[:2]
        out = image_to_numpy(msg)
        th8 = th if th.dtype == np.uint8 else imaging.to_uint8(imaging.normalize_thermal(th))
        # maxluma is a real fusion: the result is neither input (>= 1 % of the pixels differ
        # by more than 2 levels from each; MSRS val frames give 1.6 % to 99 %) ...
        assert changed_fraction(out, vis) >= 0.01
        assert changed_fraction(out, th8[:, :, None]) >= 0.01
        # ... and it is exactly the rule applied to the decoded, normalized inputs.
        exp = expected_fused(vis, th)
        assert np.abs(out.astype(int) - exp.astype(int)).max() <= 1
        s = seg[st]
        assert (s.encoding, s.height, s.width) == ('mono8',) + vis.shape[:2]
        assert s.header.frame_id == 'cam'
        assert int(image_to_numpy(s).max()) < 1  # maxluma has one class
        c = color[st]
        assert (c.encoding, c.height, c.width) == ('rgb8',) + vis.shape[:2]
    return fused


def _cfg(**overrides):
    from ssvif_ros.node_params import defaults, make_config
    values = defaults()
    values.update(backend='maxluma', **overrides)
    return make_config(values)


def test_prepare_pair_warps_thermal_by_homography():
    rgb = np.zeros((60, 80, 3), np.uint8)
    th = np.zeros((60, 80), np.uint8)
    th[10:20, 10:20] = 255  # a hot square
    shift = [1.0, 0.0, 5.0, 0.0, 1.0, 3.0, 0.0, 0.0, 1.0]  # thermal (x, y) -> RGB (x+5, y+3)
    from ssvif_ros.frames import check_and_prepare
    vis, ir = check_and_prepare(numpy_to_image(rgb, 'rgb8'), numpy_to_image(th, 'mono8'),
                                _cfg(thermal_homography=shift, thermal_norm='scale'))
    assert vis.shape == (60, 80, 3) and ir.shape == (60, 80) and ir.dtype == np.float32
    np.testing.assert_allclose(ir[13:23, 15:25], 1.0, atol=1e-6)
    assert ir[10:13, 10:15].max() == 0.0 and ir[23:, :].max() == 0.0


def test_prepare_pair_resizes_smaller_thermal_and_output_size():
    from ssvif_ros.frames import check_and_prepare as prepare_pair, FrameError
    rgb, th = synthetic_scene(0, 160, 120)
    m_rgb, m_small = numpy_to_image(rgb, 'rgb8'), numpy_to_image(th[::2, ::2].copy(), 'mono8')
    vis, ir = prepare_pair(m_rgb, m_small, _cfg())
    assert vis.shape == (120, 160, 3) and ir.shape == (120, 160)
    with pytest.raises(FrameError, match='differ in size') as info:
        prepare_pair(m_rgb, m_small, _cfg(size_mismatch='reject'))
    assert info.value.reason == 'size_mismatch'
    vis, ir = prepare_pair(m_rgb, numpy_to_image(th, 'mono8'), _cfg(output_size='80x60'))
    assert vis.shape == (60, 80, 3) and ir.shape == (60, 80)


@pytest.mark.parametrize('overrides,words', [
    ({'slop': -0.1}, 'slop'), ({'backend': 'cuda'}, 'backend'),
    ({'qos_reliability': 'sometimes'}, 'qos_reliability'),
    ({'thermal_norm': 'fixed', 'thermal_lo': 2.0, 'thermal_hi': 2.0}, 'lo < hi'),
    ({'thermal_p_lo': 60.0, 'thermal_p_hi': 40.0}, 'p_lo < p_hi'),
    ({'thermal_homography': [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, float('nan')]},
     'thermal_homography'),
    ({'output_size': '0x10'}, 'output_size'), ({'size_mismatch': 'crop'}, 'size_mismatch'),
])
def test_make_config_names_the_bad_parameter(overrides, words):
    from ssvif_ros.node_params import defaults, make_config
    values = defaults()
    values.update(overrides)
    with pytest.raises(ValueError, match=words):
        make_config(values)


def test_camera_info_scaling():
    from ssvif_ros.ros_image import scaled_camera_info
    info = CameraInfo(width=640, height=480, distortion_model='plumb_bob')
    info.k = np.array([500.0, 0, 320, 0, 500, 240, 0, 0, 1])
    info.p = np.array([500.0, 0, 320, 0, 0, 500, 240, 0, 0, 0, 1, 0])
    out = scaled_camera_info(info, info.header, 320, 240)
    np.testing.assert_allclose(out.k, [250, 0, 160, 0, 250, 120, 0, 0, 1])
    np.testing.assert_allclose(out.p[:8], [250, 0, 160, 0, 0, 250, 120, 0])
    assert (out.width, out.height, out.distortion_model) == (320, 240, 'plumb_bob')


def test_mailbox_keeps_only_the_newest():
    from ssvif_ros.node_worker import Mailbox
    box = Mailbox()
    assert box.put(1) is False
    assert box.put(2) is True and box.put(3) is True  # 1 and 2 replaced, never delivered
    assert box.get(timeout=0.1) == 3
    assert box.get(timeout=0.05) is None
    box.close()
    assert box.get() is None


def test_node_module_does_not_import_torch():
    code = ('import sys, ssvif_ros.fusion_node, ssvif_ros.tools.pair_publisher; '
            'sys.exit(1 if "torch" in sys.modules else 0)')
    res = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=process_env(DOMAIN_ID))
    assert res.returncode == 0


def test_fuses_synthetic_pairs_bgr_padded_bigendian_mono16(ros, fusion):
    """Synthetic scene, bgr8 with padded rows and big-endian 16-bit thermal with padding."""
    frames = [synthetic_scene(i, 320, 240) for i in range(30)]
    pairs = [(np.ascontiguousarray(rgb[:, :, ::-1]), (7000 + 8 * th.astype(np.uint16)))
             for rgb, th in frames]
    ros.clear()
    sent = publish_pairs(ros, pairs, 'bgr8', 'mono16', rgb_step=320 * 3 + 64,
                         thermal_step=320 * 2 + 6, thermal_bigendian=True)
    check_outputs(ros, sent, lambda bgr: bgr[:, :, ::-1])
    assert fusion.poll() is None


def test_fuses_msrs_pairs_at_30hz(ros, fusion):
    if not MSRS_VAL.is_dir():
        pytest.skip(f'MSRS data not found at {MSRS_VAL} (set SSVIF_DATA)')
    pairs = load_pairs(MSRS_VAL, limit=25)
    ros.clear()
    sent = publish_pairs(ros, pairs + pairs[:5])
    check_outputs(ros, sent, lambda rgb: rgb)


def test_diagnostics_report_rates_latency_and_backend(ros, fusion):
    publish_pairs(ros, [synthetic_scene(i, 160, 120) for i in range(10)])
    d = ros.wait_diag(lambda d: int(d.get('published', 0)) > 0)
    for key in ('backend', 'model', 'rgb_rate_hz', 'thermal_rate_hz', 'paired_rate_hz',
                'published_rate_hz', 'inference_ms_p50', 'inference_ms_p99', 'drops_total'):
        assert key in d, f'{key} missing from diagnostics: {sorted(d)}'
    assert d['backend'] == 'maxluma'
    assert int(d['published']) > 0 and int(d['pairs']) >= int(d['published'])
    assert float(d['inference_ms_p50']) > 0.0
    assert float(d['inference_ms_p99']) >= float(d['inference_ms_p50'])
    stages = {k: float(d[f'{k}_ms_p50']) for k in ('queue', 'decode', 'publish', 'processing')}
    assert stages['queue'] >= 0.0 and stages['decode'] > 0.0 and stages['publish'] > 0.0
    assert float(d['queue_ms_p99']) >= stages['queue']
    # processing is decode + inference + publish of the same pair; the mailbox wait is not in it
    assert stages['processing'] >= stages['decode'] and stages['processing'] >= stages['publish']


def test_camera_info_passthrough(ros, fusion):
    info = CameraInfo(width=320, height=240)
    info.k = np.array([300.0, 0, 160, 0, 300, 120, 0, 0, 1])
    info.p = np.array([300.0, 0, 160, 0, 0, 300, 120, 0, 0, 0, 1, 0])
    ros.pub_info.publish(info)
    time.sleep(0.3)
    ros.clear()
    sent = publish_pairs(ros, [synthetic_scene(i, 320, 240) for i in range(5)])
    end = time.monotonic() + 5
    while time.monotonic() < end and not ros.outputs('fused/camera_info'):
        time.sleep(0.05)
    infos = ros.outputs('fused/camera_info')
    assert infos, 'no fused/camera_info'
    assert stamp_ns(infos[0].header) in sent and infos[0].header.frame_id == 'cam'
    np.testing.assert_allclose(infos[0].k, info.k)


def _drops(d, reason):
    return int(d.get(f'drops.{reason}', 0))


def test_bad_frames_are_counted_and_node_survives(ros, fusion):
    before = ros.wait_diag(lambda d: True)
    rgb, th = synthetic_scene(0, 160, 120)

    def now():
        return time.time_ns()

    # Metadata errors, caught on arrival.
    m = set_stamp(numpy_to_image(rgb, 'rgb8'), now())
    m.encoding = 'yuv422'
    ros.pub_rgb.publish(m)
    m = set_stamp(numpy_to_image(rgb, 'rgb8'), now())  # a colour image on the thermal topic
    ros.pub_th.publish(m)
    m = set_stamp(Image(height=0, width=0, encoding='mono8', step=0), now())
    ros.pub_th.publish(m)
    m = set_stamp(numpy_to_image(th, 'mono8'), now())
    m.step = 100  # smaller than the 160-byte row
    ros.pub_th.publish(m)
    time.sleep(0.2)
    # Pixel errors, caught when the pair is processed.
    t = now()
    nan = (10.0 + th / 8.0).astype(np.float32)
    nan[5:9, 5:9] = np.nan
    ros.pub_rgb.publish(set_stamp(numpy_to_image(rgb, 'rgb8'), t))
    ros.pub_th.publish(set_stamp(numpy_to_image(nan, '32FC1'), t))
    time.sleep(0.3)
    t = now()
    small = th[::2, ::2].copy()
    ros.pub_rgb.publish(set_stamp(numpy_to_image(rgb, 'rgb8'), t))
    ros.pub_th.publish(set_stamp(numpy_to_image(small, 'mono8'), t))
    time.sleep(0.3)

    expected = {'rgb.unsupported_encoding': 1, 'thermal.unsupported_encoding': 1,
                'thermal.zero_size': 1, 'thermal.step_too_small': 1,
                'thermal.non_finite': 1, 'size_mismatch': 1}

    def all_counted(d):
        return all(_drops(d, r) - _drops(before, r) >= n for r, n in expected.items())
    after = ros.wait_diag(all_counted)
    for reason, n in expected.items():
        assert _drops(after, reason) - _drops(before, reason) == n, (reason, after)
    assert int(after['drops_total']) >= int(before.get('drops_total', 0)) + 6
    assert 'dropped (' in node_log(fusion)  # the throttled warning
    # Still alive and fusing.
    assert fusion.poll() is None
    ros.clear()
    sent = publish_pairs(ros, [synthetic_scene(i, 160, 120) for i in range(5)])
    assert any(stamp_ns(m.header) in sent for m in wait_outputs(ros, 1))


def _rss_anon_mib(pid):
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('RssAnon:'):
            return int(line.split()[1]) / 1024.0
    pytest.skip('this kernel reports no RssAnon in /proc/<pid>/status')


def test_memory_stays_flat_under_a_flood_of_bad_frames(ros, fusion):
    rgb, th = synthetic_scene(0, 320, 240)
    wrong_encoding = numpy_to_image(rgb, 'rgb8')
    wrong_encoding.encoding = 'yuv422'  # dropped on arrival
    good_rgb = numpy_to_image(rgb, 'rgb8')
    nan = (10.0 + th / 8.0).astype(np.float32)
    nan[5:9, 5:9] = np.nan
    nan_thermal = numpy_to_image(nan, '32FC1')  # pairs, dropped by the worker
    small_thermal = numpy_to_image(th[::2, ::2].copy(), 'mono8')  # pairs, size_mismatch: reject

    def flood(n):
        for _ in range(n):
            ros.pub_rgb.publish(set_stamp(wrong_encoding, time.time_ns()))
            for thermal in (nan_thermal, small_thermal):
                t = time.time_ns()
                ros.pub_rgb.publish(set_stamp(good_rgb, t))
                ros.pub_th.publish(set_stamp(thermal, t))
            time.sleep(0.004)
        time.sleep(1.0)  # let the node drain its queues

    def bad_count(d):
        return sum(_drops(d, r) for r in ('rgb.unsupported_encoding', 'thermal.non_finite',
                                          'size_mismatch', 'inference_busy'))

    flood(150)  # warm-up: buffers of these sizes, DDS history
    before = ros.wait_diag(lambda d: True)
    rss0 = _rss_anon_mib(fusion.pid)
    flood(300)
    flood(300)
    rss1 = _rss_anon_mib(fusion.pid)
    after = ros.wait_diag(lambda d: bad_count(d) >= bad_count(before) + 900)
    # 600 x (0.9 MB of bad or unusable input) went through; each frame kept would be +0.3 MB.
    assert bad_count(after) - bad_count(before) >= 900, after
    assert rss1 - rss0 < 8.0, (rss0, rss1)
    assert fusion.poll() is None
    ros.clear()
    sent = publish_pairs(ros, [synthetic_scene(i, 160, 120) for i in range(5)])
    assert any(stamp_ns(m.header) in sent for m in wait_outputs(ros, 1))


def test_parameter_changes_valid_and_invalid(ros, fusion):
    rejected = {
        'slop': -1.0,                    # outside the declared range
        'thermal_norm': 'banana',        # not a method
        'thermal_homography': [1.0] * 8,  # 8 numbers
        'output_size': 'big',
        'overlay_alpha': 2.0,
        'backend': 'torch',              # read-only after start
        'queue_size': 'ten',             # wrong type
    }
    for name, value in rejected.items():
        (res,) = ros.set_params(**{name: value})
        assert not res.successful, f'{name}={value!r} was accepted'
        assert res.reason, f'{name}: rejection without a reason'
    (res,) = ros.set_params(thermal_homography=[0.0] * 9)
    assert not res.successful and 'singular' in res.reason
    res = ros.set_params_atomically(thermal_norm='fixed', thermal_lo=5.0, thermal_hi=1.0)
    assert not res.successful and 'lo < hi' in res.reason
    assert ros.get_param('slop') == pytest.approx(0.005)
    assert ros.get_param('thermal_norm') == 'auto'
    # A valid change applies at once: the size-mismatched pair is now resized and fused.
    res = ros.set_params_atomically(size_mismatch='resize', overlay_alpha=0.5)
    assert res.successful, res.reason
    assert ros.get_param('size_mismatch') == 'resize'
    rgb, th = synthetic_scene(3, 160, 120)
    ros.clear()
    t = time.time_ns()
    ros.pub_rgb.publish(set_stamp(numpy_to_image(rgb, 'rgb8'), t))
    ros.pub_th.publish(set_stamp(numpy_to_image(th[::2, ::2].copy(), 'mono8'), t))
    out = [m for m in wait_outputs(ros, 1) if stamp_ns(m.header) == t]
    assert out and (out[0].width, out[0].height) == (160, 120)
    assert fusion.poll() is None
    res = ros.set_params_atomically(size_mismatch='reject', overlay_alpha=0.0)
    assert res.successful


def test_sigint_stops_node_within_2s_while_busy(ros, tmp_path):
    proc = start_node(tmp_path / 'node.log', 'backend:=maxluma', namespace='/sigint')
    pub_rgb = ros.node.create_publisher(Image, '/sigint/rgb/image_raw', 10)
    pub_th = ros.node.create_publisher(Image, '/sigint/thermal/image_raw', 10)
    try:
        end = time.monotonic() + 15
        while time.monotonic() < end and not (pub_rgb.get_subscription_count()
                                              and pub_th.get_subscription_count()):
            time.sleep(0.05)
        assert pub_rgb.get_subscription_count(), node_log(proc)
        frames = [synthetic_scene(i, 320, 240) for i in range(3)]
        msgs = [(numpy_to_image(r, 'rgb8'), numpy_to_image(t, 'mono8')) for r, t in frames]
        for i in range(20):  # keep it busy while the signal arrives
            t = time.time_ns()
            r, th = msgs[i % 3]
            pub_rgb.publish(set_stamp(r, t))
            pub_th.publish(set_stamp(th, t))
            time.sleep(1 / 30)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f'node still running 2 s after SIGINT:\n{node_log(proc)}')
        assert code == 0, node_log(proc)
        assert 'Traceback' not in node_log(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        ros.node.destroy_publisher(pub_rgb)
        ros.node.destroy_publisher(pub_th)


def _start_fails(tmp_path, *params):
    proc = start_node(tmp_path / 'fail.log', *params, namespace='/failing')
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f'node with {params} did not exit:\n{node_log(proc)}')
    text = node_log(proc)
    assert code != 0, text
    assert 'Traceback' not in text, text
    assert text.count('cannot start') == 1, text
    return text


def test_missing_model_exits_with_clear_error(tmp_path):
    missing = tmp_path / 'no_such_model.onnx'
    text = _start_fails(tmp_path, 'backend:=onnxruntime', f'model:={missing}')
    assert 'model not found' in text and str(missing) in text


def test_corrupt_model_exits_with_clear_error(tmp_path):
    bad = tmp_path / 'corrupt.onnx'
    bad.write_bytes(b'this is not an onnx model' * 10)
    text = _start_fails(tmp_path, 'backend:=onnxruntime', f'model:={bad}')
    assert 'onnxruntime' in text


def test_embedded_default_model_fuses_and_segments(ros, tmp_path):
    """No model parameter: the node runs the embedded default model with ONNX Runtime."""
    from ssvif_ros.models import default_model_dir
    card = json.loads((Path(default_model_dir()) / 'model.json').read_text())
    proc = start_node(tmp_path / 'default.log', 'backend:=onnxruntime', 'slop:=0.005',
                      namespace='/dflt')
    got = {'image': {}, 'segmentation': {}}
    lock = threading.Lock()

    def cb(key):
        def f(msg):
            with lock:
                got[key][stamp_ns(msg.header)] = msg
        return f
    rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    subs = [ros.node.create_subscription(Image, f'/dflt/fused/{k}', cb(k), rel) for k in got]
    pub_rgb = ros.node.create_publisher(Image, '/dflt/rgb/image_raw', 10)
    pub_th = ros.node.create_publisher(Image, '/dflt/thermal/image_raw', 10)
    frames = ([(rgb, th) for rgb, th in load_pairs(MSRS_VAL, limit=10)] if MSRS_VAL.is_dir()
              else [synthetic_scene(i, 640, 480) for i in range(10)])
    sent = {}
    try:
        end = time.monotonic() + 60
        i = 0
        while time.monotonic() < end:
            with lock:
                done = len(set(got['image']) & set(got['segmentation'])) >= 5
            if done or proc.poll() is not None:
                break
            rgb, th = frames[i % len(frames)]
            now = time.time_ns()
            pub_rgb.publish(set_stamp(numpy_to_image(rgb, 'rgb8'), now))
            pub_th.publish(set_stamp(numpy_to_image(th, 'mono8'), now, 'thermal_cam'))
            sent[now] = (rgb, th)
            i += 1
            time.sleep(1 / 15)
        assert proc.poll() is None, node_log(proc)
        with lock:
            both = sorted(set(got['image']) & set(got['segmentation']))
            assert len(both) >= 5, f'{len(both)} outputs:\n{node_log(proc)}'
            for st in both:
                assert st in sent
                rgb, th = sent[st]
                fused = image_to_numpy(got['image'][st])
                ids = image_to_numpy(got['segmentation'][st])
                assert fused.shape == rgb.shape and ids.shape == rgb.shape[:2]
                assert int(ids.max()) < card['num_classes']
                assert changed_fraction(fused, rgb) >= 0.01
                assert changed_fraction(fused, th[:, :, None]) >= 0.01
    finally:
        for s in subs:
            ros.node.destroy_subscription(s)
        ros.node.destroy_publisher(pub_rgb)
        ros.node.destroy_publisher(pub_th)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.parametrize('param,words', [
    ('slop:=-0.5', 'slop'),
    ('backend:=banana', 'banana'),
    ('thermal_norm:=fixed', 'lo < hi'),  # with thermal_lo 30 > thermal_hi 20 (added below)
    ('output_size:=12by7', 'output_size'),
])
def test_invalid_startup_parameters_exit(tmp_path, param, words):
    params = [param, 'backend:=maxluma'] if not param.startswith('backend') else [param]
    if param == 'thermal_norm:=fixed':
        params += ['thermal_lo:=30.0', 'thermal_hi:=20.0']
    text = _start_fails(tmp_path, *params)
    assert words in text


def test_pair_publisher_tool_stamps_and_encodings(ros, tmp_path):
    """The publisher process: equal stamps plus the requested offset, requested encodings."""
    from ssvif_ros.synthetic import write_synthetic_folder
    folder = write_synthetic_folder(tmp_path / 'pairs', 3, 64, 48)
    got = {'rgb': [], 'thermal': []}
    lock = threading.Lock()

    def cb(key):
        def f(msg):
            with lock:
                got[key].append(msg)
        return f

    best_effort = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
    subs = [ros.node.create_subscription(Image, f'/tool/{k}/image_raw', cb(k), best_effort)
            for k in got]
    cmd = [sys.executable, '-m', 'ssvif_ros.tools.pair_publisher', '--data', str(folder),
           '--count', '8', '--rate', '30', '--stamp-offset', '0.004',
           '--rgb-encoding', 'bgr8', '--thermal-encoding', '32FC1',
           '--ros-args', '-r', '__ns:=/tool']
    try:
        res = subprocess.run(cmd, cwd=REPO, env=process_env(DOMAIN_ID), capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        assert 'published 8 pairs' in res.stdout
        end = time.monotonic() + 3
        while time.monotonic() < end and min(len(v) for v in got.values()) < 8:
            time.sleep(0.05)
        with lock:
            rgb, th = list(got['rgb']), list(got['thermal'])
        assert len(rgb) >= 6 and len(th) >= 6  # best effort: allow a lost frame or two
        by_stamp = {stamp_ns(m.header): m for m in th}
        for m in rgb:
            t = by_stamp.get(stamp_ns(m.header) + 4_000_000)
            assert t is not None, 'thermal stamp is not rgb stamp + 4 ms'
            assert (m.encoding, t.encoding, m.width, m.height) == ('bgr8', '32FC1', 64, 48)
            celsius = image_to_numpy(t)
            assert 10.0 <= celsius.min() and celsius.max() <= 40.0
        stamps = sorted(stamp_ns(m.header) for m in rgb)
        assert all(b - a > 10_000_000 for a, b in zip(stamps, stamps[1:]))  # ~33 ms apart
    finally:
        for s in subs:
            ros.node.destroy_subscription(s)


@pytest.mark.parametrize('args,words', [
    ([], ['--data', '--synthetic', 'SSVIF_DATA']),  # nothing guessed from the install tree
    (['--data', '/nonexistent/pairs'], ['/nonexistent/pairs', 'does not exist']),
])
def test_pair_publisher_without_usable_data_is_one_line_exit_2(tmp_path, args, words):
    env = process_env(DOMAIN_ID)
    env.pop('SSVIF_DATA', None)
    res = subprocess.run([sys.executable, '-m', 'ssvif_ros.tools.pair_publisher', *args],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    err = res.stderr.strip()
    assert res.returncode == 2, res.stdout + res.stderr
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert 'subfolder' not in err
