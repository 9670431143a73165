"""Segmentation metrics: confusion matrix, per-class IoU and mIoU, pixel accuracy.

:func:`confusion_matrix` (rows = ground-truth class, columns = prediction; pixels whose label is
``ignore_index`` are skipped), :func:`iou_from_confusion` (per-class IoU = TP / (TP + FP + FN),
NaN for a class absent from both label and prediction) and mIoU = mean of the non-NaN IoUs.
Used by ``ssvif-eval segmentation``, training validation and ``ssvif-bag eval``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def confusion_matrix(pred, label, num_classes: int, ignore_index: Optional[int] = 255
                     ) -> np.ndarray:
    """Confusion matrix (num_classes x num_classes int64, rows = label, cols = prediction).

    ``pred`` and ``label`` are integer class-id arrays of one shape; pixels whose label equals
    ``ignore_index`` are skipped. Raises ValueError for mismatched shapes or ids out of range.
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f'prediction shape {pred.shape} differs from label shape {label.shape}')
    if num_classes < 1:
        raise ValueError(f'num_classes must be >= 1, got {num_classes}')
    pred = pred.astype(np.int64).ravel()
    label = label.astype(np.int64).ravel()
    keep = np.ones(label.shape, dtype=bool) if ignore_index is None else label != ignore_index
    pred, label = pred[keep], label[keep]
    bad = (label < 0) | (label >= num_classes)
    if bad.any():
        raise ValueError(f'label ids {np.unique(label[bad])[:10].tolist()} are outside 0..'
                         f'{num_classes - 1} and not the ignore index {ignore_index}')
    bad = (pred < 0) | (pred >= num_classes)
    if bad.any():
        raise ValueError(f'predicted ids {np.unique(pred[bad])[:10].tolist()} are outside 0..'
                         f'{num_classes - 1}')
    cm = np.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes).astype(np.int64)


def iou_from_confusion(cm) -> Tuple[np.ndarray, float]:
    """Per-class IoU and mIoU of a confusion matrix (rows = label, cols = prediction).

    IoU = TP / (TP + FP + FN), NaN where a class is in neither label nor prediction; mIoU =
    mean of the non-NaN IoUs (NaN if there are none). Returns ``(iou array, miou)``.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f'confusion matrix must be square, got shape {cm.shape}')
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = np.where(union > 0, tp / union, np.nan)
    valid = ~np.isnan(iou)
    miou = float(iou[valid].mean()) if valid.any() else float('nan')
    return iou, miou


def pixel_accuracy(cm) -> float:
    """Overall pixel accuracy: trace / sum of the confusion matrix (NaN when empty)."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float('nan')
