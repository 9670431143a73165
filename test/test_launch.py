"""launch/fusion.launch.py under launch_pytest: the node starts, takes its parameters, publishes.

Needs a full ROS 2 install with this package built (colcon) so that ``ros2 launch`` can find the
``fusion_node`` executable and the package share directory; skipped elsewhere
(test/test_node_params.py checks the launch file's text without ROS).
"""
import os
from pathlib import Path
import sys
import tempfile
import time

import pytest

launch_pytest = pytest.importorskip(
    'launch_pytest', reason='launch_pytest not installed: needs a full ROS 2 install')
pytest.importorskip('launch_ros', reason='launch_ros not installed: needs a full ROS 2 install')

import launch  # noqa: E402, I100
from launch.actions import (DeclareLaunchArgument, ExecuteProcess,  # noqa: E402
                            IncludeLaunchDescription, TimerAction)
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ros_helpers import set_stamp, SpinningNode, wait_until  # noqa: E402, I100

NAMESPACE = '/launch_test'
PARENT_NAMESPACE = '/launch_parent'
ENV_DUMP = Path(tempfile.gettempdir()) / f'ssvif_launch_env_{os.getpid()}.txt'


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
            launch_arguments={'fusion_backend': 'maxluma',
                              'fusion_namespace': NAMESPACE.strip('/')}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@launch_pytest.fixture(scope='module')
def parent_launch():
    """A parent launch file with generic arguments of its own, including fusion.launch.py.

    Its ``model`` points at no file and its ``namespace`` elsewhere: neither may reach the
    node. A process started after the include writes its environment to ENV_DUMP: the node's
    Fast DDS profile must not be in it.
    """
    path = os.path.join(_share(), 'launch', 'fusion.launch.py')
    ENV_DUMP.unlink(missing_ok=True)
    dump = ('import os, sys; open(sys.argv[1], "w").write("\\n".join('
            'f"{k}={v}" for k, v in os.environ.items()))')
    return launch.LaunchDescription([
        DeclareLaunchArgument('model', default_value='/nonexistent/parent_model.onnx'),
        DeclareLaunchArgument('namespace', default_value='parent_ns'),
        DeclareLaunchArgument('backend', default_value='tensorrt'),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(path),
            launch_arguments={'fusion_backend': 'maxluma',
                              'fusion_namespace': PARENT_NAMESPACE.strip('/')}.items()),
        TimerAction(period=1.0, actions=[ExecuteProcess(
            cmd=[sys.executable, '-c', dump, str(ENV_DUMP)], output='screen')]),
        launch_pytest.actions.ReadyToTest(),
    ])


class _Probe(SpinningNode):
    """A test node that publishes pairs and records fused images."""

    def __init__(self, namespace=NAMESPACE):
        from ssvif_ros.synthetic import synthetic_scene
        from ssvif_ros.ros_image import numpy_to_image

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

    def lifecycle_state(self, timeout=20.0):
        from lifecycle_msgs.srv import GetState
        client = self.node.create_client(GetState, f'{self.namespace}/fusion_node/get_state')
        return self.call(client, GetState.Request(), timeout).current_state.label

    def parameters(self, *names):
        from rcl_interfaces.srv import GetParameters
        client = self.node.create_client(GetParameters,
                                         f'{self.namespace}/fusion_node/get_parameters')
        return self.call(client, GetParameters.Request(names=list(names)), 20.0).values


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
    probe = _Probe()
    try:
        backend, slop, autostart = probe.parameters('backend', 'slop', 'autostart')
        assert backend.string_value == 'maxluma'  # launch argument overrides the params file
        assert slop.double_value == pytest.approx(0.02)  # from config/fusion.yaml
        assert autostart.bool_value is False  # the launch file drives the lifecycle
        assert probe.lifecycle_state() == 'active'  # configured and activated by launch
    finally:
        probe.close()


@pytest.mark.launch(fixture=parent_launch)
def test_an_including_parent_keeps_its_arguments_and_environment():
    probe = _Probe(PARENT_NAMESPACE)
    try:
        # The parent's model (no such file) and backend (tensorrt) did not reach the node: it
        # runs maxluma, became active and fuses; its namespace is the one passed to the include.
        model, backend = probe.parameters('model', 'backend')
        assert model.string_value == '' and backend.string_value == 'maxluma'
        assert probe.lifecycle_state() == 'active'
        sent, got = probe.publish_until_fused(timeout=20.0)
        assert got, 'the included node does not fuse'
        # The node's Fast DDS profile was given to the node process only.
        assert wait_until(ENV_DUMP.exists, 10.0), 'the process after the include did not run'
        env = dict(line.split('=', 1) for line in ENV_DUMP.read_text().splitlines()
                   if '=' in line)
        for key in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE',
                    'RMW_IMPLEMENTATION'):
            assert env.get(key) == os.environ.get(key), (key, env.get(key))
    finally:
        probe.close()
        ENV_DUMP.unlink(missing_ok=True)
