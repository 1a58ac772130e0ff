"""The sigmoid belief net's relaxations (Gumbel-softmax / Concrete, straight-through): the bias of the
relaxed ELBO's gradient against exact enumeration, hard samples in evaluation, plain straight-through."""
from __future__ import annotations

import math

import pytest
import torch

from datamodules.base import Batch
from dgm_modules.evaluation.log_likelihood import LogLikelihoodEvaluator
from dgm_modules.objectives.elbo import ELBO
from exact_enumeration import X, X_ALL, X_REP, draws, exact_elbo, grads, standard_error, tiny_sbn, within

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("relaxation", ["concrete", "straight-through"])
def test_gumbel_softmax_bias_shrinks_with_temperature(relaxation):
    discrete = tiny_sbn()
    exact = torch.cat(grads(discrete, -exact_elbo(discrete, X).mean()))
    biases, errors = [], []
    for tau in (2.0, 0.5, 0.2):
        model = tiny_sbn(relaxation=relaxation, temperature=tau, temperature_min=tau)
        model.train()
        theta, phi = draws(model, ELBO(), X_REP)
        mean, se = torch.cat([theta.mean(0), phi.mean(0)]), torch.cat([standard_error(theta), standard_error(phi)])
        biases.append(float((mean - exact).norm()))
        errors.append(float(se.norm()))
    assert biases[0] > 10 * errors[0]  # clearly biased at high temperature
    assert biases[0] > 2 * biases[1] and biases[1] > 1.5 * biases[2]
    assert biases[2] < 0.05 * float(exact.norm())


def test_relaxed_model_scores_as_the_discrete_model_in_eval_mode():
    discrete, relaxed = tiny_sbn(), tiny_sbn(relaxation="straight-through")
    relaxed.eval()
    x = X_ALL.repeat(10, 1)
    scores = []
    for model in (discrete, relaxed):
        ev = LogLikelihoodEvaluator([1, 50], seed=3)
        ev.update(model, Batch(x, None, 0))
        scores.append(ev.compute())
    assert scores[0].keys() == scores[1].keys() and all(torch.equal(scores[0][k], scores[1][k]) for k in scores[0])
    assert relaxed.latent_kind == "relaxed" and discrete.latent_kind == "bernoulli"


def test_plain_straight_through_samples_exactly_and_is_exact_for_a_linear_function():
    model = tiny_sbn(relaxation="straight-through-mean")
    model.train()
    torch.manual_seed(0)
    (z,), _ = model.sample_q(X_REP, k=200)
    assert set(z.unique().tolist()) <= {0.0, 1.0}  # hard samples forward
    probs = model.q_logits(X_REP, (z,), 0).sigmoid()
    freq, se = z.mean(0), (probs * (1 - probs) / z.shape[0]).sqrt()
    assert ((freq - probs).abs() < 5 * se + 1e-6).all()  # ... drawn from q itself
    # backward: the gradient of E_q[w . z] = w . sigmoid(logits) with respect to phi, every draw
    w = torch.randn(3)
    phi = list(model.phi_parameters())
    st = torch.autograd.grad((z * w).sum() / z.shape[0], phi)
    exact = torch.autograd.grad((probs * w).sum(), phi)
    for a, b in zip(st, exact):
        assert torch.allclose(a, b, atol=1e-5)


def test_plain_straight_through_is_biased_for_the_elbo():
    """The ELBO is not linear in z: ST's mean gradient misses the exact one (why Gumbel exists)."""
    model = tiny_sbn(relaxation="straight-through-mean")
    model.train()
    exact_theta, exact_phi = grads(model, -exact_elbo(model, X).mean())
    theta, phi = draws(model, ELBO(), X_REP)
    # theta sees exact draws of q: unbiased; phi's gradient goes through the straight-through path
    assert within(theta, exact_theta)
    chi2 = float((((phi.mean(0) - exact_phi) / (standard_error(phi) + 1e-12)) ** 2).sum())  # about d if it were unbiased
    d = exact_phi.numel()
    assert chi2 > d + 10 * math.sqrt(2 * d), (chi2, d)
