"""launch/fusion.launch.py under launch_pytest: the node starts, takes its parameters, publishes.

Needs a full ROS 2 install with this package built (colcon) so that ``ros2 launch`` can find the
``fusion_node`` executable and the package share directory; skipped elsewhere.
"""
import os
import threading
import time

import pytest

launch_pytest = pytest.importorskip(
    'launch_pytest', reason='launch_pytest not installed: needs a full ROS 2 install')
pytest.importorskip('launch_ros', reason='launch_ros not installed: needs a full ROS 2 install')

import launch  # noqa: E402, I100
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

NAMESPACE = '/launch_test'


def _share():
    from ament_index_python.packages import get_package_share_directory
    try:
        return get_package_share_directory('ssvif_ros')
    except Exception as exc:  # PackageNotFoundError
        pytest.skip(f'ssvif_ros is not installed in an ament prefix ({exc})')


@launch_pytest.fixture(scope='module')
def fusion_launch():
    """The package's launch file with the model-free maxluma backend in a test namespace."""
    path = os.path.join(_share(), 'launch', 'fusion.launch.py')
    return launch.LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(path),
            launch_arguments={'backend': 'maxluma',
                              'namespace': NAMESPACE.strip('/')}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


class _Probe:
    """A test node that publishes pairs and records fused images."""

    def __init__(self):
        from ssvif_ros.synthetic import synthetic_scene
        from ssvif_ros.ros_image import numpy_to_image

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node('launch_probe', context=self.ctx)
        self.got = []
        self.lock = threading.Lock()
        self.node.create_subscription(
            Image, f'{NAMESPACE}/fused/image', self._on_fused,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.pub_rgb = self.node.create_publisher(Image, f'{NAMESPACE}/rgb/image_raw', 10)
        self.pub_th = self.node.create_publisher(Image, f'{NAMESPACE}/thermal/image_raw', 10)
        rgb, th = synthetic_scene(0, 160, 120)  # small: no shared-memory profile needed here
        self.msgs = (numpy_to_image(rgb, 'rgb8'), numpy_to_image(th, 'mono8'))
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self.stop.is_set() and self.ctx.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_fused(self, msg):
        with self.lock:
            self.got.append(msg)

    def publish_until_fused(self, timeout):
        sent = set()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            now = time.time_ns()
            for m in self.msgs:
                m.header.stamp.sec, m.header.stamp.nanosec = divmod(now, 1_000_000_000)
                m.header.frame_id = 'cam'
            self.pub_rgb.publish(self.msgs[0])
            self.pub_th.publish(self.msgs[1])
            sent.add(now)
            with self.lock:
                if self.got:
                    return sent, list(self.got)
            time.sleep(0.1)
        return sent, []

    def close(self):
        self.stop.set()
        self.thread.join(5.0)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


@pytest.mark.launch(fixture=fusion_launch)
def test_node_starts_and_publishes_fused_images():
    probe = _Probe()
    try:
        end = time.monotonic() + 20.0
        names = []
        while time.monotonic() < end:
            names = probe.node.get_node_names_and_namespaces()
            if ('fusion_node', NAMESPACE) in names:
                break
            time.sleep(0.2)
        assert ('fusion_node', NAMESPACE) in names, f'fusion_node not found among {names}'
        sent, got = probe.publish_until_fused(timeout=20.0)
        assert got, 'no fused/image received from the launched node'
        msg = got[0]
        header_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        assert header_ns in sent
        assert (msg.encoding, msg.width, msg.height, msg.header.frame_id) == (
            'rgb8', 160, 120, 'cam')
    finally:
        probe.close()


@pytest.mark.launch(fixture=fusion_launch)
def test_launch_arguments_reach_the_node():
    from rcl_interfaces.srv import GetParameters

    probe = _Probe()
    try:
        client = probe.node.create_client(GetParameters,
                                          f'{NAMESPACE}/fusion_node/get_parameters')
        assert client.wait_for_service(timeout_sec=20.0)
        future = client.call_async(GetParameters.Request(names=['backend', 'slop']))
        end = time.monotonic() + 10.0
        while not future.done() and time.monotonic() < end:
            time.sleep(0.05)
        backend, slop = future.result().values
        assert backend.string_value == 'maxluma'  # launch argument overrides the params file
        assert slop.double_value == pytest.approx(0.02)  # from config/fusion.yaml
    finally:
        probe.close()
