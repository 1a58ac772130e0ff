"""Gradient-estimator variance (issue 6): the protocol against closed forms, and its side effects.

The toy model has ``q(z) = N(mu, s^2 I)`` (``D`` latents, the same for every example) and
``log p(x, z) = -||z - a||^2``, so with ``delta = mu - a`` and ``B`` examples per batch:

- the reparameterised ELBO gradient in ``mu`` is ``mean_b 2 (z_b - a)``: per-coordinate variance
  ``4 s^2 / B``, mean ``2 delta``; in ``a`` the same variance and mean ``-2 delta``;
- REINFORCE's gradient in ``mu`` is ``mean_b F_b e_b / s`` with ``e ~ N(0, I)`` and
  ``F = A + beta . e + gamma ||e||^2``, ``A = ||delta||^2 - D (log s + log(2 pi) / 2)``,
  ``beta = 2 s delta``, ``gamma = s^2 - 1/2``; by Isserlis' theorem its per-coordinate variance is
  ``[A^2 + ||beta||^2 + beta_i^2 + gamma^2 (15 + (D - 1)(D + 7)) + 2 A gamma (D + 2)] / (s^2 B)``.

Tolerances come from the spread of repeated measurements (``|mean - exact| < 4 sd / sqrt(R)``)
or from the sampling distribution of a Gaussian variance estimate (relative sd
``sqrt(2 / (M - 1))`` per coordinate).
"""
from __future__ import annotations

import copy
import json
import math
import random
import warnings

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.distributions import Independent, Normal

from benchmarks.cli import main
from benchmarks.config import resolve_config
from benchmarks.figures.gradient_variance import snr_vs_k_figure, variance_curves_figure
from benchmarks.run import run_cell
from dgm_modules.evaluation.gradient_variance import (DEFAULT_GROUPS, GradientVariance, build_estimator,
                                                      default_estimators, measure_gradient_variance,
                                                      resolve_estimators)
from dgm_modules.models.base import LatentVariableModel
from dgm_modules.models.sbn import SigmoidBeliefNet
from dgm_modules.objectives.elbo import ELBO
from dgm_modules.objectives.score_function import ScoreFunction
from dgm_modules.registry import MODELS, OBJECTIVES, ConfigError

torch.set_num_threads(1)
warnings.filterwarnings("ignore", ".*does not have many workers.*")

D, B, S = 3, 4, 0.8
MU, A = [0.5, -1.0, 1.5], [0.0, 0.5, -0.5]


class ToyGaussian(LatentVariableModel):
    """``q(z | x) = N(mu, s^2 I)``, ``log p(x, z) = -||z - a||^2`` (unnormalised; only gradients matter)."""

    latent_kind = "continuous-reparam"

    def __init__(self, s: float = S) -> None:
        super().__init__((D,))
        self.s = s
        self.inference = nn.ParameterDict({"mu": nn.Parameter(torch.tensor(MU, dtype=torch.float64))})
        self.generative = nn.ParameterDict({"a": nn.Parameter(torch.tensor(A, dtype=torch.float64)),
                                            "unused": nn.Parameter(torch.zeros(2, dtype=torch.float64))})

    def sample_q(self, x, k=1, reparam=True):
        q = Independent(Normal(self.inference["mu"].expand(x.shape[0], D), self.s), 1)
        z = q.rsample((k,)) if reparam else q.sample((k,))
        return (z,), q.log_prob(z)

    def log_joint(self, x, z):
        return -(z[0] - self.generative["a"]).square().sum(-1)

    def sample_joint(self, n):
        raise NotImplementedError


def exact(s: float = S) -> dict:
    delta = torch.tensor(MU, dtype=torch.float64) - torch.tensor(A, dtype=torch.float64)
    const = D * (math.log(s) + 0.5 * math.log(2 * math.pi))
    a_, beta, gamma = delta.square().sum() - const, 2 * s * delta, s**2 - 0.5
    reinforce = (a_**2 + beta.square().sum() + beta.square() + gamma**2 * (15 + (D - 1) * (D + 7))
                 + 2 * a_ * gamma * (D + 2)) / (s**2 * B)
    reparam = torch.full((D,), 4 * s**2 / B, dtype=torch.float64)
    snr = (2 * delta.abs()) / reparam.sqrt()
    return {"reparam_trace": float(reparam.sum()), "reinforce_trace": float(reinforce.sum()),
            "sq_norm": float(4 * delta.square().sum()), "snr": snr}


X = torch.zeros(B, D)  # the toy ignores x; B examples, each its own draw


def repeated(objective, m: int, r: int, group: str = "phi") -> dict[str, np.ndarray]:
    runs = [measure_gradient_variance(ToyGaussian(), objective, X, [group], m, seed=i)[group] for i in range(r)]
    return {k: np.array([run[k] for run in runs]) for k in ("trace_cov", "mean_sq_norm", "snr_mean", "snr_median")}


def close(values: np.ndarray, target: float) -> bool:
    return abs(values.mean() - target) < 4 * values.std(ddof=1) / math.sqrt(len(values))


def test_metric_is_the_unbiased_moments_and_sum_reduces():
    g = torch.randn(50, 7, dtype=torch.float64) * torch.arange(1, 8) + torch.arange(7)
    whole, halves = GradientVariance(7), [GradientVariance(7), GradientVariance(7)]
    whole.update(g)
    halves[0].update(g[:20])
    for row in g[20:]:
        halves[1].update(row)
    for name in ("total", "total_sq", "count"):  # what a "sum" all-reduce across processes does
        setattr(halves[0], name, getattr(halves[0], name) + getattr(halves[1], name))
    for out in (whole.compute(), halves[0].compute()):
        assert torch.allclose(out["trace_cov"], g.var(0).sum())
        assert torch.allclose(out["mean_sq_norm"], g.mean(0).square().sum())
        snr = g.mean(0).abs() / g.std(0)
        assert torch.allclose(out["snr_mean"], snr.mean()) and torch.allclose(out["snr_median"], snr.median())


@pytest.mark.parametrize("estimator", ["reparam", "reinforce"])
def test_trace_cov_is_unbiased_for_the_closed_form(estimator):
    # M = 5: dividing by M instead of M - 1 would be a 20% bias, far outside 4 standard errors
    objective = ELBO(analytic_kl=False) if estimator == "reparam" else ScoreFunction()
    runs = repeated(objective, m=5, r=200)
    assert close(runs["trace_cov"], exact()[f"{estimator}_trace"]), (runs["trace_cov"].mean(), exact())
    # E ||mean g||^2 = ||E g||^2 + tr Cov / M
    assert close(runs["mean_sq_norm"], exact()["sq_norm"] + exact()[f"{estimator}_trace"] / 5)


def test_reparam_protocol_matches_closed_form_at_large_m_and_beats_reinforce():
    m, ex = 1000, exact()
    reparam = measure_gradient_variance(ToyGaussian(), ELBO(analytic_kl=False), X, ["phi", "theta"], m, seed=1)
    reinforce = measure_gradient_variance(ToyGaussian(), ScoreFunction(), X, ["phi", "theta"], m, seed=2)
    # D equal-variance Gaussian coordinates: relative sd of the trace estimate is sqrt(2 / ((M - 1) D))
    rel_sd = math.sqrt(2 / ((m - 1) * D))
    for group in ("phi", "theta"):  # the theta gradient is the same pathwise one under both objectives
        assert abs(reparam[group]["trace_cov"] / ex["reparam_trace"] - 1) < 4 * rel_sd
    assert abs(reinforce["theta"]["trace_cov"] / ex["reparam_trace"] - 1) < 4 * rel_sd
    assert ex["reparam_trace"] < ex["reinforce_trace"] / 10
    assert reparam["phi"]["trace_cov"] < reinforce["phi"]["trace_cov"] / 10
    assert abs(reinforce["phi"]["trace_cov"] / ex["reinforce_trace"] - 1) < 0.25  # heavy tails: loose here
    # ||mean g||^2: the exact squared gradient norm (bias tr/M is 0.01% here)
    sd_norm = 2 * math.sqrt(ex["sq_norm"] * ex["reparam_trace"] / D / m)
    for group in ("phi", "theta"):
        assert abs(reparam[group]["mean_sq_norm"] - ex["sq_norm"]) < 4 * sd_norm
    # SNR per coordinate is |delta_i| sqrt(B) / s = (1.25, 3.75, 5); the estimate's sd ~ sqrt((1 + snr^2/2) / M)
    snr, tol = ex["snr"], 4 * math.sqrt((1 + 25 / 2) / m)
    for group in ("phi", "theta"):
        assert abs(reparam[group]["snr_mean"] - float(snr.mean())) < tol
        assert abs(reparam[group]["snr_median"] - float(snr.median())) < tol
    # theta's unused parameter has no gradient: counted as noiseless, left out of the SNR
    assert reparam["theta"]["noiseless_params"] == 2 and reparam["phi"]["noiseless_params"] == 0
    assert reparam["phi"]["num_samples"] == m and reparam["phi"]["batch_size"] == B


def test_measurement_is_reproducible_and_leaves_state_alone():
    model, objective = ToyGaussian(), ScoreFunction(centering=True)
    objective.train()
    model.inference["mu"].grad = torch.ones(D, dtype=torch.float64)
    before = copy.deepcopy(model.state_dict()), torch.get_rng_state()
    one = measure_gradient_variance(model, objective, X, ["phi"], 10, seed=3)
    two = measure_gradient_variance(model, objective, X, ["phi"], 10, seed=3)
    assert one == two
    assert measure_gradient_variance(model, objective, X, ["phi"], 10, seed=4) != one
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before[0].items())
    assert torch.equal(before[1], torch.get_rng_state())
    assert torch.equal(model.inference["mu"].grad, torch.ones(D, dtype=torch.float64))
    assert not bool(objective.initialised)  # NVIL's running statistics: untouched
    # a relaxed SBN counts its draws (temperature schedule): the count is untouched, and every draw
    # is made at the same temperature (else the estimates would not be identically distributed)
    sbn = SigmoidBeliefNet((4,), (3,), relaxation="concrete", anneal_rate=0.5, temperature_min=0.01)
    sbn.anneal_step.fill_(2)
    seen = []
    original = SigmoidBeliefNet.sample_q

    def spy(self, *args, **kwargs):
        seen.append(int(self.anneal_step))
        return original(self, *args, **kwargs)

    SigmoidBeliefNet.sample_q = spy
    try:
        measure_gradient_variance(sbn, ELBO(), torch.ones(2, 4), ["phi"], 4, seed=0)
    finally:
        SigmoidBeliefNet.sample_q = original
    assert seen == [2] * 4 and int(sbn.anneal_step) == 2


# -- through the runner ---------------------------------------------------------------------------
class Probe(Callback):
    """What training leaves behind: parameters, buffers, optimiser state and every random stream."""

    def on_train_end(self, trainer, pl_module):
        self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.rng = torch.get_rng_state()
        self.next_draw = torch.rand(5, generator=torch.Generator().set_state(self.rng))
        self.py, self.np = random.getstate(), np.random.get_state()[1].copy()


def _config(method: str, gradvar: dict | None = None, steps: int = 6) -> dict:
    over = {"module": {"init_args": {"eval_k": [1], "val_k": [1]}},
            "trainer": {"max_epochs": 1, "limit_train_batches": steps, "limit_val_batches": 1, "limit_test_batches": 1}}
    if gradvar is not None:
        over["gradvar"] = gradvar
    return resolve_config(method, "digits", 0, over)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A VAE and a discrete SBN trained 6 steps on digits without the measurement."""
    out = tmp_path_factory.mktemp("gradvar-runs")
    runs = {}
    for method in ("vae", "sbn-reinforce"):
        probe = Probe()
        record = run_cell(_config(method), out, callbacks=[probe], enable_progress_bar=False)
        assert record["status"] == "completed", record["error"]
        runs[method] = (out / record["run_id"], probe)
    return runs


@pytest.mark.parametrize("method, estimators", [
    ("vae", ["run", {"label": "nvil", "objective": default_estimators()["vae"][3].objective, "adapt_steps": 2},
             "iwae-k5"]),
    ("sbn-reinforce", ["run", "nvil", "gumbel-softmax"]),
])
def test_a_run_with_the_measurement_is_identical_to_one_without(method, estimators, trained, tmp_path):
    run_dir, without = trained[method]
    gradvar = {"every_n_steps": 2, "samples": 3, "estimators": estimators}
    probe = Probe()
    record = run_cell(_config(method, gradvar), tmp_path, callbacks=[probe], enable_progress_bar=False)
    assert record["status"] == "completed", record["error"]
    history = json.loads((tmp_path / record["run_id"] / "gradvar.json").read_text())["history"]
    assert [h["step"] for h in history] == [0, 2, 4, 6]  # it did measure, every estimator
    assert all(set(h["estimators"]) == {"run", "nvil", estimators[2]} for h in history)
    assert math.isfinite(record["metrics"]["gradvar/phi/trace_cov"])
    assert math.isfinite(record["metrics"]["gradvar/nvil/theta/snr_median"])
    assert _same(probe.state, without.state)
    assert _same(probe.optimizer, without.optimizer)
    assert torch.equal(probe.rng, without.rng) and torch.equal(probe.next_draw, without.next_draw)
    assert probe.py == without.py and np.array_equal(probe.np, without.np)


EXPECTED_STATS = {"trace_cov", "mean_sq_norm", "snr_mean", "snr_median", "num_samples", "batch_size", "group"}


@pytest.mark.parametrize("method, family", [("vae", "vae"), ("sbn-reinforce", "sbn")])
def test_cli_measures_a_checkpoint_for_every_estimator(method, family, trained, tmp_path):
    run_dir = trained[method][0]
    out = tmp_path / "gv.json"
    extra = ["reparam"] if family == "sbn" else []  # a VAE-only estimator on the SBN
    assert main(["gradvar", str(run_dir), "--estimators", family, *extra, "--samples", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    entry = result["history"][0]
    assert entry["step"] == 6 and result["protocol"]["samples"] == 4
    labels = [e.label for e in default_estimators()[family]]
    assert sorted(entry["estimators"]) == sorted(labels + extra)
    for label in labels:
        for group in ("phi", "theta"):
            stats = entry["estimators"][label][group]
            assert EXPECTED_STATS <= set(stats) and stats["num_samples"] == 4 and stats["group"] == group
            assert math.isfinite(stats["trace_cov"]) and stats["trace_cov"] > 0
    if family == "sbn":  # the reparameterised ELBO cannot train Bernoulli latents: skipped, saying why
        assert "compatible objectives" in entry["estimators"]["reparam"]["skipped"]
    if family == "vae":  # Rainforth et al.: the IWAE gradient of theta gains SNR with k
        snr = [entry["estimators"][f"iwae-k{k}"]["theta"]["snr_mean"] for k in (1, 50)]
        assert snr[1] > snr[0]
        for fig in (variance_curves_figure([out], tmp_path / "c.png"), snr_vs_k_figure([out], tmp_path / "s.png")):
            assert fig.stat().st_size > 10_000


@pytest.mark.parametrize("gradvar, match", [
    ({"samples": 1}, "gradvar.samples"), ({"groups": ["psi"]}, "gradvar.groups"),
    ({"every_n_steps": -1}, "gradvar.every_n_steps"), ({"colour": 1}, "gradvar: unknown option"),
    ({"estimators": ["no-such-objective"]}, "gradvar.estimators"),
    ({"estimators": [{"objective": "iwae", "model_overrides": {"relaxation": "bogus"}}]}, "model_overrides.relaxation"),
    ({"estimators": [{"objective": {"class_path": "iwae", "init_args": {"k": "many"}}}]}, "objective.k"),
    ({"estimators": ["nvil", "nvil"]}, "duplicate"),
])
def test_bad_gradvar_options_are_refused_before_training(gradvar, match):
    with pytest.raises(ConfigError, match=match):
        _config("sbn-reinforce", gradvar)


def test_default_lists_are_the_objectives_declarations_and_build_on_their_groups_model():
    """``gradvar.estimators: [sbn]`` lists every registered objective's declared SBN estimators, in
    their declared positions (the i-th measured draws from seed + i), and each builds on an SBN."""
    defaults = default_estimators()
    assert set(defaults) == set(DEFAULT_GROUPS)
    for group, model_name in DEFAULT_GROUPS.items():
        declared = sorted((d.order, name, d.label) for name, cls in OBJECTIVES.items()
                          for d in getattr(cls, "gradvar_defaults", ()) if d.group == group)
        assert [order for order, _, _ in declared] == list(range(len(declared)))
        listed = [(e.objective if isinstance(e.objective, str) else e.objective["class_path"], e.label)
                  for e in defaults[group]]
        assert listed == [(name, label) for _, name, label in declared]
        assert resolve_estimators(group) == defaults[group]
        spec = {"class_path": model_name, "init_args": {}}
        model = MODELS.get(model_name)(input_shape=(1, 8, 8))
        for est in defaults[group]:
            variant, objective = build_estimator(est, model, model_spec=spec)  # refuses an incompatible pair
            objective.check_model(variant)


def test_estimators_in_the_config_form_and_the_old_string_form():
    (est,) = resolve_estimators(["{class_path: iwae, init_args: {k: 100}}"])  # the config's own form
    assert est.objective == {"class_path": "iwae", "init_args": {"k": 100}} and est.label == "iwae:k=100"
    (est,) = resolve_estimators([{"class_path": "dreg", "init_args": {"k": 5, "alpha": 1.0}}])
    assert est.label == "dreg:k=5,alpha=1.0" and est.objective["init_args"] == {"k": 5, "alpha": 1.0}
    with pytest.warns(DeprecationWarning, match="deprecated"):  # the old form: same estimator, same label
        (old,) = resolve_estimators(["iwae:k=100"])
    assert old == resolve_estimators([{"class_path": "iwae", "init_args": {"k": 100}}])[0]
