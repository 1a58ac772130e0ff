"""RELAX and REBAR against exact enumeration, the control variate's training, one-layer nets only."""
from __future__ import annotations

import pytest
import torch

from dgm_modules.objectives.relax import RELAX
from exact_enumeration import X, X_REP, draws, exact_elbo, grads, standard_error, tiny_sbn, within

pytestmark = pytest.mark.usefixtures("one_thread")


def _fitted_relax(model, **kwargs) -> RELAX:
    """RELAX with its control variate trained (on its own variance) for a few steps at ``model``."""
    objective = RELAX(**kwargs)
    objective.check_model(model)
    params = list(objective.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    torch.manual_seed(3)
    for _ in range(30):
        for p, g in zip(params, torch.autograd.grad(objective(model, X_REP).loss, params, allow_unused=True)):
            p.grad = g
        opt.step()
    return objective


@pytest.mark.parametrize("kwargs", [{}, {"hidden": 0}], ids=["relax", "rebar"])
def test_relax_matches_exact_elbo_gradient(kwargs):
    model = tiny_sbn()
    objective = _fitted_relax(model, **kwargs)
    assert abs(objective.eta.item() - 1.0) > 1e-3  # the control variate moved: unbiased whatever it is
    exact_theta, exact_phi = grads(model, -exact_elbo(model, X).mean())
    theta, phi = draws(model, objective, X_REP, n=40)
    assert within(theta, exact_theta) and within(phi, exact_phi)
    assert exact_phi.abs().max() > 10 * standard_error(phi).max()


def test_relax_control_variate_is_trained_to_reduce_variance():
    model = tiny_sbn()
    # a deliberately poor start (eta = 0, an untrained network) whose fitting must cut the variance
    before = RELAX(eta=0.0)
    before.check_model(model)
    torch.manual_seed(4)
    _, phi_before = draws(model, before, X_REP, n=40)
    torch.manual_seed(4)
    after = RELAX(eta=0.0)
    after.check_model(model)
    params = list(after.parameters())
    opt = torch.optim.Adam(params, lr=2e-2)
    for _ in range(60):
        loss = after(model, X_REP).loss
        for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True)):
            p.grad = g
        opt.step()
    _, phi_after = draws(model, after, X_REP, n=40)
    assert phi_after.var(0).sum() < 0.7 * phi_before.var(0).sum()


def test_relax_refuses_multi_layer_nets(tmp_path):
    with pytest.raises(ValueError, match="one stochastic layer.*arm or disarm"):
        RELAX().check_model(tiny_sbn((3, 2)))
