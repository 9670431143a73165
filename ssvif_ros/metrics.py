"""Fusion and segmentation metrics of ssvif_ros, with their conventions spelled out.

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

Segmentation
------------
:func:`confusion_matrix` (rows = ground-truth class, columns = prediction; pixels whose label is
``ignore_index`` are skipped), :func:`iou_from_confusion` (per-class IoU = TP / (TP + FP + FN),
NaN for a class absent from both label and prediction) and mIoU = mean of the non-NaN IoUs.

Heavy imports (cv2, scipy, skimage) are lazy; no torch, no rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ssvif_ros.imaging import rgb_to_gray

CONVENTIONS = ('vifb', 'cddfuse')


# ---------------------------------------------------------------------------------------------
# Small numerical helpers

def _matlab_round(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round`` / integer conversion: halves go away from zero (NumPy rounds to even)."""
    a = np.abs(x)
    r = np.floor(a)
    r += (a - r) >= 0.5
    return np.copysign(r, x)


def _round_nonneg(x: np.ndarray) -> np.ndarray:
    """:func:`_matlab_round` for arrays known to be >= 0 (halves up)."""
    r = np.floor(x)
    r += (x - r) >= 0.5
    return r


def _gauss1d(n: int, sigma: float) -> np.ndarray:
    """Normalized 1-D Gaussian of ``n`` taps (``outer(g, g)`` = fspecial('gaussian'))."""
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _sep_filter(img: np.ndarray, kx: np.ndarray, ky: np.ndarray, border: str) -> np.ndarray:
    """Separable correlation (``img`` H x W float64) with a zero ('zero') or replicate border."""
    import cv2
    flag = {'zero': cv2.BORDER_CONSTANT, 'replicate': cv2.BORDER_REPLICATE,
            'any': cv2.BORDER_REFLECT}[border]
    return cv2.sepFilter2D(np.ascontiguousarray(img), cv2.CV_64F, kx, ky, borderType=flag)


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(outer(g, g), img, 'valid')`` for an odd symmetric 1-D kernel ``g``."""
    r = (len(g) - 1) // 2
    out = _sep_filter(img, g, g, 'any')
    return out[r:img.shape[0] - r, r:img.shape[1] - r]


def _corr3(img: np.ndarray, kernel: Sequence[Sequence[float]], border: str) -> np.ndarray:
    """3 x 3 correlation (MATLAB filter2/imfilter) with a zero or replicate border."""
    import cv2
    flag = cv2.BORDER_CONSTANT if border == 'zero' else cv2.BORDER_REPLICATE
    k = np.asarray(kernel, dtype=np.float64)
    return cv2.filter2D(np.ascontiguousarray(img), cv2.CV_64F, k, borderType=flag)


def _conv3_same(img: np.ndarray, kernel: Sequence[Sequence[float]]) -> np.ndarray:
    """MATLAB ``conv2(img, kernel, 'same')`` (true convolution, zero border) for 3 x 3 kernels."""
    k = np.asarray(kernel, dtype=np.float64)[::-1, ::-1]
    return _corr3(img, k, 'zero')


def _hist256(x: np.ndarray) -> np.ndarray:
    """Counts of the integer grey levels 0..255 (values floored and clipped, as VIFB indexes)."""
    idx = np.clip(np.floor(x), 0, 255).astype(np.intp).ravel()
    return np.bincount(idx, minlength=256).astype(np.float64)


def _entropy_of_counts(counts: np.ndarray, log) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * log(p)).sum())


class _Plane:
    """One H x W float64 image plane with a cache of derived arrays (shared across metrics)."""

    __slots__ = ('x', 'cache')

    def __init__(self, x: np.ndarray):
        self.x = x
        self.cache: Dict[tuple, object] = {}

    def get(self, key: tuple, fn: Callable[[np.ndarray], object]):
        if key not in self.cache:
            self.cache[key] = fn(self.x)
        return self.cache[key]


def _plane(x) -> _Plane:
    if isinstance(x, _Plane):
        return x
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f'expected a single-channel H x W image, got shape {x.shape}')
    return _Plane(x)


# ---------------------------------------------------------------------------------------------
# Metrics of the fused image alone

def entropy(f) -> float:
    """Shannon entropy EN (bits) of the 256-bin grey-level histogram of one channel."""
    p = _plane(f)
    return _entropy_of_counts(p.get(('hist',), _hist256), np.log2)


def std_dev(f) -> float:
    """SD: population standard deviation of one channel (VIFB "Variance")."""
    return float(np.std(_plane(f).x))


def spatial_frequency(f, convention: str = 'vifb') -> float:
    """SF = sqrt(RF^2 + CF^2) of one channel.

    ``vifb``: squared horizontal / vertical neighbour differences summed and divided by H*W;
    ``cddfuse``: each divided by its own number of differences (means).
    """
    x = _plane(f).x
    dh = np.diff(x, axis=1)
    dv = np.diff(x, axis=0)
    if convention == 'cddfuse':
        return float(np.sqrt(np.mean(dh * dh) + np.mean(dv * dv)))
    return float(np.sqrt(((dh * dh).sum() + (dv * dv).sum()) / x.size))


def _spatial_frequency_vifb_image(f: np.ndarray) -> float:
    """VIFB's SF of an H x W [x C] image.

    MATLAB ``[m, n] = size(f)`` folds the channels into the columns, so the channels are laid
    side by side (R | G | B) and the two seams count too.
    """
    if f.ndim == 3:
        f = np.concatenate([f[:, :, k] for k in range(f.shape[2])], axis=1)
    return spatial_frequency(f, 'vifb')


def average_gradient(f, convention: str = 'vifb') -> float:
    """Average gradient AG of one channel.

    Sum of sqrt((gx^2 + gy^2) / 2) with MATLAB ``gradient`` (central differences inside,
    one-sided at the border); ``vifb`` divides it by (H-1)(W-1), ``cddfuse`` by H*W.
    """
    x = _plane(f).x
    gy, gx = np.gradient(x)
    s = np.sqrt((gx * gx + gy * gy) / 2.0).sum()
    if convention == 'cddfuse':
        return float(s / x.size)
    return float(s / ((x.shape[0] - 1) * (x.shape[1] - 1)))


_SOBEL = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


def edge_intensity(f) -> float:
    """Edge intensity EI: mean Sobel gradient magnitude of one channel.

    MATLAB ``imfilter(f, fspecial('sobel'), 'replicate')`` and its transpose.
    """
    x = _plane(f).x
    gx = _corr3(x, _SOBEL, 'replicate')
    gy = _corr3(x, np.transpose(_SOBEL), 'replicate')
    return float(np.sqrt(gx * gx + gy * gy).mean())


# ---------------------------------------------------------------------------------------------
# Information-theoretic metrics

def cross_entropy(a, f) -> float:
    """Cross entropy CE(A, F) of one channel, VIFB's definition (bits).

    sum_k pA(k) log2(pA(k) / pF(k)) over the grey levels where both are non-zero (a relative
    entropy; the CE metric averages it over the two sources).
    """
    pa = _plane(a).get(('hist',), _hist256)
    pf = _plane(f).get(('hist',), _hist256)
    pa = pa / pa.sum()
    pf = pf / pf.sum()
    m = (pa > 0) & (pf > 0)
    return float((pa[m] * np.log2(pa[m] / pf[m])).sum())


def _mi_bins_vifb(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    if hi != lo:
        x = (x - lo) / (hi - lo)
    else:
        x = np.zeros_like(x)
    return _round_nonneg(x * 255.0).astype(np.intp).ravel()


def mutual_information(a, f, convention: str = 'vifb') -> float:
    """MI(A, F) in **nats** (natural log) from a 256 x 256 joint histogram.

    ``vifb``: each image is first min-max stretched to 0..255 and rounded (MATLAB int16);
    ``cddfuse``: the integer grey levels are used as they are (sklearn ``mutual_info_score``).
    """
    pa, pf = _plane(a), _plane(f)
    if convention == 'cddfuse':
        def fn(x):
            return np.clip(np.round(x), 0, 255).astype(np.intp).ravel()
    else:
        fn = _mi_bins_vifb
    ia = pa.get(('mibins', convention), fn)
    jf = pf.get(('mibins', convention), fn)
    joint = np.bincount(ia * 256 + jf, minlength=256 * 256).astype(np.float64)
    ha = _entropy_of_counts(np.bincount(ia, minlength=256).astype(np.float64), np.log)
    hf = _entropy_of_counts(np.bincount(jf, minlength=256).astype(np.float64), np.log)
    return ha + hf - _entropy_of_counts(joint, np.log)


# ---------------------------------------------------------------------------------------------
# Reference-based error metrics

def _vifb_err(a: np.ndarray, f: np.ndarray) -> float:
    """VIFB's ``mse`` helper: sqrt(sum((A - F)^2)) / (H * W) -- not an MSE (see RMSE/PSNR)."""
    d = a - f
    return float(np.sqrt((d * d).sum()) / a.size)


def rmse(a, b, f, convention: str = 'vifb') -> float:
    """RMSE of F against the two sources.

    ``vifb``: mean over sources of VIFB's ``sqrt(sum (S - F)^2) / (H W)`` (equals
    RMSE / sqrt(H W); kept to reproduce VIFB); ``cddfuse``: sqrt((MSE(A,F) + MSE(B,F)) / 2).
    """
    a, b, f = _plane(a).x, _plane(b).x, _plane(f).x
    if convention == 'cddfuse':
        return float(np.sqrt(_mse2(a, b, f)))
    return (_vifb_err(a, f) + _vifb_err(b, f)) / 2.0


def _mse2(a, b, f) -> float:
    return float((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0)


def psnr(a, b, f, convention: str = 'vifb') -> float:
    """PSNR (dB).

    ``vifb``: 20 log10(255 / sqrt(E)), E = mean over sources of VIFB's ``mse`` helper (hence
    values near 60 dB); ``cddfuse``: 10 log10(max(F)^2 / ((MSE(A,F) + MSE(B,F)) / 2)).
    """
    a, b, f = _plane(a).x, _plane(b).x, _plane(f).x
    if convention == 'cddfuse':
        return float(10.0 * np.log10(f.max() ** 2 / _mse2(a, b, f)))
    e = (_vifb_err(a, f) + _vifb_err(b, f)) / 2.0
    return float(20.0 * np.log10(255.0 / np.sqrt(e)))


def scd(a, b, f) -> float:
    """SCD (Aslantas & Bendes 2015): corr(F - B, A) + corr(F - A, B), Pearson correlations."""
    a, b, f = _plane(a).x, _plane(b).x, _plane(f).x

    def corr(x, y):
        x = x - x.mean()
        y = y - y.mean()
        return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))
    return corr(a, f - b) + corr(b, f - a)


# ---------------------------------------------------------------------------------------------
# Structural similarity

_SSIM_K = (0.01, 0.03)
_SSIM_L = 255.0
_SSIM_G = None


def _ssim_window() -> np.ndarray:
    global _SSIM_G
    if _SSIM_G is None:
        _SSIM_G = _gauss1d(11, 1.5)
    return _SSIM_G


def _moments(p: _Plane, g: np.ndarray, tag) -> Tuple[np.ndarray, np.ndarray]:
    """Gaussian-window mean and second moment of a plane ('valid' region), cached."""
    def fn(x):
        return _filter_valid(x, g), _filter_valid(x * x, g)
    return p.get(('moments', tag), fn)


def _ssim_maps(pa: _Plane, pf: _Plane, tag=('ssim',)) -> Tuple[np.ndarray, np.ndarray]:
    """SSIM and contrast-structure maps (Wang et al. 2004, Gaussian 11 x 11, sigma 1.5, valid)."""
    g = _ssim_window()
    c1 = (_SSIM_K[0] * _SSIM_L) ** 2
    c2 = (_SSIM_K[1] * _SSIM_L) ** 2
    ua, aa = _moments(pa, g, tag)
    uf, ff = _moments(pf, g, tag)
    af = _filter_valid(pa.x * pf.x, g)
    ua_uf = ua * uf
    ua2 = ua * ua
    uf2 = uf * uf
    cs = (2.0 * (af - ua_uf) + c2) / ((aa - ua2) + (ff - uf2) + c2)
    lum = (2.0 * ua_uf + c1) / (ua2 + uf2 + c1)
    return lum * cs, cs


def ssim(a, f, convention: str = 'vifb') -> float:
    """SSIM(A, F) of one channel.

    ``vifb``: Wang et al. 2004 as in their MATLAB ``ssim_index``: Gaussian window 11 x 11,
    sigma 1.5, K = (0.01, 0.03), L = 255, mean of the 'valid' SSIM map.
    ``cddfuse``: ``skimage.metrics.structural_similarity`` defaults of scikit-image 0.19
    (7 x 7 uniform window, sample covariance) **with data_range = 2**, what 0.19 inferred for
    the float images CDDFuse passes (so C1 = 4e-4 and C2 = 3.6e-3 on a 0..255 scale instead of
    6.5 and 58.5).
    """
    pa, pf = _plane(a), _plane(f)
    if convention == 'cddfuse':
        from skimage.metrics import structural_similarity
        return float(structural_similarity(pf.x, pa.x, win_size=7, data_range=2.0))
    s, _ = _ssim_maps(pa, pf)
    return float(s.mean())


_MSSSIM_W = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _halve(x: np.ndarray) -> np.ndarray:
    """Wang's MS-SSIM downsampling: 2 x 2 mean (zero beyond the border), every second pixel."""
    h, w = x.shape
    x = np.pad(x, ((0, h % 2), (0, w % 2)))
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def ms_ssim(a, f) -> float:
    """MS-SSIM(A, F) of one channel (Wang, Simoncelli & Bovik 2003, reference ``msssim.m``).

    Five scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), SSIM as :func:`ssim` (Gaussian
    11 x 11, sigma 1.5, L = 255, valid); contrast-structure means of scales 1-4 and the SSIM mean
    of scale 5, negative values clipped to 0 (as pytorch-msssim). Needs both sides >= 161 px
    (the fifth scale must still hold the 11-tap window).
    """
    pa, pf = _plane(a), _plane(f)
    if min(pa.x.shape) < 161:
        raise ValueError(f'MS-SSIM needs images of at least 161 x 161 pixels (5 scales of an '
                         f'11-tap window), got {pa.x.shape[1]} x {pa.x.shape[0]}')
    out = 1.0
    for level in range(5):
        s, cs = _ssim_maps(pa, pf)
        value = s.mean() if level == 4 else cs.mean()
        out *= max(float(value), 0.0) ** _MSSSIM_W[level]
        if level < 4:
            pa = pa.get(('halve', level), lambda x: _Plane(_halve(x)))
            pf = pf.get(('halve', level), lambda x: _Plane(_halve(x)))
    return out


# ---------------------------------------------------------------------------------------------
# Gradient / perceptual fusion metrics combining both sources

_QABF = dict(tg=0.9994, kg=-15.0, dg=0.5, ta=0.9879, ka=-22.0, da=0.8)
_H1 = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))
_H3 = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def _qabf_edges(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    sx = _conv3_same(x, _H3)
    sy = _conv3_same(x, _H1)
    g = np.sqrt(sx * sx + sy * sy)
    nz = sx != 0
    ratio = np.divide(sy, sx, out=np.zeros_like(sx), where=nz)
    ang = np.where(nz, np.arctan(ratio), np.pi / 2)
    return g, ang


def _qabf_preserve(ga, aa, gf, af) -> np.ndarray:
    c = _QABF
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        # min/max ratio of the edge strengths; where they are equal the codes use gF itself.
        gaf = np.where(ga == gf, gf, np.minimum(ga, gf) / np.maximum(ga, gf))
        aaf = 1.0 - np.abs(aa - af) * (2.0 / np.pi)
        qg = c['tg'] / (1.0 + np.exp(c['kg'] * (gaf - c['dg'])))
        qa = c['ta'] / (1.0 + np.exp(c['ka'] * (aaf - c['da'])))
    return qg * qa


def qabf(a, b, f, convention: str = 'vifb') -> float:
    """Qabf (Xydeas & Petrovic 2000), the code used by VIFB and CDDFuse.

    Sobel ``conv2(., 'same')`` (zero border), edge strength g = sqrt(sx^2 + sy^2) and orientation
    atan(sy / sx) (pi/2 where sx = 0); Tg = 0.9994, kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22,
    Da = 0.8; Q = sum(QAF gA + QBF gB) / sum(gA + gB). Quirk of both codes kept: where gA == gF
    the strength ratio is set to gF (not 1). VIFB multiplies the images by 255 first
    (``255 * im2double`` of a double image), which changes only that quirk; ``cddfuse`` does not.
    """
    scale = 1.0 if convention == 'cddfuse' else 255.0
    key = ('qabf', scale)
    pa, pb, pf = _plane(a), _plane(b), _plane(f)
    ga, aa = pa.get(key, lambda x: _qabf_edges(x * scale))
    gb, ab = pb.get(key, lambda x: _qabf_edges(x * scale))
    gf, af = pf.get(key, lambda x: _qabf_edges(x * scale))
    qaf = _qabf_preserve(ga, aa, gf, af)
    qbf = _qabf_preserve(gb, ab, gf, af)
    return float((qaf * ga + qbf * gb).sum() / (ga + gb).sum())


def _normalize1(x: np.ndarray) -> np.ndarray:
    """Z. Liu's ``normalize1``: min-max stretch to 0..255 and MATLAB-round (Qcb, Qcv)."""
    hi, lo = x.max(), x.min()
    if hi == 0 and lo == 0:
        return x
    with np.errstate(divide='ignore', invalid='ignore'):  # a flat non-zero image gives NaN
        return _round_nonneg((x - lo) / (hi - lo) * 255.0)


def _freq_radius(shape: Tuple[int, int], sx: float, sy: float) -> np.ndarray:
    """Radius of MATLAB ``freqspace(shape, 'meshgrid')`` scaled by (sx, sy).

    Returned in the unshifted FFT layout (ifftshift-ed), only the rfft2 half (columns 0..W/2).
    """
    h, w = shape
    u = (np.arange(w) - w // 2) * (2.0 / w) * sx
    v = (np.arange(h) - h // 2) * (2.0 / h) * sy
    r = np.sqrt(u[None, :] ** 2 + v[:, None] ** 2)
    return np.fft.ifftshift(r)[:, :w // 2 + 1]


def _fft_filter(x: np.ndarray, h_half: np.ndarray) -> np.ndarray:
    """Real part of ``ifft2(fft2(x) .* H)`` for a real, centrally symmetric filter H."""
    import scipy.fft
    return scipy.fft.irfft2(scipy.fft.rfft2(x) * h_half, s=x.shape)


_QCB = dict(f0=15.3870, f1=1.3456, a=0.7622, k=1.0, h=1.0, p=3.0, q=2.0, z=0.0001)


def _qcb_contrast(x: np.ndarray) -> np.ndarray:
    """Chen-Blum contrast response C' of one normalized, CSF-filtered image."""
    c = _QCB
    r = _freq_radius(x.shape, x.shape[1] / 30.0, x.shape[0] / 30.0)
    sd = np.exp(-(r / c['f0']) ** 2) - c['a'] * np.exp(-(r / c['f1']) ** 2)
    y = _fft_filter(_normalize1(x), sd)
    t = np.arange(-15, 16, dtype=np.float64)

    def g2(sigma):  # 31 x 31 Gaussian exp(-(x^2+y^2)/(2 s^2)) / (2 pi s^2), not normalized
        g = np.exp(-(t * t) / (2.0 * sigma * sigma))
        return g, g / (2.0 * np.pi * sigma * sigma)
    gx1, gy1 = g2(2.0)
    gx2, gy2 = g2(4.0)
    with np.errstate(divide='ignore', invalid='ignore'):
        con = np.abs(_sep_filter(y, gx1, gy1, 'zero') / _sep_filter(y, gx2, gy2, 'zero') - 1.0)
        con2 = con * con  # the exponents p = 3, q = 2 as products (faster than float powers)
        return c['k'] * (con2 * con) / (c['h'] * con2 + c['z'])


def qcb(a, b, f) -> float:
    """Qcb (Chen & Blum 2009), Z. Liu's ``metricChenBlum.m`` as used by VIFB.

    Images min-max normalized to 0..255 and rounded; CSF (DoG) filter in the frequency domain
    with f0 = 15.3870, f1 = 1.3456, a = 0.7622 on ``freqspace`` scaled by (W/30, H/30); local
    contrast |G(sigma 2) * I / G(sigma 4) * I - 1| with 31 x 31 Gaussians (zero border);
    C' = C^3 / (C^2 + 1e-4); preservation min(C'_S / C'_F, C'_F / C'_S); saliency weights
    C'_A^2 / (C'_A^2 + C'_B^2); Q = mean of the weighted map.
    """
    pa, pb, pf = _plane(a), _plane(b), _plane(f)
    ca = pa.get(('qcb',), _qcb_contrast)
    cb = pb.get(('qcb',), _qcb_contrast)
    cf = pf.get(('qcb',), _qcb_contrast)
    with np.errstate(divide='ignore', invalid='ignore'):
        qaf = np.where(ca < cf, ca / cf, cf / ca)
        qbf = np.where(cb < cf, cb / cf, cf / cb)
        den = ca * ca + cb * cb
        q = (ca * ca / den) * qaf + (cb * cb / den) * qbf
    return float(q.mean())


_QCV_WIN = 16
_QCV_ALPHA = 5  # saliency exponent (spelled out in _qcv_saliency)


def _block_sum(x: np.ndarray, n: int) -> np.ndarray:
    """Sums over distinct n x n blocks, zero-padding the bottom/right (MATLAB ``blkproc``)."""
    h, w = x.shape
    x = np.pad(x, ((0, -h % n), (0, -w % n)))
    return x.reshape(x.shape[0] // n, n, x.shape[1] // n, n).sum(axis=(1, 3))


def _qcv_saliency(x: np.ndarray) -> np.ndarray:
    gx = _corr3(x, ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0)), 'zero')
    gy = _corr3(x, ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0)), 'zero')
    g2 = gx * gx + gy * gy
    return _block_sum(g2 * g2 * np.sqrt(g2), _QCV_WIN)  # |grad|^alpha, alpha = 5


def qcv(a, b, f) -> float:
    """Qcv (Chen & Varshney 2007), Z. Liu's ``metricChen.m`` as used by VIFB; lower is better.

    Images min-max normalized to 0..255 and rounded; 16 x 16 blocks (partial blocks at the
    bottom/right padded with zeros, as ``blkproc``); saliency = block sum of the Sobel
    magnitude^5; difference images S - F filtered by the Mannos-Sakrison CSF
    2.6 (0.0192 + 0.144 r) exp(-(0.144 r)^1.1) on ``freqspace`` scaled by (W/8, H/8);
    D = block sum of squares / 256; Q = sum(lamA DA + lamB DB) / sum(lamA + lamB).
    """
    pa, pb, pf = _plane(a), _plane(b), _plane(f)
    na = pa.get(('norm1',), _normalize1)
    nb = pb.get(('norm1',), _normalize1)
    nf = pf.get(('norm1',), _normalize1)
    la = pa.get(('qcv_sal',), lambda x: _qcv_saliency(na))
    lb = pb.get(('qcv_sal',), lambda x: _qcv_saliency(nb))
    r = _freq_radius(na.shape, na.shape[1] / 8.0, na.shape[0] / 8.0)
    csf = 2.6 * (0.0192 + 0.144 * r) * np.exp(-(0.144 * r) ** 1.1)
    n2 = float(_QCV_WIN * _QCV_WIN)
    da = _block_sum(_fft_filter(na - nf, csf) ** 2, _QCV_WIN) / n2
    db = _block_sum(_fft_filter(nb - nf, csf) ** 2, _QCV_WIN) / n2
    return float((la * da + lb * db).sum() / (la + lb).sum())


# --- Visual information fidelity

def _vif_scales(p: _Plane):
    """Per scale (image, window, mean, variance clipped at 0) of the 4-scale VIF pyramid.

    Sheikh & Bovik's pyramid; cached on the plane.
    """
    def fn(x):
        out = []
        for scale in range(1, 5):
            n = 2 ** (4 - scale + 1) + 1
            g = _gauss1d(n, n / 5.0)
            if scale > 1:
                x = _filter_valid(x, g)[::2, ::2]
            mu = _filter_valid(x, g)
            var = np.maximum(_filter_valid(x * x, g) - mu * mu, 0.0)
            out.append((x, g, mu, var))
        return out
    return p.get(('vif',), fn)


def _vif_terms(pr: _Plane, pd: _Plane, sigma_nsq: float):
    """Per scale (VID, VIND, gain) maps of reference ``pr`` and distorted ``pd``.

    Sheikh & Bovik ``vifp_mscale`` with its eps guards, applied in the order of their code.
    """
    out = []
    eps = 1e-10
    for (xr, g, mu1, s1), (xd, _, mu2, s2) in zip(_vif_scales(pr), _vif_scales(pd)):
        s12 = _filter_valid(xr * xd, g) - mu1 * mu2
        g0 = s12 / (s1 + eps)
        low1 = s1 < eps
        low2 = s2 < eps
        zero = low1 | low2
        neg = (g0 < 0) & ~zero
        gain = np.where(zero | neg, 0.0, g0)
        sv = np.where(low2, 0.0, np.where(low1 | neg, s2, s2 - g0 * s12))
        sv = np.maximum(sv, eps)
        s1 = np.where(low1, 0.0, s1)
        vid = np.log10(1.0 + gain * gain * s1 / (sv + sigma_nsq))
        vind = np.log10(1.0 + s1 / sigma_nsq)
        out.append((vid, vind, gain))
    return out


def vif(a, b, f) -> float:
    """VIFF, the fusion VIF of Han, Cai, Cao & Xu 2013 (their public ``VIFF_Public.m``).

    Sheikh-Bovik pixel-domain VIF terms on a 4-scale pyramid (Gaussian windows N = 17, 9, 5, 3,
    sigma = N/5, 'valid' filtering, downsampling by 2), visual noise 0.005 * 255^2; at each pixel
    the source with the smaller gain g is used (as the public code does); per scale
    F_s = sum(VID + 1e-7) / sum(VIND + 1e-7); VIFF = sum_s p_s F_s with p = (1, 0, 0.15, 1)/2.15.
    Han's code scores colour images on CIELAB L*; here colour is handled by the convention.
    """
    pa, pb, pf = _plane(a), _plane(b), _plane(f)
    sq = 0.005 * 255.0 * 255.0
    c = 1e-7
    weights = np.array([1.0, 0.0, 0.15, 1.0]) / 2.15
    ta = _vif_terms(pa, pf, sq)
    tb = _vif_terms(pb, pf, sq)
    vals = []
    for (za, ma, ga), (zb, mb, gb) in zip(ta, tb):
        use_a = ga < gb
        z = np.where(use_a, za, zb)
        m = np.where(use_a, ma, mb)
        vals.append((z + c).sum() / (m + c).sum())
    return float((np.asarray(vals) * weights).sum())


def vif_pixel(a, f, sigma_nsq: float = 2.0) -> float:
    """VIFp(A, F) of Sheikh & Bovik (pixel domain, 4 scales, noise variance ``sigma_nsq``).

    The ``cddfuse`` convention's VIF is VIFp(A, F) + VIFp(B, F) with sigma_nsq = 2 (a NaN
    term counts as 1, as in CDDFuse's ``compare_viff``).
    """
    terms = _vif_terms(_plane(a), _plane(f), sigma_nsq)
    num = sum(float(t[0].sum()) for t in terms)
    den = sum(float(t[1].sum()) for t in terms)
    with np.errstate(divide='ignore', invalid='ignore'):
        v = num / den if den != 0 else float('nan')
    return 1.0 if math.isnan(v) else v


# --- Colour difference

def delta_e_lab(lab1, lab2) -> np.ndarray:
    """CIEDE2000 colour difference of CIELAB arrays (..., 3) (kL = kC = kH = 1), in their dtype."""
    from skimage.color import deltaE_ciede2000
    return deltaE_ciede2000(np.asarray(lab1), np.asarray(lab2), channel_axis=-1)


def delta_e(vis, fused) -> float:
    """Colour difference ΔE: mean CIEDE2000 between the visible and fused images.

    sRGB 0..255 (grey is repeated to RGB); Lab by ``skimage.color.rgb2lab`` (D65, 2 degree
    observer). Lower is better.

    Computed in float32 (1.7x faster than float64; the mean differs by < 1e-4 ΔE units).
    """
    from skimage.color import rgb2lab

    def lab(x):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:
            x = np.repeat(x[:, :, None], 3, axis=2)
        return rgb2lab(np.clip(x / np.float32(255.0), 0.0, 1.0))
    return float(delta_e_lab(lab(vis), lab(fused)).mean(dtype=np.float64))


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
           lambda vis, ir, fused: _spatial_frequency_vifb_image(fused),
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
        triples = [tuple(_Plane(_grey(x, np.round)) for x in (vis, ir, fused))]
    elif fused.ndim == 3:
        vis_p = [_Plane(vis[:, :, k]) for k in range(3)] if vis.ndim == 3 else [_Plane(vis)] * 3
        ir_p = [_Plane(ir[:, :, k]) for k in range(3)] if ir.ndim == 3 else [_Plane(ir)] * 3
        triples = [(vis_p[k], ir_p[k], _Plane(fused[:, :, k])) for k in range(3)]
    else:
        triples = [(_Plane(_grey(vis, _matlab_round)), _Plane(_grey(ir, _matlab_round)),
                    _Plane(fused))]
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


# ---------------------------------------------------------------------------------------------
# Segmentation

def confusion_matrix(pred, label, num_classes: int, ignore_index: Optional[int] = 255
                     ) -> np.ndarray:
    """Confusion matrix (num_classes x num_classes int64, rows = label, cols = prediction).

    ``pred`` and ``label`` are integer class-id arrays of one shape; pixels whose label equals
    ``ignore_index`` are skipped. Raises ValueError for mismatched shapes or ids out of range.
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f'prediction shape {pred.shape} differs from label shape {label.shape}')
    if num_classes < 1:
        raise ValueError(f'num_classes must be >= 1, got {num_classes}')
    pred = pred.astype(np.int64).ravel()
    label = label.astype(np.int64).ravel()
    keep = np.ones(label.shape, dtype=bool) if ignore_index is None else label != ignore_index
    pred, label = pred[keep], label[keep]
    bad = (label < 0) | (label >= num_classes)
    if bad.any():
        raise ValueError(f'label ids {np.unique(label[bad])[:10].tolist()} are outside 0..'
                         f'{num_classes - 1} and not the ignore index {ignore_index}')
    bad = (pred < 0) | (pred >= num_classes)
    if bad.any():
        raise ValueError(f'predicted ids {np.unique(pred[bad])[:10].tolist()} are outside 0..'
                         f'{num_classes - 1}')
    cm = np.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes).astype(np.int64)


def iou_from_confusion(cm) -> Tuple[np.ndarray, float]:
    """Per-class IoU and mIoU of a confusion matrix (rows = label, cols = prediction).

    IoU = TP / (TP + FP + FN), NaN where a class is in neither label nor prediction; mIoU =
    mean of the non-NaN IoUs (NaN if there are none). Returns ``(iou array, miou)``.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f'confusion matrix must be square, got shape {cm.shape}')
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = np.where(union > 0, tp / union, np.nan)
    valid = ~np.isnan(iou)
    miou = float(iou[valid].mean()) if valid.any() else float('nan')
    return iou, miou


def pixel_accuracy(cm) -> float:
    """Overall pixel accuracy: trace / sum of the confusion matrix (NaN when empty)."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float('nan')


__doc__ += '\nTable of conventions\n--------------------\n\n' + conventions_markdown()
