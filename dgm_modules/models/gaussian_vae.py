"""The Gaussian-latent VAE of Kingma & Welling (2014) and Burda et al. (2016)."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from dgm_modules.models.base import ExplicitLatentModel, LatentKind
from dgm_modules.models.likelihoods import (bernoulli_log_likelihood, bernoulli_log_likelihood_linear,
                                            gaussian_log_likelihood)
from dgm_modules.networks.mlp import MLP
from dgm_modules.registry import MODELS

#: (image, sample) pairs per decoder block in L_k evaluation: large enough for efficient matmuls, small
#: enough ([4096, 784] float32 is 12 MiB) that the likelihood's elementwise passes run from cache; on a
#: 1-thread EPYC, 2k-4k pairs were fastest, 8k pairs (at chunk_pairs 65536) 25% slower
_BLOCK_PAIRS = 4096


@MODELS.register("gaussian-vae")
class GaussianVAE(ExplicitLatentModel):
    """MLP encoder and decoder, ``z ~ N(0, I)``, Bernoulli (or Gaussian) likelihood over the pixels.

    ``q(z | x) = N(mu(x), diag sigma(x)^2)``. The IWAE paper's one-layer model is
    ``hidden=(200, 200), latent_dim=50, activation="tanh"`` (784-200-200-50).

    Args:
        input_shape: shape of one example, e.g. ``(1, 28, 28)``; injected from the data.
        latent_dim: number of latent units.
        hidden: widths of the deterministic hidden layers of the encoder (the decoder mirrors them).
        activation: nonlinearity between layers.
        likelihood: ``bernoulli`` (binary or grey-level pixels as probabilities) or ``gaussian``:
            ``N(x; sigmoid(decoder(z)), obs_sigma^2 I)``, a density of continuous data such as
            dequantised MNIST (Wu et al. 2017).
        obs_sigma: the fixed observation noise of the ``gaussian`` likelihood.
    """

    latent_kind = LatentKind.CONTINUOUS
    likelihoods = ("bernoulli", "gaussian")

    def __init__(self, input_shape: tuple[int, ...], latent_dim: int = 50,
                 hidden: Sequence[int] = (200, 200), activation: str = "tanh",
                 likelihood: str = "bernoulli", obs_sigma: float = 0.1) -> None:
        super().__init__(input_shape)
        if latent_dim < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {latent_dim}")
        if any(h < 1 for h in hidden):
            raise ValueError(f"model.hidden widths must be >= 1, got {list(hidden)}")
        if likelihood not in self.likelihoods:
            raise ValueError(f"model.likelihood must be one of {list(self.likelihoods)}, got {likelihood!r}")
        if isinstance(obs_sigma, bool) or not isinstance(obs_sigma, (int, float)) or not obs_sigma > 0:
            raise ValueError(f"model.obs_sigma must be a number > 0, got {obs_sigma!r}")
        self.likelihood_kind, self.obs_sigma = likelihood, float(obs_sigma)
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
        if self.likelihood_kind == "gaussian":
            return Independent(Normal(torch.sigmoid(self.generative(z)), self.obs_sigma, validate_args=False), 1)
        return Independent(Bernoulli(logits=self.generative(z), validate_args=False), 1)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        out = self.generative(z)  # the hot path of L_5000
        if self.likelihood_kind == "gaussian":
            return gaussian_log_likelihood(torch.sigmoid(out), x.flatten(1), self.obs_sigma)
        return bernoulli_log_likelihood(out, x.flatten(1))

    def importance_sampler(self, x: Tensor) -> Callable[[int], Tensor]:
        # the encoder once per batch, not once per chunk; the same draws as log_weights (one rsample)
        q, prior, xf = self.q(x), self.prior(), x.flatten(1)
        block = max(1, _BLOCK_PAIRS // xf.shape[0])

        def log_weights(n: int) -> Tensor:
            z = q.rsample((n,))
            # the decoder in blocks of samples, so each block's [pairs, pixels] passes stay in cache
            ll = torch.cat([self._log_likelihood_inplace(xf, zb) for zb in z.split(block)])
            return prior.log_prob(z) + ll - q.log_prob(z)

        return log_weights

    @torch.no_grad()
    def _log_likelihood_inplace(self, xf: Tensor, z: Tensor) -> Tensor:
        """:meth:`log_likelihood` to float rounding, with in-place arithmetic (evaluation only)."""
        if not isinstance(self.generative, MLP) or type(self).log_likelihood is not GaussianVAE.log_likelihood:
            return self.log_likelihood(xf, z)  # another decoder (the VAE-GAN's conv net) or density
        if self.likelihood_kind == "gaussian":
            return gaussian_log_likelihood(self.generative.forward_inplace(z).sigmoid_(), xf, self.obs_sigma)
        last = self.generative[-1]
        return bernoulli_log_likelihood_linear(self.generative.forward_inplace(z, hidden_only=True),
                                               last.weight, last.bias, xf)

    def analytic_elbo(self, x: Tensor) -> Tensor:
        q = self.q(x)
        z = q.rsample()
        return self.likelihood(z).log_prob(x.flatten(1)) - kl_divergence(q, self.prior())
