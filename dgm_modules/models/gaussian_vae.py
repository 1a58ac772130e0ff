"""The Gaussian-latent VAE of Kingma & Welling (2014) and Burda et al. (2016)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from dgm_modules.models.base import ExplicitLatentModel, LatentKind
from dgm_modules.models.likelihoods import bernoulli_log_likelihood
from dgm_modules.networks.mlp import MLP
from dgm_modules.registry import MODELS


@MODELS.register("gaussian-vae")
class GaussianVAE(ExplicitLatentModel):
    """MLP encoder and decoder, ``z ~ N(0, I)``, Bernoulli likelihood over the pixels.

    ``q(z | x) = N(mu(x), diag sigma(x)^2)``. The IWAE paper's one-layer model is
    ``hidden=(200, 200), latent_dim=50, activation="tanh"`` (784-200-200-50).

    Args:
        input_shape: shape of one example, e.g. ``(1, 28, 28)``; injected from the data.
        latent_dim: number of latent units.
        hidden: widths of the deterministic hidden layers of the encoder (the decoder mirrors them).
        activation: nonlinearity between layers.
    """

    latent_kind = LatentKind.CONTINUOUS

    def __init__(self, input_shape: tuple[int, ...], latent_dim: int = 50,
                 hidden: Sequence[int] = (200, 200), activation: str = "tanh") -> None:
        super().__init__(input_shape)
        if latent_dim < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {latent_dim}")
        if any(h < 1 for h in hidden):
            raise ValueError(f"model.hidden widths must be >= 1, got {list(hidden)}")
        d = math.prod(self.input_shape)
        self.latent_dim = latent_dim
        self.inference = MLP(d, hidden, 2 * latent_dim, activation)
        self.generative = MLP(latent_dim, list(reversed(hidden)), d, activation)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def q(self, x: Tensor) -> Independent:
        mu, log_std = self.inference(x.flatten(1)).chunk(2, dim=-1)
        return Independent(Normal(mu, log_std.exp(), validate_args=False), 1)

    def prior(self) -> Independent:
        zero = self._zero.expand(self.latent_dim)
        return Independent(Normal(zero, zero + 1.0, validate_args=False), 1)

    def likelihood(self, z: Tensor) -> Independent:
        return Independent(Bernoulli(logits=self.generative(z), validate_args=False), 1)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        return bernoulli_log_likelihood(self.generative(z), x.flatten(1))  # the hot path of L_5000

    def analytic_elbo(self, x: Tensor) -> Tensor:
        q = self.q(x)
        z = q.rsample()
        return self.likelihood(z).log_prob(x.flatten(1)) - kl_divergence(q, self.prior())
