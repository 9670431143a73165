"""The deployed graph: fusion model F plus segmentation head H, from a training checkpoint.

What ``ssvif-export`` writes (model format ``ssvif-model/2``) and the torch backend runs is
:class:`FrameGraph`: it takes what the node has and returns what it publishes, so one small copy
goes in and one comes out (on a GPU, the host does no per-pixel work):

* inputs ``vis``: N x H x W x 3 uint8 RGB; ``ir``: N x H x W float32 in [0, 1], the thermal plane
  as :func:`ssvif_ros.frames.register_pair` normalizes and registers it (normalization stays on
  the host: the ``percentile`` rule needs a whole-frame sort that ONNX and TensorRT have no
  operator for, and it is taken before the homography warp, over real pixels only);
* inside: uint8 / 255, HWC -> NCHW, reflect padding at the bottom/right to a multiple of the
  model's ``pad_multiple``, the thermal plane repeated to three channels, the graph below,
  cropping, rounding (``floor(clip(255 x, 0, 255) + 0.5)``, :func:`ssvif_ros.imaging.to_uint8`'s
  rule) and NCHW -> NHWC; the casts are the first and last nodes (TensorRT takes uint8 only at
  the network's edges); H and W are any size of at least ``pad_multiple`` (the backends pad
  smaller images on the host);
* outputs ``fused``: N x H x W x 3 uint8 RGB; ``class_ids``: N x H x W uint8 (as below);
  ``logits`` (optional) as below, at the padded input's feature resolution.

Inside it is :class:`ssvif_train.network.SSVIFNet` (the module training uses) switched to its
deployed interface, ``graph(vis, ir) -> (fused, class_ids[, logits])``, which is also the whole
graph of the older format ``ssvif-model/1`` (the backends still run such folders, doing the
steps above on the host):

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
from torch import nn
import torch.nn.functional as tf

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


class FrameGraph(nn.Module):
    """The deployed graph on camera frames (format ``ssvif-model/2``; see the module docstring).

    ``forward(vis, ir)``: vis N x H x W x 3 uint8, ir N x H x W float32 -> fused N x H x W x 3
    uint8, class ids N x H x W uint8[, logits N x n x h x w].
    """

    def __init__(self, net: SSVIFNet):
        super().__init__()
        self.net = net
        self.pad_multiple = net.pad_multiple
        self.num_classes = net.num_classes
        self.with_logits = net.with_logits

    def forward(self, vis: torch.Tensor, ir: torch.Tensor):
        """Frames in, images out (traced by the ONNX export with dynamic N, H and W)."""
        h, w = ir.shape[1], ir.shape[2]  # from the float input: vis feeds only its cast
        m = self.pad_multiple
        ph, pw = (m - h % m) % m, (m - w % m) % m
        v = vis.float().permute(0, 3, 1, 2) / 255.0                     # N x 3 x H x W
        v = tf.pad(v, (0, pw, 0, ph), mode='reflect')                   # N x 3 x H' x W'
        t = tf.pad(ir[:, None], (0, pw, 0, ph), mode='reflect')         # N x 1 x H' x W'
        out = self.net._deployed(v, t.expand(-1, 3, -1, -1), crop=(h, w))
        fused = out[0][:, :, :h, :w]                                    # N x 3 x H x W
        # NaN / Inf vanish in the uint8 cast below: the class ids mark them (NONFINITE_ID).
        fused = torch.floor((fused * 255.0).clamp(0.0, 255.0) + 0.5)
        fused = fused.permute(0, 2, 3, 1).to(torch.uint8)               # N x H x W x 3
        return (fused,) + tuple(out[1:])


def write_deploy_checkpoint(src, dst) -> None:
    """Write the deployable part of a training checkpoint (F, H, config) to ``dst``, atomically.

    Drops SegFormer S, the optimizer and the training state, which only training needs.
    """
    ckpt = torch.load(src, map_location='cpu', weights_only=True)
    keep = {k: ckpt[k] for k in ('format', 'fusion', 'head', 'config', 'config_digest')
            if k in ckpt}
    keep['state'] = {'epoch': ckpt.get('state', {}).get('epoch')}
    atomic_torch_save(keep, dst)
