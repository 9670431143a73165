"""Paired visible/thermal datasets for training: labels, crops and flips, the two splits.

The pairs come from :mod:`ssvif_train.discovery` (layouts, pairing by stem, checks, the
deterministic split); this module turns them into the training and validation datasets.

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

from dataclasses import dataclass
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from ssvif_ros import imaging, labels as lbl
from ssvif_train.discovery import (check_pairs, DatasetError, discover_pairs, DiscoveryReport,
                                   Pair, split_pairs)


def read_image(path: str, mode: str) -> np.ndarray:
    """:func:`ssvif_ros.imaging.read_image`, its errors as a DatasetError naming ``path``."""
    try:
        return imaging.read_image(path, mode=mode)
    except (OSError, ValueError) as exc:
        raise DatasetError(str(exc)) from None


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
    ``train=True``: random ``crop`` x ``crop`` crops and horizontal and (``vflip``) vertical
    flips drawn from an RNG seeded by ``(seed, epoch, index)``, so an epoch is reproducible
    after a resume.
    ``train=False``: centre crop of ``crop`` (0 = whole image).
    ``object_crop``: share of training crops of labelled pairs placed so that a random labelled
    object (a box centre, or a pixel of an object class) lies inside: MSRS objects sit in a band
    around the horizon, and most uniform 160 x 160 crops of a 640 x 480 frame hold none.
    Box files are parsed when the dataset is built, so a malformed one stops before training.
    """

    def __init__(self, pairs: List[Pair], crop: int, train: bool, seed: int = 0,
                 resize: str = 'error', norm: Optional[imaging.ThermalNorm] = None,
                 cache: bool = True, labels: Optional[LabelSpec] = None,
                 object_crop: float = 0.0, vflip: bool = True):
        self.pairs = list(pairs)
        self.object_crop = float(object_crop)
        self.vflip = bool(vflip)
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
        vis = read_image(p.vi, 'rgb')
        ir = read_image(p.ir, 'gray')
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
            raw = read_image(p.label, 'gray')
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
            if self.vflip and rng.random() < 0.5:
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


def thermal_norm(cfg) -> imaging.ThermalNorm:
    """The thermal normalization of ``cfg.data`` (training, validation and calibration)."""
    d = cfg.data
    return imaging.ThermalNorm(d.thermal_norm, d.thermal_lo, d.thermal_hi, d.thermal_p_lo,
                               d.thermal_p_hi)


def build_datasets(cfg) -> Tuple[PairDataset, PairDataset, DiscoveryReport]:
    """Discover, check and split pairs per ``cfg.data``; return (train, val, report).

    ``data.extra`` folders join the training set (all their pairs); validation comes from the
    main dataset's split only.
    """
    d = cfg.data
    rep = discover_pairs(d.root, d.layout, d.split, d.vi, d.ir, d.max_pairs, d.boxes)
    check_pairs(rep.pairs, d.resize)
    train_pairs, val_pairs = split_pairs(rep.pairs, d.val_fraction, d.seed)
    norm = thermal_norm(cfg)
    spec = label_spec(cfg)
    train = PairDataset(train_pairs, d.crop, True, d.seed, d.resize, norm, d.cache, spec,
                        d.object_crop, d.vflip)
    val = PairDataset(val_pairs, d.val_crop, False, d.seed, d.resize, norm, d.cache, spec)
    parts = [train]
    for i, root in enumerate(d.extra):
        extra = discover_pairs(root, 'auto', d.split)
        check_pairs(extra.pairs, d.resize)
        rep.extra.append(extra)
        # Their own seed stream: an extra folder must not replay the main split's crops.
        parts.append(PairDataset(extra.pairs, d.crop, True, d.seed + 7919 * (i + 1), d.resize,
                                 norm, d.cache, spec, d.object_crop, d.vflip))
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
