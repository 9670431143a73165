"""The node's counters and per-stage times, and the /diagnostics status made from them.

ROS-free: :mod:`ssvif_ros.fusion_node` wraps :func:`diagnostic_status` into a
diagnostic_msgs/DiagnosticStatus once a second.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

RGB, THERMAL = 0, 1
# Worker stages timed per pair and reported in /diagnostics as <stage>_ms_p50 / _p99: waiting
# in the mailbox (pair formed -> worker takes it), decode+register, inference, encode+publish,
# and processing = decode + inference + publish.
STAGES = ('queue', 'decode', 'inference', 'publish', 'processing')
# Drop counters that mean a pair failed inside the node (not bad input): /diagnostics ERROR.
# bad_output: the model returned NaN/Inf or class ids beyond its card (backends.base).
ERROR_DROPS = ('inference_error', 'worker_error', 'publish_error', 'bad_output')
OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


class NodeStats:
    """Thread-safe counters and latency samples behind /diagnostics."""

    def __init__(self, samples: int = 1000):
        self._lock = threading.Lock()
        self.inputs = [0, 0]
        self.pairs = 0
        self.processed = 0
        self.drops: Dict[str, int] = collections.Counter()
        # Per processed pair, the time of each of STAGES [ms].
        self.times = {k: collections.deque(maxlen=samples) for k in STAGES}
        # Latest alignment score (alignment_check_every), None: no structure; and how many.
        self.alignment: Optional[float] = None
        self.alignment_checks = 0

    def count_input(self, stream: int) -> None:
        """Count one received frame of ``stream``."""
        with self._lock:
            self.inputs[stream] += 1

    def count_pair(self) -> None:
        """Count one formed pair."""
        with self._lock:
            self.pairs += 1

    def drop(self, reason: str) -> None:
        """Count one dropped frame or pair under ``reason``."""
        with self._lock:
            self.drops[reason] += 1

    def done(self, **stage_ms: float) -> None:
        """Record one processed pair with the time of each stage in ms (keys: STAGES)."""
        with self._lock:
            self.processed += 1
            for k, v in stage_ms.items():
                self.times[k].append(v)

    def set_alignment(self, score: Optional[float]) -> None:
        """Record the alignment score of the latest checked pair (None: no structure)."""
        with self._lock:
            self.alignment = score
            self.alignment_checks += 1

    def snapshot(self) -> Dict[str, Any]:
        """Copy of all counters and per-stage time percentiles (``<stage>_ms_p50/p99``)."""
        with self._lock:
            times = {k: np.asarray(v, np.float64) for k, v in self.times.items()}
            snap = {'inputs': list(self.inputs), 'pairs': self.pairs,
                    'processed': self.processed, 'drops': dict(self.drops),
                    'alignment': self.alignment, 'alignment_checks': self.alignment_checks}
        for key, arr in times.items():
            for q in (50, 99):
                snap[f'{key}_ms_p{q}'] = float(np.percentile(arr, q)) if arr.size else float('nan')
        return snap


def diagnostic_status(snap: Dict[str, Any], prev: Dict[str, Any], dt: float,
                      pairing: Dict[str, Any], info: Dict[str, str], active: bool,
                      worker_death: Optional[str], last_error: str
                      ) -> Tuple[int, str, List[Tuple[str, str]]]:
    """(level, message, key/value pairs) of the node's status over the last ``dt`` seconds.

    ``snap``/``prev``: :meth:`NodeStats.snapshot` now and one period ago; ``pairing``: the
    pairer's stats; ``info``: backend, backend_info and model labels; ``worker_death``: why the
    worker thread ended (None while it runs).
    """
    dt = max(dt, 1e-6)
    drops = dict(snap['drops'])
    for key, n in pairing['drops'].items():
        drops[f'pairing.{key}'] = n
    rates = {
        'rgb_rate_hz': (snap['inputs'][RGB] - prev['inputs'][RGB]) / dt,
        'thermal_rate_hz': (snap['inputs'][THERMAL] - prev['inputs'][THERMAL]) / dt,
        'paired_rate_hz': (snap['pairs'] - prev['pairs']) / dt,
        'published_rate_hz': (snap['processed'] - prev['processed']) / dt,
    }
    bad_now = sum(n - prev['drops'].get(r, 0) for r, n in snap['drops'].items()
                  if r != 'inference_busy')
    errors_now = sum(snap['drops'].get(r, 0) - prev['drops'].get(r, 0) for r in ERROR_DROPS)
    if worker_death is not None:
        level, message = ERROR, f'inference worker died: {worker_death}'
    elif errors_now:
        level, message = ERROR, f'{errors_now} pairs failed in the last period ({last_error})'
    elif not active:
        level, message = OK, 'inactive (lifecycle): not fusing'
    elif rates['rgb_rate_hz'] == 0.0 and rates['thermal_rate_hz'] == 0.0:
        level, message = WARN, 'no input images'
    elif rates['published_rate_hz'] == 0.0:
        level, message = WARN, 'input arrives but no pair was fused'
    elif bad_now:
        level, message = WARN, f'{bad_now} frames dropped in the last period'
    else:
        level, message = OK, f'fusing at {rates["published_rate_hz"]:.1f} Hz'
    values = {
        **info,
        'state': 'active' if active else 'inactive',
        **{k: f'{v:.2f}' for k, v in rates.items()},
        **{f'{k}_ms_p{q}': f'{snap[f"{k}_ms_p{q}"]:.2f}' for k in STAGES for q in (50, 99)},
        'frames_rgb': str(snap['inputs'][RGB]),
        'frames_thermal': str(snap['inputs'][THERMAL]),
        'pairs': str(snap['pairs']),
        'published': str(snap['processed']),
        'pairing_resets': str(pairing['resets']),
        'drops_total': str(sum(drops.values())),
        **{f'drops.{k}': str(v) for k, v in sorted(drops.items())},
    }
    return level, message, list(values.items())


def alignment_status(level: int, message: str, values: List[Tuple[str, str]],
                     snap: Dict[str, Any], check_every: int, warn_below: float
                     ) -> Tuple[int, str, List[Tuple[str, str]]]:
    """:func:`diagnostic_status` with the alignment check added (``alignment_check_every``).

    With the check on and a pair checked, adds ``alignment_score`` (``n/a`` when the last
    checked pair held too little structure) and ``alignment_checks``; an OK status becomes
    WARN when the score is below ``warn_below``.
    """
    if not check_every or not snap.get('alignment_checks'):
        return level, message, values
    score = snap['alignment']
    values = values + [('alignment_score', 'n/a' if score is None else f'{score:.3f}'),
                       ('alignment_checks', str(snap['alignment_checks']))]
    if score is not None and score < warn_below and level == OK:
        level, message = WARN, (f'thermal and RGB edges misaligned: alignment score '
                                f'{score:.3f} < {warn_below} (camera moved? re-run '
                                'ssvif-register)')
    return level, message, values
