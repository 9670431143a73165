"""The node's inference worker: a one-slot mailbox and the thread that fuses what it holds.

ROS-free: the node hands in callables for the outputs, so this module decodes and registers a
pair (:mod:`ssvif_ros.frames`), runs the backend, calls ``publish`` and times each stage into
:class:`ssvif_ros.node_stats.NodeStats`. A pair still waiting when a newer one forms is replaced
(the node counts it as ``inference_busy``), so the worker always fuses the newest pair and
memory stays bounded.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from ssvif_ros import frames, registration
from ssvif_ros.backends.base import OutputError
from ssvif_ros.node_stats import NodeStats


class Mailbox:
    """A one-slot mailbox: ``put`` replaces an unread item, ``get`` waits for one.

    The reader calls :meth:`task_done` after each item, so that :meth:`wait_idle` can wait for
    the item in hand (a lifecycle deactivation waits for the pair being fused).
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self._busy = False
        self._closed = False

    def put(self, item) -> bool:
        """Store ``item``; return True when it replaced an item nobody had taken yet."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify_all()
            return replaced

    def get(self, timeout: Optional[float] = None):
        """Take the item, waiting up to ``timeout`` s; None when closed or timed out."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            if self._closed or self._item is None:
                return None
            item, self._item = self._item, None
            self._busy = True
            return item

    def task_done(self) -> None:
        """The reader finished the item it took."""
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def clear(self) -> bool:
        """Drop an unread item; return True when there was one."""
        with self._cond:
            had, self._item = self._item is not None, None
            return had

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the reader holds no item; False when ``timeout`` s passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy, timeout)

    def close(self) -> None:
        """Wake the reader; further ``get`` calls return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class FusionWorker:
    """A thread fusing the pairs put into its mailbox.

    ``state()`` returns (config, backend, active) as the node holds them now (read once per
    pair, so a parameter change applies from the next pair); ``publish(fused, ids, header,
    cfg, backend)`` sends the outputs; ``drop(reason, text)`` and ``fail(reason, exc)`` report
    bad input and failures inside the node. ``death`` holds what ended the thread, if not
    :meth:`stop`.
    """

    def __init__(self, state: Callable, publish: Callable, drop: Callable, fail: Callable,
                 stats: NodeStats):
        self.mailbox = Mailbox()
        self.death: Optional[BaseException] = None
        self._state, self._publish, self._drop, self._fail = state, publish, drop, fail
        self._stats = stats
        self._registered = 0  # pairs registered, for alignment_check_every
        self._thread = threading.Thread(target=self._run, name='fusion_worker', daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def stop(self, timeout: float) -> None:
        """Close the mailbox and wait up to ``timeout`` s for the pair in hand."""
        self.mailbox.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                item = self.mailbox.get()
                if item is None:
                    return
                try:
                    self.process(*item)
                finally:
                    self.mailbox.task_done()
        except BaseException as exc:  # noqa: BLE001 - the node reports it and exits 1
            self.death = exc

    def process(self, pair, t_formed: float) -> None:
        """Decode, register, fuse and publish one pair, timing each stage."""
        cfg, backend, _ = self._state()
        if cfg is None or backend is None:
            return
        t0 = time.perf_counter()
        rgb_msg, thermal_msg = pair.items
        try:
            vis, ir = frames.prepare_pair(rgb_msg, thermal_msg, cfg,
                                          *frames.input_types(cfg))  # uint8 H x W x 3, H x W
        except frames.FrameError as exc:
            self._drop(exc.reason, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - e.g. MemoryError: skip the pair, go on
            self._fail('worker_error', exc)
            return
        t1 = time.perf_counter()
        try:
            fused, ids = backend.infer(vis, ir)  # H x W x 3 uint8, H x W uint8
        except OutputError as exc:  # NaN or class ids beyond the card: never published
            self._fail('bad_output', exc)
            return
        except Exception as exc:  # noqa: BLE001 - keep running, count and report
            self._fail('inference_error', exc)
            return
        t2 = time.perf_counter()
        if not self._state()[2]:
            return  # deactivated while this pair was fused: no output
        try:
            self._publish(fused, ids, rgb_msg.header, cfg, backend)
        except Exception as exc:  # noqa: BLE001 - e.g. context shut down during SIGINT
            self._fail('publish_error', exc)
            return
        t3 = time.perf_counter()
        self._stats.done(queue=(t0 - t_formed) * 1e3, decode=(t1 - t0) * 1e3,
                         inference=(t2 - t1) * 1e3, publish=(t3 - t2) * 1e3,
                         processing=(t3 - t0) * 1e3)
        every = cfg.alignment_check_every
        self._registered += 1
        if every and (self._registered - 1) % every == 0:
            try:
                self._stats.set_alignment(alignment_score(vis, ir, rgb_msg, thermal_msg, cfg))
            except Exception as exc:  # noqa: BLE001 - the pair is out; report, go on
                self._fail('worker_error', exc)


def alignment_score(vis, ir, rgb_msg, thermal_msg, cfg) -> Optional[float]:
    """:func:`registration.alignment_score` of a registered pair, over the warped thermal area.

    None when the pair holds too little structure to say.
    """
    mask = None
    out = (vis.shape[1], vis.shape[0])
    if not cfg.homography_identity:
        hom = frames.output_homography(cfg.homography, (rgb_msg.width, rgb_msg.height), out)
        mask = registration.valid_mask(tuple(hom), (thermal_msg.width, thermal_msg.height), out)
    return registration.alignment_score(vis, ir, mask)
