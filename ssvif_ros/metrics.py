"""Fusion metrics of ssvif_ros, with their conventions spelled out.

Every public fusion repository computes EN, MI, SSIM, Qabf ... a little differently (log base,
colour handling, sum or mean over the two sources, window sizes, quirks of the original MATLAB
code). This module computes each metric one documented way per *convention* and is validated
against the VIFB benchmark's own MATLAB results (``test/test_metrics_vifb.py``).

Inputs
------
* Images are NumPy arrays on a **0..255 scale** (uint8 or float64; floats are not rescaled),
  ``H x W`` (grey) or ``H x W x 3`` (RGB order, as :func:`ssvif_ros.imaging.read_image` returns).
  The visible, infrared and fused images must have the same ``H x W``.
* Histogram metrics (EN, CE, MI) bin integer grey levels: pass quantized images (what was saved
  to disk), not raw network floats; non-integer values are floored into 256 bins (VIFB) or
  rounded (CDDFuse).

Conventions (``convention=`` of :func:`compute_fusion_metrics`)
----------------------------------------------------------------
``'vifb'`` (default) reproduces VIFB (Zhang et al., CVPRW 2020, github xingchenzhang/VIFB,
folder ``metrics/``), MATLAB quirks included; all 3,549 per-image values VIFB publishes for its
13 metrics are reproduced to their 5 printed digits:

* a colour fused image is scored **per RGB channel** and the channel scores are averaged; channel
  k of the fused image is compared with channel k of the visible image and with channel k of the
  infrared image (or the single infrared channel when the IR file is grey). A grey fused image is
  compared with grey sources (RGB sources converted with BT.601 luma 0.299/0.587/0.114 and
  rounded; MATLAB's rgb2gray uses 0.2989/0.5870/0.1140);
* MI and SSIM (and MS-SSIM) are **sums** over the two sources; CE, PSNR and RMSE are **means**
  over the two sources; Qabf, Qcb, Qcv and VIF combine both sources in their own formula;
* MI is in **nats** (VIFB's code uses the natural log; divide by ln 2 for bits); EN and CE are
  in bits;
* VIFB's "Variance" is the standard deviation (SD); its PSNR and RMSE use a helper
  sqrt(sum (S - F)^2) / (H W) that is not an MSE (kept, see the table);
* VIF (not in VIFB) is the VIFF of Han et al. 2013.

``'cddfuse'`` reproduces ``utils/Evaluator.py`` of CDDFuse (Zhao et al., CVPR 2023, github
Zhaozixiang1228/MMIF-CDDFuse), the evaluator copied by many recent IVIF papers: every image is
first converted to **grey** ``round(0.299 R + 0.587 G + 0.114 B)`` (OpenCV BGR2GRAY, then
``np.round``); MI (nats, sklearn ``mutual_info_score`` on raw grey levels), SSIM (scikit-image
0.19 defaults, data_range 2) and VIF (Sheikh-Bovik VIFp with noise variance 2, *not* VIFF) are
sums over the sources; SF and AG are means; PSNR uses max(F) as peak. Metrics that evaluator
lacks (CE, EI, Qcb, Qcv, MS-SSIM) use the VIFB formula on the grey images; RMSE is the standard
sqrt of the mean of the two MSEs.

ΔE (CIEDE2000) is convention independent: ``skimage.color.rgb2lab`` (sRGB, D65) of the fused
and visible RGB images, ``deltaE_ciede2000`` per pixel (kL = kC = kH = 1), mean over pixels.

The SSVIF paper (table II: EN, MI, VIF, Qabf, SSIM, MS-SSIM, ΔE) does not publish its evaluation
code; compare its numbers with the convention whose definitions match, and state which one you
used. The table of every metric and convention follows (also returned by
:func:`conventions_markdown` for doc/evaluation.md).

Modules
-------
This module is the registry (:data:`METRICS`: each metric's direction, VIFB name and its
formula in both conventions) and the entry points; the formulas are in
:mod:`ssvif_ros.fusion_metrics`, the segmentation metrics in :mod:`ssvif_ros.seg_metrics`.

Heavy imports (cv2, scipy, skimage) are lazy; no torch, no rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from ssvif_ros.fusion_metrics import (average_gradient, cross_entropy, delta_e, edge_intensity,
                                      entropy, matlab_round, ms_ssim, mutual_information, Plane,
                                      psnr, qabf, qcb, qcv, rmse, scd, spatial_frequency,
                                      spatial_frequency_vifb_image, ssim, std_dev, vif,
                                      vif_pixel)
from ssvif_ros.imaging import rgb_to_gray

CONVENTIONS = ('vifb', 'cddfuse')


# ---------------------------------------------------------------------------------------------
# Registry

@dataclass(frozen=True)
class Metric:
    """One fusion metric: how each convention computes it (see the module docstring)."""

    name: str
    higher_is_better: bool
    vifb_name: Optional[str]
    vifb_fn: Callable
    vifb_doc: str
    cddfuse_fn: Callable
    cddfuse_doc: str
    per_channel_vifb: bool = True  # False: vifb_fn takes the whole (vis, ir, fused) images

    def fn(self, convention: str) -> Callable:
        """The per-plane (or whole-image) function of ``convention``."""
        return self.vifb_fn if convention == 'vifb' else self.cddfuse_fn


def _cdd_vif(a, b, f):
    return vif_pixel(a, f, 2.0) + vif_pixel(b, f, 2.0)


METRICS: Dict[str, Metric] = {m.name: m for m in [
    Metric('EN', True, 'Entropy',
           lambda a, b, f: entropy(f),
           'Shannon entropy of the 256-bin histogram, log2 (bits); per channel, mean',
           lambda a, b, f: entropy(f),
           'same, on grey levels'),
    Metric('SD', True, 'Variance',
           lambda a, b, f: std_dev(f),
           'population standard deviation; per channel, mean (VIFB calls it "Variance")',
           lambda a, b, f: std_dev(f), 'np.std of the grey image'),
    Metric('SF', True, 'Spatial_frequency',
           lambda vis, ir, fused: spatial_frequency_vifb_image(fused),
           'sqrt((sum dx^2 + sum dy^2) / (H W)); a colour image is laid out as R, G, B side by '
           'side (MATLAB size() quirk), so the two channel seams count',
           lambda a, b, f: spatial_frequency(f, 'cddfuse'),
           'sqrt(mean dx^2 + mean dy^2)', per_channel_vifb=False),
    Metric('AG', True, 'Avg_gradient',
           lambda a, b, f: average_gradient(f, 'vifb'),
           'sum sqrt((gx^2 + gy^2)/2) / ((H-1)(W-1)), MATLAB gradient(); per channel, mean',
           lambda a, b, f: average_gradient(f, 'cddfuse'),
           'same gradients, mean over H W pixels'),
    Metric('EI', True, 'Edge_intensity',
           lambda a, b, f: edge_intensity(f),
           'mean Sobel magnitude, replicate border; per channel, mean',
           lambda a, b, f: edge_intensity(f), 'VIFB formula on grey'),
    Metric('CE', False, 'Cross_entropy',
           lambda a, b, f: (cross_entropy(a, f) + cross_entropy(b, f)) / 2.0,
           'sum pS log2(pS / pF) over common non-empty bins; mean over sources; per channel, '
           'mean',
           lambda a, b, f: (cross_entropy(a, f) + cross_entropy(b, f)) / 2.0,
           'VIFB formula on grey'),
    Metric('MI', True, 'Mutinf',
           lambda a, b, f: mutual_information(a, f) + mutual_information(b, f),
           'natural log (nats); each image min-max stretched to 256 bins; MI(VI,F) + MI(IR,F); '
           'per channel, mean',
           lambda a, b, f: (mutual_information(a, f, 'cddfuse')
                            + mutual_information(b, f, 'cddfuse')),
           'nats, raw grey levels (sklearn mutual_info_score); summed over sources'),
    Metric('VIF', True, None,
           vif,
           'VIFF of Han et al. 2013 (noise 0.005*255^2, scale weights (1,0,0.15,1)/2.15); per '
           'channel, mean (not in VIFB)',
           _cdd_vif,
           'VIFp(VI,F) + VIFp(IR,F), Sheikh-Bovik pixel VIF, sigma_nsq = 2 (CDDFuse "VIF")'),
    Metric('Qabf', True, 'Qabf',
           lambda a, b, f: qabf(a, b, f, 'vifb'),
           'Xydeas-Petrovic, Sobel conv2 zero border, Tg .9994 kg -15 Dg .5 Ta .9879 ka -22 '
           'Da .8; images x255 (quirk gA == gF -> gF); per channel, mean',
           lambda a, b, f: qabf(a, b, f, 'cddfuse'), 'same code on grey, no x255'),
    Metric('Qcb', True, 'Qcb',
           qcb,
           'Chen-Blum: DoG CSF (f0 15.387, f1 1.3456, a .7622, freqspace x W/30, H/30), '
           'contrast with 31x31 Gaussians sigma 2/4, p 3, q 2, Z 1e-4; per channel, mean',
           qcb, 'VIFB formula on grey'),
    Metric('Qcv', False, 'Qcv',
           qcv,
           'Chen-Varshney: 16x16 blocks (zero-padded), alpha 5, Mannos-Sakrison CSF '
           '(freqspace x W/8, H/8); per channel, mean',
           qcv, 'VIFB formula on grey'),
    Metric('SSIM', True, 'Ssim',
           lambda a, b, f: ssim(a, f) + ssim(b, f),
           'Gaussian 11x11 sigma 1.5, K (.01, .03), L 255, valid map mean; SSIM(VI,F) + '
           'SSIM(IR,F); per channel, mean',
           lambda a, b, f: ssim(a, f, 'cddfuse') + ssim(b, f, 'cddfuse'),
           'skimage 0.19 defaults: 7x7 uniform window, sample covariance, data_range 2 (!) on '
           '0..255 data; summed over sources'),
    Metric('MS_SSIM', True, None,
           lambda a, b, f: ms_ssim(a, f) + ms_ssim(b, f),
           'Wang 2003, 5 scales, weights (.0448 .2856 .3001 .2363 .1333), SSIM window as SSIM; '
           'summed over sources like SSIM; per channel, mean (not in VIFB)',
           lambda a, b, f: ms_ssim(a, f) + ms_ssim(b, f), 'same formula on grey'),
    Metric('SCD', True, None,
           scd,
           'corr(F - IR, VI) + corr(F - VI, IR), Pearson; per channel, mean (not in VIFB)',
           scd, 'same on grey'),
    Metric('DeltaE', False, None,
           lambda vis, ir, fused: delta_e(vis, fused),
           'mean CIEDE2000(VI, F), skimage rgb2lab (sRGB D65); colour, not per channel '
           '(not in VIFB)',
           lambda vis, ir, fused: delta_e(vis, fused), 'same (colour images)',
           per_channel_vifb=False),
    Metric('PSNR', True, 'Psnr',
           lambda a, b, f: psnr(a, b, f, 'vifb'),
           '20 log10(255 / sqrt(E)), E = mean over sources of sqrt(sum (S-F)^2)/(H W) (VIFB '
           'quirk, ~60 dB); per channel, mean',
           lambda a, b, f: psnr(a, b, f, 'cddfuse'),
           '10 log10(max(F)^2 / mean(MSE(VI,F), MSE(IR,F)))'),
    Metric('RMSE', False, 'Rmse',
           lambda a, b, f: rmse(a, b, f, 'vifb'),
           'mean over sources of sqrt(sum (S-F)^2)/(H W) (VIFB quirk: RMSE/sqrt(H W)); per '
           'channel, mean',
           lambda a, b, f: rmse(a, b, f, 'cddfuse'),
           'sqrt(mean(MSE(VI,F), MSE(IR,F))) (not in CDDFuse)'),
]}

#: Metrics whose values are whole-image (not per plane) in the ``cddfuse`` convention.
_WHOLE_IMAGE_CDD = ('DeltaE',)

VIFB_NAMES: Dict[str, str] = {m.vifb_name: m.name for m in METRICS.values() if m.vifb_name}

#: Fast subset for per-epoch validation (~0.15 s per 640 x 480 pair on one core, cddfuse).
VALIDATION_METRICS = ('EN', 'SD', 'SF', 'AG', 'MI', 'SCD', 'Qabf', 'SSIM', 'VIF')


def metric_names() -> List[str]:
    """Canonical metric names in table order."""
    return list(METRICS)


def resolve_names(names: Optional[Iterable[str]]) -> List[str]:
    """Canonical names for ``names`` (canonical or VIFB names, any case); None means all."""
    if names is None:
        return metric_names()
    lookup = {k.lower(): k for k in METRICS}
    lookup.update({k.lower(): v for k, v in VIFB_NAMES.items()})
    lookup.update({'ms-ssim': 'MS_SSIM', 'msssim': 'MS_SSIM', 'de': 'DeltaE',
                   'delta_e': 'DeltaE', 'deltae00': 'DeltaE', 'variance': 'SD'})
    out = []
    for n in names:
        key = str(n).strip().lower()
        if key not in lookup:
            raise ValueError(f'unknown metric {n!r}; known: {", ".join(METRICS)} (or the VIFB '
                             f'names {", ".join(VIFB_NAMES)})')
        if lookup[key] not in out:
            out.append(lookup[key])
    return out


# ---------------------------------------------------------------------------------------------
# Public entry points

def _check_image(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[:, :, 0]
    if x.ndim == 3 and x.shape[2] == 4:
        x = x[:, :, :3]
    if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[2] != 3):
        raise ValueError(f'{what} image must be H x W or H x W x 3, got shape {x.shape}')
    if x.size == 0:
        raise ValueError(f'{what} image is empty')
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f'{what} image contains NaN or Inf')
    return x


def _grey(x: np.ndarray, rounding) -> np.ndarray:
    return rounding(rgb_to_gray(x)) if x.ndim == 3 else x


def compute_fusion_metrics(vis, ir, fused, names: Optional[Iterable[str]] = None,
                           convention: str = 'vifb', errors: Optional[List[str]] = None
                           ) -> Dict[str, float]:
    """Score a fused image against its visible and infrared sources.

    ``vis``, ``ir``, ``fused``: H x W or H x W x 3 arrays on a 0..255 scale (uint8 or float);
    ``names``: metric names (canonical, e.g. ``'MI'``, or VIFB names, e.g. ``'Mutinf'``);
    None = all of :data:`METRICS`. ``convention``: ``'vifb'`` or ``'cddfuse'`` (module docstring).
    Returns ``{canonical name: value}`` in the requested order. Raises ValueError naming the
    image at fault for bad shapes or values, and for a metric that cannot be computed (e.g.
    MS-SSIM of an image smaller than 161 px) unless an ``errors`` list is given: then that
    metric is NaN and ``'NAME: reason'`` is appended to ``errors``.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f'unknown convention {convention!r}; use one of {CONVENTIONS}')
    wanted = resolve_names(names)
    vis = _check_image(vis, 'visible')
    ir = _check_image(ir, 'infrared')
    fused = _check_image(fused, 'fused')
    for x, what in ((ir, 'infrared'), (fused, 'fused')):
        if x.shape[:2] != vis.shape[:2]:
            raise ValueError(f'{what} image is {x.shape[1]} x {x.shape[0]} but the visible '
                             f'image is {vis.shape[1]} x {vis.shape[0]}')
    # Planes to score: list of (a, b, f) triples, one per channel (vifb colour) or one (grey).
    if convention == 'cddfuse':
        triples = [tuple(Plane(_grey(x, np.round)) for x in (vis, ir, fused))]
    elif fused.ndim == 3:
        vis_p = [Plane(vis[:, :, k]) for k in range(3)] if vis.ndim == 3 else [Plane(vis)] * 3
        ir_p = [Plane(ir[:, :, k]) for k in range(3)] if ir.ndim == 3 else [Plane(ir)] * 3
        triples = [(vis_p[k], ir_p[k], Plane(fused[:, :, k])) for k in range(3)]
    else:
        triples = [(Plane(_grey(vis, matlab_round)), Plane(_grey(ir, matlab_round)),
                    Plane(fused))]
    out: Dict[str, float] = {}
    for name in wanted:
        m = METRICS[name]
        fn = m.fn(convention)
        whole = (not m.per_channel_vifb) if convention == 'vifb' else name in _WHOLE_IMAGE_CDD
        try:
            if whole:
                out[name] = float(fn(vis, ir, fused))
            else:
                out[name] = float(np.mean([fn(a, b, f) for a, b, f in triples]))
        except ValueError as e:
            if errors is None:
                raise
            errors.append(f'{name}: {e}')
            out[name] = float('nan')
    return out


def validation_metrics(vis_u8, ir_u8, fused_u8, names: Sequence[str] = VALIDATION_METRICS,
                       convention: str = 'cddfuse') -> Dict[str, float]:
    """Fast per-epoch scoring of uint8 images (H x W [x 3]) for the trainer.

    Defaults to the grey ``cddfuse`` convention and :data:`VALIDATION_METRICS`, which keep one
    640 x 480 pair near 0.15 s on one core; any names/convention of
    :func:`compute_fusion_metrics` work.
    """
    return compute_fusion_metrics(vis_u8, ir_u8, fused_u8, names=names, convention=convention)


def conventions_markdown() -> str:
    """Markdown table of every metric: direction, VIFB name and both conventions' formulas."""
    lines = ['| Metric | Better | VIFB name | `vifb` convention (default) '
             '| `cddfuse` convention |', '|---|---|---|---|---|']
    for m in METRICS.values():
        arrow = 'higher' if m.higher_is_better else 'lower'
        lines.append(f'| {m.name} | {arrow} | {m.vifb_name or "-"} | {m.vifb_doc} | '
                     f'{m.cddfuse_doc} |')
    return '\n'.join(lines) + '\n'


__doc__ += '\nTable of conventions\n--------------------\n\n' + conventions_markdown()
