"""SwinFusion-style transformer fusion model (Ma et al., IEEE/CAA JAS 2022), three-channel.

Architecture at the defaults (``embed_dim=60``, 6 heads, window 8, MLP ratio 2, as the
reference's infrared-visible configuration):

1. shallow features, one per modality: 3x3 conv (``channels`` -> C/2) + LeakyReLU 0.2, 3x3 conv
   (C/2 -> C) + LeakyReLU 0.2;
2. intra-domain long-range learning, one per modality: ``ex_depth`` = 4 Swin blocks (window
   self-attention with relative position bias, every second block shifted by half a window),
   then LayerNorm;
3. fusion, ``fusion_depths`` = [2, 2] stages; each stage runs ``d`` Swin blocks per modality
   (intra-domain), then ``d`` cross-domain blocks in which the visible tokens query the
   infrared tokens' keys/values and vice versa (shifted windows on odd blocks); LayerNorm per
   modality, concatenation and a 3x3 conv (2C -> C) + LeakyReLU give the fused features
   B(vis, ir): N x C x H x W (``feature_channels`` = C = 60);
4. reconstruction D: ``re_depth`` = 4 Swin blocks, LayerNorm, 3x3 convs C -> C/2 -> C/4
   (LeakyReLU 0.2) -> ``channels``, then ``tanh(x) / 2 + 0.5`` so the output lies in [0, 1]
   (the reference returns the raw conv output; a bounded output suits the [0, 1] images here).

About 0.983 M parameters at the defaults (the SSVIF paper's table IV: 0.98 M).

Sizes: ``pad_multiple`` = ``window_size``; callers pad with
:func:`ssvif_train.tensor_imaging.pad_to_multiple` (reflection). Any other H x W still works:
the backbone and the decoder replicate-pad internally to the window multiple and crop back, so
the features and the output always have the input's H x W. All window bookkeeping (partition,
cyclic shift, shifted-window mask) is computed from tensor shapes with torch ops, so an ONNX
export keeps H and W dynamic.

Differences from the reference code: the two shallow extractors have their own weights (the
reference's B branch reuses A's convolutions), window attention always uses separate q and kv
projections (same parameter count as a joint qkv), no stochastic depth.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ssvif_train.models.base import FusionModel
from ssvif_train.models.registry import register


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """N x H x W x C (H, W multiples of ``ws``) -> (N * nW) x ws*ws x C windows."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, like: torch.Tensor) -> torch.Tensor:
    """(N * nW) x ws*ws x C windows -> N x H x W x C with the shape of ``like``."""
    n, h, w, c = like.shape
    x = windows.reshape(n, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, c)


def shifted_window_mask(x: torch.Tensor, ws: int, shift: int) -> torch.Tensor:
    """Attention mask nW x ws*ws x ws*ws (0 or -100) for a cyclic shift of ``shift``.

    ``x`` is the N x H x W x C token map the mask is for (only its H, W, device, dtype are
    used). After ``torch.roll(-shift)`` the last window row/column mixes tokens from the two
    image borders; tokens from different regions must not attend to each other.
    """
    h, w = x.shape[1], x.shape[2]
    rows = torch.arange(h, device=x.device)                                  # H
    cols = torch.arange(w, device=x.device)                                  # W
    rid = (rows >= h - ws).long() + (rows >= h - shift).long()               # H in {0, 1, 2}
    cid = (cols >= w - ws).long() + (cols >= w - shift).long()               # W in {0, 1, 2}
    region = (rid[:, None] * 3 + cid[None, :])[None, :, :, None]            # 1 x H x W x 1
    region = window_partition(region, ws)[:, :, 0]                           # nW x L
    diff = region[:, :, None] != region[:, None, :]                          # nW x L x L
    return diff.to(x.dtype) * -100.0


class WindowAttention(nn.Module):
    """Multi-head attention inside ws x ws windows with a relative position bias.

    Queries come from ``x``; keys and values from ``y`` (``y = x``: self-attention).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        ws = window_size
        self.bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij'))
        coords = coords.flatten(1)                                           # 2 x L
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)     # L x L x 2
        index = (rel[:, :, 0] + ws - 1) * (2 * ws - 1) + (rel[:, :, 1] + ws - 1)
        self.register_buffer('bias_index', index.reshape(-1), persistent=False)  # L*L
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x, y: B_ x L x C windows (B_ = N * nW); mask nW x L x L or None -> B_ x L x C."""
        b, length, c = x.shape
        nh = self.num_heads
        q = self.q(x).reshape(b, length, nh, c // nh).transpose(1, 2)      # B_ x h x L x d
        kv = self.kv(y).reshape(b, length, 2, nh, c // nh).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]                                                  # B_ x h x L x d
        attn = (q * self.scale) @ k.transpose(-2, -1)                        # B_ x h x L x L
        bias = self.bias_table[self.bias_index].reshape(length, length, nh).permute(2, 0, 1)
        attn = attn + bias[None]
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.reshape(-1, nw, nh, length, length) + mask[None, :, None]
            attn = attn.reshape(-1, nh, length, length)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, length, c)             # B_ x L x C
        return self.proj(out)


class Mlp(nn.Sequential):
    """Linear -> GELU -> Linear on the last dimension."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


def _windowed(attn: WindowAttention, x: torch.Tensor, y: torch.Tensor, ws: int, shift: int,
              mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Run window attention on N x H x W x C maps (queries x, keys/values y), with shift."""
    if shift > 0:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
    out = attn(window_partition(x, ws), window_partition(y, ws), mask if shift > 0 else None)
    out = window_reverse(out, ws, x)                                         # N x H x W x C
    if shift > 0:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out


class SwinBlock(nn.Module):
    """Swin Transformer block (pre-norm W-MSA / SW-MSA + MLP) on N x H x W x C maps."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int,
                 mlp_ratio: float):
        super().__init__()
        self.ws, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """N x H x W x C -> N x H x W x C; ``mask`` from :func:`shifted_window_mask`."""
        t = self.norm1(x)
        x = x + _windowed(self.attn, t, t, self.ws, self.shift, mask)
        return x + self.mlp(self.norm2(x))


class CrossSwinBlock(nn.Module):
    """Cross-domain Swin block: a queries b's keys/values and b queries a's (two directions)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int,
                 mlp_ratio: float):
        super().__init__()
        self.ws, self.shift = window_size, shift
        self.norm1_a, self.norm1_b = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn_a = WindowAttention(dim, num_heads, window_size)
        self.attn_b = WindowAttention(dim, num_heads, window_size)
        self.norm2_a, self.norm2_b = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp_a = Mlp(dim, int(dim * mlp_ratio))
        self.mlp_b = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor):
        """a, b: N x H x W x C -> (a', b') of the same shape."""
        ta, tb = self.norm1_a(a), self.norm1_b(b)
        a = a + _windowed(self.attn_a, ta, tb, self.ws, self.shift, mask)
        b = b + _windowed(self.attn_b, tb, ta, self.ws, self.shift, mask)
        a = a + self.mlp_a(self.norm2_a(a))
        b = b + self.mlp_b(self.norm2_b(b))
        return a, b


def _swin_stack(depth: int, dim: int, heads: int, ws: int, mlp_ratio: float) -> nn.ModuleList:
    return nn.ModuleList(SwinBlock(dim, heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio)
                         for i in range(depth))


class _FusionStage(nn.Module):
    """Intra-domain Swin blocks per modality, then cross-domain blocks."""

    def __init__(self, depth: int, dim: int, heads: int, ws: int, mlp_ratio: float):
        super().__init__()
        self.intra_vis = _swin_stack(depth, dim, heads, ws, mlp_ratio)
        self.intra_ir = _swin_stack(depth, dim, heads, ws, mlp_ratio)
        self.cross = nn.ModuleList(
            CrossSwinBlock(dim, heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio)
            for i in range(depth))

    def forward(self, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor):
        """a (vis), b (ir): N x H x W x C -> fused pair of the same shape."""
        for blk in self.intra_vis:
            a = blk(a, mask)
        for blk in self.intra_ir:
            b = blk(b, mask)
        for blk in self.cross:
            a, b = blk(a, b, mask)
        return a, b


def _shallow(channels: int, dim: int) -> nn.Sequential:
    half = max(dim // 2, 1)
    return nn.Sequential(nn.Conv2d(channels, half, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(half, dim, 3, padding=1), nn.LeakyReLU(0.2))


def _pad_to_window(x: torch.Tensor, ws: int) -> torch.Tensor:
    """Replicate-pad N x C x H x W at the bottom/right to multiples of ``ws`` (shape-traced)."""
    h, w = x.shape[-2], x.shape[-1]
    ph = (ws - h % ws) % ws
    pw = (ws - w % ws) % ws
    return F.pad(x, (0, pw, 0, ph), mode='replicate')


@register('swinfusion')
class SwinFusion(FusionModel):
    """SwinFusion-style model; see the module docstring.

    Args:
        channels: image channels in and out (3: RGB / thermal repeated; 1: luma ablation).
        embed_dim: token width C (must divide by ``num_heads``).
        num_heads: attention heads in every block.
        window_size: attention window side (also ``pad_multiple``); shifted blocks move by half.
        mlp_ratio: MLP hidden width / C.
        ex_depth: intra-domain Swin blocks per modality before fusion.
        fusion_depths: one fusion stage per entry, with that many intra and cross blocks.
        re_depth: Swin blocks of the reconstruction decoder.
    """

    def __init__(self, channels: int = 3, embed_dim: int = 60, num_heads: int = 6,
                 window_size: int = 8, mlp_ratio: float = 2.0, ex_depth: int = 4,
                 fusion_depths: Sequence[int] = (2, 2), re_depth: int = 4):
        super().__init__()
        fusion_depths = list(fusion_depths)
        for name, v in (('channels', channels), ('embed_dim', embed_dim),
                        ('num_heads', num_heads), ('window_size', window_size)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f'swinfusion {name} must be a positive integer, got {v!r}')
        if embed_dim % num_heads:
            raise ValueError(f'swinfusion embed_dim {embed_dim} is not divisible by '
                             f'num_heads {num_heads}')
        if window_size < 2:
            raise ValueError(f'swinfusion window_size must be >= 2, got {window_size}')
        if not mlp_ratio > 0:
            raise ValueError(f'swinfusion mlp_ratio must be > 0, got {mlp_ratio}')
        depths = [ex_depth, re_depth] + fusion_depths
        if not all(isinstance(d, int) and d >= 0 for d in depths) or not fusion_depths:
            raise ValueError('swinfusion depths must be non-negative integers and fusion_depths '
                             f'non-empty, got ex={ex_depth} fusion={fusion_depths} '
                             f're={re_depth}')
        c, ws = embed_dim, window_size
        self.channels = channels
        self.window_size = ws
        self.pad_multiple = ws
        self.feature_channels = c
        self.shallow_vis = _shallow(channels, c)
        self.shallow_ir = _shallow(channels, c)
        self.ex_vis = _swin_stack(ex_depth, c, num_heads, ws, mlp_ratio)
        self.ex_ir = _swin_stack(ex_depth, c, num_heads, ws, mlp_ratio)
        self.norm_ex_vis, self.norm_ex_ir = nn.LayerNorm(c), nn.LayerNorm(c)
        self.fusion = nn.ModuleList(_FusionStage(d, c, num_heads, ws, mlp_ratio)
                                    for d in fusion_depths)
        self.norm_fu_vis, self.norm_fu_ir = nn.LayerNorm(c), nn.LayerNorm(c)
        self.fuse_conv = nn.Conv2d(2 * c, c, 3, padding=1)
        self.re = _swin_stack(re_depth, c, num_heads, ws, mlp_ratio)
        self.norm_re = nn.LayerNorm(c)
        c2, c4 = max(c // 2, 1), max(c // 4, 1)
        self.tail = nn.Sequential(nn.Conv2d(c, c2, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(c2, c4, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(c4, channels, 3, padding=1))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def backbone(self, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        """(vis, ir) N x c x H x W -> fused features N x C x H x W (any H, W)."""
        h, w = vis.shape[-2], vis.shape[-1]
        ws = self.window_size
        a = self.shallow_vis(_pad_to_window(vis, ws)).permute(0, 2, 3, 1)   # N x Hp x Wp x C
        b = self.shallow_ir(_pad_to_window(ir, ws)).permute(0, 2, 3, 1)     # N x Hp x Wp x C
        mask = shifted_window_mask(a, ws, ws // 2)                           # nW x L x L
        for blk in self.ex_vis:
            a = blk(a, mask)
        for blk in self.ex_ir:
            b = blk(b, mask)
        a, b = self.norm_ex_vis(a), self.norm_ex_ir(b)
        for stage in self.fusion:
            a, b = stage(a, b, mask)
        f = torch.cat([self.norm_fu_vis(a), self.norm_fu_ir(b)], dim=-1)    # N x Hp x Wp x 2C
        f = F.leaky_relu(self.fuse_conv(f.permute(0, 3, 1, 2)), 0.2)        # N x C x Hp x Wp
        return f[:, :, :h, :w]

    def decoder(self, feats: torch.Tensor) -> torch.Tensor:
        """Fused features N x C x H x W -> fused image N x c x H x W in [0, 1]."""
        h, w = feats.shape[-2], feats.shape[-1]
        ws = self.window_size
        x = _pad_to_window(feats, ws).permute(0, 2, 3, 1)                   # N x Hp x Wp x C
        mask = shifted_window_mask(x, ws, ws // 2)
        for blk in self.re:
            x = blk(x, mask)
        x = self.tail(self.norm_re(x).permute(0, 3, 1, 2))                  # N x c x Hp x Wp
        return (torch.tanh(x) * 0.5 + 0.5)[:, :, :h, :w]
