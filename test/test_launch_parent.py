"""fusion.launch.py included by a parent launch file that has generic arguments of its own.

A module of its own: its module-scoped launch_pytest fixture must not share a LaunchService
with test/test_launch.py's. Needs a ROS 2 install with this package built; skipped elsewhere.
"""
import os
from pathlib import Path
import sys
import tempfile

import pytest

launch_pytest = pytest.importorskip(
    'launch_pytest', reason='launch_pytest not installed: needs a full ROS 2 install')
pytest.importorskip('launch_ros', reason='launch_ros not installed: needs a full ROS 2 install')

import launch  # noqa: E402, I100
from launch.actions import (DeclareLaunchArgument, ExecuteProcess,  # noqa: E402
                            IncludeLaunchDescription, TimerAction)
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from launch_helpers import launch_file, Probe  # noqa: E402, I100
from ros_helpers import wait_until  # noqa: E402

PARENT_NAMESPACE = '/launch_parent'
ENV_DUMP = Path(tempfile.gettempdir()) / f'ssvif_launch_env_{os.getpid()}.txt'


@launch_pytest.fixture(scope='module')
def parent_launch():
    """A parent launch file with generic arguments of its own, including fusion.launch.py.

    Its ``model`` points at no file and its ``namespace`` elsewhere: neither may reach the
    node. A process started after the include writes its environment to ENV_DUMP: the node's
    Fast DDS profile must not be in it.
    """
    ENV_DUMP.unlink(missing_ok=True)
    dump = ('import os, sys; open(sys.argv[1], "w").write("\\n".join('
            'f"{k}={v}" for k, v in os.environ.items()))')
    return launch.LaunchDescription([
        DeclareLaunchArgument('model', default_value='/nonexistent/parent_model.onnx'),
        DeclareLaunchArgument('namespace', default_value='parent_ns'),
        DeclareLaunchArgument('backend', default_value='tensorrt'),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(launch_file()),
            launch_arguments={'fusion_backend': 'maxluma',
                              'fusion_namespace': PARENT_NAMESPACE.strip('/')}.items()),
        TimerAction(period=1.0, actions=[ExecuteProcess(
            cmd=[sys.executable, '-c', dump, str(ENV_DUMP)], output='screen')]),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.launch(fixture=parent_launch)
def test_an_including_parent_keeps_its_arguments_and_environment():
    probe = Probe(PARENT_NAMESPACE)
    try:
        # The parent's model (no such file) and backend (tensorrt) did not reach the node: it
        # runs maxluma, became active and fuses; its namespace is the one passed to the include.
        assert probe.wait_for_state('active') == 'active'
        model, backend = probe.parameters('model', 'backend')
        assert model.string_value == '' and backend.string_value == 'maxluma'
        sent, got = probe.publish_until_fused(timeout=30.0)
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
