"""RTFusion: a real-time fusion CNN for CPU deployment (fusion + segmentation head at 640x480).

Design (defaults ``widths=[16, 32, 64]``, total stride 8):

* **Early fusion, strided encoder.** Two stride-2 3x3 stems (one per modality, summed: early
  fusion without a full-resolution concatenation) give 1/2 resolution; depthwise-separable
  residual blocks follow at 1/2, 1/4 and 1/8 (stride-2 depthwise convs between levels). The
  1/8 level uses dilated depthwise convs (dilation 1, 2, 4) and a global-average-pool context
  term, so the segmentation features see a large part of the image.
* **Cheap segmentation features.** ``seg_features`` is the 1/8 encoder output (N x widths[2] x
  H/8 x W/8), so SegHead's two 3x3 convs run on 64x fewer pixels than at full resolution.
  ``seg_stride=4`` uses the 1/4 decoder map instead (finer masks, about 3x the head cost).
* **U-shaped decoder** with additive skips back to 1/2 (bilinear x2 upsampling, one separable
  block per level).
* **Full-resolution detail without full-resolution convs.** The output head works at 1/2
  resolution. It adds a 2x2 stride-2 conv of each input to the decoder features; that conv is
  exactly a 1x1 conv of the inputs' space-to-depth (pixel_unshuffle) copy, so every input pixel
  reaches the head unaveraged. The head predicts 4c channels and ``pixel_shuffle`` turns them
  into c channels at full resolution (sub-pixel convolution): every output pixel gets its own
  value, at a quarter of the cost of a full-resolution conv.
* **Residual on a max-luma base.** ``b = vis + relu(Y(ir) - Y(vis))`` replaces the visible luma
  by ``max(Y_vis, Y_ir)`` and keeps the visible chroma exactly (the image of
  :func:`ssvif_ros.imaging.max_luma_fusion`, BT.601 weights taken from that module; for
  ``channels=1`` it is ``max(vis, ir)``). With ``b`` clamped to [eps, 1 - eps] and the head's
  full-resolution map ``q``, ``fused = b / (b + (1 - b) exp(q)) = sigmoid(logit(b) - q)``: the
  output lies in (0, 1), ``q = 0`` gives the base, and no gradient is cut by clipping the
  output. ``base='none'`` gives ``sigmoid(-q)``. The last conv starts with small weights, so a
  fresh model already outputs (nearly) the max-luma image.

About 0.032 M parameters at the defaults; 0.39 GMAC per 640x480 pair, plus 0.36 GMAC for
SegHead (64 hidden channels) on the 1/8 features (1.08 GMAC with ``seg_stride=4``).
bench/model_speed.py times F + H + argmax in ONNX Runtime.

Sizes: ``pad_multiple`` = 8; H and W must be multiples of 8 (pad with
:func:`ssvif_train.tensor_imaging.pad_to_multiple`), else ``backbone`` raises ValueError. All size
arithmetic follows the tensors (fixed x2 scales, no Python size ints), so an ONNX export keeps
H and W dynamic.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ssvif_train.models.base import FusionModel
from ssvif_train.models.registry import register
from ssvif_train.tensor_imaging import luma_weights

STRIDE = 8
_BASES = ('max_luma', 'none')


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
             dilation: int = 1, relu: bool = True, padding: str = 'zeros') -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, dilation * (k // 2), dilation, groups,
                        bias=False, padding_mode=padding),
              nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SepBlock(nn.Module):
    """Residual depthwise-separable block: dw3x3 (dilated) + BN + ReLU, pw + BN, add, ReLU."""

    def __init__(self, channels: int, dilation: int = 1, padding: str = 'zeros'):
        super().__init__()
        self.dw = _conv_bn(channels, channels, 3, groups=channels, dilation=dilation,
                           padding=padding)
        self.pw = _conv_bn(channels, channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x h x w -> N x C x h x w."""
        return F.relu(x + self.pw(self.dw(x)))


class DownBlock(nn.Sequential):
    """Stride-2 separable downsampling: dw3x3 s2 + BN, pw (cin -> cout) + BN + ReLU."""

    def __init__(self, cin: int, cout: int, padding: str = 'zeros'):
        super().__init__(_conv_bn(cin, cin, 3, stride=2, groups=cin, relu=False,
                                  padding=padding),
                         _conv_bn(cin, cout, 1))


class GlobalContext(nn.Module):
    """Add a 1x1-conv projection of the global average to every position."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x h x w -> N x C x h x w."""
        return F.relu(x + self.proj(x.mean(dim=(2, 3), keepdim=True)))


def _up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling (align_corners=False), N x C x h x w -> N x C x 2h x 2w."""
    return F.interpolate(x, scale_factor=2.0, mode='bilinear', align_corners=False)


def _is_exporting() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


@register('rtfusion')
class RTFusion(FusionModel):
    """Real-time fusion CNN; see the module docstring.

    Args:
        channels: image channels in and out (3: RGB / thermal repeated; 1: luma ablation).
        widths: channels at 1/2, 1/4 and 1/8 resolution.
        blocks: separable blocks per level at 1/2, 1/4 and 1/8.
        dilations: dilation cycle of the 1/8 blocks.
        base: ``'max_luma'`` (residual on the max-luma image) or ``'none'``.
        eps: the base is clamped to [eps, 1 - eps] (so the residual can move every pixel).
        seg_stride: 8: ``seg_features`` is the 1/8 encoder output (widths[2] channels);
            4: the 1/4 decoder map (widths[1] channels; finer masks, SegHead costs ~3x more).
        head_width: channels of the 1/2-resolution output head (0: widths[0]).
        head_blocks: extra separable blocks in the output head.
        padding: ``'zeros'`` or ``'replicate'``: how the 3x3 convs see past the image border.
            Zero padding makes the border look like a dark edge, and a stride-2 conv sees it on
            the left/top only, so class maps grew stripes along those edges; ``replicate``
            gives a constant image a constant output everywhere.
    """

    pad_multiple = STRIDE

    def __init__(self, channels: int = 3, widths: Sequence[int] = (16, 32, 64),
                 blocks: Sequence[int] = (1, 2, 3), dilations: Sequence[int] = (1, 2, 4),
                 base: str = 'max_luma', eps: float = 1e-3, seg_stride: int = 8,
                 head_width: int = 0, head_blocks: int = 0, padding: str = 'zeros'):
        super().__init__()
        widths, blocks, dilations = list(widths), list(blocks), list(dilations)
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f'rtfusion channels must be a positive integer, got {channels!r}')
        if len(widths) != 3 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f'rtfusion widths must be 3 positive integers, got {widths!r}')
        if len(blocks) != 3 or not all(isinstance(b, int) and b >= 0 for b in blocks):
            raise ValueError(f'rtfusion blocks must be 3 non-negative integers, got {blocks!r}')
        if not dilations or not all(isinstance(d, int) and d > 0 for d in dilations):
            raise ValueError(f'rtfusion dilations must be positive integers, got {dilations!r}')
        if base not in _BASES:
            raise ValueError(f'rtfusion base {base!r} is not one of {_BASES}')
        if not 0.0 < eps < 0.5:
            raise ValueError(f'rtfusion eps must be in (0, 0.5), got {eps}')
        if not isinstance(head_width, int) or head_width < 0:
            raise ValueError(f'rtfusion head_width must be an integer >= 0, got {head_width!r}')
        if not isinstance(head_blocks, int) or head_blocks < 0:
            raise ValueError(f'rtfusion head_blocks must be an integer >= 0, got '
                             f'{head_blocks!r}')
        if padding not in ('zeros', 'replicate'):
            raise ValueError(f"rtfusion padding must be 'zeros' or 'replicate', got {padding!r}")
        if seg_stride not in (4, 8):
            raise ValueError(f'rtfusion seg_stride must be 4 or 8, got {seg_stride!r}')
        c = channels
        w1, w2, w3 = widths
        self.channels, self.base, self.eps = c, base, float(eps)
        self.seg_stride = seg_stride
        self.feature_channels = w3 if seg_stride == 8 else w2
        # Encoder: one stride-2 stem per modality, summed (early fusion without a full-res concat).
        pm = padding
        self.stem_vis = nn.Conv2d(c, w1, 3, 2, 1, padding_mode=pm)
        self.stem_ir = nn.Conv2d(c, w1, 3, 2, 1, bias=False, padding_mode=pm)
        self.enc1 = nn.Sequential(*[SepBlock(w1, padding=pm) for _ in range(blocks[0])])
        self.down2 = DownBlock(w1, w2, pm)
        self.enc2 = nn.Sequential(*[SepBlock(w2, padding=pm) for _ in range(blocks[1])])
        self.down3 = DownBlock(w2, w3, pm)
        self.enc3 = nn.Sequential(*[SepBlock(w3, dilations[i % len(dilations)], pm)
                                    for i in range(blocks[2])], GlobalContext(w3))
        # Decoder.
        self.lat3 = _conv_bn(w3, w2, 1)
        self.dec2 = SepBlock(w2, padding=pm)
        self.lat2 = _conv_bn(w2, w1, 1)
        self.dec1 = SepBlock(w1, padding=pm)
        # Output head at 1/2: a 2x2 stride-2 conv of the inputs is a 1x1 conv of their
        # space-to-depth (pixel_unshuffle) copy, without the reshuffle.
        hw = head_width or w1
        self.head_feat = nn.Conv2d(w1, hw, 1)
        self.head_vis = nn.Conv2d(c, hw, 2, 2, bias=False)
        self.head_ir = nn.Conv2d(c, hw, 2, 2, bias=False)
        self.head_dw = nn.Sequential(_conv_bn(hw, hw, 3, groups=hw, padding=pm),
                                     *[SepBlock(hw, padding=pm) for _ in range(head_blocks)])
        self.head_out = nn.Conv2d(hw, 4 * c, 1)
        with torch.no_grad():
            # Start close to the base image while keeping a gradient path to every weight.
            self.head_out.weight.mul_(0.1)
            self.head_out.bias.zero_()
        # Luma weights of the base (BT.601 from ssvif_ros.imaging; the mean if c != 3).
        if c == 3:
            luma = luma_weights()                                           # 3
        else:
            luma = torch.full((c,), 1.0 / c)
        self.register_buffer('luma', luma.reshape(1, c, 1, 1).float(), persistent=False)

    def backbone(self, vis: torch.Tensor, ir: torch.Tensor):
        """(vis, ir) N x c x H x W (H, W multiples of 8) -> dict of tensors.

        ``seg``: the seg features (N x widths[2] x H/8 x W/8 encoder output, or with
        ``seg_stride=4`` the N x widths[1] x H/4 x W/4 decoder map); ``y``: N x head_width x
        H/2 x W/2 output-head features (decoder features + the inputs' 2x2 blocks);
        ``ir``/``vis``: the inputs, for the base image.
        """
        h, w = vis.shape[-2], vis.shape[-1]
        if not _is_exporting() and (h % STRIDE or w % STRIDE or ir.shape != vis.shape):
            raise ValueError(f'rtfusion needs vis and ir of equal size with H and W multiples '
                             f'of {STRIDE} (pad with ssvif_train.tensor_imaging.pad_to_multiple);'
                             f' got vis {tuple(vis.shape)}, ir {tuple(ir.shape)}')
        e1 = self.enc1(F.relu(self.stem_vis(vis) + self.stem_ir(ir)))      # N x w1 x H/2 x W/2
        e2 = self.enc2(self.down2(e1))                                      # N x w2 x H/4 x W/4
        e3 = self.enc3(self.down3(e2))                                      # N x w3 x H/8 x W/8
        d2 = self.dec2(e2 + _up2(self.lat3(e3)))                            # N x w2 x H/4 x W/4
        d1 = self.dec1(e1 + _up2(self.lat2(d2)))                            # N x w1 x H/2 x W/2
        y = F.relu(self.head_feat(d1) + self.head_vis(vis) + self.head_ir(ir))
        return {'seg': e3 if self.seg_stride == 8 else d2, 'y': y, 'ir': ir, 'vis': vis}

    def seg_features(self, feats) -> torch.Tensor:
        """The seg features: N x widths[2] x H/8 x W/8 (or N x widths[1] x H/4 x W/4)."""
        return feats['seg']

    def decoder(self, feats) -> torch.Tensor:
        """Backbone dict -> fused image N x c x H x W in (0, 1).

        With the max-luma base b: ``b / (b + (1 - b) exp(q))`` = ``sigmoid(logit(b) - q)``,
        q the predicted full-resolution map (clamped to +-20 so exp stays finite).
        """
        q = F.pixel_shuffle(self.head_out(self.head_dw(feats['y'])), 2)    # N x c x H x W
        if self.base == 'none':
            return torch.sigmoid(-q)
        vis, ir = feats['vis'], feats['ir']
        delta = F.relu(F.conv2d(ir - vis, self.luma))                       # N x 1 x H x W
        b = (vis + delta).clamp(self.eps, 1.0 - self.eps)                   # N x c x H x W
        return b / (b + (1.0 - b) * torch.exp(q.clamp(-20.0, 20.0)))
