"""The score-function objective (REINFORCE; NVIL with its baselines) against exact enumeration
(tests/exact_enumeration.py): unbiased for the ELBO's gradient, and NVIL's variance reduction."""
from __future__ import annotations

import pytest
import torch

from dgm_modules.objectives.score_function import ScoreFunction
from exact_enumeration import X, X_REP, draws, exact_elbo, grads, standard_error, tiny_sbn, within

pytestmark = pytest.mark.usefixtures("one_thread")


def test_reinforce_matches_exact_elbo_gradient():
    model = tiny_sbn()
    exact_theta, exact_phi = grads(model, -exact_elbo(model, X).mean())
    theta, phi = draws(model, ScoreFunction(), X_REP)
    assert within(theta, exact_theta) and within(phi, exact_phi)
    assert exact_phi.abs().max() > 10 * standard_error(phi).max()  # the check has power: the gradient is resolved

    # the same check rejects the estimator without the score term (the naive surrogate -log w)
    def naive(model, x):
        z, log_q = model.sample_q(x, 1, reparam=False)
        return -(model.log_joint(x, z) - log_q).mean()

    _, naive_phi = draws(model, naive, X_REP)
    assert not within(naive_phi, exact_phi)


def test_nvil_matches_exact_elbo_gradient_and_reduces_variance():
    model = tiny_sbn()
    objective = ScoreFunction(input_baseline=True, centering=True, variance_normalization=True)
    objective.check_model(model)
    torch.manual_seed(5)
    for _ in range(20):  # running statistics from a few training batches, then frozen
        objective(model, X_REP)
    objective.eval()
    scale = float(objective.running_var.sqrt().clamp(min=1.0))  # variance normalisation rescales phi
    exact_theta, exact_phi = grads(model, -exact_elbo(model, X).mean())
    theta, phi = draws(model, objective, X_REP)
    assert within(theta, exact_theta)
    assert within(phi * scale, exact_phi)
    # centring alone (an untrained baseline) already cuts the variance of the phi gradient
    _, reinforce_phi = draws(model, ScoreFunction(), X_REP)
    assert (phi.var(0) * scale**2).sum() < 0.5 * reinforce_phi.var(0).sum()
