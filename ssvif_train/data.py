"""Paired visible/thermal datasets: discovery, checks, deterministic split, crops and flips.

Layouts (``data.layout``; ``auto`` tries them in this order):

* MSRS: ``ROOT/[SPLIT/]{vi,ir}[/Segmentation_labels]``
* FMB: ``ROOT/[SPLIT/]{Visible,Infrared}[/Label]``
* folders: any two folders given as ``data.vi`` and ``data.ir`` (``--vi DIR --ir DIR``)

Pairs are matched by file stem. Files present on one side only are reported by name with counts,
never skipped silently. A missing folder, an empty dataset, a corrupt file or a pair of different
sizes (unless ``data.resize`` says how to resolve it) raises :class:`DatasetError` naming the path.

Labels (used when ``model.classes`` is ``msrs``; see :mod:`ssvif_ros.labels`), per pair:

* pixel labels: ``Segmentation_labels/`` (MSRS ids) or ``Label/`` (FMB ids, mapped to MSRS ids);
* boxes: YOLO files in a ``boxes/`` folder beside the image folders (or ``data.boxes``), turned
  into weak pixel labels by :func:`ssvif_ros.labels.boxes_to_mask`;
* none: a pair without a label file is unlabelled (all pixels ignored by the supervised loss).

A pair uses its pixel label when it has one, else its box file (``data.labels`` can restrict
this to ``pixels``, ``boxes`` or ``none``). ``data.extra`` adds more dataset folders (same layouts,
their own labels) to the training split only, e.g. unlabelled RoadScene beside MSRS with boxes.
Every item is ``(vis, ir, label)``: label an H x W int64 tensor of class ids, 255 = ignore.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import logging
import math
import os
import random
from typing import Dict, List, Optional, Tuple

import numpy as np

from ssvif_ros import dataset_paths, imaging, labels as lbl

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


@dataclass
class LabelSpec:
    """How pairs' label files become semantic pixel labels (see :mod:`ssvif_ros.labels`)."""

    num_classes: int = 4
    use: str = 'auto'                                   # auto | pixels | boxes
    box_classes: Tuple[str, ...] = lbl.DEFAULT_BOX_CLASSES
    box_margin: int = 3
    box_core: float = 0.5
    box_z_hot: float = 2.0

    def class_map(self) -> Dict[int, int]:
        """YOLO index -> semantic id; DatasetError for an unknown name."""
        try:
            return lbl.box_class_map(list(self.box_classes), self.num_classes)
        except lbl.BoxError as exc:
            raise DatasetError(f'data.box_classes: {exc}') from None


class PairDataset:
    """Map-style dataset of float pairs with labels ``(vis, ir, label)``.

    ``vis``, ``ir``: 3 x H x W float32 tensors in [0, 1]; ``label``: H x W int64 class ids, 255
    where unlabelled (all 255 when ``labels`` is None or the pair has no label file).
    ``train=True``: random ``crop`` x ``crop`` crops and horizontal/vertical flips drawn from
    an RNG seeded by ``(seed, epoch, index)``, so an epoch is reproducible after a resume.
    ``train=False``: centre crop of ``crop`` (0 = whole image).
    ``object_crop``: share of training crops of labelled pairs placed so that a random labelled
    object (a box centre, or a pixel of an object class) lies inside: MSRS objects sit in a band
    around the horizon, and most uniform 160 x 160 crops of a 640 x 480 frame hold none.
    Box files are parsed when the dataset is built, so a malformed one stops before training.
    """

    def __init__(self, pairs: List[Pair], crop: int, train: bool, seed: int = 0,
                 resize: str = 'error', norm: Optional[imaging.ThermalNorm] = None,
                 cache: bool = True, labels: Optional[LabelSpec] = None,
                 object_crop: float = 0.0):
        self.pairs = list(pairs)
        self.object_crop = float(object_crop)
        self.crop = int(crop)
        self.train = train
        self.seed = seed
        self.resize = resize
        self.norm = norm or imaging.ThermalNorm()
        self.labels = labels
        self.epoch = 0
        self._cache: Dict[int, Tuple[np.ndarray, ...]] = {} if cache else None
        self.kinds: List[str] = []          # per pair: 'pixels', 'boxes' or 'none'
        self.boxes: List[Optional[List[lbl.Box]]] = []
        cmap = labels.class_map() if labels else {}
        for p in self.pairs:
            kind = 'none'
            if labels and p.label and labels.use in ('auto', 'pixels'):
                kind = 'pixels'
            elif labels and p.boxes and labels.use in ('auto', 'boxes'):
                kind = 'boxes'
            boxes = None
            if p.boxes and labels:
                try:
                    boxes = lbl.read_boxes(p.boxes, cmap)
                except (lbl.BoxError, OSError) as exc:
                    raise DatasetError(str(exc)) from None
            self.kinds.append(kind)
            self.boxes.append(boxes)

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = int(epoch)

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoded raw pair (visible RGB, thermal mono) with sizes reconciled, and its label."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        p = self.pairs[index]
        try:
            vis = imaging.read_image(p.vi, mode='rgb')
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
        label = self._label(index, vis, ir)
        if self._cache is not None:
            self._cache[index] = (vis, ir, label)
        return vis, ir, label

    def _label(self, index: int, vis: np.ndarray, ir: np.ndarray) -> np.ndarray:
        """H x W uint8 semantic label (255 = ignore) of the pair at ``vis``'s size."""
        h, w = vis.shape[:2]
        kind, p, spec = self.kinds[index], self.pairs[index], self.labels
        if kind == 'boxes':
            return lbl.boxes_to_mask(self.boxes[index], (w, h), ir, spec.box_margin,
                                     spec.box_core, spec.box_z_hot)
        if kind == 'pixels':
            try:
                raw = imaging.read_image(p.label, mode='gray')
            except (OSError, ValueError) as exc:
                raise DatasetError(str(exc)) from exc
            if raw.dtype != np.uint8:
                raise DatasetError(f'pixel label must be 8-bit class ids: {p.label}')
            if raw.shape != (h, w):
                raw = imaging.resize(raw, (w, h), nearest=True)
            return lbl.map_pixel_labels(raw, p.label_ids, spec.num_classes)
        return np.full((h, w), lbl.IGNORE, dtype=np.uint8)

    def _object_point(self, index: int, label: np.ndarray, rng) -> Optional[Tuple[int, int]]:
        """(x, y) of a random labelled object of the pair at ``label``'s size, or None."""
        h, w = label.shape[:2]
        if self.kinds[index] == 'boxes':
            boxes = self.boxes[index]
            if not boxes:
                return None
            b = boxes[int(rng.integers(len(boxes)))]
            return min(int(b.cx * w), w - 1), min(int(b.cy * h), h - 1)
        if self.kinds[index] == 'pixels':
            idx = np.flatnonzero((label > 0) & (label != lbl.IGNORE))
            if idx.size == 0:
                return None
            k = int(idx[int(rng.integers(idx.size))])
            return k % w, k // w
        return None

    def view_boxes(self, index: int) -> Optional[List[lbl.Box]]:
        """The pair's boxes, normalized to what ``__getitem__`` returns (no random crops)."""
        boxes = self.boxes[index]
        if boxes is None or self.train:
            return boxes
        vis, _, _ = self.load(index)
        h, w = vis.shape[:2]
        c = self.crop
        if not (c > 0 and h >= c and w >= c):
            return boxes
        y0, x0 = (h - c) // 2, (w - c) // 2
        return [lbl.Box(b.cls, (b.cx * w - x0) / c, (b.cy * h - y0) / c, b.w * w / c,
                        b.h * h / c) for b in boxes]

    def __getitem__(self, index: int):
        import torch
        vis_raw, ir_raw, label = self.load(index)
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
                label = imaging.resize(label, size, nearest=True)
                h, w = vis.shape[:2]
            if c > 0:
                y0 = int(rng.integers(0, h - c + 1))
                x0 = int(rng.integers(0, w - c + 1))
                if self.object_crop > 0 and rng.random() < self.object_crop:
                    obj = self._object_point(index, label, rng)
                    if obj is not None:   # a crop that holds the point, offset at random
                        ox, oy = obj
                        x0 = min(max(ox - int(rng.integers(0, c)), 0), w - c)
                        y0 = min(max(oy - int(rng.integers(0, c)), 0), h - c)
                vis, ir = vis[y0:y0 + c, x0:x0 + c], ir[y0:y0 + c, x0:x0 + c]
                label = label[y0:y0 + c, x0:x0 + c]
            if rng.random() < 0.5:
                vis, ir, label = vis[:, ::-1], ir[:, ::-1], label[:, ::-1]
            if rng.random() < 0.5:
                vis, ir, label = vis[::-1], ir[::-1], label[::-1]
        elif c > 0 and h >= c and w >= c:
            y0, x0 = (h - c) // 2, (w - c) // 2
            vis, ir = vis[y0:y0 + c, x0:x0 + c], ir[y0:y0 + c, x0:x0 + c]
            label = label[y0:y0 + c, x0:x0 + c]
        vis_t = torch.from_numpy(np.ascontiguousarray(vis.transpose(2, 0, 1)))  # 3 x H x W
        ir_t = torch.from_numpy(np.ascontiguousarray(ir.transpose(2, 0, 1)))    # 3 x H x W
        lab_t = torch.from_numpy(np.ascontiguousarray(label)).long()            # H x W
        return vis_t, ir_t, lab_t


class ConcatPairs:
    """Several PairDatasets as one (the training split plus ``data.extra`` folders)."""

    def __init__(self, parts: List[PairDataset]):
        self.parts = [p for p in parts if len(p)]
        self.pairs = [pair for p in self.parts for pair in p.pairs]
        self.kinds = [k for p in self.parts for k in p.kinds]

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` in every part."""
        for p in self.parts:
            p.set_epoch(epoch)

    def __getitem__(self, index: int):
        for p in self.parts:
            if index < len(p):
                return p[index]
            index -= len(p)
        raise IndexError(index)


def label_spec(cfg) -> Optional[LabelSpec]:
    """The LabelSpec of a config, or None for label-free (cluster) training."""
    d = cfg.data
    if cfg.model.classes != 'msrs' or d.labels == 'none':
        return None
    return LabelSpec(cfg.model.num_classes, d.labels, tuple(d.box_classes), d.box_margin,
                     d.box_core, d.box_z_hot)


def build_datasets(cfg) -> Tuple[PairDataset, PairDataset, DiscoveryReport]:
    """Discover, check and split pairs per ``cfg.data``; return (train, val, report).

    ``data.extra`` folders join the training set (all their pairs); validation comes from the
    main dataset's split only.
    """
    d = cfg.data
    rep = discover_pairs(d.root, d.layout, d.split, d.vi, d.ir, d.max_pairs, d.boxes)
    check_pairs(rep.pairs, d.resize)
    train_pairs, val_pairs = split_pairs(rep.pairs, d.val_fraction, d.seed)
    norm = imaging.ThermalNorm(d.thermal_norm, d.thermal_lo, d.thermal_hi, d.thermal_p_lo,
                               d.thermal_p_hi)
    spec = label_spec(cfg)
    train = PairDataset(train_pairs, d.crop, True, d.seed, d.resize, norm, d.cache, spec,
                        d.object_crop)
    val = PairDataset(val_pairs, d.val_crop, False, d.seed, d.resize, norm, d.cache, spec)
    parts = [train]
    for i, root in enumerate(d.extra):
        extra = discover_pairs(root, 'auto', d.split)
        check_pairs(extra.pairs, d.resize)
        rep.extra.append(extra)
        # Their own seed stream: an extra folder must not replay the main split's crops.
        parts.append(PairDataset(extra.pairs, d.crop, True, d.seed + 7919 * (i + 1), d.resize,
                                 norm, d.cache, spec, d.object_crop))
    if len(parts) > 1:
        return ConcatPairs(parts), val, rep
    return train, val, rep


def write_label_previews(datasets, out_dir: str) -> int:
    """Write each labelled pair's pixel label as ids and as an overlay, for a person to check.

    ``OUT/ids/<stem>.png``: class ids (255 = ignored); ``OUT/overlay/<stem>.png``: visible image
    | thermal | label colours (ignored pixels grey). Returns the number of labels written.
    """
    n = 0
    for ds in datasets:
        for part in getattr(ds, 'parts', [ds]):
            pal = lbl.semantic_palette(part.labels.num_classes if part.labels else 4)
            for i, p in enumerate(part.pairs):
                if part.kinds[i] == 'none':
                    continue
                vis, ir, label = part.load(i)
                color = pal[np.minimum(label, len(pal) - 1)]
                color[label == lbl.IGNORE] = 128
                t8 = imaging.to_uint8(imaging.normalize_thermal(ir, part.norm))
                sheet = np.concatenate([imaging.to_uint8(imaging.visible_to_float(vis)),
                                        np.repeat(t8[:, :, None], 3, axis=2),
                                        imaging.overlay(imaging.to_uint8(
                                            imaging.visible_to_float(vis)), color, 0.6)], axis=1)
                try:
                    imaging.write_image(os.path.join(out_dir, 'ids', f'{p.stem}.png'), label)
                    imaging.write_image(os.path.join(out_dir, 'overlay', f'{p.stem}.png'), sheet)
                except (OSError, ValueError) as exc:
                    raise DatasetError(f'cannot write label preview to {out_dir}: {exc}') from None
                n += 1
    return n
