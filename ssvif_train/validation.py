"""Validation of a training run after each epoch.

Every validation pair gives L_fusion (the fusion task of training, ``fusion_loss`` and the
model's reconstruction terms included, :func:`ssvif_train.losses.fusion_task`); the first
``train.val_metric_images`` pairs also give the configured fusion metrics
(:func:`ssvif_ros.metrics.validation_metrics`). Semantic runs (``model.classes: msrs``) also
score H's class map (logits upsampled bilinearly to the image, the CSC loss's resolution rule):
``val_box_f1`` and per-class F1 against the validation boxes
(:class:`ssvif_ros.labels.BoxScorer`), ``val_miou`` against pixel labels.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

from ssvif_ros import imaging, labels, metrics, seg_metrics
from ssvif_train import losses
from ssvif_train.tensor_imaging import nchw_to_hwc


@torch.no_grad()
def validate(net, loader, val_ds, cfg, lambdas: Dict[str, float], semantic: bool,
             device: torch.device, fusion_loss: str = 'ssvif') -> Dict[str, float]:
    """Validation scores of ``net`` (an SSVIFNet) on ``loader`` over ``val_ds``, in order.

    Keys: ``val_fusion``; ``val_<metric>`` for the fusion metrics; with ``semantic``
    ``val_box_f1``, ``val_<class>_f1`` (pairs with boxes) and ``val_miou`` (pixel labels).
    Empty when there is no validation pair. ``net`` is back in train mode afterwards.
    """
    if len(val_ds) == 0:
        return {}
    net.eval()
    total, count = 0.0, 0
    metric_rows: List[Dict[str, float]] = []
    scorer = labels.BoxScorer() if semantic else None
    n_cls = cfg.model.num_classes
    confusion = np.zeros((n_cls, n_cls), dtype=np.int64)
    has_boxes = has_pixels = False
    index = 0
    for vis, ir, label in loader:
        vis, ir = vis.to(device), ir.to(device)
        fused, feats, recs = net.fuse(vis, ir, aux=True)
        _, lf = losses.fusion_task(fusion_loss, fused.float(), vis, ir,
                                   [r.float() for r in recs], lambdas, cfg.loss.lambda_rec)
        total += float(lf) * vis.shape[0]
        count += vis.shape[0]
        if cfg.train.val_metrics and len(metric_rows) < cfg.train.val_metric_images:
            metric_rows.extend(_fusion_metrics(vis, ir, fused, cfg.train.val_metrics))
        if scorer is not None:
            logits = losses.to_resolution(net.head(feats).float(), tuple(vis.shape[-2:]))
            ids = logits.argmax(1).to(torch.uint8).cpu().numpy()           # N x H x W
            for b in range(ids.shape[0]):
                boxes = val_ds.view_boxes(index)
                if boxes is not None:
                    scorer.add(ids[b], boxes)
                    has_boxes = True
                if val_ds.kinds[index] == 'pixels':
                    confusion += seg_metrics.confusion_matrix(
                        ids[b], label[b].numpy().astype(np.uint8), n_cls, labels.IGNORE)
                    has_pixels = True
                index += 1
    net.train()
    out = {'val_fusion': total / max(count, 1)}
    if has_boxes:
        res = scorer.result()
        out['val_box_f1'] = res['box_f1']
        out.update({f'val_{c}_f1': v['f1'] for c, v in res['classes'].items()})
    if has_pixels:
        out['val_miou'] = seg_metrics.iou_from_confusion(confusion)[1]
    if metric_rows:
        for k in metric_rows[0]:
            out[f'val_{k}'] = float(np.mean([r[k] for r in metric_rows]))
    return out


def _fusion_metrics(vis, ir, fused, names) -> List[Dict[str, float]]:
    """Fusion metrics of each pair of a batch (N x 3 x H x W tensors) on uint8 images."""
    rows = []
    for b in range(vis.shape[0]):
        v = imaging.to_uint8(nchw_to_hwc(vis[b:b + 1]))
        t = imaging.to_uint8(nchw_to_hwc(ir[b:b + 1]))[:, :, 0]
        f = imaging.to_uint8(nchw_to_hwc(fused[b:b + 1]))
        rows.append(metrics.validation_metrics(v, t, f, names))
    return rows
