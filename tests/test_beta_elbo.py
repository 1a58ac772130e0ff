"""beta-elbo: the ELBO at beta = 1, a looser lower bound on the exact log p(x) for beta > 1."""
from __future__ import annotations

import math

import pytest
import torch

from benchmarks.config import resolve_config
from dgm_modules.models.gaussian_vae import GaussianVAE
from dgm_modules.models.linear_gaussian import LinearGaussian
from dgm_modules.models.sbn import SigmoidBeliefNet
from dgm_modules.objectives.base import IncompatibleObjectiveError
from dgm_modules.objectives.beta_elbo import BetaELBO
from dgm_modules.objectives.elbo import ELBO
from dgm_modules.registry import OBJECTIVES, ConfigError


def linear_gaussian(seed: int = 0) -> tuple[LinearGaussian, torch.Tensor]:
    torch.manual_seed(seed)
    model = LinearGaussian((5,), latent_dim=2, obs_std=0.7)
    x = model.sample_joint(64)[0]
    return model, x


def test_beta_one_is_the_elbo_exactly():
    torch.manual_seed(0)
    model, x = GaussianVAE((1, 8, 8), latent_dim=4, hidden=(16,)), torch.rand(32, 1, 8, 8).bernoulli()
    torch.manual_seed(1)
    beta = BetaELBO(beta=1.0)(model, x)
    torch.manual_seed(1)
    elbo = ELBO()(model, x)  # its analytic-KL estimate draws the same single sample
    assert torch.equal(beta.bound, elbo.bound) and torch.equal(beta.loss, elbo.loss)
    assert torch.allclose(beta.terms["recon"] - beta.terms["kl"], beta.bound.mean(), atol=1e-5)


def test_beta_above_one_is_a_lower_bound_on_the_exact_log_likelihood():
    model, x = linear_gaussian()
    model.set_exact_posterior()  # the ELBO's gap is small: only beta's KL weight opens it
    exact = model.exact_log_likelihood(x)
    draws = 400
    for beta in (1.0, 1.5, 4.0):
        torch.manual_seed(2)
        bounds = torch.stack([BetaELBO(beta)(model, x).bound for _ in range(draws)])  # [draws, B]
        mean, se = bounds.mean(0), bounds.std(0) / math.sqrt(draws)
        assert bool((mean <= exact + 4 * se + 1e-5).all()), beta
        if beta > 1:  # and the looser the larger beta: by beta - 1 times the (positive) KL
            kl = torch.distributions.kl_divergence(model.q(x), model.prior())
            assert bool((mean < exact - 0.5 * (beta - 1) * kl).all()), beta
    # same noise: the bound decreases in beta exactly
    torch.manual_seed(3)
    low = BetaELBO(4.0)(model, x).bound
    torch.manual_seed(3)
    high = BetaELBO(1.5)(model, x).bound
    assert bool((low < high).all())


def test_the_gradient_with_beta_zero_ignores_the_prior():
    model, x = linear_gaussian(1)
    out = BetaELBO(beta=0.0)(model, x)
    assert torch.allclose(out.bound.mean(), out.terms["recon"]) and out.terms["kl"] > 0


def test_registered_by_its_file_and_configured_by_name():
    assert OBJECTIVES.get("beta-elbo") is BetaELBO
    config = resolve_config("vae", "digits", 0, {"objective": {"class_path": "beta-elbo", "init_args": {"beta": 4}}})
    assert config["objective"] == {"class_path": "beta-elbo", "init_args": {"beta": 4.0}}
    with pytest.raises(ConfigError, match="objective: unknown option.*'k'.*valid options: beta"):
        resolve_config("vae", "digits", 0, {"objective": {"class_path": "beta-elbo", "init_args": {"k": 2}}})


def test_bad_beta_and_models_without_q_prior_likelihood_are_refused():
    with pytest.raises(ValueError, match="objective.beta must be >= 0"):
        BetaELBO(beta=-1.0)
    with pytest.raises(IncompatibleObjectiveError, match="'beta-elbo' cannot train .*'bernoulli'"):
        BetaELBO().check_model(SigmoidBeliefNet((4,), latent_sizes=(3,)))
