"""launch/fusion.launch.py under launch_pytest: start, arguments, fused output, respawn.

The node starts, takes its arguments and publishes; a node process killed by a signal is
respawned and ends active again.

One module-scoped launch_pytest fixture per module (they would share one LaunchService):
test/test_launch_parent.py includes the launch file from a parent, test/test_ros2_launch.py
runs ``ros2 launch`` itself (exit codes). Needs a ROS 2 install with this package built
(colcon); skipped elsewhere (test/test_node_params.py checks the launch file's text without
ROS).
"""
import os
import signal
import time

import pytest

launch_pytest = pytest.importorskip(
    'launch_pytest', reason='launch_pytest not installed: needs a full ROS 2 install')
pytest.importorskip('launch_ros', reason='launch_ros not installed: needs a full ROS 2 install')

import launch  # noqa: E402, I100
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from launch_helpers import launch_file, node_pids, Probe  # noqa: E402, I100
from ros_helpers import wait_until  # noqa: E402

NAMESPACE = '/launch_test'


@pytest.fixture
def probe():
    p = Probe(NAMESPACE)
    yield p
    p.close()


@launch_pytest.fixture(scope='module')
def fusion_launch():
    """The package's launch file with the model-free maxluma backend in a test namespace.

    Booleans in other cases than lower (they are case-insensitive), sim time on, debug logs.
    """
    return launch.LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(launch_file()),
            launch_arguments={'fusion_backend': 'maxluma',
                              'fusion_namespace': NAMESPACE.strip('/'),
                              'fusion_respawn': 'True',
                              'fusion_use_sim_time': 'TRUE',
                              'fusion_log_level': 'debug'}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.launch(fixture=fusion_launch)
def test_node_becomes_active_and_publishes_fused_images(probe):
    assert probe.wait_for_state('active') == 'active'
    sent, got = probe.publish_until_fused(timeout=30.0)
    assert got, 'no fused/image received from the launched node'
    msg = got[0]
    header_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    assert header_ns in sent
    assert (msg.encoding, msg.width, msg.height, msg.header.frame_id) == (
        'rgb8', 160, 120, 'cam')


@pytest.mark.launch(fixture=fusion_launch)
def test_launch_arguments_reach_the_node(probe):
    assert probe.wait_for_state('active') == 'active'
    backend, slop, autostart, sim_time = probe.parameters('backend', 'slop', 'autostart',
                                                          'use_sim_time')
    assert backend.string_value == 'maxluma'  # launch argument overrides the params file
    assert slop.double_value == pytest.approx(0.02)  # from config/fusion.yaml
    assert autostart.bool_value is True  # the node configures itself on every start
    assert sim_time.bool_value is True  # fusion_use_sim_time:=TRUE


@pytest.mark.launch(fixture=fusion_launch)
def test_a_killed_node_is_respawned_configured_and_active(probe):
    assert probe.wait_for_state('active') == 'active'
    pids = node_pids(NAMESPACE)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    assert wait_until(lambda: pids[0] not in node_pids(NAMESPACE), 10.0)
    # respawn_delay 2 s, then the new process configures and activates itself
    assert wait_until(lambda: len(node_pids(NAMESPACE)) == 1, 30.0), node_pids(NAMESPACE)
    time.sleep(0.5)
    assert probe.wait_for_state('active') == 'active'
    new = node_pids(NAMESPACE)
    assert new and new[0] != pids[0]
    sent, got = probe.publish_until_fused(timeout=30.0)
    assert got, 'the respawned node does not fuse'
