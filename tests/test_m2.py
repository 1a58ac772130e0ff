"""M2 (semi-supervised VAE) and its objective: y summed out exactly."""
from __future__ import annotations

import pytest
import torch

from dgm_modules.models.m2 import M2
from dgm_modules.objectives.semi_supervised import SemiSupervisedELBO

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_m2() -> M2:
    torch.manual_seed(0)
    return M2((6,), classes=3, latent_dim=2, hidden=(8,))


def test_m2_marginal_weights_equal_explicit_sum_over_classes():
    model = tiny_m2()
    x = torch.bernoulli(torch.full((5, 6), 0.5), generator=torch.Generator().manual_seed(0))
    z = model.sample_z_per_class(x, k=4)  # [classes, k, B, d]
    marginal = torch.logsumexp(model.class_log_weights(x, z), 0)
    explicit = []
    for c in range(3):  # through the generic interface, one class at a time
        y = torch.nn.functional.one_hot(torch.full((4, 5), c), 3).float()
        log_qy = model.q_y(x).log_prob(y)
        explicit.append(model.log_joint(x, (y, z[c])) - (model.log_q(x, (y, z[c])) - log_qy))
    assert torch.allclose(marginal, torch.logsumexp(torch.stack(explicit), 0), atol=1e-5)


def test_m2_objective_unlabelled_bound_is_the_sum_over_labelled_bounds():
    model, objective = tiny_m2(), SemiSupervisedELBO(alpha=0.0)
    x = torch.bernoulli(torch.full((5, 6), 0.5), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    unlabelled = objective(model, x, torch.full((5,), -1)).bound
    q = model.classify(x).softmax(-1).detach()
    explicit = 0.0
    for c in range(3):
        torch.manual_seed(7)  # the same z noise for every class
        explicit = explicit + q[:, c] * (objective(model, x, torch.full((5,), c)).bound - q[:, c].log())
    assert torch.allclose(unlabelled, explicit, atol=1e-5)
    torch.manual_seed(7)
    assert torch.allclose(unlabelled, model.analytic_elbo(x).detach(), atol=1e-5)  # -U(x), the same sum
    # the classification term only sees labelled examples
    mixed = SemiSupervisedELBO(alpha=1.0, labelled_fraction=0.4)(model, x, torch.tensor([0, -1, 2, -1, -1]))
    nll = -model.classify(x).log_softmax(-1)[[0, 2], [0, 2]].mean()  # 2 of 5 labelled, as f = 0.4 expects
    assert torch.allclose(mixed.terms["classification"], nll.detach(), atol=1e-6)
