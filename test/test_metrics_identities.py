"""Hand-computed cases and identities for the metrics of ssvif_ros (no data files needed).

Covers the metrics VIFB has no values for (VIF, MS-SSIM, SCD, ΔE, the cddfuse convention) and
small exact cases of the others; independent implementations (pytorch-msssim, scikit-image) are
used as cross-checks where they compute the same formula.
"""
import math

import numpy as np
import pytest

from ssvif_ros import fusion_metrics as FM, metrics as M, seg_metrics as SM


def _smooth_random(shape, seed, lo=20.0, hi=235.0):
    """Integer-valued float64 test image with texture at several scales."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    x = (np.sin(xx / (5.0 + seed)) * np.cos(yy / 7.0) + 0.5 * rng.standard_normal((h, w))
         + np.sin((xx + yy) / 19.0))
    x = (x - x.min()) / (x.max() - x.min())
    return np.round(lo + (hi - lo) * x)


# ---------------------------------------------------------------------------------------------
# Histogram metrics

def test_entropy_of_two_and_four_level_images():
    two = np.zeros((8, 8))
    two[:, 4:] = 255
    assert FM.entropy(two) == pytest.approx(1.0, abs=1e-15)
    four = np.tile(np.array([0.0, 10.0, 20.0, 30.0]), (4, 1))
    assert FM.entropy(four) == pytest.approx(2.0, abs=1e-15)
    assert FM.entropy(np.full((5, 5), 7.0)) == 0.0


def test_cross_entropy_hand_value_and_self():
    a = np.array([[0.0, 0.0, 255.0, 255.0]])
    f = np.array([[0.0, 255.0, 255.0, 255.0]])
    expected = 0.5 * math.log2(0.5 / 0.25) + 0.5 * math.log2(0.5 / 0.75)
    assert FM.cross_entropy(a, f) == pytest.approx(expected, abs=1e-15)
    assert FM.cross_entropy(a, a) == 0.0


@pytest.mark.parametrize('convention', M.CONVENTIONS)
def test_mutual_information_hand_values_and_symmetry(convention):
    a = np.zeros((4, 4))
    a[:, 2:] = 255  # left / right halves
    b = np.zeros((4, 4))
    b[2:, :] = 255  # top / bottom halves: independent of a, joint uniform over 4 cells
    assert FM.mutual_information(a, a, convention) == pytest.approx(math.log(2), abs=1e-15)
    assert FM.mutual_information(a, b, convention) == pytest.approx(0.0, abs=1e-15)
    x = _smooth_random((40, 50), 1)
    y = _smooth_random((40, 50), 2)
    assert FM.mutual_information(x, y, convention) == pytest.approx(
        FM.mutual_information(y, x, convention), abs=1e-12)
    # MI(x, x) = H(x) in nats (x spans 20..235: VIFB's stretch to 0..255 keeps levels apart).
    assert FM.mutual_information(x, x, convention) == pytest.approx(
        FM.entropy(x) * math.log(2), abs=1e-12)


def test_vifb_mi_stretches_to_full_range():
    x = np.array([[10.0, 20.0], [20.0, 30.0]])
    # VIFB stretches min..max to 0..255: three levels 0, 128, 255 with p = 1/4, 1/2, 1/4.
    h = -(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5))
    assert FM.mutual_information(x, x, 'vifb') == pytest.approx(h, abs=1e-15)


# ---------------------------------------------------------------------------------------------
# Gradient / statistics of the fused image

def test_sd_sf_ag_ei_hand_values():
    x = np.array([[0.0, 2.0], [2.0, 0.0]])
    assert FM.std_dev(x) == 1.0
    # SF: horizontal diffs (2, -2), vertical (2, -2).
    assert FM.spatial_frequency(x, 'vifb') == pytest.approx(math.sqrt((8 + 8) / 4))
    assert FM.spatial_frequency(x, 'cddfuse') == pytest.approx(math.sqrt(4 + 4))
    ramp = np.tile(np.arange(6, dtype=np.float64) * 3.0, (5, 1))  # 5 x 6, slope 3 along x
    s = 3.0 / math.sqrt(2.0)  # per pixel sqrt((3^2 + 0) / 2)
    assert FM.average_gradient(ramp, 'vifb') == pytest.approx(30 * s / (4 * 5))
    assert FM.average_gradient(ramp, 'cddfuse') == pytest.approx(s)
    # Sobel (replicate border): interior |4 x(j-1) - 4 x(j+1)| = 8 * 3; border columns 4 * 3.
    assert FM.edge_intensity(ramp) == pytest.approx((24.0 * 4 + 12.0 * 2) / 6)


def test_vifb_spatial_frequency_lays_channels_side_by_side():
    f = np.zeros((3, 2, 3))
    f[:, :, 1] = 10.0  # G channel: seam R|G of 10 and G|B of -10 in every row
    m = M.compute_fusion_metrics(f, f, f, ['SF'], 'vifb')['SF']
    assert m == pytest.approx(math.sqrt(3 * 2 * 100 / (3 * 6)))


def test_psnr_rmse_hand_values():
    n = 16 * 16
    a = np.full((16, 16), 10.0)
    b = np.full((16, 16), 20.0)
    f = np.full((16, 16), 15.0)
    assert FM.rmse(a, b, f, 'cddfuse') == pytest.approx(5.0)
    assert FM.rmse(a, b, f, 'vifb') == pytest.approx(5.0 / math.sqrt(n))  # VIFB helper quirk
    assert FM.psnr(a, b, f, 'cddfuse') == pytest.approx(10 * math.log10(15.0 ** 2 / 25.0))
    assert FM.psnr(a, b, f, 'vifb') == pytest.approx(
        20 * math.log10(255.0 / math.sqrt(5.0 / math.sqrt(n))))


def test_scd_of_sum_is_two_and_sign():
    a = _smooth_random((30, 40), 3)
    b = _smooth_random((30, 40), 4)
    assert FM.scd(a, b, a + b) == pytest.approx(2.0, abs=1e-12)
    # F = 0: corr(-B, A) + corr(-A, B) = -2 corr(A, B).
    assert FM.scd(a, b, np.zeros_like(a)) == pytest.approx(-2 * np.corrcoef(a.ravel(),
                                                                            b.ravel())[0, 1])


# ---------------------------------------------------------------------------------------------
# SSIM family

def test_ssim_identity_and_sum_over_sources():
    x = _smooth_random((40, 48), 5)
    assert FM.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert FM.ssim(x, x, 'cddfuse') == pytest.approx(1.0, abs=1e-12)
    vals = M.compute_fusion_metrics(x, x, x, ['SSIM'], 'vifb')
    assert vals['SSIM'] == pytest.approx(2.0, abs=1e-12)


def test_ssim_matches_pytorch_msssim():
    torch = pytest.importorskip('torch')
    pm = pytest.importorskip('pytorch_msssim')
    a = _smooth_random((256, 256), 6)
    f = np.clip(a * 0.7 + _smooth_random((256, 256), 7) * 0.3 + 5, 0, 255)

    def t(x):
        return torch.from_numpy(x)[None, None].to(torch.float64)
    # pytorch-msssim builds its default window in float32 (results then differ by ~5e-7);
    # give it the same Gaussian (11 taps, sigma 1.5) in float64.
    g = np.exp(-(np.arange(11) - 5.0) ** 2 / (2 * 1.5 ** 2))
    win = torch.from_numpy(g / g.sum()).reshape(1, 1, 1, 11)
    ref_ssim = float(pm.ssim(t(a), t(f), data_range=255.0, win=win))
    ref_ms = float(pm.ms_ssim(t(a), t(f), data_range=255.0, win=win))
    assert FM.ssim(a, f) == pytest.approx(ref_ssim, rel=1e-10)
    assert FM.ms_ssim(a, f) == pytest.approx(ref_ms, rel=1e-10)
    assert FM.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert FM.ms_ssim(a, f) < 1.0


def test_cddfuse_ssim_uses_data_range_two():
    from skimage.metrics import structural_similarity
    a = _smooth_random((40, 40), 8)
    f = _smooth_random((40, 40), 9)
    assert FM.ssim(a, f, 'cddfuse') == pytest.approx(
        structural_similarity(f, a, win_size=7, data_range=2.0), abs=1e-15)
    assert FM.ssim(a, f, 'cddfuse') != pytest.approx(
        structural_similarity(f, a, win_size=7, data_range=255.0), abs=1e-6)


def test_ms_ssim_too_small_image_is_a_clear_error():
    x = _smooth_random((160, 300), 1)
    with pytest.raises(ValueError, match='161'):
        FM.ms_ssim(x, x)
    errs = []
    out = M.compute_fusion_metrics(x, x, x, ['EN', 'MS_SSIM'], errors=errs)
    assert math.isnan(out['MS_SSIM']) and out['EN'] > 0
    assert errs and errs[0].startswith('MS_SSIM:')


# ---------------------------------------------------------------------------------------------
# Qabf, VIF

def test_qabf_identity_value_and_flat_fusion():
    x = _smooth_random((32, 32), 10)
    # VIFB scales by 255, so gA == gF takes the quirk branch GAF = gF (huge): QgAF = Tg, and
    # equal orientations give QaAF = Ta / (1 + exp(-22 * 0.2)).
    expected = 0.9994 * 0.9879 / (1.0 + math.exp(-22.0 * 0.2))
    assert FM.qabf(x, x, x) == pytest.approx(expected, rel=1e-12)
    # A black fused image has no edges (zero border too): GAF = 0 wherever a source has an
    # edge, so every QgAF <= Tg / (1 + exp(7.5)).
    flat = FM.qabf(x, _smooth_random((32, 32), 11), np.zeros((32, 32)))
    assert 0 < flat <= 0.9994 / (1.0 + math.exp(7.5))


def _alternating_sum(n):
    sigma = n / 5.0
    t = [k - (n - 1) / 2 for k in range(n)]
    g = [math.exp(-k * k / (2 * sigma * sigma)) for k in t]
    return sum(v * (-1) ** i for i, v in enumerate(g)) / sum(g)


@pytest.mark.parametrize('gain', [1.0, 2.0, 0.5])
def test_vif_checkerboard_hand_value(gain):
    # x = 128 + d c(i, j) with c = (-1)^(i+j): in every 17 x 17 Gaussian window the variance is
    # d^2 (1 - s^4), s = alternating sum of the 1-D window. Filtering and downsampling by 2 make
    # the coarser scales flat (variance 0, so F_s = 1 there).
    d = 40.0
    i, j = np.mgrid[0:64, 0:64]
    c = (-1.0) ** (i + j)
    x = 128.0 + d * c
    f = 128.0 + gain * d * c
    var = d * d * (1.0 - _alternating_sum(17) ** 4)
    sq = 0.005 * 255 ** 2
    vid = math.log10(1 + gain ** 2 * var / (1e-10 + sq))
    vind = math.log10(1 + var / sq)
    f1 = (vid + 1e-7) / (vind + 1e-7)
    assert FM.vif(x, x, f) == pytest.approx((f1 + 0.15 + 1.0) / 2.15, rel=1e-9)
    vifp = math.log10(1 + gain ** 2 * var / (1e-10 + 2.0)) / math.log10(1 + var / 2.0)
    assert FM.vif_pixel(x, f, 2.0) == pytest.approx(vifp, rel=1e-9)
    cdd = M.compute_fusion_metrics(x, x, f, ['VIF'], 'cddfuse')['VIF']
    assert cdd == pytest.approx(2 * vifp, rel=1e-9)


def test_vif_identity_and_contrast_gain():
    x = _smooth_random((80, 90), 12)
    assert FM.vif(x, x, x) == pytest.approx(1.0, rel=1e-9)  # eps guards: 1 - 1e-12
    noisy = np.clip(x + np.random.default_rng(0).normal(0, 25, x.shape), 0, 255)
    assert 0 < FM.vif(x, x, noisy) < 0.9
    # VIFF keeps, per pixel, the source with the *smaller* gain g (as Han's public code does):
    # a source unrelated to F pulls the score down even when F equals the other source.
    y = _smooth_random((80, 90), 13)
    assert FM.vif(x, y, x) < 0.9


# ---------------------------------------------------------------------------------------------
# ΔE (CIEDE2000)

# Sharma, Wu & Dalal 2005, "The CIEDE2000 color-difference formula: implementation notes,
# supplementary test data ...", table 1: (L1, a1, b1, L2, a2, b2, ΔE00), all 34 pairs.
SHARMA = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def test_ciede2000_sharma_pairs():
    pairs = np.asarray(SHARMA)
    d = FM.delta_e_lab(pairs[:, 0:3], pairs[:, 3:6])
    np.testing.assert_allclose(d, pairs[:, 6], atol=5e-5)
    np.testing.assert_allclose(FM.delta_e_lab(pairs[:, 3:6], pairs[:, 0:3]), pairs[:, 6],
                               atol=5e-5)  # symmetric


def test_delta_e_images():
    rng = np.random.default_rng(1)
    vis = rng.integers(0, 256, (30, 40, 3)).astype(np.float64)
    assert FM.delta_e(vis, vis) == 0.0
    grey = rng.integers(0, 256, (30, 40)).astype(np.float64)
    assert FM.delta_e(np.repeat(grey[:, :, None], 3, axis=2), grey) == 0.0
    # float32 fast path against a float64 reference with scikit-image.
    from skimage.color import deltaE_ciede2000, rgb2lab
    fused = np.clip(vis + rng.normal(0, 20, vis.shape), 0, 255).round()
    ref = deltaE_ciede2000(rgb2lab(vis / 255.0), rgb2lab(fused / 255.0)).mean()
    assert FM.delta_e(vis, fused) == pytest.approx(ref, abs=1e-4)
    assert FM.delta_e(vis, fused) > 1.0


# ---------------------------------------------------------------------------------------------
# compute_fusion_metrics: conventions, channels, errors

def test_vifb_scores_each_channel_and_averages():
    rng = np.random.default_rng(2)
    vis = np.stack([_smooth_random((40, 44), k) for k in (20, 21, 22)], axis=2)
    ir = _smooth_random((40, 44), 23)
    fused = np.clip(0.5 * vis + 0.5 * ir[:, :, None] + rng.normal(0, 3, vis.shape), 0,
                    255).round()
    out = M.compute_fusion_metrics(vis, ir, fused, ['MI', 'Qabf', 'SSIM', 'CE', 'EN'], 'vifb')
    per = [(vis[:, :, k], ir, fused[:, :, k]) for k in range(3)]
    assert out['MI'] == pytest.approx(np.mean([FM.mutual_information(a, f)
                                               + FM.mutual_information(b, f) for a, b, f in per]))
    assert out['Qabf'] == pytest.approx(np.mean([FM.qabf(a, b, f) for a, b, f in per]))
    assert out['SSIM'] == pytest.approx(np.mean([FM.ssim(a, f) + FM.ssim(b, f)
                                                 for a, b, f in per]))
    assert out['CE'] == pytest.approx(np.mean([(FM.cross_entropy(a, f) + FM.cross_entropy(b, f))
                                               / 2 for a, b, f in per]))
    assert out['EN'] == pytest.approx(np.mean([FM.entropy(f) for _, _, f in per]))
    # cddfuse: one grey plane, round(0.299 R + 0.587 G + 0.114 B).
    cdd = M.compute_fusion_metrics(vis, ir, fused, ['EN'], 'cddfuse')
    grey = np.round(0.299 * fused[:, :, 0] + 0.587 * fused[:, :, 1] + 0.114 * fused[:, :, 2])
    assert cdd['EN'] == pytest.approx(FM.entropy(grey))


def test_names_aliases_and_order():
    assert M.resolve_names(['Mutinf', 'variance', 'ms-ssim', 'EN', 'Entropy']) == [
        'MI', 'SD', 'MS_SSIM', 'EN']
    with pytest.raises(ValueError, match='unknown metric'):
        M.resolve_names(['NIQE'])
    assert set(M.VIFB_NAMES) == {'Entropy', 'Variance', 'Spatial_frequency', 'Avg_gradient',
                                 'Edge_intensity', 'Cross_entropy', 'Mutinf', 'Qabf', 'Qcb',
                                 'Qcv', 'Ssim', 'Psnr', 'Rmse'}


def test_input_errors_name_the_image():
    x = np.zeros((10, 12))
    with pytest.raises(ValueError, match='fused image is 11 x 10'):
        M.compute_fusion_metrics(x, x, np.zeros((10, 11)), ['EN'])
    with pytest.raises(ValueError, match='infrared image must be'):
        M.compute_fusion_metrics(x, np.zeros((10, 12, 2)), x, ['EN'])
    with pytest.raises(ValueError, match='visible image contains NaN'):
        M.compute_fusion_metrics(np.full((10, 12), np.nan), x, x, ['EN'])
    with pytest.raises(ValueError, match='convention'):
        M.compute_fusion_metrics(x, x, x, ['EN'], convention='matlab')


def test_all_metrics_run_in_both_conventions_and_validation_helper():
    vis = np.stack([_smooth_random((180, 190), k) for k in (30, 31, 32)], axis=2)
    ir = _smooth_random((180, 190), 33)
    fused = np.clip(0.6 * vis + 0.4 * ir[:, :, None], 0, 255).round()
    for conv in M.CONVENTIONS:
        out = M.compute_fusion_metrics(vis, ir, fused, None, conv)
        assert list(out) == M.metric_names()
        assert all(np.isfinite(v) for v in out.values()), out
    val = M.validation_metrics(vis.astype(np.uint8), ir.astype(np.uint8),
                               fused.astype(np.uint8))
    assert list(val) == list(M.VALIDATION_METRICS)


def test_conventions_table_lists_every_metric():
    table = M.conventions_markdown()
    rows = table.strip().splitlines()
    assert len(rows) == 2 + len(M.METRICS)
    assert all(r.count('|') == 6 for r in rows)  # no stray pipes inside the cells
    for name in M.METRICS:
        assert f'| {name} |' in table
        assert f'| {name} |' in M.__doc__


# ---------------------------------------------------------------------------------------------
# Segmentation

def test_confusion_iou_miou_hand_values_with_ignore():
    label = np.array([[0, 0, 1, 255], [1, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 2], [1, 2, 0, 7]])  # 7 sits on an ignored pixel
    cm = SM.confusion_matrix(pred, label, 4, ignore_index=255)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0],
                                       [0, 0, 0, 0]])
    iou, miou = SM.iou_from_confusion(cm)
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 1 / 2])
    assert np.isnan(iou[3])  # class 3 in neither label nor prediction
    assert miou == pytest.approx(0.5)
    assert SM.pixel_accuracy(cm) == pytest.approx(4 / 6)


def test_confusion_errors():
    with pytest.raises(ValueError, match='predicted ids'):
        SM.confusion_matrix(np.array([0, 5]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match='label ids'):
        SM.confusion_matrix(np.array([0, 1]), np.array([0, 9]), 3)
    with pytest.raises(ValueError, match='shape'):
        SM.confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
