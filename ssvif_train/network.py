"""SSVIFNet: fusion model F, segmentation head H and SegFormer S as one module.

Training and deployment use this one class, so F + H are wired together in one place:

* **training** (:class:`ssvif_train.trainer.Trainer`): :meth:`SSVIFNet.from_config` builds F,
  and with CSC on H and S (supervised without CSC, ``model.classes: msrs`` with
  ``train.csc: false``: H only). ``forward(vis, ir, stage2)`` returns
  ``(fused, logits_a, logits_b)`` (logits None in stage I, logits_b None without S), with
  ``aux=True`` also the model's reconstruction images (SegFANet's IRM images, from
  ``forward_with_aux``; an empty list for other models); :meth:`SSVIFNet.fuse` pads the inputs
  to the model's multiple and crops the result, so any image size trains.
* **deployment** (``ssvif-export``, the torch backend, the benchmarks): :meth:`from_checkpoint`
  rebuilds F and H from a checkpoint's records (S is not needed), and :meth:`for_export` switches
  ``forward(vis, ir)`` to the deployed interface ``(fused, class_ids[, logits])`` on inputs
  already padded by the caller (:mod:`ssvif_train.deploy` documents the tensors).

Inputs are ``vis``, ``ir``: N x 3 x H x W float in [0, 1], the thermal image repeated to three
channels. A model trained with ``data.three_channel: false`` reads the visible luma and one
thermal channel, and its fused luma takes the visible image's chroma (in both modes).

The checkpoint entries ``fusion``, ``head`` and ``seg`` are written by :meth:`records` and read
by :meth:`from_checkpoint`; their layout is the checkpoint format of ``ssvif-train/1``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
import torch.nn.functional as tf

from ssvif_ros.model_card import NONFINITE_ID
from ssvif_train.models.registry import create_model, model_record, record_to_model_checked
from ssvif_train.models.segmentation import SegFormerSeg, SegHead
from ssvif_train.tensor_imaging import (pad_to_multiple, rgb_to_gray, rgb_to_ycbcr, unpad,
                                        ycbcr_to_rgb)

SEG_UPSAMPLE = ('bilinear', 'nearest')


def class_ids_from_logits(logits: torch.Tensor, size, seg_upsample: str,
                          class_bias: Optional[torch.Tensor] = None, crop=None,
                          nonfinite: Optional[torch.Tensor] = None) -> torch.Tensor:
    """N x n x h x w head logits -> N x H x W uint8 class ids at ``size`` = (H, W).

    ``class_bias`` (n,) is added to the logits first (a calibrated class prior,
    :mod:`ssvif_train.calibrate`); ``seg_upsample`` is the deployed resolution rule (see
    :mod:`ssvif_train.deploy`). ``crop`` = (h, w): keep the top-left h x w of the map, cropped
    before the cast to uint8, so the cast is the graph's last node (TensorRT takes uint8 only at
    the network's edges). ``nonfinite`` (a bool scalar, or anything broadcasting to the ids):
    where true the ids become :data:`ssvif_ros.model_card.NONFINITE_ID`, which says that the
    fused image held NaN or Inf (its uint8 cast cannot show them). The one definition of how
    the deployed graph and the calibration turn logits into a class map.
    """
    if class_bias is not None:
        logits = logits + class_bias.view(1, -1, 1, 1).to(logits)
    if seg_upsample == 'bilinear':
        up = tf.interpolate(logits, size=size, mode='bilinear', align_corners=False)
        ids = up.argmax(1)                                              # N x H x W int64
    else:
        low = logits.argmax(1, keepdim=True).float()                    # N x 1 x h x w
        ids = tf.interpolate(low, size=size, mode='nearest')[:, 0]      # N x H x W float
    if crop is not None:
        ids = ids[:, :crop[0], :crop[1]]
    if nonfinite is not None:
        ids = torch.where(nonfinite, torch.full_like(ids, NONFINITE_ID), ids)
    return ids.to(torch.uint8)


class SSVIFNet(nn.Module):
    """F with optional H and S; see the module docstring."""

    def __init__(self, fusion: nn.Module, head: Optional[SegHead] = None,
                 seg: Optional[SegFormerSeg] = None, three_channel: bool = True):
        super().__init__()
        self.fusion = fusion
        self.head = head
        self.seg = seg
        self.three_channel = bool(three_channel)
        self.num_classes = head.num_classes if head is not None else 1
        self.pad_multiple = int(getattr(fusion, 'pad_multiple', 1))
        # Deployed interface (for_export): None while training.
        self.seg_upsample: Optional[str] = None
        self.with_logits = False
        # Per-class logit offsets of the deployed class map (ssvif-calibrate), already folded
        # into H's last bias by from_checkpoint; kept for the model card. None: no offset.
        self.class_bias: Optional[torch.Tensor] = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, cfg) -> 'SSVIFNet':
        """Fresh F, H (CSC or labels) and S (CSC) from a :class:`ssvif_train.config.Config`."""
        args = dict(cfg.model.args)
        if not cfg.data.three_channel:
            args['channels'] = 1
        fusion = create_model(cfg.model.name, **args)
        head = seg = None
        if cfg.train.csc or cfg.model.classes == 'msrs':
            head = SegHead(fusion.feature_channels, cfg.model.num_classes,
                           cfg.model.head_hidden, cfg.model.head_padding)
        if cfg.train.csc:
            seg = SegFormerSeg(cfg.model.segformer, cfg.model.num_classes)
        return cls(fusion, head, seg, cfg.data.three_channel)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, path: str) -> 'SSVIFNet':
        """F and H rebuilt from a checkpoint dict read from ``path`` (named in errors)."""
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get('fusion'), dict):
            raise ValueError(f'{path} is not an ssvif training checkpoint (no "fusion" entry)')
        fusion = record_to_model_checked(ckpt['fusion'], path)
        head = None
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
        data = (ckpt.get('config') or {}).get('data') or {}
        net = cls(fusion, head, None, data.get('three_channel', True))
        bias = (ckpt.get('head') or {}).get('class_bias')
        if bias is not None:
            if head is None or len(bias) != head.num_classes:
                raise ValueError(f'checkpoint {path}: class_bias has {len(bias)} values for '
                                 f'{net.num_classes} classes')
            net.class_bias = torch.tensor([float(b) for b in bias])
            # Folded into the bias of H's last 1x1 conv: the same logits, and a deployed graph
            # with no extra node (an Add before the arg-max cost ~10 % in ONNX Runtime).
            with torch.no_grad():
                head.net[-1].bias.add_(net.class_bias)
        return net

    def records(self, classes: str) -> dict:
        """The checkpoint entries ``fusion``, ``head`` and ``seg`` (None when absent).

        ``classes``: the configuration's ``model.classes``, kept with the head.
        """
        head = seg = None
        if self.head is not None:
            head = {'in_channels': self.head.in_channels, 'num_classes': self.head.num_classes,
                    'hidden': self.head.hidden, 'padding_mode': self.head.padding_mode,
                    'classes': classes, 'state_dict': self.head.state_dict()}
        if self.seg is not None:
            seg = {'preset': self.seg.preset, 'num_classes': self.seg.num_classes,
                   'state_dict': self.seg.state_dict()}
        return {'fusion': model_record(self.fusion), 'head': head, 'seg': seg}

    def load_records(self, ckpt: dict) -> None:
        """Load the weights of :meth:`records` entries into this (same-configuration) net."""
        self.fusion.load_state_dict(ckpt['fusion']['state_dict'])
        if self.head is not None and ckpt.get('head'):
            self.head.load_state_dict(ckpt['head']['state_dict'])
        if self.seg is not None and ckpt.get('seg'):
            self.seg.load_state_dict(ckpt['seg']['state_dict'])

    def for_export(self, seg_upsample: str = 'bilinear', with_logits: bool = False) -> 'SSVIFNet':
        """Switch to the deployed interface (eval mode, S dropped); returns self."""
        if seg_upsample not in SEG_UPSAMPLE:
            raise ValueError(f'seg_upsample must be one of {SEG_UPSAMPLE}, got {seg_upsample!r}')
        self.seg = None
        self.seg_upsample = seg_upsample
        self.with_logits = bool(with_logits)
        return self.eval()

    # ------------------------------------------------------------------ running
    def fuse_padded(self, vis: torch.Tensor, ir: torch.Tensor, aux: bool = False):
        """(fused N x 3 x H x W, seg features) of inputs whose H, W are multiples of the pad.

        ``aux``: a third item, the model's reconstruction images (``forward_with_aux``; [] for
        models without them).
        """
        if not self.three_channel:
            vis_in = rgb_to_gray(vis)[:, None]                           # N x 1 x H x W
            ir_in = ir[:, :1]
        else:
            vis_in, ir_in = vis, ir
        recs = []
        if aux and hasattr(self.fusion, 'forward_with_aux'):
            fused, feats, recs = self.fusion.forward_with_aux(vis_in, ir_in)
        else:
            fused, feats = self.fusion.forward_with_features(vis_in, ir_in)
        if not self.three_channel:
            # Single-channel ablation: the fused luma takes the visible image's chroma.
            ycc = rgb_to_ycbcr(vis)                                      # N x 3 x H x W
            ycc = torch.cat([fused, ycc[:, 1:]], dim=1)
            fused = ycbcr_to_rgb(ycc).clamp(0.0, 1.0)
        return (fused, feats, recs) if aux else (fused, feats)

    def fuse(self, vis: torch.Tensor, ir: torch.Tensor, aux: bool = False):
        """Fused RGB N x 3 x H x W and seg features of any size (padded inside, cropped).

        ``aux``: a third item, the reconstruction images (cropped like the fused image).
        """
        h, w = vis.shape[-2:]
        vis_p, pad = pad_to_multiple(vis, self.pad_multiple)
        ir_p, _ = pad_to_multiple(ir, self.pad_multiple)
        fused, feats, *recs = self.fuse_padded(vis_p, ir_p, aux)
        fused = unpad(fused, pad)[..., :h, :w]
        if not aux:
            return fused, feats
        return fused, feats, [unpad(r, pad)[..., :h, :w] for r in recs[0]]

    def forward(self, vis: torch.Tensor, ir: torch.Tensor, stage2: bool = False,
                aux: bool = False):
        """Training: (fused, logits_a or None, logits_b or None[, reconstructions with aux]).

        Deployed: see :meth:`for_export`.
        """
        if self.seg_upsample is not None:
            return self._deployed(vis, ir)
        fused, feats, *recs = self.fuse(vis, ir, aux)
        la = lb = None
        if stage2 and self.head is not None:
            la = self.head(feats)
            lb = None if self.seg is None else self.seg(fused)
        return (fused, la, lb, recs[0]) if aux else (fused, la, lb)

    def _deployed(self, vis: torch.Tensor, ir: torch.Tensor, crop=None):
        """vis, ir N x 3 x H x W (padded) -> fused N x 3 x H x W, ids N x H x W uint8[, logits].

        ``crop`` = (h, w): the class ids are cropped to the top-left h x w (before their cast,
        see :func:`class_ids_from_logits`); the fused image is returned uncropped.
        """
        fused, feats = self.fuse_padded(vis, ir)
        size = vis.shape[-2:]
        # One reduction: NaN or Inf anywhere makes the sum non-finite (a per-pixel test costs
        # several full-resolution passes in ONNX Runtime: +3 ms at 640x480 on 2 threads).
        bad = ~torch.isfinite(fused.sum())                              # scalar bool
        if self.head is None:
            ids = torch.zeros_like(vis[:, 0])                           # N x H x W float
            if crop is not None:
                ids = ids[:, :crop[0], :crop[1]]
            ids = torch.where(bad, torch.full_like(ids, NONFINITE_ID), ids).to(torch.uint8)
            logits = torch.zeros_like(vis[:, :1])                       # N x 1 x H x W
        else:
            logits = self.head(feats)                                   # N x n x h x w
            ids = class_ids_from_logits(logits, size, self.seg_upsample, crop=crop,
                                        nonfinite=bad)                  # N x H x W
        if self.with_logits:
            return fused, ids, logits
        return fused, ids
