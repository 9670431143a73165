"""Semantic classes, object boxes, weak pixel labels and box scores (ROS-free, torch-free).

**Classes.** Semantic models publish MSRS class ids (:data:`SEMANTIC_CLASSES`): 0 background /
unlabelled, 1 car, 2 person, 3 bike, then curve, car_stop, guardrail, color_cone, bump. A model
trained on boxes uses the first four; one trained on MSRS pixel labels may use all nine; either
way a person is id 2. FMB pixel labels are mapped onto these ids (:data:`FMB_TO_SEMANTIC`).

**Boxes** are YOLO text files, one ``<stem>.txt`` per image and one object a line:
``class cx cy w h``, the four numbers normalized to 0..1 by the image width and height. The class
is an integer index into a configurable list of names (:data:`DEFAULT_BOX_CLASSES`: the
MSRS-detection set ``person, bicycle, car``). An empty file means "no objects"; a missing file
means "unlabelled". A malformed line raises :class:`BoxError` naming file and line.

**Boxes to pixel supervision** (:func:`boxes_to_mask`), a weak label with three values per pixel:

1. every pixel outside all boxes is background (0); a ring of ``margin`` pixels around each box
   is ignored (255), because the boxes were drawn by hand and their edges are loose;
2. inside a box, a pixel gets the box's class when it lies in the box's *core* (a centred ellipse
   with semi-axes ``core`` x the box's half sizes: the object covers its box's centre) or when
   the thermal image marks it as warmer than the box's surroundings (z-score of the thermal value
   against a ring around the box above ``z_hot``: people, engines, tyres and wheels of a ridden
   bike are warm);
3. the other box pixels (background seen between the legs, the sky above a car's roof) are
   ignored (255): the box neither says they are object nor background;
4. boxes are drawn largest first, so a person in front of a car keeps their class.

**Box scores** (:class:`BoxScorer`), for class maps that carry the box classes:

* box recall: share of the boxes of a class of which at least ``found_fraction`` (20 %) of the
  pixels carry the class;
* pixel precision: share of the pixels predicted as the class that lie inside a box of that
  class grown by ``grow`` (5) pixels;
* F1 = 2PR / (P + R) (0 when either is 0; n/a when the class has neither boxes nor predicted
  pixels), and box-F1 = the mean F1 over the scored classes (person, car, bike).

Counts are summed over all images before the ratios are taken (micro averages). Box pixel
rectangles: ``x0 = floor((cx - w/2) W)``, ``x1 = ceil((cx + w/2) W)`` (half-open), likewise for
rows, clipped to the image.

The trivial baseline :func:`thermal_rule` marks every pixel warmer than the frame's mean + 2 SD
as a person.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple
import warnings

import numpy as np

from ssvif_ros import imaging

SEMANTIC_CLASSES = imaging.MSRS_CLASSES
BACKGROUND, CAR, PERSON, BIKE = 0, 1, 2, 3
IGNORE = 255
#: YOLO class order of the MSRS-detection boxes in ../shared/data (0 person, 1 bicycle, 2 car).
DEFAULT_BOX_CLASSES = ('person', 'bicycle', 'car')
#: The classes that box scores report by default.
SCORED_CLASSES = ('person', 'car', 'bike')
_ALIASES = {'bicycle': 'bike', 'background': 'unlabelled', 'pedestrian': 'person',
            'people': 'person', 'cyclist': 'bike', 'motorcycle': 'bike', 'motorbike': 'bike'}
#: FMB pixel label id -> semantic id (person, car/truck/bus, bicycle/motorcycle; the rest is 0).
FMB_TO_SEMANTIC = {8: PERSON, 9: CAR, 10: CAR, 11: CAR, 12: BIKE, 13: BIKE}


class BoxError(ValueError):
    """A box file or class name is invalid; the message names the file and line."""


def class_id(name: str, num_classes: int = len(SEMANTIC_CLASSES)) -> int:
    """Semantic id of a class name (aliases: bicycle -> bike, ...); BoxError when unknown."""
    key = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    names = SEMANTIC_CLASSES[:num_classes]
    if key not in names:
        raise BoxError(f'unknown class {name!r}; known: {", ".join(names)} '
                       f'(aliases: {", ".join(sorted(_ALIASES))})')
    return names.index(key)


#: Colours of the scored classes: car blue and person vermillion (Okabe-Ito), bike cyan. Of the
#: Okabe-Ito colours plus cyan and magenta, the set whose smallest CIEDE2000 difference stays
#: largest under simulated protan, deutan and tritan vision (test_labels checks it).
SCORED_COLOURS = {CAR: (0, 114, 178), PERSON: (213, 94, 0), BIKE: (0, 255, 255)}


def semantic_palette(n: int) -> np.ndarray:
    """n x 3 uint8 colours of the first ``n`` semantic classes (:data:`SCORED_COLOURS`, MSRS)."""
    pal = imaging.palette(max(n, 1)).copy()
    for cid, colour in SCORED_COLOURS.items():
        if n > cid:
            pal[cid] = colour
    return pal


@dataclass(frozen=True)
class Box:
    """One object box: semantic class id and YOLO-normalized centre and size."""

    cls: int
    cx: float
    cy: float
    w: float
    h: float

    def rect(self, width: int, height: int, grow: int = 0) -> Tuple[int, int, int, int]:
        """Pixel rectangle ``(x0, y0, x1, y1)``, half-open, grown by ``grow`` px, clipped."""
        # Rounded to 1e-6 px first: (0.01 + 0.05) * 100 is 6.000000000000001, not 6.
        x0 = math.floor(round((self.cx - self.w / 2) * width, 6)) - grow
        x1 = math.ceil(round((self.cx + self.w / 2) * width, 6)) + grow
        y0 = math.floor(round((self.cy - self.h / 2) * height, 6)) - grow
        y1 = math.ceil(round((self.cy + self.h / 2) * height, 6)) + grow
        return (min(max(x0, 0), width), min(max(y0, 0), height),
                min(max(x1, 0), width), min(max(y1, 0), height))


def box_class_map(names: Sequence[str], num_classes: int = len(SEMANTIC_CLASSES)
                  ) -> Dict[int, int]:
    """YOLO class index -> semantic id, for the YOLO class names in index order."""
    if isinstance(names, str) or not names:
        raise BoxError(f'box classes must be a non-empty list of names, got {names!r}')
    return {i: class_id(n, num_classes) for i, n in enumerate(names)}


def read_boxes(path, class_map: Dict[int, int]) -> List[Box]:
    """Parse one YOLO box file; BoxError names the file and line of the first bad line."""
    path = os.fspath(path)
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise BoxError(f'{path}: not a text file') from None
    boxes = []
    for no, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f'{path}:{no}'
        if len(fields) != 5:
            raise BoxError(f'{where}: expected 5 fields "class cx cy w h", got {len(fields)}')
        try:
            k = int(fields[0])
        except ValueError:
            raise BoxError(f'{where}: class {fields[0]!r} is not an integer') from None
        if k not in class_map:
            raise BoxError(f'{where}: unknown class {k} (box classes: '
                           f'{", ".join(str(i) for i in sorted(class_map))})')
        try:
            vals = [float(v) for v in fields[1:]]
        except ValueError:
            raise BoxError(f'{where}: cx cy w h must be numbers, got {" ".join(fields[1:])}'
                           ) from None
        for name, v in zip(('cx', 'cy', 'w', 'h'), vals):
            if not 0.0 <= v <= 1.0:  # also rejects nan
                raise BoxError(f'{where}: {name} = {v} is outside 0..1')
        boxes.append(Box(class_map[k], *vals))
    return boxes


def boxes_to_mask(boxes: Sequence[Box], size: Tuple[int, int], ir: Optional[np.ndarray] = None,
                  margin: int = 3, core: float = 0.5, z_hot: float = 2.0) -> np.ndarray:
    """Weak pixel label (module docstring) as an H x W uint8 image: 0, class ids, 255.

    ``size`` is ``(width, height)``; ``ir`` an optional H x W thermal image (any dtype; a
    3-channel image uses its first channel).
    """
    width, height = size
    mask = np.zeros((height, width), dtype=np.uint8)
    t = None
    if ir is not None:
        t = np.asarray(ir, dtype=np.float32)
        t = t[:, :, 0] if t.ndim == 3 else t
        if t.shape != (height, width):
            raise ValueError(f'thermal image {t.shape[1]}x{t.shape[0]} does not match the '
                             f'label size {width}x{height}')
    for b in boxes:
        x0, y0, x1, y1 = b.rect(width, height, margin)
        mask[y0:y1, x0:x1] = IGNORE
    order = sorted(boxes, key=lambda b: -(b.w * b.h))
    for b in order:
        x0, y0, x1, y1 = b.rect(width, height)
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)           # h x w
        cx, cy = b.cx * width, b.cy * height
        ax, ay = max(core * b.w * width / 2, 0.5), max(core * b.h * height / 2, 0.5)
        obj = ((xx + 0.5 - cx) / ax) ** 2 + ((yy + 0.5 - cy) / ay) ** 2 <= 1.0
        if t is not None:
            obj |= _hot(t, (x0, y0, x1, y1), z_hot)
        region = mask[y0:y1, x0:x1]
        region[obj] = b.cls
        region[~obj & (region != b.cls)] = IGNORE
    return mask


def _hot(t: np.ndarray, rect: Tuple[int, int, int, int], z_hot: float) -> np.ndarray:
    """Box pixels whose thermal value is ``z_hot`` SDs above a ring around the box."""
    x0, y0, x1, y1 = rect
    height, width = t.shape
    pad = max(3, int(round(0.25 * min(x1 - x0, y1 - y0))))
    ox0, oy0 = max(x0 - pad, 0), max(y0 - pad, 0)
    ox1, oy1 = min(x1 + pad, width), min(y1 + pad, height)
    outer = t[oy0:oy1, ox0:ox1]
    ring = np.ones(outer.shape, dtype=bool)
    ring[y0 - oy0:y1 - oy0, x0 - ox0:x1 - ox0] = False
    inside = t[y0:y1, x0:x1]
    if ring.sum() < 8:
        return np.zeros(inside.shape, dtype=bool)
    vals = outer[ring]
    sd = max(float(vals.std()), 1e-3 * max(float(np.abs(vals).max()), 1.0))
    return (inside - float(vals.mean())) / sd > z_hot


def thermal_rule(ir: np.ndarray, k: float = 2.0, cls: int = PERSON) -> np.ndarray:
    """Trivial segmentation: ``cls`` where the thermal frame exceeds its mean + k SD, else 0."""
    t = np.asarray(ir, dtype=np.float32)
    t = t[:, :, 0] if t.ndim == 3 else t
    return np.where(t > t.mean() + k * t.std(), cls, BACKGROUND).astype(np.uint8)


@dataclass
class ClassCounts:
    """Summed box and pixel counts of one class."""

    boxes: int = 0
    found: int = 0
    pred_pixels: int = 0
    pred_in_box: int = 0

    def scores(self) -> Dict[str, float]:
        """Recall, precision and F1 (nan where undefined; see the module docstring)."""
        r = self.found / self.boxes if self.boxes else math.nan
        p = self.pred_in_box / self.pred_pixels if self.pred_pixels else math.nan
        if self.boxes == 0 and self.pred_pixels == 0:
            f1 = math.nan
        elif not (r > 0 and p > 0):  # nan or 0 in either: nothing found, or all outside
            f1 = 0.0
        else:
            f1 = 2 * p * r / (p + r)
        return {'recall': r, 'precision': p, 'f1': f1}


@dataclass
class BoxScorer:
    """Accumulates box recall and pixel precision over images (module docstring)."""

    classes: Sequence[str] = SCORED_CLASSES
    found_fraction: float = 0.2
    grow: int = 5
    counts: Dict[str, ClassCounts] = field(default_factory=dict)
    #: One row per added image: per class (boxes, found, pred_pixels, pred_in_box).
    per_image: List[List[Tuple[int, int, int, int]]] = field(default_factory=list)

    def __post_init__(self):
        self.ids = {c: class_id(c) for c in self.classes}
        self.counts = {c: ClassCounts() for c in self.classes}
        self.per_image = []

    def add(self, pred: np.ndarray, boxes: Sequence[Box]) -> None:
        """Score one H x W class-id map against its boxes (YOLO-normalized to its size)."""
        height, width = pred.shape
        before = {n: (c.boxes, c.found, c.pred_pixels, c.pred_in_box)
                  for n, c in self.counts.items()}
        row = []
        for name, cid in self.ids.items():
            cnt = self.counts[name]
            is_c = pred == cid
            grown = np.zeros_like(is_c)
            for b in boxes:
                if b.cls != cid:
                    continue
                x0, y0, x1, y1 = b.rect(width, height)
                cnt.boxes += 1
                area = (x1 - x0) * (y1 - y0)
                if area > 0 and is_c[y0:y1, x0:x1].sum() >= self.found_fraction * area:
                    cnt.found += 1
                gx0, gy0, gx1, gy1 = b.rect(width, height, self.grow)
                grown[gy0:gy1, gx0:gx1] = True
            cnt.pred_pixels += int(is_c.sum())
            cnt.pred_in_box += int((is_c & grown).sum())
            row.append((cnt.boxes - before[name][0], cnt.found - before[name][1],
                        cnt.pred_pixels - before[name][2], cnt.pred_in_box - before[name][3]))
        self.per_image.append(row)

    def result(self) -> Dict:
        """``{'classes': {name: {recall, precision, f1, boxes, found, ...}}, 'box_f1': x}``."""
        per = {}
        for name, cnt in self.counts.items():
            per[name] = dict(cnt.scores(), boxes=cnt.boxes, found=cnt.found,
                             pred_pixels=cnt.pred_pixels, pred_in_box=cnt.pred_in_box)
        f1s = [v['f1'] for v in per.values() if not math.isnan(v['f1'])]
        box_ci, class_ci = bootstrap_f1(self.per_image, len(self.classes))
        for name, ci in zip(self.classes, class_ci):
            per[name]['f1_ci'] = ci
        return {'classes': per, 'box_f1': float(np.mean(f1s)) if f1s else math.nan,
                'box_f1_ci': box_ci, 'n_images': len(self.per_image)}


def f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """F1 of ``(..., 4)`` summed counts (boxes, found, pred, in_box), as ClassCounts.scores."""
    boxes, found, pred, in_box = (counts[..., k].astype(np.float64) for k in range(4))
    with np.errstate(invalid='ignore', divide='ignore'):
        r = np.where(boxes > 0, found / np.maximum(boxes, 1), np.nan)
        p = np.where(pred > 0, in_box / np.maximum(pred, 1), np.nan)
        f1 = np.where((r > 0) & (p > 0), 2 * p * r / (p + r), 0.0)
    return np.where((boxes == 0) & (pred == 0), np.nan, f1)


def bootstrap_f1(per_image: Sequence, n_classes: int, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> Tuple[Tuple[float, float], List[Tuple[float, float]]]:
    """Percentile bootstrap interval of box-F1 and of each class's F1, resampling images.

    ``per_image``: one row per image of per-class (boxes, found, pred_pixels, pred_in_box).
    Counts are summed per resample exactly as for the point score (micro averages), so the
    interval says how much the score rests on which images happened to be in the split.
    Returns ``((lo, hi), [(lo, hi) per class])``; nan bounds without images.
    """
    if len(per_image) == 0:
        return (math.nan, math.nan), [(math.nan, math.nan)] * n_classes
    c = np.asarray(per_image, dtype=np.int64).reshape(len(per_image), n_classes, 4)
    rng = np.random.default_rng(seed)
    # How often each image is drawn in each resample: B x n, each row sums to n.
    draws = rng.multinomial(len(c), np.full(len(c), 1.0 / len(c)), size=n_boot)
    f1 = f1_from_counts(np.tensordot(draws, c, axes=(1, 0)))      # B x classes
    with warnings.catch_warnings():  # a resample with no scored class: nan, no warning
        warnings.simplefilter('ignore', RuntimeWarning)
        box = np.nanmean(f1, axis=1)                               # B
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def bounds(x):
        x = x[np.isfinite(x)]
        if len(x) == 0:
            return (math.nan, math.nan)
        return tuple(float(v) for v in np.percentile(x, q))
    return bounds(box), [bounds(f1[:, k]) for k in range(f1.shape[1])]


@dataclass
class MarkedShare:
    """Share of each image's pixels marked as each class: a label-free check for other rigs.

    A model that paints walls, ground or vegetation shows a large share on scenes whose objects
    cover a few percent of the frame. ``object`` is the share marked as any of the classes.
    """

    classes: Sequence[str] = SCORED_CLASSES
    shares: List[Dict[str, float]] = field(default_factory=list)

    def add(self, pred: np.ndarray) -> Dict[str, float]:
        """Add one H x W class-id map; returns its shares (0..1) per class and ``object``."""
        ids = np.asarray(pred)
        n = max(ids.size, 1)
        row = {c: float((ids == class_id(c)).sum()) / n for c in self.classes}
        row['object'] = float(np.isin(ids, [class_id(c) for c in self.classes]).sum()) / n
        self.shares.append(row)
        return row

    def result(self) -> Dict[str, Dict[str, float]]:
        """``{name: {'mean': x, 'max': y}}`` over the added images (nan without images)."""
        out = {}
        for name in list(self.classes) + ['object']:
            v = np.asarray([r[name] for r in self.shares], dtype=np.float64)
            out[name] = {'mean': float(v.mean()) if len(v) else math.nan,
                         'max': float(v.max()) if len(v) else math.nan}
        out['n_images'] = len(self.shares)
        return out


def map_pixel_labels(label: np.ndarray, source: str, num_classes: int) -> np.ndarray:
    """A pixel label image in ``source`` ids ('msrs' or 'fmb') to semantic ids < num_classes.

    MSRS ids are kept (ids >= ``num_classes`` become background); FMB ids are mapped with
    :data:`FMB_TO_SEMANTIC`; 255 stays ignore.
    """
    lab = np.asarray(label)
    if lab.ndim == 3:
        lab = lab[:, :, 0]
    lab = lab.astype(np.uint8)
    if source == 'fmb':
        lut = np.zeros(256, dtype=np.uint8)
        for k, v in FMB_TO_SEMANTIC.items():
            lut[k] = v if v < num_classes else BACKGROUND
    elif source == 'msrs':
        lut = np.arange(256, dtype=np.uint8)
        lut[num_classes:] = BACKGROUND
    else:
        raise ValueError(f'unknown pixel label source {source!r} (msrs or fmb)')
    lut[IGNORE] = IGNORE
    return lut[lab]
