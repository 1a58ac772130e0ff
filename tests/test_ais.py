"""Annealed importance sampling and BDMC: exact values on the linear-Gaussian model, HMC's
invariant distribution, AIS against L_k at equal cost, bad options, and the evaluate command."""
import json
import math

import pytest
import torch
from torch.distributions import Independent, Normal

from benchmarks.ais import resolve_ais
from benchmarks.cli import main
from dgm_modules.evaluation.ais import (AISOptions, AISTarget, ais_log_likelihood, bdmc, betas,
                                        reverse_ais_log_likelihood)
from dgm_modules.evaluation.bounds import importance_weighted_bounds
from dgm_modules.evaluation.hmc import evaluate_terms, hmc_transition
from dgm_modules.models.gan import GAN
from dgm_modules.models.gaussian_vae import GaussianVAE
from dgm_modules.models.linear_gaussian import LinearGaussian
from dgm_modules.models.stick_breaking_vae import StickBreakingVAE
from dgm_modules.registry import ConfigError


@pytest.fixture(autouse=True)
def one_thread():
    """HMC runs thousands of small ops: on a shared CPU a second thread makes them ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def linear_gaussian(seed: int = 0) -> LinearGaussian:
    """Posterior far enough from the prior that 64 importance samples from it are off by > 0.3 nats."""
    torch.manual_seed(seed)
    return LinearGaussian((16,), latent_dim=4, obs_std=0.5)


def test_schedules_run_from_zero_to_one_and_increase():
    for kind in ("sigmoid", "geometric"):
        b = betas(50, kind)
        assert len(b) == 51 and b[0] == 0 and b[-1] == 1 and (b.diff() > 0).all()
    assert betas(1).tolist() == [0.0, 1.0]


def test_ais_converges_to_the_exact_log_likelihood(float64):
    model = linear_gaussian()
    target = AISTarget(model)
    x, _ = target.simulate(16)
    exact = model.exact_log_likelihood(x)
    torch.manual_seed(1)
    ais = ais_log_likelihood(target, x, AISOptions(steps=300, chains=64, leapfrog=3))
    assert abs((ais - exact).mean().item()) < 0.05
    # the tolerance has teeth: the same chains without annealing (importance sampling from the prior)
    plain = ais_log_likelihood(target, x, AISOptions(steps=1, chains=64))
    assert (plain - exact).mean().item() < -0.3


def test_ais_with_one_step_from_the_encoder_is_importance_sampling(float64):
    model = linear_gaussian()
    target = AISTarget(model)
    x, _ = target.simulate(3)
    torch.manual_seed(5)
    ais = ais_log_likelihood(target, x, AISOptions(steps=1, chains=7, start="encoder"))
    torch.manual_seed(5)
    assert torch.allclose(ais, importance_weighted_bounds(model, x, [7])[7])


def test_bdmc_sandwich_contains_the_exact_value(float64):
    model = linear_gaussian(2)
    target = AISTarget(model)
    torch.manual_seed(3)
    x, z = target.simulate(16)
    exact = model.exact_log_likelihood(x)
    options = AISOptions(steps=200, chains=64, leapfrog=3)
    lower = ais_log_likelihood(target, x, options) - exact
    upper = reverse_ais_log_likelihood(target, x, z, options) - exact
    se = lambda d: 3 * d.std().item() / math.sqrt(len(d))  # noqa: E731 -- stochastic bounds: MC error
    assert lower.mean().item() <= se(lower) and upper.mean().item() >= -se(upper)
    assert (upper - lower).mean().item() < 0.15  # converged: the gap is small
    # fewer steps: the sandwich is wider, and still holds
    short = AISOptions(steps=5, chains=64, leapfrog=3)
    gap = reverse_ais_log_likelihood(target, x, z, short) - ais_log_likelihood(target, x, short)
    assert gap.mean().item() > 0.3


def test_hmc_leaves_a_known_gaussian_invariant(float64):
    """Path from N(0, I) to N(mu, sd^2): at beta the target is Gaussian with precision
    (1 - beta) + beta / sd^2 and mean beta mu / sd^2 / precision. Start there; stay there."""
    torch.manual_seed(0)
    mu, sd = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 1.5, 0.2])
    p0, p1 = Independent(Normal(torch.zeros(3), torch.ones(3)), 1), Independent(Normal(mu, sd), 1)
    terms = lambda z: (p0.log_prob(z), p1.log_prob(z) - p0.log_prob(z))  # noqa: E731
    chains = 20_000
    for beta in (0.5, 1.0):
        precision = (1 - beta) + beta / sd**2
        mean, std = beta * mu / sd**2 / precision, precision.rsqrt()
        state = evaluate_terms(terms, mean + std * torch.randn(chains, 1, 3))
        step = torch.empty(chains, 1).uniform_(0.05, 0.4)  # per-chain step sizes
        accepted = []
        for _ in range(10):
            state, acc = hmc_transition(terms, state, beta, step, leapfrog_steps=5)
            accepted.append(acc.mean().item())
        z = state.z[:, 0]
        assert 0.3 < sum(accepted) / len(accepted) < 1.0
        se_mean = std / math.sqrt(chains)
        assert ((z.mean(0) - mean).abs() < 4 * se_mean).all()
        se_var = std**2 * math.sqrt(2 / chains)
        assert ((z.var(0) - std**2).abs() < 4 * se_var).all()


def test_ais_is_not_below_lk_at_equal_cost_on_binarised_mnist(shared_data):
    """A small VAE trained 300 steps on the fixed binarised MNIST. Cost is counted in decoder
    evaluations: AIS's (chains x (1 + transitions x leapfrog)) against L_k with that many
    samples; AIS's backward passes are not counted, which favours L_k."""
    from datamodules.binarized_mnist import BinarizedMNISTDataModule

    torch.manual_seed(0)
    dm = BinarizedMNISTDataModule(data_dir=str(shared_data))
    dm.setup("fit")
    model = GaussianVAE((1, 28, 28), latent_dim=10, hidden=(100,))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(300):
        loss = -model.log_weights(dm.train_x[torch.randint(0, len(dm.train_x), (100,))]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    dm.setup("test")
    x = dm.test_x[:20]
    options = AISOptions(steps=50, chains=4, leapfrog=5, start="encoder")
    k = options.chains * (1 + (options.steps - 1) * options.leapfrog)
    torch.manual_seed(1)
    ais = ais_log_likelihood(AISTarget(model), x, options)
    lk = importance_weighted_bounds(model, x, [k])[k]
    diff = ais - lk
    assert diff.mean().item() > -3 * diff.std().item() / math.sqrt(len(diff))
    l1 = importance_weighted_bounds(model, x, [1])[1]
    assert (ais - l1).mean().item() > 1.0  # and far above the ELBO's single sample


def test_gan_is_scored_under_a_gaussian_observation_model():
    torch.manual_seed(0)
    gan = GAN((1, 8, 8), latent_dim=3, hidden=(16,)).eval()
    target = AISTarget(gan, obs_sigma=0.1)
    x, z = target.simulate(4)
    zs = torch.randn(5, 4, 3)
    expected = (gan.prior().log_prob(zs)
                + Independent(Normal(gan.generator(zs.reshape(-1, 3)).reshape(5, 4, 64), 0.1), 1).log_prob(x))
    assert torch.allclose(target.log_joint(x, zs), expected, atol=1e-3)
    out = bdmc(target, 4, AISOptions(steps=20, chains=4, leapfrog=2))
    assert torch.isfinite(out["gap"]).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, r"ais.steps must be an integer >= 1"),
    ({"chains": 0}, r"ais.chains must be an integer >= 1"),
    ({"leapfrog": 0}, r"ais.leapfrog must be an integer >= 1"),
    ({"schedule": "linear"}, r"ais.schedule must be one of \['sigmoid', 'geometric'\]"),
    ({"start": "posterior"}, r"ais.start must be one of \['prior', 'encoder'\]"),
    ({"obs_sigma": 0.0}, r"ais.obs_sigma must be > 0"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AISOptions(**kwargs)
    with pytest.raises(ConfigError, match=message):
        resolve_ais(kwargs, {"class_path": "gaussian-vae"})


def test_models_ais_cannot_score_are_refused():
    with pytest.raises(ConfigError, match="ais: model 'sbn' has 'option-dependent .*' latents; AIS needs continuous"):
        resolve_ais({}, {"class_path": "sbn"})
    with pytest.raises(ConfigError, match="ais.obs_sigma is required for model 'gan'"):
        resolve_ais({}, {"class_path": "gan"})
    with pytest.raises(ConfigError, match=r"ais.obs_sigma: expected a number > 0 or a non-empty list"):
        resolve_ais({"obs_sigma": []}, {"class_path": "gan"})
    with pytest.raises(ConfigError, match=r"ais.obs_sigma must be > 0"):
        resolve_ais({"obs_sigma": [0.1, -1]}, {"class_path": "gan"})
    with pytest.raises(ConfigError, match=r"ais: unknown option\(s\) \['step'\]"):
        resolve_ais({"step": 3})
    with pytest.raises(ValueError, match="prior has support .*not the real line"):
        AISTarget(StickBreakingVAE((1, 8, 8), truncation=4, hidden=(8,)))
    with pytest.raises(ValueError, match="ais.start='encoder' needs an inference network"):
        AISTarget(GAN((1, 8, 8), latent_dim=3, hidden=(16,)), obs_sigma=0.1).check_start("encoder")
    with pytest.raises(ValueError, match="ais.obs_sigma applies to models with a generator"):
        AISTarget(LinearGaussian((4,)), obs_sigma=0.1)


def test_run_with_ais_section_and_evaluate_with_ais_write_the_metrics(tmp_path, capsys):
    tiny = ["--set", "objective.k=2", "--set", "module.eval_k=[1,20]", "--set", "model.hidden=[16]",
            "--set", "model.latent_dim=3", "--set", "data.eval_batch_size=50"]
    ais = ["--set", "ais.steps=10", "--set", "ais.chains=4", "--set", "ais.images=30", "--set", "ais.sim_images=5",
           "--set", "ais.leapfrog=2"]
    assert main(["run", "--method", "iwae", "--data", "digits", "--max-epochs", "1", "--out", str(tmp_path),
                 *tiny, *ais]) == 0
    (path,) = tmp_path.glob("*/record.json")
    record = json.loads(path.read_text())
    m = record["metrics"]
    assert record["config"]["ais"]["steps"] == 10 and record["config"]["ais"]["chains"] == 4
    for name in ("test/nll_ais", "test/bdmc_gap", "test/ais_seconds", "test/bdmc_seconds",
                 "test/bdmc_nll_forward", "test/bdmc_nll_reverse"):
        assert math.isfinite(m[name]), name
    assert 0 < m["test/nll_ais"] < 64 * math.log(2)
    capsys.readouterr()
    # re-scored with other options: the evaluation record says what was run
    run_dir = path.parent
    assert main(["evaluate", str(run_dir), "--ais", "--ais-steps", "20", "--chains", "3", "--ais-images", "40",
                 "--bdmc-images", "0"]) == 0
    (evaluated,) = (run_dir / "evaluations").glob("record-*.json")
    ev = json.loads(evaluated.read_text())
    assert ev["config"]["ais"]["steps"] == 20 and ev["config"]["ais"]["chains"] == 3
    assert ev["config"]["ais"]["images"] == 40 and "test/bdmc_gap" not in ev["metrics"]
    assert 0 < ev["metrics"]["test/nll_ais"] < 64 * math.log(2) and ev["metrics"]["test/ais_seconds"] > 0
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--ais-steps", "0"]) == 2
    assert "--ais-steps must be >= 1, got 0" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--ais", "--chains", "0"]) == 2
    assert "--chains must be >= 1, got 0" in capsys.readouterr().err


def test_gan_run_chooses_its_observation_noise_on_validation(tmp_path):
    ais = ["--set", "ais.obs_sigma=[0.03,0.3]", "--set", "ais.steps=10", "--set", "ais.chains=4",
           "--set", "ais.images=20", "--set", "ais.sim_images=4", "--set", "ais.leapfrog=2"]
    assert main(["run", "--method", "gan", "--data", "digits", "--max-epochs", "1", "--out", str(tmp_path),
                 "--set", "model.hidden=[16]", "--set", "model.latent_dim=3", *ais]) == 0
    (path,) = tmp_path.glob("*/record.json")
    m = json.loads(path.read_text())["metrics"]
    # an untrained-looking generator is far from the data: the wider noise explains it better
    assert m["test/ais_obs_sigma"] == pytest.approx(0.3)
    assert math.isfinite(m["test/nll_ais"]) and math.isfinite(m["test/bdmc_gap"])


def test_matrix_spec_opts_in_per_cell_and_is_checked_before_training():
    from benchmarks.matrix import resolve_spec

    spec = {"name": "t", "methods": ["iwae", "sbn-ws"], "datasets": ["digits"],
            "cells": [{"match": {"method": "iwae"}, "overrides": {"ais": {"steps": 50, "chains": 4}}}]}
    cells = {c.method: c.config for c in resolve_spec(spec, "spec.yaml")}
    assert cells["iwae"]["ais"]["steps"] == 50 and cells["iwae"]["ais"]["leapfrog"] == 10  # defaults filled
    assert "ais" not in cells["sbn-ws"]
    spec = {**spec, "overrides": {"ais": {"steps": 50}}, "cells": []}  # every cell, the SBN's too: refused
    with pytest.raises(ConfigError, match="spec.yaml: cell digits/sbn-ws/default/seed0: ais: model 'sbn'"):
        resolve_spec(spec, "spec.yaml")
