"""The deployed graph: fusion model F plus segmentation head H, from a training checkpoint.

``FusionSegGraph(vis, ir) -> (fused, class_ids[, logits])`` is the one definition of what the
ONNX export, the torch backend and the benchmarks run:

* inputs ``vis``, ``ir``: N x 3 x H x W float32 in [0, 1] (thermal repeated to 3 channels, as
  :func:`ssvif_ros.imaging.preprocess_pair` makes them), H and W multiples of the model's
  ``pad_multiple`` (the backends pad with :func:`ssvif_ros.imaging.pad_to_multiple`);
* ``fused``: N x 3 x H x W float32 in [0, 1];
* ``class_ids``: N x H x W uint8, the arg-max of H's logits after bilinear upsampling of the
  logits to H x W (``seg_upsample='bilinear'``, the same resolution rule as the CSC loss) or
  arg-max at the feature resolution then nearest upsampling (``'nearest'``, cheaper);
* ``logits`` (optional): N x n x h x w at the feature resolution.

A checkpoint trained without CSC has no head: its graph returns class id 0 everywhere.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as tf

from ssvif_train.models.registry import record_to_model_checked, torch_load_checked
from ssvif_train.models.segmentation import SegHead

SEG_UPSAMPLE = ('bilinear', 'nearest')


class FusionSegGraph(nn.Module):
    """F + H as one module; see the module docstring for tensors and shapes."""

    def __init__(self, fusion: nn.Module, head: Optional[SegHead], num_classes: int,
                 seg_upsample: str = 'bilinear', with_logits: bool = False):
        super().__init__()
        if seg_upsample not in SEG_UPSAMPLE:
            raise ValueError(f'seg_upsample must be one of {SEG_UPSAMPLE}, got {seg_upsample!r}')
        self.fusion = fusion
        self.head = head
        self.num_classes = num_classes if head is not None else 1
        self.seg_upsample = seg_upsample
        self.with_logits = with_logits
        self.pad_multiple = int(getattr(fusion, 'pad_multiple', 1))

    def forward(self, vis: torch.Tensor, ir: torch.Tensor):
        """vis, ir N x 3 x H x W -> fused N x 3 x H x W, ids N x H x W uint8 [, logits]."""
        fused, feats = self.fusion.forward_with_features(vis, ir)
        size = vis.shape[-2:]
        if self.head is None:
            ids = torch.zeros_like(vis[:, 0], dtype=torch.uint8)        # N x H x W
            logits = torch.zeros_like(vis[:, :1])                       # N x 1 x H x W
        else:
            logits = self.head(feats)                                   # N x n x h x w
            if self.seg_upsample == 'bilinear':
                up = tf.interpolate(logits, size=size, mode='bilinear', align_corners=False)
                ids = up.argmax(1).to(torch.uint8)                      # N x H x W
            else:
                low = logits.argmax(1, keepdim=True).float()            # N x 1 x h x w
                ids = tf.interpolate(low, size=size, mode='nearest')[:, 0].to(torch.uint8)
        if self.with_logits:
            return fused, ids, logits
        return fused, ids


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def load_graph(path, seg_upsample: str = 'bilinear',
               with_logits: bool = False) -> Tuple[FusionSegGraph, dict]:
    """Build the eval-mode F + H graph from a training checkpoint (``weights_only=True``).

    Returns ``(graph, ckpt_info)`` where ``ckpt_info`` has the config, digest and file hash.
    Raises FileNotFoundError / ValueError naming the path.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    ckpt = torch_load_checked(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('fusion'), dict):
        raise ValueError(f'{path} is not an ssvif training checkpoint (no "fusion" entry)')
    fusion = record_to_model_checked(ckpt['fusion'], path)
    head = None
    num_classes = 1
    if ckpt.get('head'):
        h = ckpt['head']
        try:
            head = SegHead(h['in_channels'], h['num_classes'], h['hidden'],
                           h.get('padding_mode', 'zeros'))
            head.load_state_dict(h['state_dict'])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f'checkpoint {path}: its segmentation head does not rebuild: '
                             f'{first}') from None
        num_classes = h['num_classes']
    graph = FusionSegGraph(fusion, head, num_classes, seg_upsample, with_logits).eval()
    info = {'config': ckpt.get('config', {}), 'config_digest': ckpt.get('config_digest', ''),
            'checkpoint': os.path.abspath(path), 'checkpoint_sha256': file_sha256(path),
            'model_name': ckpt['fusion']['model_name'],
            'model_config': ckpt['fusion']['model_config'],
            'epoch': ckpt.get('state', {}).get('epoch')}
    return graph, info


def write_deploy_checkpoint(src, dst) -> None:
    """Write the deployable part of a training checkpoint (F, H, config) to ``dst``, atomically.

    Drops SegFormer S, the optimizer and the training state, which only training needs.
    """
    from ssvif_train.models.registry import atomic_torch_save
    ckpt = torch.load(src, map_location='cpu', weights_only=True)
    keep = {k: ckpt[k] for k in ('format', 'fusion', 'head', 'config', 'config_digest')
            if k in ckpt}
    keep['state'] = {'epoch': ckpt.get('state', {}).get('epoch')}
    atomic_torch_save(keep, dst)
