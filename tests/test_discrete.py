"""Discrete latents (issue 3): estimators checked against exact enumeration on a tiny SBN.

The tiny model has 3 Bernoulli latents and 4 binary visibles, so every expectation over z (and x)
is a finite sum and every exact gradient comes from autograd through that sum. Monte Carlo
estimates are averaged over ``G`` independent groups and compared coordinate-wise with a
tolerance of 4 standard errors (from the groups' own spread).
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from benchmarks.config import resolve_config
from benchmarks.run import run_cell
from datamodules.base import Batch
from dgm_modules.components import OBJECTIVES
from dgm_modules.evaluation.log_likelihood import LogLikelihoodEvaluator
from dgm_modules.models.m2 import M2
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.base import IncompatibleObjectiveError
from dgm_modules.objectives.elbo import ELBO
from dgm_modules.objectives.reweighted_wake_sleep import ReweightedWakeSleep
from dgm_modules.objectives.score_function import ScoreFunction
from dgm_modules.objectives.semi_supervised import SemiSupervisedELBO
from dgm_modules.objectives.vimco import VIMCO
from dgm_modules.objectives.wake_sleep import WakeSleep
from dgm_modules.registry import ConfigError
from exact_enumeration import (X, X_ALL, draws, exact_elbo, exact_iwae, exact_log_px, exact_terms, grads,
                               standard_error, tiny_sbn, within)

torch.set_num_threads(1)
warnings.filterwarnings("ignore", ".*does not have many workers.*")

N_PER_GROUP, GROUPS = 400, 60  # each estimate averages N_PER_GROUP draws; GROUPS give the error bars


# -- the tiny model (tests/exact_enumeration.py) and its estimates ------------------------------
X_REP = X.repeat(N_PER_GROUP // 4, 1)


def estimate(model, objective, seed=1, x=X_REP, transform=None):
    """``GROUPS`` independent gradient estimates ``([GROUPS, theta], [GROUPS, phi])``."""
    return draws(model, objective if transform is None else transform, x, GROUPS, seed)


# -- unbiasedness against the exact ELBO / L_k gradients ------------------------------------------
def test_reinforce_matches_exact_elbo_gradient():
    model = tiny_sbn()
    exact_theta, exact_phi = grads(model, -exact_elbo(model, X).mean())
    theta, phi = estimate(model, ScoreFunction())
    assert within(theta, exact_theta) and within(phi, exact_phi)
    assert exact_phi.abs().max() > 10 * standard_error(phi).max()  # the check has power: the gradient is resolved

    # the same check rejects the estimator without the score term (the naive surrogate -log w)
    def naive(model, x):
        z, log_q = model.sample_q(x, 1, reparam=False)
        return -(model.log_joint(x, z) - log_q).mean()

    _, naive_phi = estimate(model, None, transform=naive)
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
    theta, phi = estimate(model, objective)
    assert within(theta, exact_theta)
    assert within(phi * scale, exact_phi)
    # centring alone (an untrained baseline) already cuts the variance of the phi gradient
    _, reinforce_phi = estimate(model, ScoreFunction())
    assert (phi.var(0) * scale**2).sum() < 0.5 * reinforce_phi.var(0).sum()


def test_vimco_matches_exact_gradient_of_L_k():
    model = tiny_sbn()
    k = 3
    exact_theta, exact_phi = grads(model, -exact_iwae(model, X, k).mean())
    theta, phi = estimate(model, VIMCO(k=k))
    assert within(theta, exact_theta) and within(phi, exact_phi)
    assert exact_phi.abs().max() > 10 * standard_error(phi).max()


def test_vimco_leave_one_out_closed_form():
    lw = torch.tensor([[0.0], [math.log(2.0)], [math.log(4.0)]])
    # L_hat = log(7/3); leaving out sample 0 puts exp(mean(log 2, log 4)) = sqrt(8) in its place
    expected = [math.log(7 / 3) - math.log((math.sqrt(8) + 2 + 4) / 3),
                0.0,  # leaving out sample 1 puts sqrt(1 * 4) = 2 in its place: no change
                math.log(7 / 3) - math.log((1 + 2 + math.sqrt(2)) / 3)]
    assert torch.allclose(F.vimco_leave_one_out(lw).squeeze(1), torch.tensor(expected), atol=1e-6)


def test_wake_sleep_gradients_are_the_wake_and_sleep_gradients():
    model = tiny_sbn()
    # wake: theta follows E_q grad log p(x, z), the ELBO's theta-gradient
    exact_theta, _ = grads(model, -exact_elbo(model, X).mean())
    # sleep: phi follows grad E_p(x) KL(p(z | x) || q(z | x)), by enumerating every x and z
    log_joint, log_q = exact_terms(model, X_ALL)
    log_px = torch.logsumexp(log_joint, 0)
    post = (log_joint - log_px).detach()
    kl = (post.exp() * (post - log_q)).sum(0)
    _, exact_phi = grads(model, (log_px.detach().exp() * kl).sum())
    theta, phi = estimate(model, WakeSleep())
    assert within(theta, exact_theta) and within(phi, exact_phi)
    assert exact_phi.abs().max() > 10 * standard_error(phi).max()


def test_rws_terms_sum_to_loss_and_mixture_uses_both_phases():
    model = tiny_sbn()
    torch.manual_seed(0)
    out = ReweightedWakeSleep(k=4, insomnia=0.5)(model, X)
    assert set(out.terms) == {"wake_theta", "wake_phi", "sleep_phi"}
    assert torch.allclose(sum(out.terms.values()), out.loss.detach())
    assert out.terms["sleep_phi"] != 0 and out.terms["wake_phi"] != 0
    # wake-theta with k -> large is the gradient of log p(x) (self-normalised IS is consistent)
    exact_theta, _ = grads(model, -exact_log_px(model, X).mean())
    torch.manual_seed(0)
    theta, _ = grads(model, ReweightedWakeSleep(k=2000)(model, X).loss)
    assert torch.allclose(theta, exact_theta, atol=0.05 * exact_theta.abs().max())


# -- Gumbel-softmax: biased, less so as the temperature falls ------------------------------------
@pytest.mark.parametrize("relaxation", ["concrete", "straight-through"])
def test_gumbel_softmax_bias_shrinks_with_temperature(relaxation):
    discrete = tiny_sbn()
    exact = torch.cat(grads(discrete, -exact_elbo(discrete, X).mean()))
    biases, errors = [], []
    for tau in (2.0, 0.5, 0.2):
        model = tiny_sbn(relaxation=relaxation, temperature=tau, temperature_min=tau)
        model.train()
        theta, phi = estimate(model, ELBO())
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


# -- the shared evaluator against exact log p(x) -------------------------------------------------
def test_evaluator_bounds_against_exact_log_likelihood():
    model = tiny_sbn()
    x = X_ALL.repeat(25, 1)  # 400 examples
    ev = LogLikelihoodEvaluator([1, 10, 1000], seed=0)
    ev.update(model, Batch(x, None, 0))
    out = {k: float(v) for k, v in ev.compute().items()}
    with torch.no_grad():
        elbo, log_px = float(exact_elbo(model, X_ALL).mean()), float(exact_log_px(model, X_ALL).mean())
        torch.manual_seed(0)
        l1 = F.iwae_bound(model.log_weights(x, 1))
    se = float(l1.std()) / math.sqrt(len(l1))
    assert abs(-out["nll_k1"] - elbo) < 4 * se
    assert elbo < -out["nll_k10"] < -out["nll_k1000"]
    # L_k -> log p(x); 0.005 covers the Monte Carlo noise of L_1000 (its bias is below 1e-3 here)
    assert abs(log_px - (-out["nll_k1000"])) < 0.005
    assert log_px - elbo > 0.1  # the gap is real, so the ordering means something


# -- M2: y summed out exactly ------------------------------------------------------------------
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


# -- every objective trains every compatible model on digits; the others are refused -------------
MODELS = {
    "sbn": {"class_path": "sbn", "init_args": {"latent_sizes": [16, 8]}},
    "sbn-categorical": {"class_path": "sbn", "init_args": {"latent_sizes": [4], "latent": "categorical",
                                                           "categories": 5, "hidden": 16}},
    "sbn-concrete": {"class_path": "sbn", "init_args": {"latent_sizes": [16], "relaxation": "concrete",
                                                        "anneal_rate": 0.01}},
    "sbn-st": {"class_path": "sbn", "init_args": {"latent_sizes": [16], "relaxation": "straight-through"}},
    "gaussian-vae": {"class_path": "gaussian-vae", "init_args": {"latent_dim": 4, "hidden": [16]}},
    "m2": {"class_path": "m2", "init_args": {"latent_dim": 4, "hidden": [16]}},
}
OBJECTIVE_SPECS = {
    "wake-sleep": "wake-sleep", "rws": {"class_path": "rws", "init_args": {"k": 3, "insomnia": 0.5}},
    "reinforce": "score-function",
    "nvil": {"class_path": "score-function", "init_args": {"input_baseline": True, "centering": True,
                                                           "variance_normalization": True}},
    "vimco": {"class_path": "vimco", "init_args": {"k": 3}}, "elbo": "elbo", "iwae": {"class_path": "iwae", "init_args": {"k": 3}},
    "elbo-sleep": {"class_path": "elbo", "init_args": {"sleep_weight": 1.0}},
    "semi-supervised-elbo": "semi-supervised-elbo",
}
SUPPORTED = {  # by hand, so a wrong supported_latents fails here
    "sbn": {"wake-sleep", "rws", "reinforce", "nvil", "vimco"},
    "sbn-categorical": {"wake-sleep", "rws", "reinforce", "nvil", "vimco"},
    "sbn-concrete": {"elbo", "iwae", "elbo-sleep"}, "sbn-st": {"elbo", "iwae", "elbo-sleep"},
    "gaussian-vae": {"wake-sleep", "rws", "reinforce", "nvil", "vimco", "elbo", "iwae", "elbo-sleep"},
    "m2": {"semi-supervised-elbo"},
}


def _config(model: str, objective: str) -> dict:
    module = "semi-supervised" if model == "m2" else "variational"
    return resolve_config("vae", "digits", 0, {
        "model": MODELS[model], "objective": OBJECTIVE_SPECS[objective],
        "module": {"class_path": module, "init_args": {"eval_k": [1, 5]}},
        "data": {"class_path": "digits", "init_args": {"labelled_fraction": 0.3}},
        "trainer": {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1, "limit_test_batches": 1}})


@pytest.mark.parametrize("model", list(MODELS))
def test_every_objective_trains_every_compatible_model_on_digits(model, tmp_path):
    for objective in OBJECTIVE_SPECS:
        config = _config(model, objective)
        if objective not in SUPPORTED[model]:
            with pytest.raises(ConfigError, match="compatible objectives: .+"):
                run_cell(config, tmp_path)
            continue
        record = run_cell(config, tmp_path, enable_progress_bar=False)
        assert record["status"] == "completed", (model, objective, record["error"])
        assert record["steps"] == 3
        metrics = record["metrics"]
        assert "test/nll_k5" in metrics and all(math.isfinite(v) for v in metrics.values()), (model, objective)
        if model == "m2":
            assert 0.0 <= metrics["test/accuracy"] <= 1.0


def test_reparameterised_elbo_refuses_bernoulli_sbn_naming_compatible_objectives():
    with pytest.raises(IncompatibleObjectiveError) as err:
        ELBO().check_model(tiny_sbn())
    message = str(err.value)
    for name in ("rws", "score-function", "vimco", "wake-sleep"):
        assert name in message
    assert "'elbo'" in message and "iwae," not in message


@pytest.mark.parametrize("option, value", [("objective.k", 1), ("objective.insomnia", 1.5), ("model.temperature", 0.0),
                                           ("model.latent_sizes", []), ("data.labelled_fraction", 2.0)])
def test_bad_options_refused_naming_the_option(option, value, tmp_path):
    method = {"objective.k": "sbn-vimco", "objective.insomnia": "sbn-rws"}.get(option, "sbn-gumbel")
    section, key = option.split(".")
    with pytest.raises(ConfigError, match=option.replace(".", r"\.")):
        run_cell(resolve_config(method, "digits", 0, {section: {"init_args": {key: value}}}), tmp_path)


def test_methods_registered():
    assert {"wake-sleep", "rws", "score-function", "vimco", "semi-supervised-elbo"} <= set(OBJECTIVES.names())


# -- the plain straight-through estimator (Bengio et al. 2013; the "ST" of Jang et al. 2017) -------
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
    theta, phi = estimate(model, ELBO())
    # theta sees exact draws of q: unbiased; phi's gradient goes through the straight-through path
    assert within(theta, exact_theta)
    chi2 = float((((phi.mean(0) - exact_phi) / (standard_error(phi) + 1e-12)) ** 2).sum())  # about d if it were unbiased
    d = exact_phi.numel()
    assert chi2 > d + 10 * math.sqrt(2 * d), (chi2, d)
