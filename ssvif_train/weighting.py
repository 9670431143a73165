"""Task weighting strategies for stage II: L_total = a * L_fusion + b * L_csc.

The losses are unweighted; a strategy owns the weights. Each step the trainer computes the two
task gradients separately (``g_fusion`` and ``g_csc`` on the shared fusion-model parameters) and
calls :meth:`Weighting.step` with their norms and the loss values; it returns ``(a, b)``, the
multipliers of the two task gradients. ``omega`` (= omega_csc of eq. 2 = b / a) is logged.

* ``gdwa`` (paper III-E): g~_A = g_A / (g_A + g_B); s = softmax(r / T) over the descent rates
  r_k = L_k^(j-1) / L_k^(j-2) of the last two completed epochs (r = 1 until a task has two
  completed stage-II epochs); lambda_A = g~_A s_A / (g~_A s_A + g~_B s_B); a = 1,
  b = omega_csc = lambda_B / lambda_A (eq. 7).
* ``fixed``: a = 1, b = ``fixed_omega`` (paper ablation: 0.1).
* ``dwa`` (Liu et al. 2019): lambda_k = 2 softmax(r / T)_k from the same descent rates;
  a = 1, b = lambda_B / lambda_A.
* ``ucw`` (Kendall et al. 2018): learned log-variances s_k, L = sum exp(-s_k) L_k + s_k;
  a = exp(-s_A), b = exp(-s_B); s is updated by its own Adam from the same step's losses.

Semantic training composes the segmentation task as L_seg = L_sup + c * L_csc with the ramp
``c`` of :func:`csc_ramp` (1 when ``train.csc_ramp_epochs`` is 0, the paper's label-free form).
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

TASKS = ('fusion', 'csc')


class Weighting:
    """Base strategy: epoch loss history and descent rates."""

    name = 'base'

    def __init__(self, temperature: float = 2.0):
        self.temperature = float(temperature)
        self.history: Dict[str, List[float]] = {t: [] for t in TASKS}
        self.last: Dict[str, float] = {'omega': 0.0, 'g_a': math.nan, 'g_b': math.nan,
                                       'r_a': 1.0, 'r_b': 1.0, 'a': 1.0, 'b': 0.0}

    def descent_rates(self) -> Tuple[float, float]:
        """(r_A, r_B): ratio of the last two completed stage-II epoch means.

        Both are 1 until both tasks have two completed stage-II epochs, so neither task is
        favoured by having a longer history.
        """
        if min(len(self.history[t]) for t in TASKS) < 2:
            return 1.0, 1.0
        rates = []
        for t in TASKS:
            h = self.history[t]
            rates.append(h[-1] / h[-2] if h[-2] > 0 else 1.0)
        return rates[0], rates[1]

    def softmax_rates(self) -> Tuple[float, float]:
        """(s_A, s_B) = softmax of the descent rates with temperature T."""
        r_a, r_b = self.descent_rates()
        m = max(r_a, r_b) / self.temperature
        ea = math.exp(r_a / self.temperature - m)
        eb = math.exp(r_b / self.temperature - m)
        return ea / (ea + eb), eb / (ea + eb)

    def epoch_end(self, mean_fusion: float, mean_csc: float) -> None:
        """Record one completed stage-II epoch's mean task losses."""
        self.history['fusion'].append(float(mean_fusion))
        self.history['csc'].append(float(mean_csc))

    def step(self, g_a: float, g_b: float, loss_a: float, loss_b: float) -> Tuple[float, float]:
        """Return the gradient multipliers (a, b) for this step."""
        raise NotImplementedError

    def _record(self, a: float, b: float, g_a: float, g_b: float) -> Tuple[float, float]:
        r_a, r_b = self.descent_rates()
        self.last = {'omega': b / a if a > 0 else math.inf, 'g_a': g_a, 'g_b': g_b,
                     'r_a': r_a, 'r_b': r_b, 'a': a, 'b': b}
        return a, b

    def state_dict(self) -> dict:
        """Serializable state (for checkpoints)."""
        return {'history': {k: list(v) for k, v in self.history.items()},
                'last': dict(self.last)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.history = {k: list(v) for k, v in state['history'].items()}
        self.last = dict(state['last'])


class GDWA(Weighting):
    """Gradient-and-descent-based weight adjustment (paper section III-E)."""

    name = 'gdwa'

    @staticmethod
    def weights(g_a: float, g_b: float, s_a: float, s_b: float) -> Tuple[float, float]:
        """(lambda_A, lambda_B) from raw gradient norms and softmaxed descent rates."""
        total = g_a + g_b
        ga = g_a / total if total > 0 else 0.5
        gb = 1.0 - ga
        den = ga * s_a + gb * s_b
        lam_a = ga * s_a / den if den > 0 else 0.5
        return lam_a, 1.0 - lam_a

    def step(self, g_a, g_b, loss_a, loss_b):
        """a = 1, b = omega_csc = lambda_B / lambda_A."""
        s_a, s_b = self.softmax_rates()
        lam_a, lam_b = self.weights(g_a, g_b, s_a, s_b)
        omega = lam_b / lam_a if lam_a > 0 else 0.0
        return self._record(1.0, omega, g_a, g_b)


class Fixed(Weighting):
    """Constant omega_csc."""

    name = 'fixed'

    def __init__(self, omega: float = 0.1, temperature: float = 2.0):
        super().__init__(temperature)
        self.omega = float(omega)

    def step(self, g_a, g_b, loss_a, loss_b):
        """a = 1, b = the configured omega."""
        return self._record(1.0, self.omega, g_a, g_b)


class DWA(Weighting):
    """Dynamic weight average (descent rates only)."""

    name = 'dwa'

    def step(self, g_a, g_b, loss_a, loss_b):
        """lambda_k = 2 softmax(r / T)_k; a = 1, b = lambda_B / lambda_A."""
        s_a, s_b = self.softmax_rates()
        return self._record(1.0, s_b / s_a, g_a, g_b)


class UCW(Weighting):
    """Homoscedastic uncertainty weighting with learned log-variances."""

    name = 'ucw'

    def __init__(self, lr: float = 1e-3, temperature: float = 2.0):
        super().__init__(temperature)
        import torch
        self.log_vars = torch.zeros(2, requires_grad=True)
        self.opt = torch.optim.Adam([self.log_vars], lr=lr)

    def step(self, g_a, g_b, loss_a, loss_b):
        """Weights exp(-s_k) from the current s, then one Adam step on s."""
        import torch
        s = self.log_vars.detach()
        a, b = float(torch.exp(-s[0])), float(torch.exp(-s[1]))
        self.opt.zero_grad()
        obj = (torch.exp(-self.log_vars[0]) * loss_a + self.log_vars[0]
               + torch.exp(-self.log_vars[1]) * loss_b + self.log_vars[1])
        obj.backward()
        self.opt.step()
        return self._record(a, b, g_a, g_b)

    def state_dict(self):
        """Base state plus the log-variances and their optimizer."""
        st = super().state_dict()
        st['log_vars'] = self.log_vars.detach().clone()
        st['opt'] = self.opt.state_dict()
        return st

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`."""
        import torch
        super().load_state_dict(state)
        with torch.no_grad():
            self.log_vars.copy_(state['log_vars'])
        self.opt.load_state_dict(state['opt'])


def create_weighting(cfg) -> Weighting:
    """Strategy from a WeightingConfig."""
    if cfg.method == 'gdwa':
        return GDWA(cfg.temperature)
    if cfg.method == 'fixed':
        return Fixed(cfg.fixed_omega, cfg.temperature)
    if cfg.method == 'dwa':
        return DWA(cfg.temperature)
    if cfg.method == 'ucw':
        return UCW(cfg.ucw_lr, cfg.temperature)
    raise ValueError(f'unknown weighting method {cfg.method!r}')


def csc_ramp(stage2_epoch: int, ramp_epochs: int) -> float:
    """Weight c of L_csc within L_seg in stage-II epoch ``stage2_epoch`` (0-based).

    The sigmoid ramp-up exp(-5 (1 - t)^2), t = epoch / ramp_epochs clipped to 1, of
    consistency training (Laine & Aila 2017): pseudo labels count fully only once the labelled
    pixels have shaped both branches. Without it, CSC on unlabelled pairs of another camera
    (RoadScene) locked both branches onto "car everywhere" there within three epochs.
    """
    if ramp_epochs <= 0:
        return 1.0
    t = min(max(stage2_epoch, 0) / ramp_epochs, 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)
