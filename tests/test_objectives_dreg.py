"""DReG against the standard estimators of the same gradients (IWAE, RWS), its SNR in k, and its
phi weights in closed form; on the linear-Gaussian model (tests/exact_enumeration.py)."""
from __future__ import annotations

import pytest
import torch

from dgm_modules.evaluation.gradient_variance import measure_gradient_variance
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.dreg import DReG
from dgm_modules.objectives.iwae import IWAEBound
from dgm_modules.objectives.reweighted_wake_sleep import ReweightedWakeSleep
from dgm_modules.objectives.stl import STL
from exact_enumeration import agree, draws, grads, linear_gaussian

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dreg_matches_iwae_gradient_and_rws_dreg_matches_rws():
    model, x = linear_gaussian(perturb=0.15)  # q near the posterior: RWS's score-function draws are not heavy-tailed
    k = 5
    iwae_theta, iwae_phi = draws(model, IWAEBound(k=k), x, n=200, seed=1)
    dreg_theta, dreg_phi = draws(model, DReG(k=k), x, n=200, seed=2)
    assert agree(dreg_theta, iwae_theta) and agree(dreg_phi, iwae_phi)
    _, rws_phi = draws(model, ReweightedWakeSleep(k=k), x, n=200, seed=3)
    _, rws_dreg_phi = draws(model, DReG(k=k, alpha=1.0), x, n=200, seed=4)
    assert agree(rws_dreg_phi, rws_phi)
    assert not agree(dreg_phi, rws_dreg_phi)  # the two phi targets differ, so the checks have power
    # theta's gradient is IWAE's draw for draw; with k = 1 phi's is STL's
    torch.manual_seed(6)
    d_theta, _ = grads(model, DReG(k=k)(model, x).loss)
    torch.manual_seed(6)
    i_theta, _ = grads(model, IWAEBound(k=k)(model, x).loss)
    assert torch.allclose(d_theta, i_theta, atol=1e-5)
    torch.manual_seed(7)
    _, d_phi = grads(model, DReG(k=1)(model, x).loss)
    torch.manual_seed(7)
    _, s_phi = grads(model, STL()(model, x).loss)
    assert torch.allclose(d_phi, s_phi, atol=1e-5)


def test_dreg_snr_does_not_fall_with_k_while_iwae_snr_does():
    """Rainforth et al. (2018): the IWAE phi-gradient's SNR is O(1/sqrt k); DReG's is not."""
    model, x = linear_gaussian(perturb=0.1, batch=1)
    snr = {}
    for name, cls in (("iwae", IWAEBound), ("dreg", DReG)):
        for k in (1, 50):
            stats = measure_gradient_variance(model, cls(k=k), x, groups=("phi",), num_samples=200, seed=1)
            snr[name, k] = stats["phi"]["snr_mean"]
    assert snr["iwae", 50] < 0.5 * snr["iwae", 1]
    assert snr["dreg", 50] >= snr["dreg", 1]


def test_dreg_phi_weights_closed_form():
    lw = torch.log(torch.tensor([[1.0], [3.0]]))  # wbar = (1/4, 3/4)
    assert torch.allclose(F.dreg_phi_weights(lw, 0.0).squeeze(1), torch.tensor([1 / 16, 9 / 16]))
    assert torch.allclose(F.dreg_phi_weights(lw, 1.0).squeeze(1), torch.tensor([3 / 16, 3 / 16]))
