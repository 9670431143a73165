"""Hand-computed values of every loss term on tiny tensors."""
import math

import pytest
import torch

from ssvif_train import losses, tensor_imaging


def const(v, h=16, w=16):
    # float64: SSIM's variance E[x^2] - mu^2 cancels catastrophically in float32 on flat images
    return torch.full((1, 3, h, w), float(v), dtype=torch.float64)


def test_intensity_term_is_l1_to_the_elementwise_max():
    t = losses.fusion_terms(const(0.5), const(0.7), const(0.2))
    assert float(t['int']) == pytest.approx(0.2, abs=1e-6)


def test_gradient_term_on_a_step_edge():
    # columns 0 0 1 1: unnormalized Sobel |Gx| = 0 4 4 0 (replicate border), |Gy| = 0
    step = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 4).expand(1, 3, 3, 4).contiguous()
    mag = losses.sobel_magnitude(step)
    assert mag[0, 0, 1].tolist() == pytest.approx([0, 4, 4, 0])
    zero = torch.zeros_like(step)
    # fused has the edge, sources are flat: mean |4 4| over 4 columns = 2
    from ssvif_train.losses import sobel_magnitude
    g = (sobel_magnitude(step) - torch.maximum(sobel_magnitude(zero), sobel_magnitude(zero)))
    assert float(g.abs().mean()) == pytest.approx(2.0)
    # and when one source has the same edge, the term vanishes
    assert float((sobel_magnitude(step) - torch.maximum(sobel_magnitude(step),
                                                        sobel_magnitude(zero))).abs().mean()) == 0


def test_ssim_term_on_constant_images():
    c1 = 0.01 ** 2
    a, b, c = 0.5, 0.2, 0.7

    def ssim_const(x, y):
        return (2 * x * y + c1) / (x * x + y * y + c1)  # contrast/structure term = 1
    t = losses.fusion_terms(const(a), const(b), const(c))
    expected = 0.5 * ((1 - ssim_const(a, b)) + (1 - ssim_const(a, c)))
    assert float(t['ssim']) == pytest.approx(expected, rel=1e-4)
    same = losses.fusion_terms(const(0.3), const(0.3), const(0.3))
    assert float(same['ssim']) == pytest.approx(0.0, abs=1e-6)


def test_colour_term_compares_cb_cr_with_the_visible_image():
    vis = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    vis[:, 0] = 0.7  # red visible image
    fused = const(0.5)  # grey: Cb = Cr = 0.5
    y = 0.299 * 0.7
    cb = 0.5 + (0.0 - y) * 0.5 / (1 - 0.114)
    cr = 0.5 + (0.7 - y) * 0.5 / (1 - 0.299)
    t = losses.fusion_terms(fused, vis, const(0.2))
    assert float(t['color']) == pytest.approx(0.5 * (abs(0.5 - cb) + abs(0.5 - cr)), abs=1e-6)
    assert float(losses.fusion_terms(vis, vis, const(0.2))['color']) == 0.0


def test_weighted_fusion_uses_the_lambdas():
    terms = {'int': torch.tensor(1.0), 'grad': torch.tensor(2.0), 'ssim': torch.tensor(3.0),
             'color': torch.tensor(4.0)}
    lam = {'int': 20, 'grad': 20, 'ssim': 10, 'color': 20}
    assert float(losses.weighted_fusion(terms, lam)) == 20 + 40 + 30 + 80


def test_pseudo_label_takes_the_more_confident_branch_ties_to_b():
    # 2 classes, 3 pixels
    la = torch.tensor([[[[4.0, 0.0, 1.0]], [[0.0, 0.0, 0.0]]]])  # A: class0 sure, unsure, 0
    lb = torch.tensor([[[[0.0, 0.0, 0.0]], [[1.0, 5.0, 1.0]]]])  # B: class1 weak, sure, 1
    lab = losses.pseudo_label(la, lb)
    # pixel 2: both have max prob sigmoid(1) -> tie -> B's class 1
    assert lab.tolist() == [[[0, 1, 1]]]


def test_hybrid_ce_and_dice_by_hand():
    logits = torch.zeros(1, 2, 1, 2)  # uniform over 2 classes, 2 pixels
    label = torch.zeros(1, 1, 2, dtype=torch.long)
    ce, dice = losses.hybrid_terms(logits, label, eps=1.0)
    assert float(ce) == pytest.approx(math.log(2))
    # class 0: 2*1 / (1 + 2 + 1) = 0.5; class 1: 0 -> dice = 1 - 0.25
    assert float(dice) == pytest.approx(0.75)


def test_csc_brings_branches_to_the_image_resolution_and_averages():
    torch.manual_seed(0)
    la = torch.randn(2, 5, 4, 4, requires_grad=True)
    lb = torch.randn(2, 5, 2, 2, requires_grad=True)
    terms = losses.csc_terms(la, lb, (8, 8), eps=1.0)
    assert set(terms) == {'ce_a', 'dice_a', 'ce_b', 'dice_b'}
    total = losses.csc_total(terms)
    assert float(total.detach()) == pytest.approx(0.5 * sum(float(v.detach())
                                                            for v in terms.values()))
    total.backward()
    assert la.grad is not None and lb.grad is not None and la.grad.abs().sum() > 0
    # identical confident branches -> zero CE up to softmax saturation
    big = torch.zeros(1, 3, 4, 4)
    big[:, 1] = 30.0
    t2 = losses.csc_terms(big, big.clone(), (4, 4))
    assert float(t2['ce_a']) < 1e-6 and float(t2['ce_b']) < 1e-6


def test_colour_term_uses_the_imaging_module_conversion():
    x = torch.rand(1, 3, 16, 16)
    ycc = tensor_imaging.rgb_to_ycbcr(x)
    t = losses.fusion_terms(x, torch.zeros_like(x) + 0.5, x)
    assert float(t['color']) == pytest.approx(float((ycc[:, 1:] - 0.5).abs().mean()), abs=1e-6)
