"""The Gaussian VAE with several stochastic layers of Burda, Grosse & Salakhutdinov (2016)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal

from dgm_modules.models.base import LatentKind, Latents, LatentVariableModel
from dgm_modules.models.likelihoods import bernoulli_log_likelihood
from dgm_modules.networks.mlp import MLP
from dgm_modules.registry import MODELS


def _gaussian(net: nn.Module, h: Tensor) -> Independent:
    """A diagonal Gaussian whose mean and log standard deviation an MLP reads from ``h``."""
    mu, log_std = net(h).chunk(2, dim=-1)
    return Independent(Normal(mu, log_std.exp(), validate_args=False), 1)


@MODELS.register("hierarchical-vae")
class HierarchicalGaussianVAE(LatentVariableModel):
    """Gaussian stochastic layers ``x <- h_1 <- ... <- h_L`` with a mirrored bottom-up ``q``.

    ``p(h_L) = N(0, I)``, ``p(h_l | h_{l+1})`` and ``q(h_{l+1} | h_l)`` (``h_0 = x``) diagonal
    Gaussians whose means and log standard deviations come from MLPs (exponentiated: the paper's
    "exp variances"), ``p(x | h_1)`` Bernoulli. The two-stochastic-layer model of Burda et al.
    (2016), Table 1, is the default: ``x -> 200 -> 200 -> h_1 (100) -> 100 -> 100 -> h_2 (50)``
    (tanh), with ``p(h_1 | h_2)`` through 100-100 and ``p(x | h_1)`` through 200-200.

    The latents are ``(h_1, ..., h_L)``, each ``[k, B, latent_dims[l]]``; each ``h_{l+1}`` is drawn
    given the ``h_l`` drawn below it, so every objective written against ``sample_q`` / ``log_q`` /
    ``log_joint`` trains it unchanged. There is no closed-form KL (the top layer's q depends on a
    sample of the one below), so ``analytic_elbo`` is ``None`` and the ELBO is the Monte Carlo one.
    No single-layer ``q(x)`` / ``prior()`` / ``likelihood(z)`` is exposed, so the objectives that
    need one (``perceptual``) refuse this model by name.

    Args:
        input_shape: shape of one example, e.g. ``(1, 28, 28)``; injected from the data.
        latent_dims: units per stochastic layer, bottom first.
        hidden: per stochastic layer, the widths of the deterministic layers of ``q(h_l | h_{l-1})``;
            ``p(h_{l-1} | h_l)`` mirrors them (reversed).
        activation: nonlinearity between layers.
        mean_samples: draws of the lower layers averaged in ``latent_means`` for ``E_q[h_l | x]``
            (``l > 1``), which has no closed form.
    """

    latent_kind = LatentKind.CONTINUOUS

    def __init__(self, input_shape: tuple[int, ...], latent_dims: Sequence[int] = (100, 50),
                 hidden: Sequence[Sequence[int]] = ((200, 200), (100, 100)), activation: str = "tanh",
                 mean_samples: int = 100) -> None:
        super().__init__(input_shape)
        if not latent_dims or any(n < 1 for n in latent_dims):
            raise ValueError(f"model.latent_dims must be a non-empty list of integers >= 1, got {list(latent_dims)}")
        if len(hidden) != len(latent_dims):
            raise ValueError(f"model.hidden must give one list of widths per stochastic layer "
                             f"({len(latent_dims)} for latent_dims={list(latent_dims)}), got {len(hidden)}")
        if any(w < 1 for widths in hidden for w in widths):
            raise ValueError(f"model.hidden widths must be >= 1, got {[list(w) for w in hidden]}")
        if mean_samples < 1:
            raise ValueError(f"model.mean_samples must be >= 1, got {mean_samples}")
        self.latent_dims = tuple(int(n) for n in latent_dims)
        self.mean_samples = mean_samples
        d = math.prod(self.input_shape)
        below = [d, *self.latent_dims[:-1]]  # the input of each q layer
        self.inference = nn.ModuleList(MLP(below[l], hidden[l], 2 * n, activation)
                                       for l, n in enumerate(self.latent_dims))
        self.generative = nn.ModuleDict({
            # layers[l] maps h_{l+2} to the mean and log std of h_{l+1}
            "layers": nn.ModuleList(MLP(self.latent_dims[l + 1], list(reversed(hidden[l + 1])), 2 * self.latent_dims[l],
                                        activation) for l in range(len(self.latent_dims) - 1)),
            "likelihood": MLP(self.latent_dims[0], list(reversed(hidden[0])), d, activation),
        })
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    @property
    def latent_layer_sizes(self) -> tuple[int, ...]:
        """Units per stochastic layer, bottom first: how ``latent_means`` splits into layers."""
        return self.latent_dims

    def q_layer(self, layer: int, below: Tensor) -> Independent:
        """``q(h_{layer+1} | h_layer)`` given the layer below (``x`` flattened for ``layer = 0``)."""
        return _gaussian(self.inference[layer], below)

    def p_layer(self, layer: int, above: Tensor) -> Independent:
        """``p(h_{layer+1} | h_{layer+2})`` given the layer above."""
        return _gaussian(self.generative["layers"][layer], above)

    def prior(self) -> Independent:
        """``p(h_L) = N(0, I)``."""
        zero = self._zero.expand(self.latent_dims[-1])
        return Independent(Normal(zero, zero + 1.0, validate_args=False), 1)

    def sample_q(self, x: Tensor, k: int = 1, reparam: bool = True) -> tuple[Latents, Tensor]:
        h, zs, log_q = x.flatten(1), [], 0.0
        for l in range(len(self.latent_dims)):
            q = self.q_layer(l, h)
            n = (k,) if l == 0 else ()  # the layers above inherit the sample dimension from h
            z = q.rsample(n) if reparam else q.sample(n)
            log_q = log_q + q.log_prob(z)
            zs.append(z)
            h = z
        return tuple(zs), log_q

    def log_q(self, x: Tensor, z: Latents) -> Tensor:
        below = [x.flatten(1), *z[:-1]]
        return sum(self.q_layer(l, below[l]).log_prob(z[l]) for l in range(len(self.latent_dims)))

    def log_joint(self, x: Tensor, z: Latents) -> Tensor:
        total = self.prior().log_prob(z[-1])
        for l in range(len(self.latent_dims) - 1):
            total = total + self.p_layer(l, z[l + 1]).log_prob(z[l])
        return total + bernoulli_log_likelihood(self.generative["likelihood"](z[0]), x.flatten(1))

    def sample_joint(self, n: int, mean: bool = False) -> tuple[Tensor, Latents]:
        z = [self.prior().sample((n,))]
        for l in range(len(self.latent_dims) - 2, -1, -1):
            z.insert(0, self.p_layer(l, z[0]).sample())
        px = Bernoulli(logits=self.generative["likelihood"](z[0]), validate_args=False)
        return (px.mean if mean else px.sample()).view(n, *self.input_shape), tuple(z)

    @torch.no_grad()
    def layer_means(self, x: Tensor) -> tuple[Tensor, ...]:
        """``E_q[h_l | x]`` per layer, ``[B, latent_dims[l]]``: exact for ``h_1``; for the layers
        above, the conditional means averaged over ``mean_samples`` draws of the layer below
        (Burda et al. 2016's active units are defined on these means). Its noise comes from a
        fixed-seed generator, so the numbers are reproducible and the training RNG is untouched."""
        gen = torch.Generator(device=x.device).manual_seed(0)
        q = self.q_layer(0, x.flatten(1))
        means = [q.mean]
        std = q.base_dist.scale
        h = q.mean + std * torch.randn((self.mean_samples, *std.shape), generator=gen, device=x.device, dtype=std.dtype)
        for l in range(1, len(self.latent_dims)):
            q = self.q_layer(l, h)
            means.append(q.mean.mean(0))
            std = q.base_dist.scale
            h = q.mean + std * torch.randn(std.shape, generator=gen, device=x.device, dtype=std.dtype)
        return tuple(means)

    def latent_means(self, x: Tensor) -> Tensor:
        """Every layer's ``E_q[h_l | x]`` side by side, ``[B, sum(latent_dims)]`` (kNN, active units)."""
        return torch.cat(self.layer_means(x), dim=-1)
