"""The pixel conventions of :mod:`ssvif_ros.imaging` on torch tensors (N x C x H x W).

:mod:`ssvif_ros.imaging` owns every formula (BT.601 colour, padding amounts) and never imports
torch; this module applies those formulas to tensors for the models, losses and training, so a
fused image means the same thing in training, export and the node.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as tf

from ssvif_ros import imaging


def luma_weights() -> torch.Tensor:
    """The BT.601 luma weights (R, G, B) as a float32 tensor of 3."""
    return torch.tensor([imaging.KR, imaging.KG, imaging.KB], dtype=torch.float32)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W RGB in [0, 1] -> N x 3 x H x W BT.601 full-range YCbCr in [0, 1]."""
    return torch.stack(imaging.ycbcr_planes(*x.unbind(1)), dim=1)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Invert :func:`rgb_to_ycbcr` (no clipping); N x 3 x H x W."""
    return torch.stack(imaging.rgb_planes(*x.unbind(1)), dim=1)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W RGB -> N x H x W BT.601 luma."""
    return imaging.luma(*x.unbind(1))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Reflect-pad N x C x H x W at the bottom/right to a multiple of ``multiple``.

    The tensor form of :func:`ssvif_ros.imaging.pad_to_multiple`: returns ``(padded, (pad_h,
    pad_w))``, replicate padding when the image is smaller than the pad.
    """
    h, w = x.shape[-2:]
    ph, pw = imaging.pad_amount(h, w, multiple)
    if ph == 0 and pw == 0:
        return x, (0, 0)
    mode = 'reflect' if ph < h and pw < w else 'replicate'
    return tf.pad(x, (0, pw, 0, ph), mode=mode), (ph, pw)


def unpad(x: torch.Tensor, pad: Tuple[int, int]) -> torch.Tensor:
    """Remove the bottom/right padding of :func:`pad_to_multiple` (N x C x H x W)."""
    ph, pw = pad
    h, w = x.shape[-2:]
    return x[..., :h - ph, :w - pw]


def hwc_to_nchw(x: np.ndarray) -> torch.Tensor:
    """H x W x C (or H x W) float NumPy image to a 1 x C x H x W float32 tensor."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def nchw_to_hwc(x: torch.Tensor) -> np.ndarray:
    """1 x C x H x W tensor to an H x W x C float32 NumPy image."""
    x = np.asarray(x.detach().cpu().numpy(), dtype=np.float32)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f'expected a batch of one, got shape {x.shape}')
        x = x[0]
    return x.transpose(1, 2, 0)
