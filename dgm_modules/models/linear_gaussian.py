"""A linear-Gaussian latent variable model: the one model whose log p(x) is exact in closed form.

``p(z) = N(0, I)``, ``p(x | z) = N(W z + b, sigma^2 I)``, so ``p(x) = N(b, W W^T + sigma^2 I)``;
``q(z | x) = N(A x + c, diag(s^2))`` is linear too, and the exact posterior is a member of q's
family when ``diagonal_posterior`` holds. It is the yardstick of the bound and estimator tests.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Independent, MultivariateNormal, Normal

from dgm_modules.models.base import ExplicitLatentModel, LatentKind, Latents
from dgm_modules.registry import MODELS


@MODELS.register("linear-gaussian")
class LinearGaussian(ExplicitLatentModel):
    """Args:
    input_shape: shape of one example (flattened to ``D``).
    latent_dim: ``d``.
    obs_std: ``sigma``, the fixed observation noise.
    """

    latent_kind = LatentKind.CONTINUOUS

    def __init__(self, input_shape: tuple[int, ...], latent_dim: int = 2, obs_std: float = 1.0) -> None:
        super().__init__(input_shape)
        if obs_std <= 0:
            raise ValueError(f"model.obs_std must be > 0, got {obs_std}")
        d_x = math.prod(self.input_shape)
        self.obs_std = obs_std
        self.generative = nn.Linear(latent_dim, d_x)
        self.inference = nn.ModuleDict({"mean": nn.Linear(d_x, latent_dim),
                                        "log_std": nn.Linear(d_x, latent_dim)})
        self.latent_dim = latent_dim

    def q(self, x: Tensor) -> Independent:
        x = x.flatten(1)
        return Independent(Normal(self.inference["mean"](x), self.inference["log_std"](x).exp()), 1)

    def prior(self) -> Independent:
        zero = torch.zeros(self.latent_dim, device=self.generative.weight.device)
        return Independent(Normal(zero, zero + 1.0), 1)

    def likelihood(self, z: Tensor) -> Independent:
        return Independent(Normal(self.generative(z), self.obs_std), 1)

    def sample_joint(self, n: int, mean: bool = False) -> tuple[Tensor, Latents]:
        z = self.prior().sample((n,))
        x = self.generative(z)
        if not mean:
            x = x + self.obs_std * torch.randn(n, self.generative.out_features, device=z.device)
        return x.view(n, *self.input_shape), (z,)

    def marginal(self) -> MultivariateNormal:
        """The exact ``p(x)``."""
        w, b = self.generative.weight, self.generative.bias
        cov = w @ w.T + self.obs_std**2 * torch.eye(len(b), device=b.device)
        return MultivariateNormal(b, covariance_matrix=cov)

    def exact_log_likelihood(self, x: Tensor) -> Tensor:
        return self.marginal().log_prob(x.flatten(1))

    @torch.no_grad()
    def set_exact_posterior(self) -> None:
        """Set q to the exact posterior ``p(z | x) = N(M^-1 W^T (x - b) / sigma^2, M^-1)``,
        ``M = I + W^T W / sigma^2``; exact in q's family only when ``M`` is diagonal."""
        w, b, s2 = self.generative.weight, self.generative.bias, self.obs_std**2
        m_inv = torch.linalg.inv(torch.eye(self.latent_dim) + w.T @ w / s2)
        a = m_inv @ w.T / s2
        self.inference["mean"].weight.copy_(a)
        self.inference["mean"].bias.copy_(-a @ b)
        self.inference["log_std"].weight.zero_()
        self.inference["log_std"].bias.copy_(0.5 * torch.diagonal(m_inv).log())
