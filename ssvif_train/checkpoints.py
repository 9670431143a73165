"""A training run's folder: what it holds, how it is prepared, and its checkpoint files.

A run folder holds :data:`RUN_FILES` and :data:`RUN_DIRS`; any of them means the folder holds a
run (refused without ``--resume`` or ``--overwrite``, and removed by ``--overwrite`` once the new
run's data and model are checked, :func:`remove_run`). Nothing else in the folder is touched.
While a trainer owns the folder it holds an exclusive ``flock`` on the folder itself
(:class:`RunLock`): a second trainer there is refused, and the kernel drops the lock when its
owner dies, so a killed run never blocks its ``--resume``.

Checkpoints are written atomically (temp file + rename); ``best.pt`` is a copy of ``last.pt``
made right after it, so a kill between the two can only leave ``best.pt`` one epoch stale, which
:func:`repair_best` fixes on resume.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import json
import logging
import os
import re
import shutil

import torch

from ssvif_train.models.registry import torch_load_checked

log = logging.getLogger('ssvif_train')

CHECKPOINT_FORMAT = 'ssvif-train/1'
RUN_FILES = ('last.pt', 'best.pt', 'steps.csv', 'epochs.csv', 'config.json', 'dataset.txt',
             'ranks.json')
RUN_DIRS = ('tb',)


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says why."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class RunLock:
    """An exclusive ``flock`` on a run folder, held while a trainer writes into it.

    The lock is on the folder's own file descriptor, so no lock file is left in the run; the
    kernel releases it when the process ends, however it ends.
    """

    def __init__(self, out_dir: str):
        self.fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            self.fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise TrainingError(f'run folder {out_dir} is in use by another ssvif-train '
                                    'process (wait for it to end, or use another --out)') from None
            raise TrainingError(f'cannot lock run folder {out_dir}: '
                                f'{exc.strerror or exc}') from None

    def release(self) -> None:
        """Drop the lock (safe to call twice)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self.release()


def prepare_run_dir(out_dir: str, resume: bool, overwrite: bool) -> RunLock:
    """Create and lock ``out_dir``; refuse one holding a run (unless resume/overwrite).

    Returns the folder's :class:`RunLock`. Removes temp files of interrupted saves; the files of
    an earlier run stay until :func:`remove_run` (``--overwrite``, after the new run's checks).
    Raises TrainingError naming the folder and the reason.
    """
    if resume and overwrite:
        raise TrainingError('--resume and --overwrite exclude each other')
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise TrainingError(f'--out {out_dir} is an existing file, not a folder')
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f'cannot create run folder {out_dir}: {exc.strerror or exc}') from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise TrainingError(f'run folder {out_dir} is not writable')
    lock = RunLock(out_dir)   # before the clean-up: temp files may be a running save's
    try:
        _check_run_dir(out_dir, resume, overwrite)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_run_dir(out_dir: str, resume: bool, overwrite: bool) -> None:
    # Temporary files of saves that a kill interrupted (one per kill, as large as a checkpoint).
    for name in RUN_FILES:
        for tmp in glob.glob(os.path.join(glob.escape(out_dir), f'.{name}.tmp*')):
            try:
                os.remove(tmp)
            except OSError:
                pass
    held = run_files(out_dir)
    if resume:
        last = os.path.join(out_dir, 'last.pt')
        if not os.path.isfile(last):
            why = (' (the run stopped before its first epoch ended; start it again with '
                   '--overwrite)' if held else '')
            raise TrainingError(f'--resume: no checkpoint at {last}{why}')
        return
    if held and not overwrite:
        raise TrainingError(f'run folder {out_dir} already holds a run ({", ".join(held)}); '
                            'continue it with --resume, replace it with --overwrite, or use '
                            'another --out')


def run_files(out_dir: str) -> list:
    """The names of :data:`RUN_FILES` and :data:`RUN_DIRS` present in ``out_dir``."""
    return [n for n in RUN_FILES + RUN_DIRS if os.path.lexists(os.path.join(out_dir, n))]


def remove_run(out_dir: str) -> None:
    """``--overwrite``: remove the earlier run's files (:data:`RUN_FILES`, ``tb/``), only them."""
    for name in run_files(out_dir):
        path = os.path.join(out_dir, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError as exc:
            raise TrainingError(f'--overwrite: cannot remove {path}: '
                                f'{exc.strerror or exc}') from None


def is_run_file(path: str) -> bool:
    """True when ``path`` is one of the files of a run folder (a run's checkpoint, log...).

    Tools that write beside a run (ssvif-calibrate) refuse such a path.
    """
    folder, name = os.path.split(os.path.abspath(path))
    return name in RUN_FILES and bool(run_files(folder))


def write_run_info(out_dir: str, cfg, summary: str, n_train: int, n_val: int) -> None:
    """Write ``config.json`` and ``dataset.txt`` atomically; TrainingError naming the file."""
    for name, text in (('config.json', json.dumps(cfg.to_dict(), indent=2)),
                       ('dataset.txt', f'{summary}\ntrain {n_train} val {n_val}\n')):
        write_atomic(os.path.join(out_dir, name), text)


def check_same_split(out_dir: str, n_train: int, n_val: int) -> None:
    """``--resume``: the data must split as the run's did (``dataset.txt``); else TrainingError.

    The data paths may change on resume (a moved dataset), other pairs may not.
    """
    path = os.path.join(out_dir, 'dataset.txt')
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return  # no record to compare with
    m = re.fullmatch(r'train (\d+) val (\d+)', lines[-1]) if lines else None
    if m and (int(m[1]), int(m[2])) != (n_train, n_val):
        raise TrainingError(f'--resume: the data gives {n_train} training and {n_val} validation '
                            f'pairs, but the run was trained on {m[1]} and {m[2]} ({path}); '
                            'resume with the data it was trained on')


def read_checkpoint(path: str) -> dict:
    """Load a training checkpoint for --resume; TrainingError naming the file and the reason."""
    best = os.path.join(os.path.dirname(path), 'best.pt')
    hint = (f'; {best} may still be intact: copy it to {path} to resume from the best epoch'
            if os.path.isfile(best) else '')
    try:
        ckpt = torch_load_checked(path)
    except ValueError as exc:
        raise TrainingError(f'--resume: {exc}{hint}') from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT:
        raise TrainingError(f'--resume: {path} is not a training checkpoint of this version')
    return ckpt


def read_init_weights(path: str) -> dict:
    """The weight records of ``train.init``: a training checkpoint or a model's ``model.pt``.

    TrainingError naming the file and the reason when it cannot be read or holds no fusion
    network.
    """
    try:
        ckpt = torch_load_checked(path)
    except ValueError as exc:
        raise TrainingError(f'train.init: {exc}') from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('fusion'), dict) \
            or 'state_dict' not in ckpt['fusion']:
        raise TrainingError(f'train.init: {path} holds no fusion network (expected a training '
                            'checkpoint or a model.pt written by ssvif-export --copy-checkpoint)')
    return ckpt


def checkpoint_epoch(path: str) -> int:
    """The completed epoch recorded in a training checkpoint."""
    ckpt = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    return ckpt['state']['epoch']


def repair_best(out_dir: str, best_epoch: int, epoch: int) -> None:
    """Make best.pt the checkpoint of ``best_epoch`` after a kill between the two saves.

    best.pt is a copy of last.pt written right after it, so it can only be stale when the
    best epoch is the last completed one (``epoch``).
    """
    if not best_epoch or best_epoch != epoch:
        return
    last = os.path.join(out_dir, 'last.pt')
    best = os.path.join(out_dir, 'best.pt')
    try:
        ok = checkpoint_epoch(best) == best_epoch
    except Exception:  # noqa: BLE001 - missing or damaged: rewrite it
        ok = False
    if not ok:
        log.info('best.pt is not the checkpoint of the best epoch %d; restoring it from '
                 'last.pt', best_epoch)
        copy_atomic(last, best)


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and a rename.

    TrainingError naming ``path`` when the write fails (a full disk): ``path`` is unchanged and
    no temp file is left.
    """
    def write(tmp):
        with open(tmp, 'w', newline='', encoding='utf-8') as f:
            f.write(text)
    _replace_atomic(path, write, path)


def copy_atomic(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` via a temp file and rename; TrainingError when the write fails."""
    def write(tmp):
        with open(src, 'rb') as fi, open(tmp, 'wb') as fo:
            for chunk in iter(lambda: fi.read(1 << 20), b''):
                fo.write(chunk)
    _replace_atomic(dst, write, f'checkpoint {dst}')


def _replace_atomic(path: str, write, what: str) -> None:
    """``write(tmp)`` beside ``path``, then rename over it; TrainingError naming ``what``."""
    tmp = os.path.join(os.path.dirname(path) or '.', f'.{os.path.basename(path)}.tmp{os.getpid()}')
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise TrainingError(f'cannot write {what}: {exc.strerror or exc}') from None
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)
