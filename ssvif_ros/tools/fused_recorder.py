"""Record the fusion node's outputs: PNGs, per-message latency and the last diagnostics.

Subscribes ``fused/image``, ``fused/segmentation`` and ``fused/segmentation_color`` (each
optional) and ``/diagnostics``; for every message it records ``now - header.stamp`` (the
end-to-end latency when the publisher stamps images with the wall clock at publication, as
``pair_publisher`` does), and keeps up to ``--save`` images per topic, written as PNG by
:meth:`FusedRecorder.write_saved` after recording (disk writes never delay the callbacks).
Used by the demo and the latency bench; also usable on its own::

    python -m ssvif_ros.tools.fused_recorder --out /tmp/fused --duration 10
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

OUTPUT_TOPICS = ('fused/image', 'fused/segmentation', 'fused/segmentation_color')
DIAGNOSTICS_NAME_SUFFIX = ': fusion'


def latency_summary(latencies_ms: Sequence[float]) -> Dict[str, float]:
    """Summarize latencies in ms: count, mean, median, p90, p99, max (NaN when empty)."""
    a = np.asarray(latencies_ms, np.float64)
    if a.size == 0:
        return {'count': 0, 'mean': float('nan'), 'median': float('nan'), 'p90': float('nan'),
                'p99': float('nan'), 'max': float('nan')}
    return {'count': int(a.size), 'mean': float(a.mean()), 'median': float(np.median(a)),
            'p90': float(np.percentile(a, 90)), 'p99': float(np.percentile(a, 99)),
            'max': float(a.max())}


class FusedRecorder:
    """An rclpy node (``self.node``) that records the fusion outputs; thread-safe accessors.

    ``topics``: output topics to subscribe (relative names). ``save_dir``/``save_max``: write at
    most ``save_max`` PNGs per topic there. Spin ``self.node`` with any executor.
    """

    def __init__(self, node, topics: Sequence[str] = OUTPUT_TOPICS, save_dir=None,
                 save_max: int = 0):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.node = node
        self._lock = threading.Lock()
        self._save_dir = Path(save_dir) if save_dir else None
        self._save_max = int(save_max)
        self.latency_ms: Dict[str, List[float]] = {t: [] for t in topics}
        self.arrivals: Dict[str, List[float]] = {t: [] for t in topics}
        self.stamps: Dict[str, List[int]] = {t: [] for t in topics}
        self.saved: Dict[str, List[str]] = {t: [] for t in topics}
        self._pending: Dict[str, List[Any]] = {t: [] for t in topics}
        self.diagnostics: Dict[str, str] = {}
        self.diagnostics_message = ''
        self.diagnostics_count = 0
        qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE)
        self._subs = [node.create_subscription(Image, t, self._image_cb(t), qos) for t in topics]
        self._subs.append(node.create_subscription(DiagnosticArray, '/diagnostics',
                                                   self._on_diagnostics, 10))

    def _image_cb(self, topic: str):
        def cb(msg):
            now = time.time_ns()
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            with self._lock:
                self.latency_ms[topic].append((now - stamp) / 1e6)
                self.arrivals[topic].append(time.monotonic())
                self.stamps[topic].append(stamp)
                if self._save_dir is not None and len(self._pending[topic]) < self._save_max:
                    self._pending[topic].append(msg)  # written by write_saved(), not here
        return cb

    def write_saved(self) -> Dict[str, List[str]]:
        """Write the kept messages as PNGs (outside the callbacks); return paths per topic."""
        from ssvif_ros import imaging
        from ssvif_ros.ros_image import image_to_numpy

        with self._lock:
            pending = {t: list(v) for t, v in self._pending.items()}
            for v in self._pending.values():
                v.clear()
        for topic, msgs in pending.items():
            name = topic.strip('/').replace('/', '_')
            for msg in msgs:
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                k = len(self.saved[topic])
                path = self._save_dir / name / f'{k:04d}_{stamp}.png'
                imaging.write_image(path, image_to_numpy(msg, rgb=True))
                with self._lock:
                    self.saved[topic].append(str(path))
        return {t: list(v) for t, v in self.saved.items()}

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith(DIAGNOSTICS_NAME_SUFFIX):
                with self._lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_message = status.message
                    self.diagnostics_count += 1

    def count(self, topic: str = OUTPUT_TOPICS[0]) -> int:
        """Messages received so far on ``topic``."""
        with self._lock:
            return len(self.latency_ms.get(topic, []))

    def reset(self) -> None:
        """Forget the recorded latencies and arrival times (e.g. after a warm-up)."""
        with self._lock:
            for t in self.latency_ms:
                self.latency_ms[t].clear()
                self.arrivals[t].clear()
                self.stamps[t].clear()

    def summary(self) -> Dict[str, Any]:
        """Return per topic the latency statistics in ms and the rate in Hz, plus diagnostics."""
        with self._lock:
            out: Dict[str, Any] = {'topics': {}}
            for t, lat in self.latency_ms.items():
                arr = self.arrivals[t]
                rate = (len(arr) - 1) / (arr[-1] - arr[0]) if len(arr) > 1 and arr[-1] > arr[0] \
                    else float('nan')
                out['topics'][t] = {'latency_ms': latency_summary(lat), 'rate_hz': rate,
                                    'saved': list(self.saved[t])}
            out['diagnostics'] = dict(self.diagnostics)
            out['diagnostics_message'] = self.diagnostics_message
            return out


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', help='folder for PNGs and summary.json')
    p.add_argument('--save', type=int, default=10, help='PNGs to save per topic')
    p.add_argument('--duration', type=float, default=10.0, help='seconds to record')
    p.add_argument('--topics', nargs='+', default=list(OUTPUT_TOPICS))
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; prints the summary as JSON and returns the exit code."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from ssvif_ros.runtime import tune_malloc
    from ssvif_ros.tools import split_ros_args

    tune_malloc()  # as the node: received image buffers recycled, not mapped per message
    argv, ros_args = split_ros_args(argv)
    args = _parse_args(argv)
    rclpy.init(args=['fused_recorder'] + ros_args)
    node = rclpy.create_node('fused_recorder')
    rec = FusedRecorder(node, args.topics, args.out, args.save if args.out else 0)
    end = time.monotonic() + args.duration
    try:
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    rec.write_saved()
    summary = rec.summary()
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / 'summary.json').write_text(text)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
