"""What the ROS tests share: the test process's own spinning node, stamps, node processes.

Every ROS test talks to real nodes in other processes over Fast DDS with the package's
shared-memory profile, discovery kept on this host, on a ROS domain of its own.
"""
import os
from pathlib import Path
import subprocess
import sys
import threading
import time

from ssvif_ros import processes

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / 'config' / 'fastdds_shm.xml'
ENV_KEYS = ('ROS_DOMAIN_ID', 'FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE',
            'RMW_IMPLEMENTATION', 'ROS_AUTOMATIC_DISCOVERY_RANGE')


def ros_env(domain_id: int) -> dict:
    """The ROS settings of a test's processes (and of its own node while it lives)."""
    return {'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
            'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
            'ROS_DOMAIN_ID': str(domain_id),
            'FASTDDS_DEFAULT_PROFILES_FILE': str(PROFILE)}


def process_env(domain_id: int, **extra) -> dict:
    """Environment of a node process: this checkout first on the path, unbuffered output."""
    env = dict(os.environ)
    env.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)
    env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + [p for p in env.get('PYTHONPATH', '')
                                                       .split(os.pathsep) if p])
    env['PYTHONUNBUFFERED'] = '1'
    env.update(ros_env(domain_id))
    env.update(extra)
    return env


def stamp_ns(header) -> int:
    """A header's stamp in integer nanoseconds."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def set_stamp(msg, ns: int, frame_id: str = 'cam'):
    """Stamp ``msg`` with ``ns`` nanoseconds and ``frame_id``; return it."""
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    return msg


def start_node(log_path, params=(), env=None, namespace=None, script=None, ros_args=()):
    """Start ``python -m ssvif_ros.fusion_node`` (or ``script``) with ``-p`` per 'name:=value'.

    ``ros_args``: more ``--ros-args`` items, e.g. ``('--params-file', path)``.
    Its output goes to ``log_path`` (``proc.log_path``; read it with :func:`node_log`).
    """
    cmd = [sys.executable] + ([str(script)] if script else ['-m', 'ssvif_ros.fusion_node'])
    cmd.append('--ros-args')
    for p in params:
        cmd += ['-p', p]
    if namespace:
        cmd += ['-r', f'__ns:={namespace}']
    cmd += list(ros_args)
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path
    return proc


def node_log(proc) -> str:
    """What a process started by :func:`start_node` printed so far."""
    return Path(proc.log_path).read_text()


def stop(proc, timeout: float = 10.0):
    """SIGINT a process and wait; kill it when it does not end in ``timeout`` s."""
    return processes.stop(proc, timeout)


class SpinningNode:
    """The test process's rclpy node, in a context of its own, spun by a background thread.

    With ``env`` the ROS variables are set in this process while it lives (Fast DDS reads its
    profile once per participant) and restored by :meth:`close`.
    """

    def __init__(self, name: str, env=None):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        self._saved = None
        if env is not None:
            self._saved = {k: os.environ.get(k) for k in ENV_KEYS}
            os.environ.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)
            os.environ.update(env)
        self.rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(args=[], context=self.ctx, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.lock = threading.Lock()
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set() and self.ctx.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def call(self, client, request, timeout: float = 10.0, resend_every: float = 0.0):
        """Call a service and wait for the answer; AssertionError naming the service if none.

        ``resend_every`` (read-only requests only): send the request again when it has had no
        answer for this long. ``wait_for_service`` sees the server's request reader, not that
        the server has matched this client's response reader yet; an answer sent before that
        match can be lost, and a lone request then waits forever (a get_state in one full CI
        run got no answer in 20 s).
        """
        assert client.wait_for_service(timeout_sec=timeout), f'{client.srv_name} not available'
        futures = [client.call_async(request)]
        start = time.monotonic()
        end = start + timeout
        while not any(f.done() for f in futures) and time.monotonic() < end:
            time.sleep(0.02)
            if resend_every > 0 and time.monotonic() - start > resend_every * len(futures):
                futures.append(client.call_async(request))
        done = [f for f in futures if f.done()]
        assert done, f'no answer from {client.srv_name}'
        return done[0].result()

    def close(self):
        """Stop spinning, destroy the node and its context, restore the environment."""
        self._stop.set()
        self._thread.join(5.0)
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.ctx)
        for k, v in (self._saved or {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` s passed; return its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
