"""ARM and DisARM against exact enumeration (one- and two-layer nets), and DisARM's lower variance."""
from __future__ import annotations

import pytest
import torch

from dgm_modules.objectives import functional as F
from dgm_modules.objectives.arm import ARM
from dgm_modules.objectives.disarm import DisARM
from exact_enumeration import X, X_REP, draws, exact_elbo, grads, standard_error, tiny_sbn, within

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def antithetic_draws():
    """ARM and DisARM draws on the one-layer net, with common random numbers (the same pairs)."""
    model = tiny_sbn()
    return model, draws(model, ARM(), X_REP, n=100), draws(model, DisARM(), X_REP, n=100)


def test_arm_and_disarm_match_exact_elbo_gradient(antithetic_draws):
    model, arm, disarm = antithetic_draws
    exact_theta, exact_phi = grads(model, -exact_elbo(model, X).mean())
    for theta, phi in (arm, disarm):
        assert within(theta, exact_theta) and within(phi, exact_phi)
        assert exact_phi.abs().max() > 10 * standard_error(phi).max()  # the check has power
    # the same check rejects ARM without its antithetic partner's sign flip (a biased estimator)
    torch.manual_seed(1)
    wrong = ARM()
    wrong.coefficients = lambda f, f_anti, u, b, b_anti, logits: F.arm_coefficients(f, f_anti, 1 - u)
    _, wrong_phi = draws(model, wrong, X_REP, n=100)
    assert not within(wrong_phi, exact_phi)


def test_disarm_variance_at_most_arm(antithetic_draws):
    _, (_, arm_phi), (_, disarm_phi) = antithetic_draws
    # same state, same minibatch, same pairs: DisARM is ARM averaged over the uniform given the pair
    assert disarm_phi.var(0).sum() < 0.8 * arm_phi.var(0).sum()


def test_arm_and_disarm_per_layer_match_exact_gradient_of_two_layer_net():
    model = tiny_sbn((3, 2))
    exact_theta, exact_phi = grads(model, -exact_elbo(model, X).mean())
    for objective in (ARM(), DisARM()):
        objective.check_model(model)
        theta, phi = draws(model, objective, X_REP)
        assert within(theta, exact_theta) and within(phi, exact_phi), type(objective).__name__
        upper = sum(p.numel() for p in model.inference[1].parameters())  # the second layer's phi
        assert exact_phi[-upper:].abs().max() > 10 * standard_error(phi[:, -upper:]).max()
