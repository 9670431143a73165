"""Approximate-time pairing of two image streams by header stamp (pure Python, thread-safe).

Policy of :class:`ApproxTimePairer` ("newest complete pair wins", built for low latency):

* Each stream keeps a small queue of frames sorted by stamp, at most ``queue_size`` long; when
  it is full the oldest frame is dropped (reason ``queue_overflow``). A stream whose partner has
  stopped therefore holds a bounded number of frames, never more.
* When a frame arrives, it is compared with the other stream's queue only (no pair can exist
  among frames already queued: pairs are emitted as soon as they form). The partner is the frame
  with the smallest ``|t_a - t_b|``, if that is ``<= slop`` (inclusive bound; equal stamps always
  pair, also with ``slop = 0``). The pair is returned at once from :meth:`ApproxTimePairer.add`;
  nothing is called back, so no user code ever runs under the lock.
* When a pair forms, frames older than the paired frame on each stream can no longer be part of
  a newer pair and are dropped (reason ``superseded``); frames newer than it stay queued.
* A frame whose stamp is not newer than the last pair on its stream arrived too late to be
  paired (reason ``late``); pairs therefore come out with strictly increasing stamps.
* Stamps jumping backwards by more than ``reset_after`` seconds (a rosbag looping, a simulator
  restart) reset the pairer: both queues are cleared (reason ``time_reset``) and pairing starts
  again from the new time base, instead of dropping every frame as ``late`` forever.
* A second frame with a stamp already queued on the same stream replaces the queued one (reason
  ``duplicate``).

Every dropped frame is counted by reason, per stream (:meth:`ApproxTimePairer.stats`). With
``record_drops=True`` the pairer also remembers which frames it dropped (stream, stamp, reason),
read with :meth:`ApproxTimePairer.take_dropped`: tools that replay a recording use this to say
why a given stamp never came out; the node does not (it only counts).

Compared with message_filters' Python ``ApproximateTimeSynchronizer`` (ros2/message_filters,
``src/message_filters/__init__.py``): both match a new message greedily to the closest stamp on
the other topic and emit immediately, but message_filters calls the user callback while holding
its lock (a slow callback stalls every subscription feeding the synchronizer, and an exception
in the callback leaves the lock held), deletes only the two matched messages (older unmatched
ones stay queued and can still be paired later, producing pairs out of stamp order), uses a
strict ``< slop`` bound, has no notion of stamps jumping backwards, and counts nothing. The C++
``ApproximateTime`` policy finds the pair set with the smallest spread but must wait for a later
message on every topic before it can decide, which adds up to one frame period of latency; this
class trades that optimality for latency, which is the better choice for a robot that only wants
the newest fused frame. With ``slop`` below half the faster camera's frame period both policies
choose the same pairs.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

DROP_REASONS = ('superseded', 'queue_overflow', 'late', 'time_reset', 'duplicate',
                'cleared')


@dataclass(frozen=True)
class StampedPair:
    """Two frames whose stamps (integer nanoseconds) differ by at most the slop."""

    items: Tuple[Any, Any]
    stamps: Tuple[int, int]


class ApproxTimePairer:
    """Pairs frames of two streams by stamp; see the module docstring for the policy.

    ``slop`` (seconds, >= 0): the largest stamp difference of a pair. ``queue_size`` (>= 1):
    frames kept per stream while waiting for a partner. ``reset_after`` (seconds, > 0): a stamp
    this much older than the newest seen on its stream resets the pairer. ``names`` label the two
    streams in :meth:`stats`.
    """

    def __init__(self, slop: float, queue_size: int = 5, reset_after: float = 1.0,
                 names: Sequence[str] = ('a', 'b'), record_drops: bool = False):
        if len(names) != 2:
            raise ValueError(f'exactly two stream names are needed, got {list(names)}')
        self._names = tuple(str(n) for n in names)
        self._lock = threading.Lock()
        self._queues: List[List[Tuple[int, Any]]] = [[], []]  # (stamp_ns, item), sorted
        self._last_pair: List[Optional[int]] = [None, None]
        self._newest: List[Optional[int]] = [None, None]
        self._received = [0, 0]
        self._pairs = 0
        self._resets = 0
        self._drops: Dict[Tuple[int, str], int] = {}
        self._record = bool(record_drops)
        self._dropped: List[Tuple[int, int, str]] = []
        self._slop_ns = 0
        self._queue_size = 1
        self._reset_ns = 1
        self.configure(slop=slop, queue_size=queue_size, reset_after=reset_after)

    @property
    def names(self) -> Tuple[str, str]:
        """The two stream names."""
        return self._names

    def configure(self, slop: Optional[float] = None, queue_size: Optional[int] = None,
                  reset_after: Optional[float] = None) -> None:
        """Change slop, queue size or reset threshold (thread-safe; queues are trimmed)."""
        if slop is not None and not slop >= 0.0:
            raise ValueError(f'slop must be >= 0 seconds, got {slop}')
        if queue_size is not None and int(queue_size) < 1:
            raise ValueError(f'queue_size must be >= 1, got {queue_size}')
        if reset_after is not None and not reset_after > 0.0:
            raise ValueError(f'reset_after must be > 0 seconds, got {reset_after}')
        with self._lock:
            if slop is not None:
                self._slop_ns = int(round(slop * 1e9))
            if reset_after is not None:
                self._reset_ns = int(round(reset_after * 1e9))
            if queue_size is not None:
                self._queue_size = int(queue_size)
                for s in (0, 1):
                    self._trim(s)

    def add(self, stream: int, stamp_ns: int, item: Any) -> Optional[StampedPair]:
        """Add a frame of ``stream`` (0 or 1) stamped ``stamp_ns``; return the pair if one formed.

        The returned pair's ``items`` are ordered (stream 0, stream 1).
        """
        if stream not in (0, 1):
            raise ValueError(f'stream must be 0 or 1, got {stream!r}')
        stamp_ns = int(stamp_ns)
        other = 1 - stream
        with self._lock:
            self._received[stream] += 1
            newest = self._newest[stream]
            if newest is not None and stamp_ns < newest - self._reset_ns:
                self._reset()
            if self._newest[stream] is None or stamp_ns > self._newest[stream]:
                self._newest[stream] = stamp_ns
            last = self._last_pair[stream]
            if last is not None and stamp_ns <= last:
                self._count(stream, 'late', stamps=(stamp_ns,))
                return None
            queue = self._queues[stream]
            i = bisect.bisect_left(queue, stamp_ns, key=lambda e: e[0])
            if i < len(queue) and queue[i][0] == stamp_ns:
                self._count(stream, 'duplicate', stamps=(stamp_ns,))
                queue[i] = (stamp_ns, item)
            else:
                queue.insert(i, (stamp_ns, item))
            j = self._closest(other, stamp_ns)
            if j is None:
                self._trim(stream)
                return None
            partner_stamp, partner = self._queues[other][j]
            # Drop the matched frames and everything older on both streams.
            self._drop_through(stream, stamp_ns)
            self._drop_through(other, partner_stamp)
            self._last_pair[stream] = stamp_ns
            self._last_pair[other] = partner_stamp
            self._pairs += 1
            if stream == 0:
                return StampedPair((item, partner), (stamp_ns, partner_stamp))
            return StampedPair((partner, item), (partner_stamp, stamp_ns))

    def reset(self, reason: str = 'time_reset') -> None:
        """Forget all queued frames and the last pair (queued frames counted under ``reason``).

        The node calls ``reset('cleared')`` when it is deactivated.
        """
        with self._lock:
            self._reset(reason)

    def stats(self) -> Dict[str, Any]:
        """Snapshot: received per stream, pairs, resets, queued per stream, drops by reason.

        ``drops`` maps ``'<stream name>.<reason>'`` to a count (only reasons that occurred).
        """
        with self._lock:
            return {
                'received': {self._names[s]: self._received[s] for s in (0, 1)},
                'pairs': self._pairs,
                'resets': self._resets,
                'queued': {self._names[s]: len(self._queues[s]) for s in (0, 1)},
                'drops': {f'{self._names[s]}.{r}': n for (s, r), n in sorted(self._drops.items())},
            }

    def take_dropped(self) -> List[Tuple[int, int, str]]:
        """``(stream, stamp_ns, reason)`` of each frame dropped since the last call.

        Empty unless the pairer was made with ``record_drops=True``. A ``duplicate`` entry names
        the stamp whose earlier frame was replaced.
        """
        with self._lock:
            out, self._dropped = self._dropped, []
            return out

    # -- internals, called with the lock held ------------------------------------------------

    def _count(self, stream: int, reason: str, n: Optional[int] = None,
               stamps: Sequence[int] = ()) -> None:
        n = len(stamps) if n is None else n
        if n > 0:
            key = (stream, reason)
            self._drops[key] = self._drops.get(key, 0) + n
            if self._record:
                self._dropped += [(stream, int(t), reason) for t in stamps]

    def _closest(self, stream: int, stamp_ns: int) -> Optional[int]:
        """Index of the queued frame closest to ``stamp_ns`` within the slop (ties: newer)."""
        queue = self._queues[stream]
        if not queue:
            return None
        i = bisect.bisect_left(queue, stamp_ns, key=lambda e: e[0])
        best, best_dt = None, None
        for k in (i - 1, i):
            if 0 <= k < len(queue):
                dt = abs(queue[k][0] - stamp_ns)
                if dt <= self._slop_ns and (best_dt is None or dt <= best_dt):
                    best, best_dt = k, dt
        return best

    def _drop_through(self, stream: int, stamp_ns: int) -> None:
        """Remove the frame stamped ``stamp_ns`` and count every older one as superseded."""
        queue = self._queues[stream]
        i = bisect.bisect_right(queue, stamp_ns, key=lambda e: e[0])
        self._count(stream, 'superseded', stamps=[e[0] for e in queue[:max(i - 1, 0)]])
        del queue[:i]

    def _trim(self, stream: int) -> None:
        queue = self._queues[stream]
        extra = len(queue) - self._queue_size
        if extra > 0:
            self._count(stream, 'queue_overflow', stamps=[e[0] for e in queue[:extra]])
            del queue[:extra]

    def _reset(self, reason: str = 'time_reset') -> None:
        for s in (0, 1):
            self._count(s, reason, stamps=[e[0] for e in self._queues[s]])
            self._queues[s].clear()
            self._last_pair[s] = None
            self._newest[s] = None
        self._resets += 1
