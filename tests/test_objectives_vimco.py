"""VIMCO: unbiased for the gradient of L_k (exact enumeration), and its leave-one-out baselines in closed form."""
from __future__ import annotations

import math

import pytest
import torch

from dgm_modules.objectives import functional as F
from dgm_modules.objectives.vimco import VIMCO
from exact_enumeration import X, X_REP, draws, exact_iwae, grads, standard_error, tiny_sbn, within

pytestmark = pytest.mark.usefixtures("one_thread")


def test_vimco_matches_exact_gradient_of_L_k():
    model = tiny_sbn()
    k = 3
    exact_theta, exact_phi = grads(model, -exact_iwae(model, X, k).mean())
    theta, phi = draws(model, VIMCO(k=k), X_REP)
    assert within(theta, exact_theta) and within(phi, exact_phi)
    assert exact_phi.abs().max() > 10 * standard_error(phi).max()


def test_vimco_leave_one_out_closed_form():
    lw = torch.tensor([[0.0], [math.log(2.0)], [math.log(4.0)]])
    # L_hat = log(7/3); leaving out sample 0 puts exp(mean(log 2, log 4)) = sqrt(8) in its place
    expected = [math.log(7 / 3) - math.log((math.sqrt(8) + 2 + 4) / 3),
                0.0,  # leaving out sample 1 puts sqrt(1 * 4) = 2 in its place: no change
                math.log(7 / 3) - math.log((1 + 2 + math.sqrt(2)) / 3)]
    assert torch.allclose(F.vimco_leave_one_out(lw).squeeze(1), torch.tensor(expected), atol=1e-6)
