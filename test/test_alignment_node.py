"""The node's alignment check as a real process: a misregistered rig WARNs in /diagnostics.

The node loads a params file written by ``ssvif-register`` (its homography and alignment
settings) and is fed a real MSRS pair as a misregistered rig records it (thermal frame warped
by a known homography): with that homography the pair is aligned and /diagnostics says OK with
the score; with the identity (a knocked camera) the status turns WARN with the score.
"""
import os
from pathlib import Path
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy (ROS 2) not installed')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402, I100
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ssvif_ros import registration  # noqa: E402
from ssvif_ros.dataset_paths import load_pairs, shared_data_dir  # noqa: E402
from ssvif_ros.register_cli import params_text  # noqa: E402
from ssvif_ros.ros_image import numpy_to_image  # noqa: E402

import ros_helpers  # noqa: E402, I100
from ros_helpers import process_env, ros_env, set_stamp, SpinningNode, wait_until  # noqa: E402

MSRS_VAL = shared_data_dir() / 'msrs' / 'val'
DOMAIN_ID = 200 + os.getpid() % 30
OK, WARN = 0, 1
# The rig: thermal camera 16 px right, 10 px up and rolled 1.5 degrees against the RGB one.
C = np.array([[1, 0, -320], [0, 1, -240], [0, 0, 1]], np.float64)
A = np.deg2rad(1.5)
RIG_H = np.linalg.inv(C) @ np.array([[np.cos(A), -np.sin(A), 16], [np.sin(A), np.cos(A), -10],
                                     [0, 0, 1]]) @ C


class Side(SpinningNode):
    """Publishes one pair over and over; records the node's fusion diagnostics."""

    def __init__(self):
        super().__init__('alignment_test', ros_env(DOMAIN_ID))
        self.diag = []
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 50)
        self.pub_rgb = self.node.create_publisher(Image, 'rgb/image_raw', 10)
        self.pub_th = self.node.create_publisher(Image, 'thermal/image_raw', 10)
        self.set_client = self.node.create_client(SetParameters, '/fusion_node/set_parameters')
        self.pair = None
        self._stop = threading.Event()
        self._pub_thread = threading.Thread(target=self._publish, daemon=True)
        self._pub_thread.start()

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name == '/fusion_node: fusion':
                with self.lock:
                    self.diag.append((st.level[0] if isinstance(st.level, bytes) else st.level,
                                      st.message, {kv.key: kv.value for kv in st.values}))

    def _publish(self):
        while not self._stop.is_set():
            if self.pair is not None:
                now = time.time_ns()
                self.pub_rgb.publish(set_stamp(numpy_to_image(self.pair[0], 'rgb8'), now))
                self.pub_th.publish(set_stamp(numpy_to_image(self.pair[1], 'mono8'), now))
            time.sleep(0.1)

    def wait_diag(self, predicate, timeout=20.0):
        """The first diagnostics after now satisfying ``predicate``, or the last one."""
        with self.lock:
            start = len(self.diag)
        found = []

        def check():
            with self.lock:
                found[:] = [d for d in self.diag[start:] if predicate(d)] or self.diag[-1:]
                return any(predicate(d) for d in self.diag[start:])
        wait_until(check, timeout)
        return found[0] if found else None

    def set_params(self, **values):
        req = SetParameters.Request()
        req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        return self.call(self.set_client, req).results

    def close(self):
        self._stop.set()
        self._pub_thread.join(2.0)
        super().close()


def _chosen_pair():
    """The MSRS val pair whose score separates aligned from misregistered the most."""
    best = None
    for vis, th in load_pairs(MSRS_VAL, limit=12):
        raw = cv2.warpPerspective(th, np.linalg.inv(RIG_H), (th.shape[1], th.shape[0]))
        aligned = registration.alignment_score(vis, th)
        off = registration.alignment_score(vis, raw)
        if best is None or aligned - off > best[0]:
            best = (aligned - off, vis, raw, aligned, off)
    return best


def test_misregistered_rig_warns_registered_rig_is_ok(tmp_path):
    if not MSRS_VAL.is_dir():
        pytest.skip(f'MSRS data not found at {MSRS_VAL} (set SSVIF_DATA)')
    gap, vis, raw, aligned, off = _chosen_pair()
    assert gap > 0.1, (aligned, off)
    threshold = round((aligned + off) / 2, 3)
    # The snippet ssvif-register writes, as it writes it; this test checks every pair.
    reg = registration.Registration(RIG_H / RIG_H[2, 2], 'similarity')
    params = tmp_path / 'registration.yaml'
    params.write_text(params_text(reg))
    log = tmp_path / 'node.log'
    cmd = [sys.executable, '-m', 'ssvif_ros.fusion_node', '--ros-args', '--params-file',
           str(params), '-p', 'backend:=maxluma', '-p', 'alignment_check_every:=1',
           '-p', f'alignment_warn_below:={threshold}']
    with open(log, 'w') as out:
        proc = subprocess.Popen(cmd, cwd=ros_helpers.REPO, env=process_env(DOMAIN_ID),
                                stdout=out, stderr=subprocess.STDOUT)
    side = Side()
    try:
        assert wait_until(lambda: side.pub_rgb.get_subscription_count() > 0, 20.0), \
            Path(log).read_text()
        side.pair = (vis, raw)
        d = side.wait_diag(lambda d: 'alignment_score' in d[2] and d[0] == OK
                           and float(d[2]['alignment_score']) >= threshold)
        assert d is not None and d[0] == OK, (d, Path(log).read_text())
        assert float(d[2]['alignment_score']) == pytest.approx(aligned, abs=0.05)
        # A knocked camera: the registration no longer holds.
        (res,) = side.set_params(thermal_homography=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
        assert res.successful, res.reason
        d = side.wait_diag(lambda d: d[0] == WARN)
        assert d is not None and d[0] == WARN, d
        assert 'alignment score' in d[1]
        assert float(d[2]['alignment_score']) == pytest.approx(off, abs=0.05)
        assert float(d[2]['alignment_score']) < threshold
        assert proc.poll() is None
    finally:
        side.close()
        ros_helpers.stop(proc)
