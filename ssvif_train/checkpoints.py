"""A training run's folder: what it holds, how it is prepared, and its checkpoint files.

A run folder holds :data:`RUN_FILES` and :data:`RUN_DIRS`; any of them means the folder holds a
run (refused without ``--resume`` or ``--overwrite``, and removed by ``--overwrite``). Nothing else
in the folder is touched. Checkpoints are written atomically (temp file + rename); ``best.pt`` is
a copy of ``last.pt`` made right after it, so a kill between the two can only leave ``best.pt``
one epoch stale, which :func:`repair_best` fixes on resume.
"""
from __future__ import annotations

import glob
import json
import logging
import os
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


def prepare_run_dir(out_dir: str, resume: bool, overwrite: bool) -> None:
    """Create ``out_dir``, refuse one holding a run (unless resume/overwrite), clean temp files.

    ``overwrite`` removes the files of the earlier run (:data:`RUN_FILES`, ``tb/``) and nothing
    else. Raises TrainingError naming the folder and the reason.
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
    # Temporary files of saves that a kill interrupted (one per kill, as large as a checkpoint).
    for name in RUN_FILES:
        for tmp in glob.glob(os.path.join(glob.escape(out_dir), f'.{name}.tmp*')):
            try:
                os.remove(tmp)
            except OSError:
                pass
    held = [n for n in RUN_FILES + RUN_DIRS if os.path.exists(os.path.join(out_dir, n))]
    if resume:
        last = os.path.join(out_dir, 'last.pt')
        if not os.path.isfile(last):
            why = (' (the run stopped before its first epoch ended; start it again with '
                   '--overwrite)' if held else '')
            raise TrainingError(f'--resume: no checkpoint at {last}{why}')
        return
    if not held:
        return
    if not overwrite:
        raise TrainingError(f'run folder {out_dir} already holds a run ({", ".join(held)}); '
                            'continue it with --resume, replace it with --overwrite, or use '
                            'another --out')
    for name in held:
        path = os.path.join(out_dir, name)
        try:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError as exc:
            raise TrainingError(f'--overwrite: cannot remove {path}: '
                                f'{exc.strerror or exc}') from None


def write_run_info(out_dir: str, cfg, summary: str, n_train: int, n_val: int) -> None:
    """Write ``config.json`` and ``dataset.txt``; TrainingError when the folder refuses."""
    try:
        with open(os.path.join(out_dir, 'config.json'), 'w', encoding='utf-8') as f:
            json.dump(cfg.to_dict(), f, indent=2)
        with open(os.path.join(out_dir, 'dataset.txt'), 'w', encoding='utf-8') as f:
            f.write(summary + '\n')
            f.write(f'train {n_train} val {n_val}\n')
    except OSError as exc:
        raise TrainingError(f'cannot write to run folder {out_dir}: '
                            f'{exc.strerror or exc}') from None


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
    """Write ``text`` to ``path`` via a temp file in the same folder and a rename."""
    tmp = os.path.join(os.path.dirname(path) or '.', f'.{os.path.basename(path)}.tmp{os.getpid()}')
    with open(tmp, 'w', newline='', encoding='utf-8') as f:
        f.write(text)
    os.replace(tmp, path)


def copy_atomic(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` via a temp file and rename; TrainingError when the write fails."""
    tmp = os.path.join(os.path.dirname(dst) or '.', f'.{os.path.basename(dst)}.tmp{os.getpid()}')
    try:
        with open(src, 'rb') as fi, open(tmp, 'wb') as fo:
            for chunk in iter(lambda: fi.read(1 << 20), b''):
                fo.write(chunk)
        os.replace(tmp, dst)
    except OSError as exc:
        raise TrainingError(f'cannot write checkpoint {dst}: {exc.strerror or exc}') from None
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)
