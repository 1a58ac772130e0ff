"""Sticking the landing (STL) on the linear-Gaussian model, whose ELBO is closed-form (tests/exact_enumeration.py)."""
from __future__ import annotations

import pytest
import torch

from dgm_modules.objectives.elbo import ELBO
from dgm_modules.objectives.stl import STL
from exact_enumeration import (draws, exact_linear_gaussian_elbo, grads, linear_gaussian, standard_error,
                               within)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stl_matches_exact_elbo_gradient_and_shares_theta_with_reparam():
    model, x = linear_gaussian()
    exact_theta, exact_phi = grads(model, -exact_linear_gaussian_elbo(model, x).mean())
    theta, phi = draws(model, STL(), x, n=200)
    assert within(theta, exact_theta) and within(phi, exact_phi)
    assert exact_phi.abs().max() > 10 * standard_error(phi).max()
    # theta's gradient is the reparameterised one, draw for draw
    torch.manual_seed(5)
    stl_theta, stl_phi = grads(model, STL()(model, x).loss)
    torch.manual_seed(5)
    rep_theta, rep_phi = grads(model, ELBO(analytic_kl=False)(model, x).loss)
    assert torch.allclose(stl_theta, rep_theta, atol=1e-5) and not torch.allclose(stl_phi, rep_phi)


def test_stl_sticks_the_landing_at_the_exact_posterior():
    model, x = linear_gaussian(perturb=0.0, latent_dim=1)  # one latent: the posterior is in q's family
    _, stl_phi = draws(model, STL(), x, n=20)
    _, rep_phi = draws(model, ELBO(analytic_kl=False), x, n=20)
    assert stl_phi.abs().max() < 1e-4 and rep_phi.var(0).sum() > 1.0
