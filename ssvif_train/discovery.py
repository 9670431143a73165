"""Finding visible/thermal pairs on disk: layouts, pairing by stem, checks, the split.

Layouts (``data.layout``; ``auto`` tries them in this order):

* MSRS: ``ROOT/[SPLIT/]{vi,ir}[/Segmentation_labels]``
* FMB: ``ROOT/[SPLIT/]{Visible,Infrared}[/Label]``
* folders: any two folders given as ``data.vi`` and ``data.ir`` (``--vi DIR --ir DIR``)

Pairs are matched by file stem (:mod:`ssvif_ros.dataset_paths`). Files present on one side only
are reported by name with counts, never skipped silently. A missing folder, an empty dataset, a
corrupt file or a pair of different sizes (unless ``data.resize`` says how to resolve it) raises
:class:`DatasetError` naming the path. Box files (YOLO ``<stem>.txt``) come from ``data.boxes``
or a ``boxes/`` folder beside the image folders.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import logging
import math
import os
import random
from typing import Dict, List, Optional, Tuple

from ssvif_ros import dataset_paths

log = logging.getLogger('ssvif_train.data')

LAYOUTS = {
    'msrs': ('vi', 'ir', 'Segmentation_labels'),
    'fmb': ('Visible', 'Infrared', 'Label'),
}


class DatasetError(ValueError):
    """The dataset cannot be used; the message names the folder or file at fault.

    A DataLoader worker's error reaches the main process as ``DatasetError(text)`` with the
    worker's whole traceback in ``text``; only its last line, the original message, is kept.
    """

    def __init__(self, message: str = ''):
        text = str(message)
        if text.startswith('Caught DatasetError in DataLoader worker'):
            lines = [ln for ln in text.strip().splitlines() if ln.strip()]
            text = lines[-1].split('DatasetError: ', 1)[-1]
        super().__init__(text)


@dataclass
class Pair:
    """One registered visible/thermal pair (and its label, when the dataset has one)."""

    stem: str
    vi: str
    ir: str
    label: Optional[str] = None
    boxes: Optional[str] = None
    label_ids: str = 'msrs'      # id convention of the pixel label: msrs | fmb


@dataclass
class DiscoveryReport:
    """What discovery found: pairs and the files it could not pair."""

    vi_dir: str
    ir_dir: str
    label_dir: Optional[str]
    boxes_dir: Optional[str] = None
    pairs: List[Pair] = field(default_factory=list)
    vi_only: List[str] = field(default_factory=list)
    ir_only: List[str] = field(default_factory=list)
    duplicates: List[str] = field(default_factory=list)
    extra: List['DiscoveryReport'] = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable counts with the unpaired names (first 10 of each)."""
        n_lab = sum(1 for p in self.pairs if p.label)
        n_box = sum(1 for p in self.pairs if p.boxes)
        lines = [f'{len(self.pairs)} pairs from {self.vi_dir} + {self.ir_dir} ({n_lab} with '
                 f'pixel labels, {n_box} with box files)']
        for name, items in (('visible without thermal', self.vi_only),
                            ('thermal without visible', self.ir_only),
                            ('ambiguous stems (several files)', self.duplicates)):
            if items:
                shown = ', '.join(items[:10]) + (' ...' if len(items) > 10 else '')
                lines.append(f'{len(items)} {name}: {shown}')
        lines += [f'extra: {e.summary()}' for e in self.extra]
        return '; '.join(lines)


def _images_by_stem(folder: str) -> Tuple[Dict[str, str], List[str]]:
    """:func:`ssvif_ros.dataset_paths.images_by_stem` with paths as ``folder``/name strings."""
    by_stem, dups = dataset_paths.images_by_stem(folder)
    return {s: os.path.join(folder, p.name) for s, p in by_stem.items()}, dups


def _resolve_dirs(root: str, layout: str, split: str, vi: str, ir: str):
    if vi or ir:
        if not (vi and ir):
            raise DatasetError('give both a visible folder (--vi) and a thermal folder (--ir)')
        return vi, ir, None, 'folders'
    if not root:
        raise DatasetError('no dataset given: pass --data DIR (MSRS/FMB layout) or --vi/--ir')
    if not os.path.isdir(root):
        raise DatasetError(f'dataset folder not found: {root}')
    candidates = [layout] if layout in LAYOUTS else list(LAYOUTS)
    for base in ([os.path.join(root, split)] if split else []) + [root]:
        for name in candidates:
            v, i, lab = (os.path.join(base, d) for d in LAYOUTS[name])
            if os.path.isdir(v) and os.path.isdir(i):
                return v, i, (lab if os.path.isdir(lab) else None), name
    want = ' or '.join(f'{a}/ + {b}/' for a, b, _ in (LAYOUTS[c] for c in candidates))
    raise DatasetError(f'{root} has no {want} folders (also looked in {root}/{split}/); '
                       'use --vi DIR --ir DIR for other layouts')


def discover_pairs(root: str = '', layout: str = 'auto', split: str = 'train', vi: str = '',
                   ir: str = '', max_pairs: int = 0, boxes: str = '') -> DiscoveryReport:
    """Find visible/thermal pairs by file stem and report what could not be paired.

    Box files come from ``boxes`` or a ``boxes/`` folder beside the visible folder.
    """
    vi_dir, ir_dir, label_dir, found_layout = _resolve_dirs(root, layout, split, vi, ir)
    for d in (vi_dir, ir_dir):
        if not os.path.isdir(d):
            raise DatasetError(f'image folder not found: {d}')
    if boxes and not os.path.isdir(boxes):
        raise DatasetError(f'box folder not found: {boxes}')
    beside = os.path.join(os.path.dirname(os.path.normpath(vi_dir)), 'boxes')
    boxes_dir = boxes or (beside if os.path.isdir(beside) else None)
    box_files = {}
    if boxes_dir:
        found, _ = dataset_paths.files_by_stem(boxes_dir, ('.txt',))
        box_files = {s: os.path.join(boxes_dir, p.name) for s, p in found.items()}
    vis, dv = _images_by_stem(vi_dir)
    irs, di = _images_by_stem(ir_dir)
    labels = _images_by_stem(label_dir)[0] if label_dir else {}
    rep = DiscoveryReport(vi_dir, ir_dir, label_dir, boxes_dir)
    rep.duplicates = [os.path.join(vi_dir, n) for n in dv] + [os.path.join(ir_dir, n) for n in di]
    rep.vi_only = sorted(os.path.basename(vis[s]) for s in set(vis) - set(irs))
    rep.ir_only = sorted(os.path.basename(irs[s]) for s in set(irs) - set(vis))
    for stem in sorted(set(vis) & set(irs)):
        rep.pairs.append(Pair(stem, vis[stem], irs[stem], labels.get(stem), box_files.get(stem),
                              'fmb' if found_layout == 'fmb' else 'msrs'))
    if max_pairs > 0:
        rep.pairs = rep.pairs[:max_pairs]
    if not rep.pairs:
        raise DatasetError(f'no image pairs with matching names in {vi_dir} and {ir_dir} '
                           f'({len(vis)} visible, {len(irs)} thermal files)')
    if rep.vi_only or rep.ir_only or rep.duplicates:
        log.warning('unpaired files: %s', rep.summary())
    return rep


def split_pairs(pairs: List[Pair], val_fraction: float, seed: int):
    """Deterministic train/val split (9:1 by default) from a seeded shuffle of the stems."""
    order = sorted(pairs, key=lambda p: p.stem)
    random.Random(seed).shuffle(order)
    n_val = int(math.ceil(len(order) * val_fraction)) if val_fraction > 0 else 0
    if n_val >= len(order):
        n_val = len(order) - 1
    val = sorted(order[:n_val], key=lambda p: p.stem)
    train = sorted(order[n_val:], key=lambda p: p.stem)
    return train, val


def check_pairs(pairs: List[Pair], resize: str = 'error') -> None:
    """Read every header; raise DatasetError for an unreadable file or a size mismatch."""
    from PIL import Image
    bad = []
    for p in pairs:
        sizes = []
        for path in (p.vi, p.ir):
            try:
                with Image.open(path) as im:
                    sizes.append(im.size)
            except Exception as exc:  # noqa: BLE001 - any decoder error means unreadable
                bad.append(f'{path} ({exc.__class__.__name__})')
        if len(sizes) == 2 and sizes[0] != sizes[1] and resize == 'error':
            raise DatasetError(
                f'pair {p.stem!r} differs in size: {p.vi} is {sizes[0][0]}x{sizes[0][1]}, '
                f'{p.ir} is {sizes[1][0]}x{sizes[1][1]} (set data.resize to ir_to_vi or '
                'vi_to_ir to resize)')
    if bad:
        raise DatasetError(f'{len(bad)} unreadable image file(s): ' + '; '.join(bad[:10]))
