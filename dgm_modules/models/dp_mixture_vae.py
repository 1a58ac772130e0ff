"""A VAE whose prior is a learned, truncated Dirichlet-process mixture of Gaussians.

In the spirit of the nonparametric priors of Goyal et al. (2017), "Nonparametric Variational
Auto-encoders for Hierarchical Representation Learning", simplified to one level (no tree): the
prior ``p(z) = sum_c pi_c N(z; mu_c, diag sigma_c^2)`` has stick-breaking weights ``pi`` from
fractions ``v_c`` learned jointly with the VAE.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Beta, Categorical, Independent, MixtureSameFamily, Normal
from torch.nn import functional as F

from dgm_modules.models.base import ExplicitLatentModel, LatentKind, Latents
from dgm_modules.models.stick_breaking import check_nonparametric_options
from dgm_modules.networks.mlp import MLP
from dgm_modules.registry import MODELS


class DPMixturePrior(nn.Module):
    """Truncated DP mixture of diagonal Gaussians with point-estimated stick fractions.

    ``T - 1`` fractions ``v = sigmoid(logits)`` break the stick; the last of the ``T`` weights is
    the remainder, so the weights sum to 1. The fractions have a ``Beta(1, alpha0)`` prior; the
    model adds the log density of the *logits* it implies, :meth:`fraction_log_prior`, to training
    (a MAP estimate of the parameters it optimises).
    """

    def __init__(self, latent_dim: int, truncation: int, alpha0: float) -> None:
        super().__init__()
        self.alpha0 = float(alpha0)
        # fractions start at the prior mean 1 / (1 + alpha0), the mode of the logits' prior density.
        # Means start close together (0.1 N(0, I)): at N(0, I) in 50 dimensions they sit ~10 apart, the
        # nearest component to the encoder's outputs takes every example and the others never move
        self.stick_logits = nn.Parameter(torch.full((truncation - 1,), -math.log(alpha0)))
        self.means = nn.Parameter(0.1 * torch.randn(truncation, latent_dim))
        self.log_scales = nn.Parameter(torch.zeros(truncation, latent_dim))

    def fractions(self) -> Tensor:
        return torch.sigmoid(self.stick_logits)

    def log_weights(self) -> Tensor:
        """``log pi`` (``[T]``) computed in log space: ``log v_c + sum_{j<c} log(1 - v_j)``."""
        log_left = torch.cumsum(F.logsigmoid(-self.stick_logits), 0)
        log_pi = F.logsigmoid(self.stick_logits) + torch.cat([log_left.new_zeros(1), log_left[:-1]])
        return torch.cat([log_pi, log_left[-1:]])

    def components(self) -> Independent:
        return Independent(Normal(self.means, self.log_scales.exp(), validate_args=False), 1)

    def distribution(self) -> MixtureSameFamily:
        return MixtureSameFamily(Categorical(logits=self.log_weights(), validate_args=False),
                                 self.components(), validate_args=False)

    def responsibilities(self, z: Tensor) -> Tensor:
        """``p(c | z)`` for ``z [..., d]``: ``[..., T]``."""
        joint = self.log_weights() + self.components().log_prob(z.unsqueeze(-2))
        return torch.softmax(joint, -1)

    def fraction_log_prior(self) -> Tensor:
        """``log p(logits)``: ``log Beta(v; 1, alpha0)`` plus the Jacobian ``log |dv/dl| = log v + log(1 - v)``.

        Without the Jacobian the MAP objective in ``l`` is ``(alpha0 - 1) log(1 - v)``, maximised at
        ``v -> 0``; with it, at ``v = 1 / (1 + alpha0)``, inside the interval.
        """
        v, l = self.fractions(), self.stick_logits
        beta = Beta(torch.ones_like(v), torch.full_like(v, self.alpha0), validate_args=False).log_prob(v)
        return (beta + F.logsigmoid(l) + F.logsigmoid(-l)).sum()


@MODELS.register("dp-mixture-vae")
class DPMixtureVAE(ExplicitLatentModel):
    """Gaussian ``q(z | x)``, a learned DP-mixture prior, Bernoulli likelihood.

    The importance weights use the mixture's exact density (``MixtureSameFamily``); there is no
    closed-form KL, so :meth:`analytic_elbo` is ``None`` and the ELBO is the Monte Carlo one. The
    stick fractions are a point estimate: during training each example's ``log p(x, z)`` gains
    ``log p(logits) / n_train`` (the Beta(1, alpha0) prior carried to the logits, Jacobian included),
    so a full pass over the data adds the prior's log density once (MAP). In evaluation (``model.eval()``) ``log_joint`` is exactly ``log p(x, z)``.

    Args:
        input_shape: shape of one example; injected from the data.
        latent_dim: dimension of z.
        truncation: number of mixture components ``T`` (>= 2).
        alpha0: concentration of the Beta(1, alpha0) prior on the stick fractions (> 0).
        hidden: widths of the encoder's hidden layers (the decoder mirrors them).
        activation: nonlinearity between layers.
        n_train: training-set size that scales the fractions' prior per example (>= 1).
    """

    latent_kind = LatentKind.CONTINUOUS

    def __init__(self, input_shape: tuple[int, ...], latent_dim: int = 50, truncation: int = 50,
                 alpha0: float = 5.0, hidden: Sequence[int] = (200, 200), activation: str = "tanh",
                 n_train: int = 50_000) -> None:
        super().__init__(input_shape)
        check_nonparametric_options(alpha0, truncation)
        if latent_dim < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {latent_dim}")
        if any(h < 1 for h in hidden):
            raise ValueError(f"model.hidden widths must be >= 1, got {list(hidden)}")
        if n_train < 1:
            raise ValueError(f"model.n_train must be >= 1, got {n_train}")
        d = math.prod(self.input_shape)
        self.latent_dim, self.truncation, self.n_train = latent_dim, truncation, n_train
        self.inference = MLP(d, hidden, 2 * latent_dim, activation)
        self.generative = nn.ModuleDict({"decoder": MLP(latent_dim, list(reversed(hidden)), d, activation),
                                         "prior": DPMixturePrior(latent_dim, truncation, alpha0)})

    @property
    def dp_prior(self) -> DPMixturePrior:
        return self.generative["prior"]

    def q(self, x: Tensor) -> Independent:
        mu, log_std = self.inference(x.flatten(1)).chunk(2, dim=-1)
        return Independent(Normal(mu, log_std.exp(), validate_args=False), 1)

    def prior(self) -> MixtureSameFamily:
        return self.dp_prior.distribution()

    def likelihood(self, z: Tensor) -> Independent:
        return Independent(Bernoulli(logits=self.generative["decoder"](z), validate_args=False), 1)

    def log_joint(self, x: Tensor, z: Latents) -> Tensor:
        out = super().log_joint(x, z)
        if self.training:  # the MAP share of the global prior; never part of evaluation
            out = out + self.dp_prior.fraction_log_prior() / self.n_train
        return out

    def component_weights(self, x: Tensor) -> Tensor:
        """Responsibilities ``p(c | z = E_q[z | x])``: ``[B, T]``."""
        return self.dp_prior.responsibilities(self.q(x).mean)

    def latent_means(self, x: Tensor) -> Tensor:
        return self.q(x).mean
