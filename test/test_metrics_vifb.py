"""ssvif_ros.metrics against the VIFB benchmark's own MATLAB results (an independent oracle).

VIFB (Zhang, Ye & Xiao, CVPRW 2020) ships, for 13 fusion methods x 21 image pairs, the value of
13 metrics computed by its MATLAB code (``output/evaluation_metrics_single/<image>_<method>_
<metric>.txt``, written by ``dlmwrite`` with 5 significant digits). We recompute every value
from ``input/{VI,IR}/<image>.jpg`` and ``output/fused_images/<image>_<method>.jpg`` with the
``vifb`` convention and require agreement to the printed precision: |ours - VIFB| <= half a
unit of the 5th significant digit (relative <= 5e-5). No metric needs more: OpenCV's JPEG
decoder gives the same pixels as MATLAB's imread on these files, and the MATLAB quirks (channel
folding in SF, the not-an-MSE helper of PSNR/RMSE, the x255 of Qabf, blkproc zero padding in
Qcv, int16 rounding in MI ...) are reproduced in the metric code. A full sweep of all
13 x 21 pairs (3,549 values) agreed, the largest error being 0.9994 half-units (MI of
man/HMSD_GF) and the largest relative error 4.8e-5 (AG of walking/Hybrid_MSD).

Files with a GF_/MSD_/SR_ prefix are VIFB group averages and are ignored. MST_SR has metric
files but no fused image (VIFB renamed it LP_SR; the values are identical), so it is not
listed.

Speed: the default run scores a deterministic third of the (image, method) pairs that still
covers every method and every image (about 40 s on one core); set ``SSVIF_VIFB_FULL=1`` to
score all 273 pairs (about 2 minutes).
"""
import math
import os

from conftest import VIFB
import pytest

from ssvif_ros import metrics
from ssvif_ros.imaging import read_image

REF = VIFB / 'output' / 'evaluation_metrics_single'
FUSED = VIFB / 'output' / 'fused_images'
VIFB_METRICS = ('Avg_gradient', 'Cross_entropy', 'Edge_intensity', 'Entropy', 'Mutinf', 'Psnr',
                'Qabf', 'Qcb', 'Qcv', 'Rmse', 'Spatial_frequency', 'Ssim', 'Variance')
FULL = os.environ.get('SSVIF_VIFB_FULL', '') == '1'


def _all_cases():
    """Sorted (images, methods, [(image, method)]) with both a fused image and VIFB values."""
    images = sorted(p.stem for p in (VIFB / 'input' / 'VI').glob('*.jpg'))
    methods = set()
    for img in images:
        for p in FUSED.glob(f'{img}_*.jpg'):
            method = p.stem[len(img) + 1:]
            if (REF / f'{img}_{method}_Entropy.txt').is_file():
                methods.add(method)
    methods = sorted(methods)
    cases = [(i, m) for i in images for m in methods
             if (FUSED / f'{i}_{m}.jpg').is_file() and (REF / f'{i}_{m}_Entropy.txt').is_file()]
    return images, methods, cases


def _selected(images, methods, cases):
    if FULL:
        return cases
    # Every third (image, method) pair on diagonals: each image gets 4-5 methods, each method 7
    # images, so all 13 methods and all 21 images are covered.
    return [(i, m) for i, m in cases if (images.index(i) + methods.index(m)) % 3 == 0]


def _half_unit(ref_text: str) -> float:
    """Half a unit of the last of 5 significant digits of a dlmwrite value."""
    ref = float(ref_text)
    return 0.5 * 10.0 ** (math.floor(math.log10(abs(ref))) - 4)


@pytest.fixture(scope='module')
def scored():
    if not (VIFB / 'input' / 'VI').is_dir() or not REF.is_dir():
        pytest.skip(f'VIFB data not found at {VIFB} (set SSVIF_DATA to the shared data folder)')
    images, methods, cases = _all_cases()
    out = {}
    loaded = {}
    for img, method in _selected(images, methods, cases):
        if img not in loaded:
            loaded.clear()
            loaded[img] = (read_image(VIFB / 'input' / 'VI' / f'{img}.jpg'),
                           read_image(VIFB / 'input' / 'IR' / f'{img}.jpg'))
        vis, ir = loaded[img]
        fused = read_image(FUSED / f'{img}_{method}.jpg')
        out[img, method] = metrics.compute_fusion_metrics(vis, ir, fused, VIFB_METRICS, 'vifb')
    return out


def test_vifb_layout_and_subset_coverage():
    if not REF.is_dir():
        pytest.skip(f'VIFB data not found at {VIFB} (set SSVIF_DATA to the shared data folder)')
    images, methods, cases = _all_cases()
    assert len(images) == 21 and len(methods) == 13, (images, methods)
    assert len(cases) == 21 * 13
    chosen = _selected(images, methods, cases)
    assert {i for i, _ in chosen} == set(images)
    assert {m for _, m in chosen} == set(methods)


@pytest.mark.parametrize('vifb_name', VIFB_METRICS)
def test_metric_matches_vifb(scored, vifb_name):
    name = metrics.VIFB_NAMES[vifb_name]
    failures = []
    worst = worst_rel = 0.0
    for (img, method), values in scored.items():
        ref_text = (REF / f'{img}_{method}_{vifb_name}.txt').read_text().strip()
        err = abs(values[name] - float(ref_text))
        worst = max(worst, err / _half_unit(ref_text))
        worst_rel = max(worst_rel, err / abs(float(ref_text)))
        if not err <= _half_unit(ref_text) * (1 + 1e-9):
            failures.append(f'{img}/{method}: ours {values[name]!r} VIFB {ref_text}')
    assert len(scored) >= 91
    assert not failures, f'{len(failures)} of {len(scored)} differ: ' + '; '.join(failures[:8])
    print(f'\n{vifb_name}: {len(scored)} pairs, worst error {worst:.4f} half-units of the 5th '
          f'digit, {worst_rel:.2e} relative')
