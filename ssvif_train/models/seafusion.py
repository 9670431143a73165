"""SeAFusion-style fusion CNN (Tang et al., Information Fusion 2022), three-channel version.

Architecture (widths at the defaults ``width=16``, ``widths=[16, 32, 48]``):

* one encoder per modality: 3x3 conv (``channels`` -> 16, LeakyReLU 0.2), then two Gradient
  Residual Dense Blocks (GRDB, 16 -> 32 -> 48);
* a GRDB adds two paths: a dense path (3x3 conv, concatenation, 3x3 conv, concatenation, 1x1
  conv) and a gradient path (fixed depthwise Sobel magnitude ``|Gx| + |Gy|`` and a 1x1 conv),
  followed by LeakyReLU 0.1;
* fusion by concatenation of the two 48-channel maps: the fused features B(vis, ir) are
  N x 96 x H x W (``feature_channels`` = 96);
* decoder: three 3x3 conv + LeakyReLU 0.2 (96 -> 64 -> 32 -> 16) and a 3x3 conv to
  ``channels`` with ``tanh(x) / 2 + 0.5``, so the output lies in [0, 1] (as the reference).

Everything runs at full resolution (``pad_multiple`` = 1). About 0.166 M parameters at the
defaults. Differences from the reference code: the Sobel filters are fixed buffers (the
reference registers them as trainable convolutions), the reference's unused BatchNorm layers
are omitted, and inputs/outputs have ``channels`` channels (3 for SSVIF's three-channel fusion).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ssvif_train.models.base import FusionModel
from ssvif_train.models.registry import register


def _check_positive_ints(name: str, values: Sequence[int]) -> None:
    if not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f'{name} must be positive integers, got {values!r}')


class SobelMagnitude(nn.Module):
    """Fixed depthwise Sobel gradient magnitude ``|Gx| + |Gy|`` (N x C x H x W -> same)."""

    def __init__(self, channels: int):
        super().__init__()
        gx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        kernel = torch.stack([gx, gx.t()])[:, None]                  # 2 x 1 x 3 x 3
        self.register_buffer('kernel', kernel.repeat(channels, 1, 1, 1), persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x H x W -> N x C x H x W gradient magnitude (zero padding, as the reference)."""
        g = F.conv2d(x, self.kernel, padding=1, groups=self.channels)  # N x 2C x H x W
        g = g.abs()
        return g[:, 0::2] + g[:, 1::2]


class GRDB(nn.Module):
    """Gradient Residual Dense Block: dense conv path + Sobel-gradient residual (1x1 convs)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        c = in_channels
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.reduce = nn.Conv2d(3 * c, out_channels, 1)
        self.sobel = SobelMagnitude(c)
        self.grad = nn.Conv2d(c, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x Cin x H x W -> N x Cout x H x W."""
        d = torch.cat([x, F.leaky_relu(self.conv1(x), 0.2)], dim=1)    # N x 2Cin x H x W
        d = torch.cat([d, F.leaky_relu(self.conv2(d), 0.2)], dim=1)    # N x 3Cin x H x W
        return F.leaky_relu(self.reduce(d) + self.grad(self.sobel(x)), 0.1)


class _Encoder(nn.Sequential):
    """One modality's encoder: 3x3 conv + LeakyReLU, then GRDBs along ``widths``."""

    def __init__(self, channels: int, widths: Sequence[int]):
        layers = [nn.Conv2d(channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers.append(GRDB(cin, cout))
        super().__init__(*layers)


@register('seafusion')
class SeAFusion(FusionModel):
    """SeAFusion-style light CNN; see the module docstring.

    Args:
        channels: image channels in and out (3: RGB / thermal repeated; 1: luma ablation).
        widths: encoder widths per modality: stem width then one GRDB per further entry.
        decoder_widths: widths of the decoder's 3x3 conv layers before the output conv.
    """

    pad_multiple = 1

    def __init__(self, channels: int = 3, widths: Sequence[int] = (16, 32, 48),
                 decoder_widths: Sequence[int] = (64, 32, 16)):
        super().__init__()
        widths, decoder_widths = list(widths), list(decoder_widths)
        _check_positive_ints('seafusion channels', [channels])
        _check_positive_ints('seafusion widths', widths)
        _check_positive_ints('seafusion decoder_widths', decoder_widths)
        if len(widths) < 1 or len(decoder_widths) < 1:
            raise ValueError('seafusion widths and decoder_widths need at least one entry')
        self.channels = channels
        self.vis_encoder = _Encoder(channels, widths)
        self.ir_encoder = _Encoder(channels, widths)
        self.feature_channels = 2 * widths[-1]
        layers = []
        cin = self.feature_channels
        for cout in decoder_widths:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2)]
            cin = cout
        layers.append(nn.Conv2d(cin, channels, 3, padding=1))
        self.decode = nn.Sequential(*layers)

    def backbone(self, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        """(vis, ir) N x c x H x W -> fused features N x 2*widths[-1] x H x W (vis first)."""
        return torch.cat([self.vis_encoder(vis), self.ir_encoder(ir)], dim=1)

    def decoder(self, feats: torch.Tensor) -> torch.Tensor:
        """Fused features N x C x H x W -> fused image N x c x H x W in [0, 1]."""
        return torch.tanh(self.decode(feats)) * 0.5 + 0.5
