"""GDWA, DWA, fixed and UCW: hand values and a toy two-task problem."""
import pytest
import torch

from ssvif_train.config import WeightingConfig
from ssvif_train.weighting import create_weighting, DWA, GDWA, UCW


def test_gdwa_hand_values():
    # g~ = (0.75, 0.25), s = (0.5, 0.5) -> lambda_A = 0.75, omega = 0.25 / 0.75
    lam_a, lam_b = GDWA.weights(3.0, 1.0, 0.5, 0.5)
    assert (lam_a, lam_b) == pytest.approx((0.75, 0.25))
    w = GDWA(temperature=2.0)
    a, b = w.step(3.0, 1.0, 10.0, 2.0)
    assert a == 1.0 and b == pytest.approx(1 / 3)
    assert w.last['omega'] == pytest.approx(1 / 3) and w.last['r_a'] == 1.0


def test_gdwa_weight_grows_with_the_csc_gradient_norm():
    w = GDWA()
    omegas = [w.step(1.0, gb, 1.0, 1.0)[1] for gb in (0.1, 0.5, 1.0, 2.0)]
    assert omegas == sorted(omegas) and omegas[2] == pytest.approx(1.0)


def test_gdwa_favours_the_task_that_descends_more_slowly():
    w = GDWA(temperature=0.5)
    base = w.step(1.0, 1.0, 1.0, 1.0)[1]
    assert base == pytest.approx(1.0)
    # fusion loss halves each epoch (r_A = 0.5), CSC loss stalls (r_B = 1)
    w.epoch_end(2.0, 1.0)
    assert w.descent_rates() == (1.0, 1.0)  # one epoch is not a rate yet
    w.epoch_end(1.0, 1.0)
    assert w.descent_rates() == pytest.approx((0.5, 1.0))
    s_a, s_b = w.softmax_rates()
    assert s_b > s_a and s_a + s_b == pytest.approx(1.0)
    slow = w.step(1.0, 1.0, 1.0, 1.0)[1]
    assert slow > base
    assert slow == pytest.approx(s_b / s_a)


def test_gdwa_on_a_toy_two_task_problem():
    """Shared theta, L_A = |theta - a|^2, L_B = k |theta - b|^2; larger k -> larger omega."""
    def run(k):
        theta = torch.zeros(2, requires_grad=True)
        a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
        w = GDWA()
        omegas = []
        for _ in range(20):
            la = ((theta - a) ** 2).sum()
            lb = k * ((theta - b) ** 2).sum()
            ga, = torch.autograd.grad(la, theta)
            gb, = torch.autograd.grad(lb, theta)
            wa, wb = w.step(float(ga.norm()), float(gb.norm()), float(la), float(lb))
            with torch.no_grad():
                theta -= 0.05 * (wa * ga + wb * gb)
            omegas.append(wb / wa)
        return sum(omegas) / len(omegas), theta.detach()
    omega1, theta1 = run(1.0)
    omega4, theta4 = run(4.0)
    assert omega4 > omega1
    # the heavier-weighted task pulls theta towards its own optimum b = (0, 1)
    assert theta4[1] > theta1[1]


def test_fixed_and_dwa():
    f = create_weighting(WeightingConfig(method='fixed', fixed_omega=0.1))
    assert f.step(5.0, 1.0, 1.0, 1.0) == (1.0, 0.1)
    d = DWA(temperature=1.0)
    d.epoch_end(4.0, 1.0)
    d.epoch_end(2.0, 1.0)   # r = (0.5, 1)
    a, b = d.step(1.0, 1.0, 1.0, 1.0)
    import math
    assert b == pytest.approx(math.exp(1.0) / math.exp(0.5))


def test_ucw_down_weights_the_noisier_task_and_round_trips():
    u = UCW(lr=0.05)
    for _ in range(50):
        a, b = u.step(1.0, 1.0, 0.1, 10.0)
    assert b < a  # large L_csc -> larger log-variance -> smaller weight
    st = u.state_dict()
    v = UCW(lr=0.05)
    v.load_state_dict(st)
    assert torch.equal(v.log_vars, u.log_vars)
    assert v.step(1.0, 1.0, 0.1, 10.0) == pytest.approx(u.step(1.0, 1.0, 0.1, 10.0))
