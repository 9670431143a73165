"""``ros2 launch ssvif_ros fusion.launch.py`` as a user runs it: its exit code and log.

Ctrl-C and a node that cannot start both end the launch with exit code 0 and the reason in the
log; an invalid boolean argument is one error line. Needs a ROS 2 install with ros2launch and
this package built (colcon); skipped elsewhere.
"""
import os
import shutil
import signal
import subprocess

import pytest

pytest.importorskip('ros2launch', reason='ros2launch not installed: needs a full ROS 2 install')
pytest.importorskip('launch_ros', reason='launch_ros not installed: needs a full ROS 2 install')

from launch_helpers import launch_file, Probe  # noqa: E402, I100


def _ros2_launch(tmp_path, *args):
    launch_file()  # skips when the package is not installed
    ros2 = shutil.which('ros2')
    if ros2 is None:
        pytest.skip('the ros2 command is not on PATH')
    log = open(tmp_path / 'launch.log', 'w')
    proc = subprocess.Popen([ros2, 'launch', 'ssvif_ros', 'fusion.launch.py', *args],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                            start_new_session=True)
    proc.log_path = tmp_path / 'launch.log'
    return proc


def _finish(proc, timeout=60.0):
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f'ros2 launch did not end:\n{proc.log_path.read_text()[-3000:]}')
    return code, proc.log_path.read_text()


@pytest.mark.parametrize('to_group', [False, True], ids=['launch', 'process_group'])
def test_ctrl_c_ends_the_launch_with_exit_0(tmp_path, to_group):
    ns = f'/ros2_launch_sigint_{int(to_group)}'
    proc = _ros2_launch(tmp_path, 'fusion_backend:=maxluma', f'fusion_namespace:={ns[1:]}',
                        'fusion_log_level:=DEBUG')
    probe = Probe(ns)
    try:
        assert probe.wait_for_state('active') == 'active', proc.log_path.read_text()
    finally:
        probe.close()
    # SIGINT to ros2 launch, which then stops the node (exit 0) while shutting down; or to the
    # whole process group, as a terminal's Ctrl-C sends it (the node gets it twice).
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGINT)
    code, log = _finish(proc)
    assert code == 0, log
    assert 'Caught exception' not in log and 'Traceback' not in log, log
    assert 'process has finished cleanly' in log, log  # the node exited 0 too
    assert '[fusion_node-1] [DEBUG]' in log  # fusion_log_level reached the node


def test_a_node_that_cannot_start_ends_the_launch_with_exit_0_and_the_reason(tmp_path):
    missing = tmp_path / 'no_such_model.onnx'
    proc = _ros2_launch(tmp_path, f'fusion_model:={missing}',
                        'fusion_namespace:=ros2_launch_fail')
    code, log = _finish(proc)
    assert code == 0, log
    assert 'cannot start: model not found' in log and str(missing) in log, log
    assert 'fusion_node could not start' in log, log  # why launch shut down
    assert log.count('process started') == 1, log  # not respawned every 2 s
    assert 'Caught exception' not in log and 'Traceback' not in log, log


@pytest.mark.parametrize('arg', ['fusion_respawn:=maybe', 'fusion_log_level:=loud'])
def test_a_bad_argument_value_is_one_error_naming_it(tmp_path, arg):
    proc = _ros2_launch(tmp_path, arg, 'fusion_backend:=maxluma')
    code, log = _finish(proc)
    assert code != 0, log
    name, value = arg.split(':=')
    errors = [line for line in log.splitlines() if 'ERROR' in line]
    assert len(errors) == 1 and name in errors[0] and f"'{value}'" in errors[0], log
    assert 'process started' not in log, log


def test_a_failed_configure_by_a_manager_ends_the_launch_with_exit_0(tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    ns = '/ros2_launch_managed'
    missing = tmp_path / 'no_such_model.onnx'
    proc = _ros2_launch(tmp_path, f'fusion_model:={missing}', 'fusion_autostart:=False',
                        f'fusion_namespace:={ns[1:]}')
    probe = Probe(ns)
    try:
        assert probe.wait_for_state('unconfigured') == 'unconfigured', proc.log_path.read_text()
        client = probe.node.create_client(ChangeState, f'{ns}/fusion_node/change_state')
        req = ChangeState.Request()
        req.transition.id = Transition.TRANSITION_CONFIGURE
        assert not probe.call(client, req, 30.0).success
    finally:
        probe.close()
    code, log = _finish(proc)
    assert code == 0, log
    assert 'configure failed: model not found' in log and 'failed to configure' in log, log
    assert 'Caught exception' not in log and 'Traceback' not in log, log
