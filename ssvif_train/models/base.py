"""The fusion-model interface SSVIF trains: F = D o B with fused features exposed.

Every fusion model takes ``(vis, ir)`` float tensors N x 3 x H x W in [0, 1] (the thermal image
expanded to three channels, paper appendix B-B) and returns the fused RGB image N x 3 x H x W in
[0, 1]. ``backbone`` produces the fused features (any structure the decoder needs, e.g. a list of
skip tensors); ``seg_features`` picks the single tensor N x C x h x w the segmentation head H reads
(``feature_channels`` = C). ``pad_multiple`` is the size divisor the model needs; callers pad with
:func:`ssvif_train.tensor_imaging.pad_to_multiple`.
"""
from __future__ import annotations

import torch
from torch import nn


class FusionModel(nn.Module):
    """Base class of every registered fusion model."""

    feature_channels: int = 0
    pad_multiple: int = 1

    def backbone(self, vis: torch.Tensor, ir: torch.Tensor):
        """B(vis, ir) -> fused features."""
        raise NotImplementedError

    def decoder(self, feats) -> torch.Tensor:
        """D(features) -> fused RGB N x 3 x H x W in [0, 1]."""
        raise NotImplementedError

    def seg_features(self, feats) -> torch.Tensor:
        """The fused feature map N x C x h x w fed to the segmentation head."""
        return feats

    def forward_with_features(self, vis: torch.Tensor, ir: torch.Tensor):
        """Return ``(fused, seg_features)`` from one backbone pass."""
        feats = self.backbone(vis, ir)
        return self.decoder(feats), self.seg_features(feats)

    def forward(self, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        """F(vis, ir) = D(B(vis, ir)): the fused image."""
        return self.decoder(self.backbone(vis, ir))
