"""Paired visible/thermal datasets: discovery, checks, deterministic split, crops and flips.

Layouts (``data.layout``; ``auto`` tries them in this order):

* MSRS: ``ROOT/[SPLIT/]{vi,ir}[/Segmentation_labels]``
* FMB: ``ROOT/[SPLIT/]{Visible,Infrared}[/Label]``
* folders: any two folders given as ``data.vi`` and ``data.ir`` (``--vi DIR --ir DIR``)

Pairs are matched by file stem. Files present on one side only are reported by name with counts,
never skipped silently. A missing folder, an empty dataset, a corrupt file or a pair of different
sizes (unless ``data.resize`` says how to resolve it) raises :class:`DatasetError` naming the path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import logging
import math
import os
import random
from typing import Dict, List, Optional, Tuple

import numpy as np

from ssvif_ros import imaging

log = logging.getLogger('ssvif_train.data')

LAYOUTS = {
    'msrs': ('vi', 'ir', 'Segmentation_labels'),
    'fmb': ('Visible', 'Infrared', 'Label'),
}


class DatasetError(ValueError):
    """The dataset cannot be used; the message names the folder or file at fault."""


@dataclass
class Pair:
    """One registered visible/thermal pair (and its label, when the dataset has one)."""

    stem: str
    vi: str
    ir: str
    label: Optional[str] = None


@dataclass
class DiscoveryReport:
    """What discovery found: pairs and the files it could not pair."""

    vi_dir: str
    ir_dir: str
    label_dir: Optional[str]
    pairs: List[Pair] = field(default_factory=list)
    vi_only: List[str] = field(default_factory=list)
    ir_only: List[str] = field(default_factory=list)
    duplicates: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable counts with the unpaired names (first 10 of each)."""
        lines = [f'{len(self.pairs)} pairs from {self.vi_dir} + {self.ir_dir}']
        for name, items in (('visible without thermal', self.vi_only),
                            ('thermal without visible', self.ir_only),
                            ('ambiguous stems (several files)', self.duplicates)):
            if items:
                shown = ', '.join(items[:10]) + (' ...' if len(items) > 10 else '')
                lines.append(f'{len(items)} {name}: {shown}')
        return '; '.join(lines)


def _images_by_stem(folder: str) -> Tuple[Dict[str, str], List[str]]:
    by_stem: Dict[str, str] = {}
    dups: List[str] = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        stem, ext = os.path.splitext(name)
        if ext.lower() not in imaging.IMAGE_EXTENSIONS or not os.path.isfile(path):
            continue
        if stem in by_stem:
            dups.append(name)
            continue
        by_stem[stem] = path
    return by_stem, dups


def _resolve_dirs(root: str, layout: str, split: str, vi: str, ir: str):
    if vi or ir:
        if not (vi and ir):
            raise DatasetError('give both a visible folder (--vi) and a thermal folder (--ir)')
        return vi, ir, None
    if not root:
        raise DatasetError('no dataset given: pass --data DIR (MSRS/FMB layout) or --vi/--ir')
    if not os.path.isdir(root):
        raise DatasetError(f'dataset folder not found: {root}')
    candidates = [layout] if layout in LAYOUTS else list(LAYOUTS)
    for base in ([os.path.join(root, split)] if split else []) + [root]:
        for name in candidates:
            v, i, lab = (os.path.join(base, d) for d in LAYOUTS[name])
            if os.path.isdir(v) and os.path.isdir(i):
                return v, i, (lab if os.path.isdir(lab) else None)
    want = ' or '.join(f'{a}/ + {b}/' for a, b, _ in (LAYOUTS[c] for c in candidates))
    raise DatasetError(f'{root} has no {want} folders (also looked in {root}/{split}/); '
                       'use --vi DIR --ir DIR for other layouts')


def discover_pairs(root: str = '', layout: str = 'auto', split: str = 'train', vi: str = '',
                   ir: str = '', max_pairs: int = 0) -> DiscoveryReport:
    """Find visible/thermal pairs by file stem and report what could not be paired."""
    vi_dir, ir_dir, label_dir = _resolve_dirs(root, layout, split, vi, ir)
    for d in (vi_dir, ir_dir):
        if not os.path.isdir(d):
            raise DatasetError(f'image folder not found: {d}')
    vis, dv = _images_by_stem(vi_dir)
    irs, di = _images_by_stem(ir_dir)
    labels = _images_by_stem(label_dir)[0] if label_dir else {}
    rep = DiscoveryReport(vi_dir, ir_dir, label_dir)
    rep.duplicates = [os.path.join(vi_dir, n) for n in dv] + [os.path.join(ir_dir, n) for n in di]
    rep.vi_only = sorted(os.path.basename(vis[s]) for s in set(vis) - set(irs))
    rep.ir_only = sorted(os.path.basename(irs[s]) for s in set(irs) - set(vis))
    for stem in sorted(set(vis) & set(irs)):
        rep.pairs.append(Pair(stem, vis[stem], irs[stem], labels.get(stem)))
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


class PairDataset:
    """Map-style dataset of float pairs ``(vis, ir)``, each a 3 x H x W float32 tensor in [0, 1].

    ``train=True``: random ``crop`` x ``crop`` crops and horizontal/vertical flips drawn from
    an RNG seeded by ``(seed, epoch, index)``, so an epoch is reproducible after a resume.
    ``train=False``: centre crop of ``crop`` (0 = whole image).
    """

    def __init__(self, pairs: List[Pair], crop: int, train: bool, seed: int = 0,
                 resize: str = 'error', norm: Optional[imaging.ThermalNorm] = None,
                 cache: bool = True):
        self.pairs = list(pairs)
        self.crop = int(crop)
        self.train = train
        self.seed = seed
        self.resize = resize
        self.norm = norm or imaging.ThermalNorm()
        self.epoch = 0
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = int(epoch)

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """Decoded raw pair (visible RGB, thermal mono) with sizes reconciled."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        p = self.pairs[index]
        try:
            vis = imaging.read_image(p.vi, mode='rgb')
        except (OSError, ValueError) as exc:
            raise DatasetError(str(exc)) from exc
        try:
            ir = imaging.read_image(p.ir, mode='gray')
        except (OSError, ValueError) as exc:
            raise DatasetError(str(exc)) from exc
        if vis.shape[:2] != ir.shape[:2]:
            if self.resize == 'ir_to_vi':
                ir = imaging.resize(ir, (vis.shape[1], vis.shape[0]))
            elif self.resize == 'vi_to_ir':
                vis = imaging.resize(vis, (ir.shape[1], ir.shape[0]))
            else:
                raise DatasetError(f'pair {p.stem!r}: {p.vi} is {vis.shape[1]}x{vis.shape[0]} '
                                   f'but {p.ir} is {ir.shape[1]}x{ir.shape[0]}')
        if self._cache is not None:
            self._cache[index] = (vis, ir)
        return vis, ir

    def __getitem__(self, index: int):
        import torch
        vis_raw, ir_raw = self.load(index)
        try:
            vis, ir = imaging.preprocess_pair(vis_raw, ir_raw, self.norm)  # H x W x 3 each
        except ValueError as exc:
            raise DatasetError(f'pair {self.pairs[index].stem!r}: {exc}') from exc
        h, w = vis.shape[:2]
        c = self.crop
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if c > 0 and (h < c or w < c):
                scale = c / min(h, w)
                size = (max(c, int(round(w * scale))), max(c, int(round(h * scale))))
                vis, ir = imaging.resize(vis, size), imaging.resize(ir, size)
                h, w = vis.shape[:2]
            if c > 0:
                y0 = int(rng.integers(0, h - c + 1))
                x0 = int(rng.integers(0, w - c + 1))
                vis, ir = vis[y0:y0 + c, x0:x0 + c], ir[y0:y0 + c, x0:x0 + c]
            if rng.random() < 0.5:
                vis, ir = vis[:, ::-1], ir[:, ::-1]
            if rng.random() < 0.5:
                vis, ir = vis[::-1], ir[::-1]
        elif c > 0 and h >= c and w >= c:
            y0, x0 = (h - c) // 2, (w - c) // 2
            vis, ir = vis[y0:y0 + c, x0:x0 + c], ir[y0:y0 + c, x0:x0 + c]
        vis_t = torch.from_numpy(np.ascontiguousarray(vis.transpose(2, 0, 1)))  # 3 x H x W
        ir_t = torch.from_numpy(np.ascontiguousarray(ir.transpose(2, 0, 1)))    # 3 x H x W
        return vis_t, ir_t


def build_datasets(cfg) -> Tuple[PairDataset, PairDataset, DiscoveryReport]:
    """Discover, check and split pairs per ``cfg.data``; return (train, val, report)."""
    d = cfg.data
    rep = discover_pairs(d.root, d.layout, d.split, d.vi, d.ir, d.max_pairs)
    check_pairs(rep.pairs, d.resize)
    train_pairs, val_pairs = split_pairs(rep.pairs, d.val_fraction, d.seed)
    norm = imaging.ThermalNorm(d.thermal_norm, d.thermal_lo, d.thermal_hi, d.thermal_p_lo,
                               d.thermal_p_hi)
    train = PairDataset(train_pairs, d.crop, True, d.seed, d.resize, norm, d.cache)
    val = PairDataset(val_pairs, d.val_crop, False, d.seed, d.resize, norm, d.cache)
    return train, val, rep
