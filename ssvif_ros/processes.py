"""The package's ROS 2 processes, started and stopped from Python (demo, bag tools, benches).

Every process gets the same environment (:func:`ros_env`): Fast DDS with the package's
shared-memory profile, discovery limited to this host, its own ROS domain id. The node and the
publisher run as ``python -m`` child processes; :class:`RecorderSession` spins the fused-output
recorder in this process (it imports rclpy when created).
"""
from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]


def dds_profile_path() -> Path:
    """The Fast DDS shared-memory profile: the source tree's, else the installed share copy."""
    local = REPO_ROOT / 'config' / 'fastdds_shm.xml'
    if local.is_file():
        return local
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory('ssvif_ros')) / 'config' / 'fastdds_shm.xml'


def ros_env(domain_id: Optional[int] = None) -> Dict[str, str]:
    """Environment for every demo/bench process: Fast DDS, SHM profile, localhost, own domain."""
    env = dict(os.environ)
    env.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)  # deprecated name; one profile variable
    env.update({
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
        'ROS_DOMAIN_ID': str(domain_id if domain_id is not None else 30 + os.getpid() % 70),
        'FASTDDS_DEFAULT_PROFILES_FILE': str(dds_profile_path()),
        'PYTHONUNBUFFERED': '1',
    })
    return env


def start_fusion_node(params: Sequence[str], log_path, env: Dict[str, str]) -> subprocess.Popen:
    """Start ``python -m ssvif_ros.fusion_node`` with ``-p`` for each 'name:=value'."""
    cmd = [sys.executable, '-m', 'ssvif_ros.fusion_node', '--ros-args']
    for p in params:
        cmd += ['-p', p]
    log = open(log_path, 'w')
    try:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def start_publisher(args: Sequence[str], log_path, env: Dict[str, str]) -> subprocess.Popen:
    """Start ``python -m ssvif_ros.tools.pair_publisher`` with ``args``."""
    cmd = [sys.executable, '-m', 'ssvif_ros.tools.pair_publisher', *args]
    log = open(log_path, 'w')
    try:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> Optional[int]:
    """SIGINT a process and wait; kill it if it does not exit in ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def tail(path, lines: int = 15) -> str:
    """The last ``lines`` lines of a text file ('' if absent)."""
    try:
        return '\n'.join(Path(path).read_text(errors='replace').splitlines()[-lines:])
    except OSError:
        return ''


class RecorderSession:
    """An in-process rclpy context spinning a :class:`FusedRecorder` in a background thread."""

    def __init__(self, topics, save_dir=None, save_max: int = 0):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        from ssvif_ros.runtime import tune_malloc
        from ssvif_ros.tools.fused_recorder import FusedRecorder

        tune_malloc()  # this process receives the images: recycle their buffers

        self._rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(args=[], context=self.ctx, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('fused_recorder', context=self.ctx)
        self.recorder = FusedRecorder(self.node, topics, save_dir, save_max)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.ctx.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def wait_for_node(self, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
        """Wait until the fusion node publishes fused/image; False if it exited or timed out."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc.poll() is not None:
                return False
            if self.node.count_publishers('/fused/image') > 0:
                time.sleep(0.5)  # let both sides finish matching
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        """Stop spinning and shut the context down."""
        self._stop.set()
        self._thread.join(5.0)
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.ctx)
