"""SSVIF losses (paper section III-D). Every function returns unweighted, named terms.

Fusion terms (inputs ``fused``, ``vis``, ``ir``: N x 3 x H x W in [0, 1]; ``ir`` is the thermal
image repeated to three channels):

* ``int``   = mean |I_f - max(I_ir, I_vis)| over pixels and channels (the 1/HW l1 of eq. 3,
  averaged over the three channels);
* ``grad``  = mean | |S(I_f)| - max(|S(I_ir)|, |S(I_vis)|) |, with |S(I)| = |G_x| + |G_y| from
  unnormalized 3x3 Sobel kernels per channel (the SeAFusion/SwinFusion convention), replicate
  border;
* ``ssim``  = mean over j in {vis, ir} of (1 - SSIM(I_f, I_j)): pytorch-msssim, 11x11 Gaussian
  window, sigma 1.5, data range 1, averaged over channels;
* ``color`` = mean over c in {Cb, Cr} of mean |I_f^c - I_vis^c| (BT.601 YCbCr from
  :mod:`ssvif_ros.imaging`, via :mod:`ssvif_train.tensor_imaging`).

L_fusion = sum of lambda_k * term_k is formed by :func:`weighted_fusion` from the config's
lambdas (paper: 20, 20, 10, 20).

CSC terms (eqs. 4-6): both branches' logits are first brought to the input image resolution
H x W by bilinear interpolation of the logits (align_corners=False): the pseudo label then lives
where the fused image lives, and neither branch's detail is thrown away. Per pixel, the pseudo
label is the arg-max class of the branch whose highest softmax probability is larger (ties go to
S, eq. 4), computed without gradient. Each branch gets CE (mean over pixels) + Dice
(1 - mean over the n classes of 2 sum p*y / (sum p + sum y + eps), sums over the batch).
L_csc = (ce_a + dice_a + ce_b + dice_b) / 2 (eq. 6), see :func:`csc_total`.

SegFANet terms (its paper, eqs. 14-18; the network fuses luma, see
:mod:`ssvif_train.models.segfanet`):

* :func:`segfanet_fusion_terms`: ``ssim_ir`` = 1 - SSIM(Y_f, Y_ir) and ``ssim_vis`` =
  1 - SSIM(Y_f, Y_vis) (eq. 15), Y the BT.601 luma (for the thermal image repeated to three
  channels, the thermal value itself); L_f = their sum;
* :func:`reconstruction_terms`: ``rec_i`` = (1 - SSIM(I_res_i, I_ir)) + (1 - SSIM(I_res_i,
  I_vis)) per IRM image (eq. 17, on all channels); L_rec = their sum (eq. 16);
* :func:`segmentation_terms`: ``seg_ce`` and ``seg_dice`` of the segmentation branch against
  a label (eq. 18; the Dice convention of the supervised terms below); L_s = their sum.

Supervised terms (semantic training with labels, :func:`supervised_terms`): the same CE + Dice
per branch against the label (N x H x W, 255 = ignore, e.g. unlabelled pairs and uncertain box
pixels), over the labelled pixels only; logits are brought to the label's resolution first.
Dice averages the classes present in the batch's labels only: the constant 1 that every absent
class adds drowned the objects' signal. CE is not class-weighted: with object-centred crops
(``data.object_crop``) weights of 1 / sqrt(pixel share) made both branches paint objects far
outside their boxes (val person recall 0.93 at precision 0.32).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as tf

from ssvif_train.tensor_imaging import rgb_to_gray, rgb_to_ycbcr

FUSION_TERMS = ('int', 'grad', 'ssim', 'color')
IGNORE_INDEX = 255  # ssvif_ros.labels.IGNORE


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|G_x| + |G_y| of unnormalized 3x3 Sobel per channel; N x C x H x W -> N x C x H x W."""
    import kornia
    g = kornia.filters.spatial_gradient(x, mode='sobel', order=1, normalized=False)
    return g[:, :, 0].abs() + g[:, :, 1].abs()  # g: N x C x 2 x H x W


def fusion_terms(fused: torch.Tensor, vis: torch.Tensor,
                 ir: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Unweighted fusion loss terms ``int``, ``grad``, ``ssim``, ``color`` (scalars)."""
    from pytorch_msssim import ssim
    target = torch.maximum(vis, ir)
    l_int = (fused - target).abs().mean()
    gf = sobel_magnitude(fused)
    g_max = torch.maximum(sobel_magnitude(ir), sobel_magnitude(vis))
    l_grad = (gf - g_max).abs().mean()
    l_ssim = 0.5 * ((1.0 - ssim(fused, ir, data_range=1.0, size_average=True))
                    + (1.0 - ssim(fused, vis, data_range=1.0, size_average=True)))
    yf = rgb_to_ycbcr(fused)  # N x 3 x H x W
    yv = rgb_to_ycbcr(vis)
    l_color = (yf[:, 1:] - yv[:, 1:]).abs().mean()
    return {'int': l_int, 'grad': l_grad, 'ssim': l_ssim, 'color': l_color}


def weighted_fusion(terms: Dict[str, torch.Tensor], lambdas: Dict[str, float]) -> torch.Tensor:
    """L_fusion = sum_k lambda_k * term_k (eq. 3)."""
    return sum(float(lambdas[k]) * terms[k] for k in FUSION_TERMS)


def fusion_lambdas(loss_cfg) -> Dict[str, float]:
    """The lambdas of eq. 3 from a LossConfig."""
    return {'int': loss_cfg.lambda_int, 'grad': loss_cfg.lambda_grad,
            'ssim': loss_cfg.lambda_ssim, 'color': loss_cfg.lambda_color}


def to_resolution(logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize N x n x h x w logits to N x n x H x W (no-op when equal)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return tf.interpolate(logits, size=size, mode='bilinear', align_corners=False)


def pseudo_label(logits_a: torch.Tensor, logits_b: torch.Tensor,
                 threshold: float = 0.0) -> torch.Tensor:
    """Eq. 4: per pixel, arg-max of the more confident branch (ties -> B). N x H x W int64.

    ``threshold`` > 0: pixels whose winning confidence is below it get :data:`IGNORE_INDEX`.
    """
    with torch.no_grad():
        pa, ca = logits_a.softmax(1).max(1)
        pb, cb = logits_b.softmax(1).max(1)
        label = torch.where(pa > pb, ca, cb)
        if threshold > 0.0:
            label[torch.maximum(pa, pb) < threshold] = IGNORE_INDEX
        return label


def hybrid_terms(logits: torch.Tensor, label: torch.Tensor, eps: float,
                 ignore_index: int = -100, present_only: bool = False,
                 class_weights: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5: (CE, Dice) of N x n x H x W logits against an N x H x W label.

    Pixels whose label is ``ignore_index`` count in neither term. ``present_only`` (the
    supervised terms): Dice averages only the classes present in the label (as
    segmentation_models.pytorch does), so a batch without a bike does not pay a constant 1 for
    the bike class. ``class_weights`` (n): per-class weights of the CE (a weighted mean over
    the labelled pixels, as ``torch.nn.functional.cross_entropy``); Dice is unweighted.
    """
    n = logits.shape[1]
    prob = logits.softmax(1)                                        # N x n x H x W
    valid = label != ignore_index                                   # N x H x W
    safe = torch.where(valid, label, torch.zeros_like(label))
    onehot = tf.one_hot(safe, n).permute(0, 3, 1, 2).to(prob.dtype)  # N x n x H x W
    ce = tf.cross_entropy(logits, label, weight=class_weights, ignore_index=ignore_index)
    if not bool(valid.all()):
        keep = valid[:, None].to(prob.dtype)                        # N x 1 x H x W
        prob, onehot = prob * keep, onehot * keep
    inter = (prob * onehot).sum(dim=(0, 2, 3))                      # n
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3)) + eps
    ratio = 2.0 * inter / denom                                     # n
    if present_only:
        ratio = ratio[onehot.sum(dim=(0, 2, 3)) > 0]
    dice = 1.0 - ratio.mean()
    return ce, dice


def csc_terms(logits_a: torch.Tensor, logits_b: torch.Tensor, size: Tuple[int, int],
              eps: float = 1.0, threshold: float = 0.0) -> Dict[str, torch.Tensor]:
    """Unweighted CSC terms ``ce_a``, ``dice_a``, ``ce_b``, ``dice_b`` at resolution ``size``.

    ``threshold`` (``loss.csc_threshold``, 0 = the paper): only pixels whose pseudo label has
    at least this confidence count.
    """
    la = to_resolution(logits_a.float(), size)
    lb = to_resolution(logits_b.float(), size)
    label = pseudo_label(la, lb, threshold)
    if threshold > 0.0 and not bool((label != IGNORE_INDEX).any()):
        za, zb = la.sum() * 0.0, lb.sum() * 0.0
        return {'ce_a': za, 'dice_a': za, 'ce_b': zb, 'dice_b': zb}
    ignore = IGNORE_INDEX if threshold > 0.0 else -100
    ce_a, dice_a = hybrid_terms(la, label, eps, ignore)
    ce_b, dice_b = hybrid_terms(lb, label, eps, ignore)
    return {'ce_a': ce_a, 'dice_a': dice_a, 'ce_b': ce_b, 'dice_b': dice_b}


def supervised_terms(logits_a: torch.Tensor, logits_b: torch.Tensor, label: torch.Tensor,
                     eps: float = 1.0, class_weights: Optional[torch.Tensor] = None
                     ) -> Dict[str, torch.Tensor]:
    """Unweighted ``sup_ce_a``, ``sup_dice_a``, ``sup_ce_b``, ``sup_dice_b`` over labelled pixels.

    ``label``: N x H x W int64, 255 = ignore. A batch without a labelled pixel gives zeros that
    still reach both branches' graphs (so every step has the same set of gradients).
    ``class_weights``: optional per-class CE weights (``loss.sup_class_weights``).
    """
    size = tuple(label.shape[-2:])
    la = to_resolution(logits_a.float(), size)
    lb = to_resolution(logits_b.float(), size)
    if not bool((label != IGNORE_INDEX).any()):
        za, zb = la.sum() * 0.0, lb.sum() * 0.0
        return {'sup_ce_a': za, 'sup_dice_a': za, 'sup_ce_b': zb, 'sup_dice_b': zb}
    w = None if class_weights is None else class_weights.to(la.device, la.dtype)
    ce_a, dice_a = hybrid_terms(la, label, eps, IGNORE_INDEX, True, w)
    ce_b, dice_b = hybrid_terms(lb, label, eps, IGNORE_INDEX, True, w)
    return {'sup_ce_a': ce_a, 'sup_dice_a': dice_a, 'sup_ce_b': ce_b, 'sup_dice_b': dice_b}


def supervised_total(terms: Dict[str, torch.Tensor]) -> torch.Tensor:
    """L_sup = (sup_ce_a + sup_dice_a + sup_ce_b + sup_dice_b) / 2."""
    return 0.5 * (terms['sup_ce_a'] + terms['sup_dice_a'] + terms['sup_ce_b']
                  + terms['sup_dice_b'])


def csc_total(terms: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Eq. 6: L_csc = (L_hyb(A) + L_hyb(B)) / 2."""
    return 0.5 * (terms['ce_a'] + terms['dice_a'] + terms['ce_b'] + terms['dice_b'])


SEGFANET_FUSION_TERMS = ('ssim_ir', 'ssim_vis')


def luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma N x 1 x H x W of an N x 3 x H x W image (an N x 1 image is returned as is)."""
    if x.shape[1] == 1:
        return x
    return rgb_to_gray(x)[:, None]


def segfanet_fusion_terms(fused: torch.Tensor, vis: torch.Tensor,
                          ir: torch.Tensor) -> Dict[str, torch.Tensor]:
    """SegFANet's L_f terms ``ssim_ir``, ``ssim_vis`` (unweighted; L_f is their sum)."""
    from pytorch_msssim import ssim
    yf = luma(fused)
    return {'ssim_ir': 1.0 - ssim(yf, luma(ir), data_range=1.0, size_average=True),
            'ssim_vis': 1.0 - ssim(yf, luma(vis), data_range=1.0, size_average=True)}


def reconstruction_terms(recs, vis: torch.Tensor, ir: torch.Tensor) -> Dict[str, torch.Tensor]:
    """One term ``rec_i`` (i = 1, 2, ...) per IRM image N x c x H x W (eq. 17).

    Single-channel images (the luma ablation) are scored against the sources' luma.
    """
    from pytorch_msssim import ssim
    out = {}
    for i, rec in enumerate(recs, 1):
        rec = rec.float()
        if rec.shape[1] == 1:
            vis, ir = luma(vis), luma(ir)
        out[f'rec_{i}'] = ((1.0 - ssim(rec, ir, data_range=1.0, size_average=True))
                           + (1.0 - ssim(rec, vis, data_range=1.0, size_average=True)))
    return out


def segmentation_terms(logits: torch.Tensor, label: torch.Tensor, eps: float = 1.0,
                       class_weights: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """``seg_ce``, ``seg_dice`` of one branch's logits against an N x H x W label (255 = ignore).

    Logits are brought to the label's resolution first. A batch without a labelled pixel gives
    zeros that still reach the branch's graph. ``class_weights``: optional per-class CE weights
    (``loss.sup_class_weights``), as :func:`supervised_terms`.
    """
    lg = to_resolution(logits.float(), tuple(label.shape[-2:]))
    if not bool((label != IGNORE_INDEX).any()):
        z = lg.sum() * 0.0
        return {'seg_ce': z, 'seg_dice': z}
    w = None if class_weights is None else class_weights.to(lg.device, lg.dtype)
    ce, dice = hybrid_terms(lg, label, eps, IGNORE_INDEX, present_only=True, class_weights=w)
    return {'seg_ce': ce, 'seg_dice': dice}


FUSION_LOSSES = ('ssvif', 'segfanet')


def fusion_task(kind: str, fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor, recs,
                lambdas: Dict[str, float], lambda_rec: float = 1.0):
    """The fusion task's named terms and its loss L_A (what the weighting calls L_fusion).

    ``kind`` ``ssvif``: :func:`fusion_terms` weighted by ``lambdas`` (eq. 3); ``segfanet``:
    ``ssim_ir + ssim_vis`` (SegFANet eq. 15). The IRM images ``recs`` (empty for every other
    model) add ``lambda_rec`` * L_rec, L_rec the sum of the ``rec_i`` terms (eq. 16), also
    logged as ``loss_rec``. Returns ``(terms, total)``.
    """
    if kind == 'ssvif':
        terms = fusion_terms(fused, vis, ir)
        total = weighted_fusion(terms, lambdas)
    elif kind == 'segfanet':
        terms = segfanet_fusion_terms(fused, vis, ir)
        total = terms['ssim_ir'] + terms['ssim_vis']
    else:
        raise ValueError(f'unknown fusion loss {kind!r}; choose one of {FUSION_LOSSES}')
    rec = reconstruction_terms(recs, vis, ir)
    if rec:
        l_rec = sum(rec.values())
        terms.update(rec)
        terms['loss_rec'] = l_rec
        total = total + float(lambda_rec) * l_rec
    return terms, total
