"""Image pairs on disk: the shared data folder, image files by stem, visible/thermal pairs.

Every tool that reads a folder of images (training's dataset discovery, ``ssvif-eval``,
``ssvif-fuse``, ``ssvif-bench``, the demo, the pair publisher, ``ssvif-bag make``, the benches and
the tests) lists it with :func:`images_by_stem`, so "an image", "its stem" and "a pair" mean the
same everywhere: a file whose extension is one of :data:`ssvif_ros.imaging.IMAGE_EXTENSIONS`
(any case), keyed by its name without the extension; with two files of one stem (``x.png`` and
``x.jpg``) the first by sorted name wins and the others are reported. A visible and a thermal
image pair when their stems are equal.

The shared data (MSRS, VIFB, RoadScene samples; never copied into the repository) is found at
``$SSVIF_DATA`` or ``../shared/data`` beside the repository (:func:`shared_data_dir`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ssvif_ros import imaging

_REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The shared data root: ``$SSVIF_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get('SSVIF_DATA')
    if env:
        return Path(env)
    return _REPO.parent / 'shared' / 'data'


def files_by_stem(folder, extensions: Sequence[str]) -> Tuple[Dict[str, Path], List[str]]:
    """``({stem: path}, duplicates)`` of the files in ``folder`` with one of ``extensions``.

    Files are taken in sorted name order, extensions compared in lower case; ``duplicates``
    names further files whose stem was already taken. Raises FileNotFoundError naming the
    folder when it does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'image folder not found: {folder}')
    by_stem: Dict[str, Path] = {}
    dups: List[str] = []
    for name in sorted(os.listdir(folder)):
        path = folder / name
        stem, ext = os.path.splitext(name)
        if ext.lower() not in extensions or not path.is_file():
            continue
        if stem in by_stem:
            dups.append(name)
        else:
            by_stem[stem] = path
    return by_stem, dups


def images_by_stem(folder) -> Tuple[Dict[str, Path], List[str]]:
    """:func:`files_by_stem` of the image files (:data:`ssvif_ros.imaging.IMAGE_EXTENSIONS`)."""
    return files_by_stem(folder, imaging.IMAGE_EXTENSIONS)


def pairs_by_stem(vi_dir, ir_dir) -> Tuple[List[Tuple[str, Path, Path]], List[str], List[str]]:
    """``(pairs, vi_only, ir_only)``: ``(stem, vi, ir)`` sorted by stem, and unpaired stems.

    Raises FileNotFoundError naming a missing folder.
    """
    vis, _ = images_by_stem(vi_dir)
    irs, _ = images_by_stem(ir_dir)
    both = sorted(set(vis) & set(irs))
    return ([(s, vis[s], irs[s]) for s in both], sorted(set(vis) - set(irs)),
            sorted(set(irs) - set(vis)))


def list_pairs_in(vi_dir, ir_dir) -> List[Tuple[Path, Path]]:
    """``(vi, ir)`` image files of equal stem in two folders, sorted by stem.

    Raises FileNotFoundError naming the folder at fault, or both when no stem occurs in both.
    """
    pairs, _, _ = pairs_by_stem(vi_dir, ir_dir)
    if not pairs:
        raise FileNotFoundError(f'no image name occurs in both {vi_dir} and {ir_dir}')
    return [(vi, ir) for _, vi, ir in pairs]


def list_pairs(folder) -> List[Tuple[Path, Path]]:
    """``(vi, ir)`` file pairs of an MSRS-layout folder (``vi/``, ``ir/``), sorted by stem.

    Raises FileNotFoundError naming the folder when it does not exist, ``vi/`` or ``ir/`` is
    missing or no stem occurs in both.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'paired image folder {folder} '
                                + ('is not a folder' if folder.exists() else 'does not exist'))
    for d in (folder / 'vi', folder / 'ir'):
        if not d.is_dir():
            raise FileNotFoundError(f'paired image folder {folder} has no {d.name}/ subfolder')
    return list_pairs_in(folder / 'vi', folder / 'ir')


def load_pairs(folder, limit: Optional[int] = None) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Read up to ``limit`` pairs of an MSRS-layout folder.

    Each pair is (RGB uint8 H x W x 3, thermal H x W uint8/uint16) as stored.
    """
    return [(imaging.read_image(vi, 'rgb'), imaging.read_image(ir, 'gray'))
            for vi, ir in list_pairs(folder)[:limit]]
