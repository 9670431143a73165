"""What the ``ssvif-eval`` commands share: errors, image folders by stem, checked reads, reports.

Every error a user can cause is an :class:`EvalError` (one line, exit status 2).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
import sys
from typing import Dict, Sequence

import numpy as np

from ssvif_ros import dataset_paths, imaging
from ssvif_ros import progress as _progress


class EvalError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def nothing_scored(problems: Sequence[str]) -> EvalError:
    """The error of a run in which no image could be scored (exit 2, not an n/a table)."""
    first = f'; first: {problems[0]}' if problems else ''
    return EvalError(f'no image could be scored ({len(problems)} problems{first})')


def check_out_folder(out: str) -> None:
    """EvalError when ``out`` exists and is not a folder (checked before any work)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise EvalError(f'--out {p} is an existing file, not a folder: give a folder '
                        '(it is created when missing)')


def list_files(folder: str, what: str, extensions: Sequence[str], kind: str) -> Dict[str, Path]:
    """Map stem -> path of ``folder``'s files with ``extensions`` (error if missing or empty)."""
    d = Path(folder)
    if not d.is_dir():
        raise EvalError(f'{what} folder not found: {d}')
    files, _ = dataset_paths.files_by_stem(d, extensions)  # x.png before x.jpg: first wins
    if not files:
        raise EvalError(f'{what} folder has no {kind}: {d}')
    return files


def list_images(folder: str, what: str) -> Dict[str, Path]:
    """Map stem -> image path for the image files of ``folder`` (error if missing or empty)."""
    return list_files(folder, what, imaging.IMAGE_EXTENSIONS,
                      f'images ({", ".join(imaging.IMAGE_EXTENSIONS)})')


def read_checked(path: Path, eight_bit: bool = False) -> np.ndarray:
    """Read an image; EvalError naming it when unreadable (or, with ``eight_bit``, not 8-bit)."""
    try:
        img = imaging.read_image(path)
    except (OSError, ValueError) as e:
        raise EvalError(str(e)) from None
    if eight_bit and img.dtype != np.uint8:
        raise EvalError(f'fusion metrics expect 8-bit images (0..255), got {img.dtype}: {path} '
                        f'(save it as 8 bit with the normalization the fusion input used)')
    return img


def size_text(img: np.ndarray) -> str:
    """``WxH`` of an image."""
    return f'{img.shape[1]}x{img.shape[0]}'


def finite_mean(values: Sequence[float]) -> float:
    """Mean of the finite values (metrics that failed on an image are NaN); NaN if none."""
    ok = [v for v in values if math.isfinite(v)]
    return float(np.mean(ok)) if ok else float('nan')


def json_value(v):
    """``v`` for JSON: a non-finite float becomes None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def progress(total: int, quiet: bool):
    """The ``ssvif-eval`` progress bar (off with ``quiet`` or when stderr is not a terminal)."""
    return _progress.bar(total=total, desc='ssvif-eval', unit='img', quiet=quiet)


def class_ids(img: np.ndarray, path: Path) -> np.ndarray:
    """The H x W class ids of a class-id image (a grey image saved as RGB is accepted)."""
    if img.ndim == 3:
        if not (np.array_equal(img[:, :, 0], img[:, :, 1])
                and np.array_equal(img[:, :, 0], img[:, :, 2])):
            raise EvalError(f'expected a single-channel class-id image, got a colour image: '
                            f'{path}')
        img = img[:, :, 0]
    return img


def write_report(out_dir, name: str, text: str, doc: Dict, problems: Sequence[str]) -> int:
    """Write ``name.md`` and ``name.json`` into ``out_dir``, print the text and the problems."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{name}.md').write_text(text, encoding='utf-8')
    (out / f'{name}.json').write_text(json.dumps(doc, indent=2), encoding='utf-8')
    for p in problems:
        print(f'warning: {p}', file=sys.stderr)
    print(text)
    print(f'wrote {out / (name + ".md")} and {name}.json')
    return 0


def json_tree(x):
    """:func:`json_value` applied through nested dicts."""
    if isinstance(x, dict):
        return {k: json_tree(v) for k, v in x.items()}
    return json_value(x)
