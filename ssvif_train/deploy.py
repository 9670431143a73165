"""The deployed graph: fusion model F plus segmentation head H, from a training checkpoint.

The graph is :class:`ssvif_train.network.SSVIFNet` (the module training uses) switched to its
deployed interface, ``graph(vis, ir) -> (fused, class_ids[, logits])``: the one definition of what
the ONNX export, the torch backend and the benchmarks run:

* inputs ``vis``, ``ir``: N x 3 x H x W float32 in [0, 1] (thermal repeated to 3 channels, as
  :func:`ssvif_ros.imaging.preprocess_pair` makes them), H and W multiples of the model's
  ``pad_multiple`` (the backends pad with :func:`ssvif_ros.imaging.pad_to_multiple`);
* ``fused``: N x 3 x H x W float32 in [0, 1];
* ``class_ids``: N x H x W uint8, the arg-max of H's logits after bilinear upsampling of the
  logits to H x W (``seg_upsample='bilinear'``, the same resolution rule as the CSC loss) or
  arg-max at the feature resolution then nearest upsampling (``'nearest'``, cheaper); a
  checkpoint calibrated by ``ssvif-calibrate`` adds its per-class offsets (``head.class_bias``,
  folded into the bias of H's last conv) to the logits first;
* ``logits`` (optional): N x n x h x w at the feature resolution (offsets included).

A checkpoint trained without a head (no CSC, no labels) returns class id 0 everywhere.
"""
from __future__ import annotations

import hashlib
import os
from typing import Tuple

import torch

from ssvif_train.models.registry import atomic_torch_save, torch_load_checked
from ssvif_train.network import SSVIFNet


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def load_graph(path, seg_upsample: str = 'bilinear',
               with_logits: bool = False) -> Tuple[SSVIFNet, dict]:
    """Build the eval-mode F + H graph from a training checkpoint (``weights_only=True``).

    Returns ``(graph, ckpt_info)`` where ``ckpt_info`` has the config, digest and file hash.
    Raises FileNotFoundError / ValueError naming the path.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    ckpt = torch_load_checked(path)
    graph = SSVIFNet.from_checkpoint(ckpt, path).for_export(seg_upsample, with_logits)
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
    ckpt = torch.load(src, map_location='cpu', weights_only=True)
    keep = {k: ckpt[k] for k in ('format', 'fusion', 'head', 'config', 'config_digest')
            if k in ckpt}
    keep['state'] = {'epoch': ckpt.get('state', {}).get('epoch')}
    atomic_torch_save(keep, dst)
