"""EMMA-style fusion network: the U-shaped "Ufuser" of Zhao et al., CVPR 2024, three-channel.

EMMA ("Equivariant Multi-Modality Image Fusion") is a training framework (pseudo-sensing modules
and an equivariance loss) around a fusion network; SSVIF trains that network alone from scratch
(paper IV-A, table III exp. i; table IV: 1.52 M parameters at three channels). This module is
that network, written from the published description and the structure of the authors' public
``Ufuser`` (read, not copied):

* **Block** (a Restormer-CNN block, used everywhere): a 3x3 conv embeds the input to C
  channels; a *global* branch (channel LayerNorm, multi-head transposed attention: q, k, v from
  a 1x1 conv then a full 3x3 conv, q and k L2-normalized over the pixels, per head a
  C/h x C/h attention matrix scaled by a learned temperature, a 1x1 projection; then channel
  LayerNorm and a gated feed-forward: 1x1 to 2C, depthwise-style grouped 3x3, GELU gate,
  1x1 back, expansion 1) and a *local* branch (two residual blocks of two 3x3 conv) run in
  parallel; a 3x3 conv merges their concatenation. The attention costs O(C^2 HW), linear in
  the pixels, so it runs at full resolution.
* **Encoders**, one per modality, four levels (widths ``[8, 16, 32, 32]`` at 1, 1/2, 1/4,
  1/8): a block per level, stride-2 3x3 conv between levels.
* **Fusion** per level: a block on the concatenation of the two modalities' features. These
  four maps are the fused features B(vis, ir) (``backbone`` returns them as a list).
* **Decoder** D: a block on the 1/8 map, then per level up: transposed conv (4x4, stride 2) +
  ReLU, concatenation with that level's fused map, a block; a 3x3 conv to ``channels`` and a
  sigmoid.

3x3 convs use reflection padding, as the reference. ``seg_features`` is the fused map of level
``seg_level`` (default 4: 1/8 resolution, 32 channels, the most semantic and the cheapest for
SSVIF's head H; ``feature_channels`` follows).

Approximations and differences, stated:

* inputs and output have ``channels`` channels (SSVIF's three-channel fusion; the reference
  fuses one luma channel);
* heads per block = min(``num_heads``, C // 2): the reference uses 8 heads everywhere, so in
  its 8-channel blocks each head holds one channel, its 1 x 1 softmax is constantly 1, and the
  q/k weights and the temperature of those blocks never receive a gradient; with two channels
  per head they do. The parameter count barely changes (temperatures only);
* EMMA's training parts (pseudo-sensing modules, equivariance loss, shift/rotate/flip
  transforms) are not here: SSVIF replaces them (SSVIF's own loss and CSC train this network).

About 1.5 M parameters at the defaults. Sizes: ``pad_multiple`` = 8 and H, W >= 16 (the 1/8
level needs two pixels for reflection padding); pad with
:func:`ssvif_train.tensor_imaging.pad_to_multiple`, else ``backbone`` raises ValueError.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ssvif_train.models.base import FusionModel
from ssvif_train.models.registry import register

STRIDE = 8
LEVELS = 4


def _is_exporting() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def _conv3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=bias, padding_mode='reflect')


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of every pixel (with bias), N x C x H x W -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize each pixel's channel vector (biased variance, eps 1e-5)."""
        mu = x.mean(dim=1, keepdim=True)                                     # N x 1 x H x W
        var = (x - mu).pow(2).mean(dim=1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * self.weight + self.bias


class TransposedAttention(nn.Module):
    """Multi-head attention across channels (C/h x C/h per head), linear in the pixels."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(1, heads, 1, 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.qkv_conv = nn.Conv2d(3 * channels, 3 * channels, 3, 1, 1, bias=False)
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x H x W -> N x C x H x W."""
        n, c = x.shape[0], x.shape[1]
        q, k, v = self.qkv_conv(self.qkv(x)).chunk(3, dim=1)                # N x C x H x W
        q = F.normalize(q.reshape(n, self.heads, c // self.heads, -1), dim=-1)  # N x h x d x HW
        k = F.normalize(k.reshape(n, self.heads, c // self.heads, -1), dim=-1)
        v = v.reshape(n, self.heads, c // self.heads, -1)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.temperature, dim=-1)
        out = torch.matmul(attn, v).reshape(x.shape)                         # N x C x H x W
        return self.proj(out)


class GatedFeedForward(nn.Module):
    """1x1 to 2C, grouped 3x3 (two channels a group), GELU gate, 1x1 back to C."""

    def __init__(self, channels: int, expansion: float = 1.0):
        super().__init__()
        hidden = max(int(channels * expansion), 1)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=False)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, 1, 1, groups=hidden, bias=False,
                            padding_mode='reflect')
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x H x W -> N x C x H x W."""
        a, b = self.dw(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class ResBlock(nn.Module):
    """x + conv3x3(ReLU(conv3x3(x))) (with biases, reflection padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv3(channels, channels, bias=True), nn.ReLU(),
                                  _conv3(channels, channels, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x H x W -> N x C x H x W."""
        return x + self.body(x)


class Block(nn.Module):
    """Restormer-CNN block: embed, global (attention + FFN) and local branches, merge."""

    def __init__(self, cin: int, cout: int, num_heads: int, expansion: float,
                 local_blocks: int):
        super().__init__()
        heads = max(1, min(num_heads, cout // 2))
        while cout % heads:
            heads -= 1
        self.embed = _conv3(cin, cout)
        self.norm1 = ChannelNorm(cout)
        self.attn = TransposedAttention(cout, heads)
        self.norm2 = ChannelNorm(cout)
        self.ffn = GatedFeedForward(cout, expansion)
        self.local = nn.Sequential(*[ResBlock(cout) for _ in range(local_blocks)])
        self.merge = _conv3(2 * cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x Cin x H x W -> N x Cout x H x W."""
        x = self.embed(x)
        g = x + self.attn(self.norm1(x))
        g = g + self.ffn(self.norm2(g))
        return self.merge(torch.cat([g, self.local(x)], dim=1))


@register('emma')
class EMMAFusion(FusionModel):
    """EMMA-style U-shaped attention fusion network; see the module docstring.

    Args:
        channels: image channels in and out (3: RGB / thermal repeated; 1: luma ablation).
        widths: channels of the four levels (1, 1/2, 1/4, 1/8).
        num_heads: attention heads per block (at most C // 2 are used).
        expansion: feed-forward expansion of the global branch (reference: 1).
        local_blocks: residual blocks of the local branch (reference: 2).
        seg_level: which level's fused map (1..4) feeds SSVIF's segmentation head.
    """

    pad_multiple = STRIDE

    def __init__(self, channels: int = 3, widths: Sequence[int] = (8, 16, 32, 32),
                 num_heads: int = 8, expansion: float = 1.0, local_blocks: int = 2,
                 seg_level: int = 4):
        super().__init__()
        widths = list(widths)
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f'emma channels must be a positive integer, got {channels!r}')
        if len(widths) != LEVELS or not all(isinstance(w, int) and w > 1 for w in widths):
            raise ValueError(f'emma widths must be {LEVELS} integers >= 2, got {widths!r}')
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f'emma num_heads must be a positive integer, got {num_heads!r}')
        if not expansion > 0:
            raise ValueError(f'emma expansion must be > 0, got {expansion!r}')
        if not isinstance(local_blocks, int) or local_blocks < 0:
            raise ValueError(f'emma local_blocks must be an integer >= 0, got '
                             f'{local_blocks!r}')
        if seg_level not in range(1, LEVELS + 1):
            raise ValueError(f'emma seg_level must be 1..{LEVELS}, got {seg_level!r}')
        self.channels = channels
        self.seg_level = seg_level
        self.feature_channels = widths[seg_level - 1]

        def block(cin, cout):
            return Block(cin, cout, num_heads, float(expansion), local_blocks)

        ins = [channels] + widths[:-1]
        self.enc_vis = nn.ModuleList(block(ins[i], widths[i]) for i in range(LEVELS))
        self.enc_ir = nn.ModuleList(block(ins[i], widths[i]) for i in range(LEVELS))
        self.down_vis = nn.ModuleList(_conv3(widths[i], widths[i], 2) for i in range(LEVELS - 1))
        self.down_ir = nn.ModuleList(_conv3(widths[i], widths[i], 2) for i in range(LEVELS - 1))
        self.fuse = nn.ModuleList(block(2 * w, w) for w in widths)
        self.dec_bottom = block(widths[3], widths[3])
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(widths[i + 1], widths[i], 4, 2, 1, bias=False),
                          nn.ReLU())
            for i in range(LEVELS - 1))
        self.dec = nn.ModuleList(block(2 * widths[i], widths[i]) for i in range(LEVELS - 1))
        self.last = nn.Conv2d(widths[0], channels, 3, 1, 1, padding_mode='reflect')

    def backbone(self, vis: torch.Tensor, ir: torch.Tensor) -> List[torch.Tensor]:
        """(vis, ir) N x c x H x W (H, W multiples of 8, >= 16) -> fused maps of levels 1..4.

        Level k (1-based): N x widths[k-1] x H/2^(k-1) x W/2^(k-1).
        """
        h, w = vis.shape[-2], vis.shape[-1]
        if not _is_exporting() and (h % STRIDE or w % STRIDE or h < 2 * STRIDE
                                    or w < 2 * STRIDE or ir.shape != vis.shape):
            raise ValueError(f'emma needs vis and ir of equal size with H and W multiples of '
                             f'{STRIDE} and at least {2 * STRIDE} (pad with '
                             f'ssvif_train.tensor_imaging.pad_to_multiple); got vis '
                             f'{tuple(vis.shape)}, ir {tuple(ir.shape)}')
        a, b = vis, ir
        fused = []
        for i in range(LEVELS):
            if i:
                a, b = self.down_vis[i - 1](a), self.down_ir[i - 1](b)
            a, b = self.enc_vis[i](a), self.enc_ir[i](b)                     # N x w_i x h_i x w_i
            fused.append(self.fuse[i](torch.cat([a, b], dim=1)))
        return fused

    def seg_features(self, feats) -> torch.Tensor:
        """The fused map of level ``seg_level`` (default: N x 32 x H/8 x W/8)."""
        return feats[self.seg_level - 1]

    def decoder(self, feats) -> torch.Tensor:
        """Fused maps of levels 1..4 -> fused image N x c x H x W in (0, 1)."""
        d = self.dec_bottom(feats[-1])                                       # N x w4 x H/8 x W/8
        for i in range(LEVELS - 2, -1, -1):
            d = self.dec[i](torch.cat([self.up[i](d), feats[i]], dim=1))     # N x w_i x ...
        return torch.sigmoid(self.last(d))
