"""The fusion node as a managed (lifecycle) node, driven through its lifecycle services.

The node runs in its own process with ``autostart:=false``; this process calls
``<node>/change_state`` and ``<node>/get_state`` (lifecycle_msgs) like a lifecycle manager would,
publishes image pairs and checks that nothing comes out unless the node is active.
"""
import os
import time

import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy (ROS 2) not installed')
pytest.importorskip('rclpy.lifecycle', reason='rclpy without lifecycle support')

from lifecycle_msgs.msg import Transition  # noqa: E402, I100
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ssvif_ros.ros_image import numpy_to_image  # noqa: E402
from ssvif_ros.synthetic import synthetic_scene  # noqa: E402

from ros_helpers import (node_log, process_env, ros_env,  # noqa: E402, I100
                         set_stamp, SpinningNode, stamp_ns, start_node, stop, wait_until)

DOMAIN_ID = 120 + os.getpid() % 80


class Manager(SpinningNode):
    """Plays a lifecycle manager for the node in ``namespace`` and feeds it pairs."""

    def __init__(self, namespace):
        super().__init__('lifecycle_test', ros_env(DOMAIN_ID))
        node = f'{namespace}/fusion_node'
        self.change = self.node.create_client(ChangeState, f'{node}/change_state')
        self.get = self.node.create_client(GetState, f'{node}/get_state')
        self.fused = []
        self.node.create_subscription(
            Image, f'{namespace}/fused/image', self._on_fused,
            QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        self.pub_rgb = self.node.create_publisher(Image, f'{namespace}/rgb/image_raw', 10)
        self.pub_th = self.node.create_publisher(Image, f'{namespace}/thermal/image_raw', 10)
        rgb, th = synthetic_scene(0, 160, 120)
        self.images = (rgb, th)

    def _on_fused(self, msg):
        with self.lock:
            self.fused.append(stamp_ns(msg.header))

    def state(self) -> str:
        return self.call(self.get, GetState.Request(), timeout=20.0,
                         resend_every=2.0).current_state.label

    def transition(self, transition_id) -> bool:
        req = ChangeState.Request()
        req.transition.id = transition_id
        return self.call(self.change, req, timeout=30.0).success

    def feed(self, seconds, rate=20.0):
        """Publish pairs for ``seconds``; return the RGB stamps sent."""
        sent = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.time_ns()
            self.pub_rgb.publish(set_stamp(numpy_to_image(self.images[0], 'rgb8'), t))
            self.pub_th.publish(set_stamp(numpy_to_image(self.images[1], 'mono8'), t))
            sent.append(t)
            time.sleep(1.0 / rate)
        return sent

    def received(self):
        with self.lock:
            return list(self.fused)

    def connected(self):
        return (self.pub_rgb.get_subscription_count() > 0
                and self.pub_th.get_subscription_count() > 0
                and self.node.count_publishers(self.pub_rgb.topic_name.replace(
                    'rgb/image_raw', 'fused/image')) > 0)


@pytest.fixture
def managed(tmp_path):
    """A node left unconfigured for a manager, and the manager."""
    ns = f'/lc{os.getpid() % 1000}'
    proc = start_node(tmp_path / 'node.log', ['backend:=maxluma', 'autostart:=false',
                                              'slop:=0.005'],
                      process_env(DOMAIN_ID), namespace=ns)
    manager = Manager(ns)
    yield proc, manager
    manager.close()
    stop(proc)


def test_transitions_gate_the_outputs_and_shutdown_ends_the_process(managed):
    proc, m = managed
    assert m.state() == 'unconfigured', node_log(proc)
    m.feed(0.5)
    assert m.received() == []  # nothing subscribed, no outputs: nothing comes out

    assert m.transition(Transition.TRANSITION_CONFIGURE), node_log(proc)
    assert m.state() == 'inactive'
    time.sleep(1.0)
    m.feed(1.5)
    time.sleep(0.5)
    assert m.received() == [], 'an inactive node published'

    assert m.transition(Transition.TRANSITION_ACTIVATE), node_log(proc)
    assert m.state() == 'active'
    assert wait_until(m.connected, 15.0), node_log(proc)
    sent = m.feed(2.0)
    assert wait_until(lambda: len(m.received()) >= 5, 10.0), (len(m.received()), node_log(proc))
    assert set(m.received()) <= set(sent)

    assert m.transition(Transition.TRANSITION_DEACTIVATE)
    assert m.state() == 'inactive'
    n = len(m.received())
    m.feed(1.5)
    time.sleep(0.5)
    assert len(m.received()) == n, 'a deactivated node published'

    # Activated again without configuring: the model stayed loaded, fusing resumes.
    assert m.transition(Transition.TRANSITION_ACTIVATE)
    assert wait_until(m.connected, 15.0)
    sent = m.feed(2.0)
    assert wait_until(lambda: set(m.received()) & set(sent), 10.0), node_log(proc)

    assert m.transition(Transition.TRANSITION_DEACTIVATE)
    assert m.transition(Transition.TRANSITION_CLEANUP)
    assert m.state() == 'unconfigured'
    assert m.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert proc.wait(10) == 0, node_log(proc)
    assert 'Traceback' not in node_log(proc)


def test_shutdown_from_active_ends_the_process_cleanly(managed):
    proc, m = managed
    assert m.transition(Transition.TRANSITION_CONFIGURE), node_log(proc)
    assert m.transition(Transition.TRANSITION_ACTIVATE), node_log(proc)
    assert m.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN), node_log(proc)
    assert proc.wait(10) == 0, node_log(proc)
    assert 'Traceback' not in node_log(proc)


def _failing_configure(tmp_path, ns):
    """A managed node whose model file is missing: (process, manager, missing path)."""
    missing = tmp_path / 'no_such_model.onnx'
    proc = start_node(tmp_path / 'node.log', ['backend:=onnxruntime', f'model:={missing}',
                                              'autostart:=false'],
                      process_env(DOMAIN_ID), namespace=ns)
    return proc, Manager(ns), missing


def test_a_failed_configure_leaves_the_node_unconfigured_with_a_reason(tmp_path):
    proc, m, missing = _failing_configure(tmp_path, '/lcfail')
    try:
        assert not m.transition(Transition.TRANSITION_CONFIGURE)
        assert m.state() == 'unconfigured'
        assert proc.poll() is None, node_log(proc)
        log = node_log(proc)
        assert 'configure failed: model not found' in log and str(missing) in log, log
        assert 'Traceback' not in log
    finally:
        m.close()
        assert stop(proc) == 0, node_log(proc)


def _set_params(manager, node, **values):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    client = manager.node.create_client(SetParameters, f'{node}/set_parameters')
    req = SetParameters.Request()
    req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    return manager.call(client, req, timeout=20.0).results


def test_after_a_failed_configure_the_model_can_be_set_and_configure_retried(tmp_path):
    ns = '/lcretry'
    proc, m, missing = _failing_configure(tmp_path, ns)
    try:
        assert not m.transition(Transition.TRANSITION_CONFIGURE)
        assert m.state() == 'unconfigured'
        results = _set_params(m, f'{ns}/fusion_node', model='', threads=1)
        # Unconfigured: the start-only parameters are settable.
        assert all(r.successful for r in results), [r.reason for r in results]
        assert m.transition(Transition.TRANSITION_CONFIGURE), node_log(proc)
        assert m.state() == 'inactive'
        (res,) = _set_params(m, f'{ns}/fusion_node', model=str(missing))
        assert not res.successful and 'read at configure' in res.reason, res.reason
        assert m.transition(Transition.TRANSITION_ACTIVATE), node_log(proc)
        assert wait_until(m.connected, 15.0), node_log(proc)
        sent = m.feed(2.0)
        assert wait_until(lambda: set(m.received()) & set(sent), 10.0), node_log(proc)
        assert 'Traceback' not in node_log(proc)
    finally:
        m.close()
        assert stop(proc) == 0, node_log(proc)


def test_a_bad_value_in_the_params_file_fails_configure_not_the_process(tmp_path):
    """A refused params-file value: configure answers false with the reason; set, it works."""
    ns = '/lcbadfile'
    params = tmp_path / 'bad.yaml'
    params.write_text('/**/fusion_node:\n  ros__parameters:\n    backend: maxluma\n'
                      '    autostart: false\n    slop: 5.0\n    queue_size: many\n')
    proc = start_node(tmp_path / 'node.log', (), process_env(DOMAIN_ID), namespace=ns,
                      ros_args=('--params-file', str(params)))
    m = Manager(ns)
    try:
        assert m.state() == 'unconfigured', node_log(proc)
        assert not m.transition(Transition.TRANSITION_CONFIGURE)
        assert m.state() == 'unconfigured' and proc.poll() is None, node_log(proc)
        line = [t for t in node_log(proc).splitlines() if 'configure failed' in t]
        assert len(line) == 1, node_log(proc)
        assert 'slop' in line[0] and '5.0' in line[0] and 'queue_size' in line[0], line
        # Both set to valid values: the next configure succeeds, without a restart.
        results = _set_params(m, f'{ns}/fusion_node', slop=0.01, queue_size=4)
        assert all(r.successful for r in results), [r.reason for r in results]
        assert m.transition(Transition.TRANSITION_CONFIGURE), node_log(proc)
        assert m.state() == 'inactive'
        assert 'Traceback' not in node_log(proc)
    finally:
        m.close()
        assert stop(proc) == 0, node_log(proc)


def test_standalone_autostart_needs_no_manager(tmp_path):
    """``ros2 run`` without a manager: autostart configures and activates at once."""
    ns = '/lcauto'
    proc = start_node(tmp_path / 'node.log', ['backend:=maxluma', 'slop:=0.005'],
                      process_env(DOMAIN_ID), namespace=ns)
    m = Manager(ns)
    try:
        assert m.state() == 'active', node_log(proc)
        assert wait_until(m.connected, 15.0), node_log(proc)
        sent = m.feed(2.0)
        assert wait_until(lambda: set(m.received()) & set(sent), 10.0), node_log(proc)
    finally:
        m.close()
        assert stop(proc) == 0, node_log(proc)
