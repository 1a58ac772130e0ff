"""The ex-post Gaussian of benchmarks/latent_gap.py has the mixture's mean and covariance."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal

from benchmarks.latent_gap import aggregate_gaussian


class _Encoder(torch.nn.Module):
    """q(z | x) = N(x[:, :2] * (1, 3) + (1, -2), diag(0.5^2, 0.2^2)): codes with an offset and unequal spread."""

    def q(self, x):
        loc = x[:, :2] * torch.tensor([1.0, 3.0]) + torch.tensor([1.0, -2.0])
        return Independent(Normal(loc, torch.tensor([0.5, 0.2]).expand_as(loc)), 1)


def test_aggregate_gaussian_matches_draws_from_the_mixture_of_posteriors():
    torch.manual_seed(0)
    x = torch.randn(2000, 4) @ torch.tensor([[1.0, 0.6, 0, 0], [0, 0.8, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    fit = aggregate_gaussian(_Encoder(), x, batch_size=300)  # batches that do not divide N
    # the mixture sampled: an image at random, then its posterior
    q = _Encoder().q(x[torch.randint(len(x), (1_000_000,))])
    z = q.sample().double()
    mean_se = z.std(0) / len(z) ** 0.5
    assert ((fit.loc - z.mean(0)).abs() < 5 * mean_se).all()
    # covariance entries agree to sampling error (about 0.3% of the variances at 1e6 draws);
    # dropping E[Var(z|x)] (0.25 on the first variance of 1.25) would miss by ten times the tolerance
    assert torch.allclose(fit.covariance_matrix, torch.cov(z.T), rtol=0.02, atol=0.01)


def test_a_model_without_a_gaussian_posterior_is_refused_by_name():
    from dgm_modules.components import MODELS

    model = MODELS.get("stick-breaking-vae")((1, 8, 8))
    with pytest.raises(ValueError, match="StickBreakingVAE's q is .*use it on the Gaussian VAEs"):
        aggregate_gaussian(model, torch.rand(10, 1, 8, 8))
