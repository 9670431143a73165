"""A training run's logs: ``steps.csv``, ``epochs.csv`` and TensorBoard under ``tb/`` (rank 0).

On resume the logs may run past ``last.pt`` (steps of the killed epoch, or its epoch row when the
kill hit after the save): :meth:`RunLog.open` cuts ``steps.csv`` back to the checkpoint's global
step and rewrites ``epochs.csv`` from the checkpoint's history, so the logs hold exactly what
``last.pt`` holds.

A failed write (a full disk, an unwritable file) raises TrainingError naming the file.
"""
from __future__ import annotations

from contextlib import contextmanager
import csv
import io
import math
import os
import threading
from typing import Dict, List

from ssvif_train.checkpoints import TrainingError, write_atomic

STEP_FIELDS = ['global_step', 'epoch', 'stage', 'loss_total', 'loss_fusion', 'int', 'grad',
               'ssim', 'color', 'loss_csc', 'ce_a', 'dice_a', 'ce_b', 'dice_b', 'loss_sup',
               'sup_ce_a', 'sup_dice_a', 'sup_ce_b', 'sup_dice_b', 'csc_ramp', 'omega_csc',
               'g_a', 'g_b', 'r_a', 'r_b', 'alpha_cf', 'cos_phi', 'lr', 'ssim_ir', 'ssim_vis',
               'loss_rec', 'rec_1', 'rec_2', 'rec_3', 'seg_ce', 'seg_dice', 'skipped']
EPOCH_FIELDS = ['epoch', 'stage', 'train_fusion', 'train_csc', 'val_fusion', 'omega_csc',
                'g_a', 'g_b', 'r_a', 'r_b', 'alpha_cf', 'cos_phi', 'seconds']


def _epoch_fields(row: Dict) -> List[str]:
    """Header of epochs.csv: the fixed fields, then the row's other keys sorted."""
    return EPOCH_FIELDS + sorted(k for k in row if k not in EPOCH_FIELDS)


@contextmanager
def _writing(path: str):
    """Turn an OSError while writing ``path`` into a TrainingError naming it."""
    try:
        yield
    except OSError as exc:
        why = exc.strerror or exc
        raise TrainingError(f'cannot write {exc.filename or path}: {why}') from None


def _quiet_tensorboard_thread_errors() -> None:
    """Keep the traceback of TensorBoard's writer thread off stderr; its error is reported once.

    The thread stores a failed write (a full disk) for the main thread, whose next call raises it
    (and :func:`_writing` makes it one line naming ``tb/``), and then re-raises it itself, which
    Python prints as "Exception in thread ...". Only that thread's OSError is silenced.
    """
    previous = threading.excepthook
    if getattr(previous, 'ssvif_tensorboard', False):
        return

    def hook(args):
        if not (issubclass(args.exc_type, OSError)
                and type(args.thread).__name__ == '_AsyncWriterThread'):
            previous(args)
    hook.ssvif_tensorboard = True
    threading.excepthook = hook


class RunLog:
    """Step and epoch logs of one run; every method is a no-op when ``enabled`` is False."""

    def __init__(self, out_dir: str, enabled: bool = True):
        self.out_dir = out_dir
        self.enabled = enabled
        self.writer = None
        self._step_csv = None
        self._epoch_csv = None

    def open(self, global_step: int, history: List[Dict]) -> None:
        """Open the logs: fresh at step 0, else continued from a checkpoint's step and history."""
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        if global_step:
            self._cut_step_log(global_step)
            self._rewrite_epoch_log(history)
        tb = os.path.join(self.out_dir, 'tb')
        _quiet_tensorboard_thread_errors()
        with _writing(tb):
            self.writer = SummaryWriter(tb, purge_step=global_step if global_step else None)
        mode = 'a' if global_step else 'w'
        for attr, name in (('_step_csv', 'steps.csv'), ('_epoch_csv', 'epochs.csv')):
            path = os.path.join(self.out_dir, name)
            with _writing(path):
                setattr(self, attr, open(path, mode, newline='', encoding='utf-8'))

    def _cut_step_log(self, global_step: int) -> None:
        """Keep the rows of steps.csv up to ``global_step`` (and no torn line)."""
        path = os.path.join(self.out_dir, 'steps.csv')
        if not os.path.isfile(path):
            return
        try:
            with open(path, newline='', encoding='utf-8') as f:
                lines = f.readlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise TrainingError(f'cannot read {path}: {getattr(exc, "strerror", None) or exc}') \
                from None
        keep = lines[:1]
        for line in lines[1:]:
            head = line.split(',', 1)[0]
            if line.endswith('\n') and head.isdigit() and int(head) <= global_step:
                keep.append(line)
        write_atomic(path, ''.join(keep))

    def _rewrite_epoch_log(self, history: List[Dict]) -> None:
        """epochs.csv = the checkpoint's history, one row per completed epoch."""
        buf = io.StringIO(newline='')
        if history:
            w = csv.DictWriter(buf, _epoch_fields(history[0]), extrasaction='ignore')
            w.writeheader()
            w.writerows(history)
        write_atomic(os.path.join(self.out_dir, 'epochs.csv'), buf.getvalue())

    def step(self, global_step: int, row: Dict) -> None:
        """Append one step row (``row`` holds ``global_step``, ``epoch``, ``stage``, ``lr``...)."""
        if not self.enabled:
            return
        w = csv.DictWriter(self._step_csv, STEP_FIELDS, extrasaction='ignore')
        with _writing(self._step_csv.name):
            if self._step_csv.tell() == 0:
                w.writeheader()
            w.writerow({k: row.get(k, '') for k in STEP_FIELDS})
            self._step_csv.flush()
        with _writing(os.path.join(self.out_dir, 'tb')):
            for k, v in row.items():
                if k not in ('global_step', 'epoch') and isinstance(v, (int, float)) \
                        and math.isfinite(v):
                    self.writer.add_scalar(f'step/{k}', v, global_step)

    def epoch(self, epoch: int, row: Dict) -> None:
        """Append one epoch row (its keys beyond :data:`EPOCH_FIELDS` sorted into the header)."""
        if not self.enabled:
            return
        w = csv.DictWriter(self._epoch_csv, _epoch_fields(row), extrasaction='ignore')
        with _writing(self._epoch_csv.name):
            if self._epoch_csv.tell() == 0:
                w.writeheader()
            w.writerow(row)
            self._epoch_csv.flush()
        with _writing(os.path.join(self.out_dir, 'tb')):
            for k, v in row.items():
                if k != 'epoch' and isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f'epoch/{k}', v, epoch)
            self.writer.flush()

    def close(self) -> None:
        """Close the files and the TensorBoard writer (safe to call twice).

        Closing never raises: it runs while an error is on its way out, and every row that
        counts was flushed (or reported) when it was written.
        """
        for f in (self.writer, self._step_csv, self._epoch_csv):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self.writer = self._step_csv = self._epoch_csv = None
