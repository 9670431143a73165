"""SegFANet: segmentation-assisted fusion with stage-interactive networks (SINets).

The paper (``../shared/papers/segfanet.txt``, section 3) joins a segmentation network and a
fusion network, both encoder + decoder and trained from scratch, by ``n`` SINets between
corresponding encoder stages. Each SINet has an image reconstruction module (IRM), a cross
attention module (CAM) and a feature fusion module (FFM). What the paper fixes is kept; what it
leaves open is chosen here and listed below.

Layout at the defaults (``widths=[16, 32, 48]``, ``stem=8``, ``seg_width=32``, 3 SINets):

* **Inputs** ``(vis, ir)`` N x c x H x W in [0, 1]; both networks read their concatenation
  (2c channels). H and W must be multiples of 8 (``pad_multiple``); callers pad with
  :func:`ssvif_train.tensor_imaging.pad_to_multiple`, else ``backbone`` raises ValueError.
* **Fusion encoder** E^F: a full-resolution stem (two 3x3 conv, ``stem`` channels, LeakyReLU
  0.2, no SINet: it only carries detail to the output), then three stages at 1/2, 1/4, 1/8,
  each a stride-2 3x3 conv and a 3x3 conv (``widths[i]`` channels, LeakyReLU 0.2, no
  normalization, as fusion CNNs usually do).
* **Segmentation encoder** E^S: the same three stage resolutions and widths (so "corresponding
  stages" pair by resolution), 3x3 conv + BatchNorm + ReLU; its 1/8 stage uses a dilation-2
  conv and adds a 1x1 projection of its global average (context for the class map).
* **Segmentation decoder**: the 1/8 map upsampled (bilinear x2) and added to a 1x1 lateral of
  the 1/4 stage, then a 3x3 conv: ``seg_features`` = N x ``seg_width`` x H/4 x W/4. The last
  block of the segmentation network, its classifier, is the trainer's segmentation head H
  (two 3x3 conv + 1x1, :class:`ssvif_train.models.segmentation.SegHead`), the same module every
  other model gets; so export, backends and the node run SegFANet's own class map unchanged.
* **SINet i** (stages 1..``sinets``, the shallowest first; stages without one pass f^F on):

  - IRM (eq. 3): four 3x3 conv + ReLU on f^S_{e,i}, width ``widths[i]`` -> f^R_i. The image
    that L_rec scores (eq. 17) is a 1x1 conv of f^R_i to c channels, upsampled bilinearly by
    2^i to H x W, then a sigmoid (:meth:`SegFANet.reconstructions`). ``irm: false`` (ablation,
    table 4) uses f^R_i = f^S_{e,i} directly (the widths match, so no projection is needed) and
    has no reconstruction image.
  - CAM (eqs. 6-10): Q = BN_q(AAP(f^F)), V = BN_v(AAP(f^F)), K = BN_k(AAP(f^R)), with separate
    BatchNorm layers for Q, K and V (one shared BN would make Q = V) and no learned
    projections (the paper names none). AAP pools to ``pool`` x ``pool`` (8 x 8 = 64 tokens of
    C channels; spatial tokens, so the attention weights form the spatial heat maps of the
    paper's figure 9), one head, d = C, O = softmax(Q K^T / sqrt(C)) V. O (N x C x p x p)
    returns to the feature size by bilinear interpolation (align_corners=False) and is
    concatenated with f^F_{e,i}: the next stage reads 2C channels. AAP is computed as two
    averaging matrices built from the tensor's shape (identical to ``adaptive_avg_pool2d``,
    tested), because ONNX has no adaptive pooling for sizes that are not known at export.
    ``cam: false`` (ablation, table 5) replaces the CAM by f^F + f^R.
  - FFM (eqs. 11-13): two 3x3 conv + ReLU on f^R_i, concatenated with the fusion decoder
    feature f^F_{d} of the same resolution, two 3x3 conv + ReLU, concatenated with f^F_d
    again, 1x1 conv back to f^F_d's width.

* **Fusion decoder** D: the last stage's output (2C channels after a CAM) -> 3x3 conv to
  ``widths[2]`` at 1/8, FFM_3; bilinear x2, concatenation with the fusion encoder's stage
  feature (before its CAM), 3x3 conv, FFM_2; the same at 1/2 with FFM_1; then x2 to full
  resolution, concatenation with the stem, a 3x3 conv and a 3x3 conv to one channel, sigmoid:
  the fused luma Y_f.
* **Colour.** The paper scores the fused image against I_ir and I_vis^Y (eq. 15): the network
  fuses luma. The output keeps the visible chroma exactly: with BT.601 full-range YCbCr,
  replacing Y by Y_f and keeping Cb, Cr is ``fused = vis + (Y_f - Y_vis)`` on every channel,
  clamped to [0, 1]. ``channels=1`` returns Y_f.

About 0.51 M parameters at the defaults; 160 x 160 training crops on 2 CPU cores are the
intended scale. ``sinets`` may also be 0 (the two networks only share the inputs).
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ssvif_train.models.base import FusionModel
from ssvif_train.models.registry import register
from ssvif_train.tensor_imaging import luma_weights

STRIDE = 8
STAGES = 3


def _is_exporting() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def _up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling, N x C x h x w -> N x C x 2h x 2w."""
    return F.interpolate(x, scale_factor=2.0, mode='bilinear', align_corners=False)


def _conv_lrelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU())


def pooling_matrix(n, p: int, like: torch.Tensor) -> torch.Tensor:
    """p x n matrix whose rows average the bins of ``adaptive_avg_pool`` from n to p.

    Bin i covers [floor(i n / p), ceil((i + 1) n / p)). ``n`` may be a traced size, so an ONNX
    export keeps it dynamic.
    """
    i = torch.arange(p, device=like.device)                                   # p
    start = torch.div(i * n, p, rounding_mode='floor')
    end = torch.div((i + 1) * n + (p - 1), p, rounding_mode='floor')
    pos = torch.arange(n, device=like.device)                                 # n
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])  # p x n
    m = inside.to(like.dtype)
    return m / m.sum(dim=1, keepdim=True)


def adaptive_avg_pool(x: torch.Tensor, p: int) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, p)`` as two matrix products: N x C x h x w -> N x C x p x p."""
    ah = pooling_matrix(x.shape[-2], p, x)                                    # p x h
    aw = pooling_matrix(x.shape[-1], p, x)                                    # p x w
    return torch.matmul(torch.matmul(ah, x), aw.transpose(0, 1))


class IRM(nn.Module):
    """Image reconstruction module: four 3x3 conv + ReLU, and the 1x1 image projection."""

    def __init__(self, width: int, channels: int):
        super().__init__()
        self.body = nn.Sequential(*[_conv_relu(width, width) for _ in range(4)])
        self.to_image = nn.Conv2d(width, channels, 1)

    def forward(self, seg_feat: torch.Tensor) -> torch.Tensor:
        """f^S N x C x h x w -> f^R N x C x h x w."""
        return self.body(seg_feat)


class CAM(nn.Module):
    """Cross attention module (eqs. 6-10); see the module docstring for the choices."""

    def __init__(self, width: int, pool: int):
        super().__init__()
        self.pool = pool
        self.bn_q, self.bn_k, self.bn_v = (nn.BatchNorm2d(width) for _ in range(3))
        self.scale = 1.0 / math.sqrt(width)

    def attention(self, fus: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        """Pooled attention output O: N x C x p x p (also the heat-map source)."""
        pf = adaptive_avg_pool(fus, self.pool)                               # N x C x p x p
        pr = adaptive_avg_pool(rec, self.pool)                               # N x C x p x p
        q = self.bn_q(pf).flatten(2).transpose(1, 2)                         # N x P x C
        v = self.bn_v(pf).flatten(2).transpose(1, 2)                         # N x P x C
        k = self.bn_k(pr).flatten(2)                                         # N x C x P
        attn = torch.softmax(torch.matmul(q, k) * self.scale, dim=-1)        # N x P x P
        out = torch.matmul(attn, v).transpose(1, 2)                          # N x C x P
        return out.reshape(pf.shape)

    def forward(self, fus: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        """f^F, f^R N x C x h x w -> Concat(O upsampled, f^F) N x 2C x h x w."""
        o = self.attention(fus, rec)
        o = F.interpolate(o, size=fus.shape[-2:], mode='bilinear', align_corners=False)
        return torch.cat([o, fus], dim=1)


class FFM(nn.Module):
    """Feature fusion module (eqs. 11-13)."""

    def __init__(self, width: int):
        super().__init__()
        c = width
        self.enc = nn.Sequential(_conv_relu(c, c), _conv_relu(c, c))
        self.deepen = nn.Sequential(_conv_relu(2 * c, c), _conv_relu(c, c))
        self.out = nn.Conv2d(2 * c, c, 1)

    def forward(self, rec: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        """f^R, f^F_d N x C x h x w -> N x C x h x w."""
        deep = self.deepen(torch.cat([self.enc(rec), dec], dim=1))
        return self.out(torch.cat([deep, dec], dim=1))


@register('segfanet')
class SegFANet(FusionModel):
    """SegFANet; see the module docstring.

    Args:
        channels: image channels in and out (3: RGB / thermal repeated; 1: luma ablation).
        widths: channels of the three encoder stages (1/2, 1/4, 1/8) of both networks.
        stem: channels of the fusion network's full-resolution stem and output block.
        seg_width: channels of the segmentation decoder output (``feature_channels``).
        sinets: number of stage-interactive networks, 0..3, at stages 1..sinets.
        irm: False: no image reconstruction module (f^R = f^S, no L_rec).
        cam: False: the cross attention module is replaced by addition f^F + f^R.
        pool: side of the CAM's adaptive average pooling (pool x pool tokens).
    """

    pad_multiple = STRIDE
    #: The fusion-task loss the trainer uses with ``loss.fusion: auto`` (SegFANet's eq. 15).
    fusion_loss = 'segfanet'

    def __init__(self, channels: int = 3, widths: Sequence[int] = (16, 32, 48), stem: int = 8,
                 seg_width: int = 32, sinets: int = 3, irm: bool = True, cam: bool = True,
                 pool: int = 8):
        super().__init__()
        widths = list(widths)
        if channels not in (1, 3):
            raise ValueError(f'segfanet channels must be 1 or 3, got {channels!r}')
        if len(widths) != STAGES or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f'segfanet widths must be {STAGES} positive integers, got '
                             f'{widths!r}')
        for name, v in (('stem', stem), ('seg_width', seg_width), ('pool', pool)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f'segfanet {name} must be a positive integer, got {v!r}')
        if not isinstance(sinets, int) or isinstance(sinets, bool) or not 0 <= sinets <= STAGES:
            raise ValueError(f'segfanet sinets must be an integer 0..{STAGES}, got {sinets!r}')
        if not isinstance(irm, bool) or not isinstance(cam, bool):
            raise ValueError(f'segfanet irm and cam must be true or false, got irm={irm!r} '
                             f'cam={cam!r}')
        c = channels
        self.channels, self.sinets, self.use_irm, self.use_cam = c, sinets, irm, cam
        self.feature_channels = seg_width
        # Fusion encoder.
        self.stem = nn.Sequential(_conv_lrelu(2 * c, stem), _conv_lrelu(stem, stem))
        fin = [stem]
        for i in range(1, STAGES):
            grown = 2 if (i <= sinets and cam) else 1      # CAM concatenates O with f^F
            fin.append(grown * widths[i - 1])
        self.fus_enc = nn.ModuleList(
            nn.Sequential(_conv_lrelu(fin[i], widths[i], 2), _conv_lrelu(widths[i], widths[i]))
            for i in range(STAGES))
        # Segmentation encoder and decoder.
        sin = [2 * c] + widths[:-1]
        self.seg_enc = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(sin[i], widths[i], 2),
                          _conv_bn_relu(widths[i], widths[i], 1, 2 if i == STAGES - 1 else 1))
            for i in range(STAGES))
        self.seg_context = nn.Conv2d(widths[2], widths[2], 1)
        self.seg_lat3 = nn.Conv2d(widths[2], seg_width, 1)
        self.seg_lat2 = nn.Conv2d(widths[1], seg_width, 1)
        self.seg_dec = _conv_bn_relu(seg_width, seg_width)
        # SINets.
        self.irms = nn.ModuleList(IRM(widths[i], c) for i in range(sinets)) if irm else None
        self.cams = nn.ModuleList(CAM(widths[i], pool) for i in range(sinets)) if cam else None
        self.ffms = nn.ModuleList(FFM(widths[i]) for i in range(sinets))
        # Fusion decoder.
        bottom = (2 if (sinets == STAGES and cam) else 1) * widths[2]
        self.dec3 = _conv_lrelu(bottom, widths[2])
        self.dec2 = _conv_lrelu(widths[2] + widths[1], widths[1])
        self.dec1 = _conv_lrelu(widths[1] + widths[0], widths[0])
        self.dec0 = _conv_lrelu(widths[0] + stem, stem)
        self.to_luma = nn.Conv2d(stem, 1, 3, 1, 1)
        if c == 3:
            self.register_buffer('luma', luma_weights().reshape(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ FusionModel
    def backbone(self, vis: torch.Tensor, ir: torch.Tensor) -> Dict:
        """(vis, ir) N x c x H x W (H, W multiples of 8) -> dict of feature tensors.

        ``seg``: N x seg_width x H/4 x W/4 segmentation features; ``rec``: the f^R maps of the
        SINets with an IRM (stage i: N x widths[i] x H/2^(i+1) x W/2^(i+1)); ``skips``: stem
        and fusion encoder features; ``bottom``: the last stage's output; ``vis``: the input.
        """
        h, w = vis.shape[-2], vis.shape[-1]
        if not _is_exporting() and (h % STRIDE or w % STRIDE or ir.shape != vis.shape):
            raise ValueError(f'segfanet needs vis and ir of equal size with H and W multiples '
                             f'of {STRIDE} (pad with ssvif_train.tensor_imaging.pad_to_multiple); '
                             f'got vis {tuple(vis.shape)}, ir {tuple(ir.shape)}')
        x = torch.cat([vis, ir], dim=1)                                      # N x 2c x H x W
        stem = self.stem(x)                                                  # N x stem x H x W
        s, f = x, stem
        seg_feats, fus_feats, recs = [], [], []
        for i in range(STAGES):
            s = self.seg_enc[i](s)                                           # N x w_i x h_i x w_i
            if i == STAGES - 1:
                s = F.relu(s + self.seg_context(s.mean(dim=(2, 3), keepdim=True)))
            seg_feats.append(s)
            fe = self.fus_enc[i](f)                                          # N x w_i x h_i x w_i
            fus_feats.append(fe)
            if i < self.sinets:
                rec = self.irms[i](s) if self.use_irm else s                 # f^R_i
                recs.append(rec)
                f = self.cams[i](fe, rec) if self.use_cam else fe + rec
            else:
                f = fe
        seg = self.seg_lat2(seg_feats[1]) + _up2(self.seg_lat3(seg_feats[2]))
        seg = self.seg_dec(seg)                                              # N x sw x H/4 x W/4
        return {'seg': seg, 'rec': recs, 'skips': [stem] + fus_feats[:-1], 'bottom': f,
                'vis': vis}

    def seg_features(self, feats) -> torch.Tensor:
        """Segmentation decoder output N x seg_width x H/4 x W/4 (H's input)."""
        return feats['seg']

    def decoder(self, feats) -> torch.Tensor:
        """Backbone dict -> fused image N x c x H x W in [0, 1] (visible chroma kept)."""
        recs = feats['rec']
        stem, e1, e2 = feats['skips']
        d = self.dec3(feats['bottom'])                                       # N x w3 x H/8 x W/8
        if self.sinets >= 3:
            d = self.ffms[2](recs[2], d)
        d = self.dec2(torch.cat([_up2(d), e2], dim=1))                       # N x w2 x H/4 x W/4
        if self.sinets >= 2:
            d = self.ffms[1](recs[1], d)
        d = self.dec1(torch.cat([_up2(d), e1], dim=1))                       # N x w1 x H/2 x W/2
        if self.sinets >= 1:
            d = self.ffms[0](recs[0], d)
        d = self.dec0(torch.cat([_up2(d), stem], dim=1))                     # N x stem x H x W
        y = torch.sigmoid(self.to_luma(d))                                   # N x 1 x H x W
        vis = feats['vis']
        if self.channels == 1:
            return y
        y_vis = F.conv2d(vis, self.luma)                                     # N x 1 x H x W
        return (vis + (y - y_vis)).clamp(0.0, 1.0)

    # ------------------------------------------------------------------ training extras
    def reconstructions(self, feats) -> List[torch.Tensor]:
        """The IRM images that L_rec scores: one N x c x H x W tensor in (0, 1) per IRM.

        Empty with ``irm: false``. Computed on request only, so the deployed graph (fused
        image + class map) does not carry them.
        """
        if not self.use_irm:
            return []
        out = []
        for i, rec in enumerate(feats['rec']):
            img = self.irms[i].to_image(rec)                                 # N x c x h_i x w_i
            img = F.interpolate(img, scale_factor=float(2 ** (i + 1)), mode='bilinear',
                                align_corners=False)
            out.append(torch.sigmoid(img))
        return out

    def forward_with_aux(self, vis: torch.Tensor, ir: torch.Tensor):
        """``(fused, seg_features, reconstructions)`` from one backbone pass (training)."""
        feats = self.backbone(vis, ir)
        return self.decoder(feats), self.seg_features(feats), self.reconstructions(feats)
