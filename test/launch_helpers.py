"""What the launch tests share: the installed launch file, a probe node, the node's process.

launch, launch_ros and launch_pytest need a ROS 2 install with this package built (colcon), so
that the launch file, its share directory and the ``fusion_node`` executable are found; the
tests importing this module skip elsewhere.
"""
import os
from pathlib import Path
import time

import pytest

from ros_helpers import set_stamp, SpinningNode, wait_until

ACTIVE_TIMEOUT_S = 60.0  # a loaded CI machine: start, configure and activate the node


def launch_file() -> str:
    """The installed ``fusion.launch.py``; skips the test when ssvif_ros is not installed."""
    from ament_index_python.packages import get_package_share_directory
    try:
        share = get_package_share_directory('ssvif_ros')
    except Exception as exc:  # PackageNotFoundError
        pytest.skip(f'ssvif_ros is not installed in an ament prefix ({exc})')
    return os.path.join(share, 'launch', 'fusion.launch.py')


def node_pids(namespace: str):
    """Pids of the running fusion_node processes started in ``namespace`` (from /proc)."""
    pids = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / 'cmdline').read_bytes().split(b'\0')
        except OSError:
            continue
        args = [a.decode(errors='replace') for a in argv]
        if (any(a.endswith('fusion_node') for a in args[:3])
                and f'__ns:={namespace}' in args):
            pids.append(int(entry.name))
    return pids


class Probe(SpinningNode):
    """A test node that publishes pairs into ``namespace`` and records fused images."""

    def __init__(self, namespace):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from ssvif_ros.ros_image import numpy_to_image
        from ssvif_ros.synthetic import synthetic_scene

        super().__init__('launch_probe')
        self.namespace = namespace
        self.got = []
        self.node.create_subscription(
            Image, f'{namespace}/fused/image', self._on_fused,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.pub_rgb = self.node.create_publisher(Image, f'{namespace}/rgb/image_raw', 10)
        self.pub_th = self.node.create_publisher(Image, f'{namespace}/thermal/image_raw', 10)
        rgb, th = synthetic_scene(0, 160, 120)  # small: no shared-memory profile needed here
        self.msgs = (numpy_to_image(rgb, 'rgb8'), numpy_to_image(th, 'mono8'))

    def _on_fused(self, msg):
        with self.lock:
            self.got.append(msg)

    def publish_until_fused(self, timeout):
        """Publish stamped pairs until a fused image arrives; return (stamps sent, received)."""
        with self.lock:
            self.got = []
        sent = set()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            now = time.time_ns()
            for m in self.msgs:
                set_stamp(m, now)
            self.pub_rgb.publish(self.msgs[0])
            self.pub_th.publish(self.msgs[1])
            sent.add(now)
            with self.lock:
                if self.got:
                    return sent, list(self.got)
            time.sleep(0.1)
        return sent, []

    def lifecycle_state(self, timeout=20.0) -> str:
        """The node's current lifecycle state label (one get_state call)."""
        from lifecycle_msgs.srv import GetState
        client = self.node.create_client(GetState, f'{self.namespace}/fusion_node/get_state')
        try:
            return self.call(client, GetState.Request(), timeout,
                             resend_every=2.0).current_state.label
        finally:
            self.node.destroy_client(client)

    def wait_for_state(self, label: str, timeout: float = ACTIVE_TIMEOUT_S) -> str:
        """Poll get_state until it says ``label`` or ``timeout`` s passed; return the last."""
        state = ['']

        def reached():
            try:
                state[0] = self.lifecycle_state(timeout=5.0)
            except AssertionError as exc:  # no service or no answer yet
                state[0] = str(exc)
            return state[0] == label
        wait_until(reached, timeout, step=0.5)
        return state[0]

    def parameters(self, *names):
        """Values (rcl_interfaces ParameterValue) of the node's parameters ``names``."""
        from rcl_interfaces.srv import GetParameters
        client = self.node.create_client(GetParameters,
                                         f'{self.namespace}/fusion_node/get_parameters')
        return self.call(client, GetParameters.Request(names=list(names)), 20.0,
                         resend_every=2.0).values
