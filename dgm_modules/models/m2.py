"""The M2 semi-supervised generative model of Kingma, Rezende, Mohamed & Welling (2014)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, OneHotCategorical, kl_divergence

from dgm_modules.models.base import LatentKind, Latents, LatentVariableModel
from dgm_modules.networks.mlp import MLP
from dgm_modules.registry import MODELS


@MODELS.register("m2")
class M2(LatentVariableModel):
    """``p(y) p(z) p(x | y, z)`` with a class ``y`` and a Gaussian style ``z``; ``q(y | x) q(z | x, y)``.

    ``p(y)`` is uniform over ``classes``, ``p(z) = N(0, I)``, ``p(x | y, z)`` Bernoulli over the
    pixels; ``q(y | x)`` is the classifier and ``q(z | x, y) = N(mu, diag sigma^2)``. The latents
    are ``(y, z)``: ``y`` one-hot ``[k, B, classes]``, ``z`` ``[k, B, latent_dim]``.

    ``log_weights`` (hence every ``L_k`` the shared evaluator reports) sums ``y`` out exactly:
    ``w_i = sum_y p(x, y, z_{i,y}) / q(z_{i,y} | x, y)`` with ``z_{i,y} ~ q(z | x, y)``, whose
    expectation is ``p(x)``; so ``L_k`` is a bound on ``log p(x)`` that tends to it as ``k`` grows.
    ``analytic_elbo`` is Kingma et al.'s ``-U(x)``: ``y`` summed exactly, the KL of ``z`` in closed form.

    Args:
        input_shape: shape of one example; injected from the data.
        classes: number of classes of ``y``.
        latent_dim: dimension of ``z``.
        hidden: widths of the deterministic hidden layers of every network (the paper: one of 500).
        activation: nonlinearity (the paper: softplus).
    """

    latent_kind = LatentKind.CLASS_CONTINUOUS

    def __init__(self, input_shape: tuple[int, ...], classes: int = 10, latent_dim: int = 50,
                 hidden: Sequence[int] = (500,), activation: str = "softplus") -> None:
        super().__init__(input_shape)
        if classes < 2:
            raise ValueError(f"model.classes must be >= 2, got {classes}")
        if latent_dim < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {latent_dim}")
        if any(h < 1 for h in hidden):
            raise ValueError(f"model.hidden widths must be >= 1, got {list(hidden)}")
        d = math.prod(self.input_shape)
        self.classes, self.latent_dim = classes, latent_dim
        self.inference = nn.ModuleDict({"classifier": MLP(d, hidden, classes, activation),
                                        "encoder": MLP(d + classes, hidden, 2 * latent_dim, activation)})
        self.generative = MLP(latent_dim + classes, list(reversed(hidden)), d, activation)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    # -- distributions ------------------------------------------------------------------------
    def classify(self, x: Tensor) -> Tensor:
        """Logits of ``q(y | x)``: ``[B, classes]``."""
        return self.inference["classifier"](x.flatten(1))

    def q_y(self, x: Tensor) -> OneHotCategorical:
        return OneHotCategorical(logits=self.classify(x), validate_args=False)

    def q_z(self, x: Tensor, y: Tensor) -> Independent:
        """``q(z | x, y)`` for one-hot ``y`` of shape ``[..., B, classes]``."""
        xf = x.flatten(1).expand(*y.shape[:-1], -1)
        mu, log_std = self.inference["encoder"](torch.cat([xf, y], -1)).chunk(2, dim=-1)
        return Independent(Normal(mu, log_std.exp(), validate_args=False), 1)

    def prior_y(self) -> OneHotCategorical:
        return OneHotCategorical(logits=self._zero.expand(self.classes), validate_args=False)

    def prior_z(self) -> Independent:
        zero = self._zero.expand(self.latent_dim)
        return Independent(Normal(zero, zero + 1.0, validate_args=False), 1)

    def likelihood(self, y: Tensor, z: Tensor) -> Independent:
        return Independent(Bernoulli(logits=self.generative(torch.cat([z, y], -1)), validate_args=False), 1)

    def all_classes(self, *batch_shape: int) -> Tensor:
        """Every one-hot class, ``[classes, *batch_shape, classes]``."""
        eye = torch.eye(self.classes, device=self._zero.device, dtype=self._zero.dtype)
        return eye.view(self.classes, *[1] * len(batch_shape), self.classes).expand(self.classes, *batch_shape, -1)

    # -- the LatentVariableModel interface, with y as a latent ---------------------------------
    def sample_q(self, x: Tensor, k: int = 1, reparam: bool = True) -> tuple[Latents, Tensor]:
        qy = self.q_y(x)
        y = qy.sample((k,))
        qz = self.q_z(x, y)
        z = qz.rsample() if reparam else qz.sample()
        return (y, z), qy.log_prob(y) + qz.log_prob(z)

    def log_q(self, x: Tensor, z: Latents) -> Tensor:
        y, zz = z
        return self.q_y(x).log_prob(y) + self.q_z(x, y).log_prob(zz)

    def log_joint(self, x: Tensor, z: Latents) -> Tensor:
        y, zz = z
        return (self.prior_y().log_prob(y) + self.prior_z().log_prob(zz)
                + self.likelihood(y, zz).log_prob(x.flatten(1)))

    def sample_joint(self, n: int, mean: bool = False) -> tuple[Tensor, Latents]:
        y, z = self.prior_y().sample((n,)), self.prior_z().sample((n,))
        px = self.likelihood(y, z)
        return (px.mean if mean else px.sample()).view(n, *self.input_shape), (y, z)

    # -- y summed out exactly --------------------------------------------------------------------
    def sample_z_per_class(self, x: Tensor, k: int = 1, reparam: bool = True) -> Tensor:
        """``z_{i,y} ~ q(z | x, y)`` for every class: ``[classes, k, B, latent_dim]``."""
        qz = self.q_z(x, self.all_classes(k, x.shape[0]))
        return qz.rsample() if reparam else qz.sample()

    def class_log_weights(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x, y, z_y) - log q(z_y | x, y)`` for every class ``y``: ``[classes, k, B]``."""
        y = self.all_classes(*z.shape[1:-1])
        return (self.prior_y().log_prob(y) + self.prior_z().log_prob(z)
                + self.likelihood(y, z).log_prob(x.flatten(1)) - self.q_z(x, y).log_prob(z))

    def log_weights(self, x: Tensor, k: int = 1, reparam: bool = True) -> Tensor:
        return torch.logsumexp(self.class_log_weights(x, self.sample_z_per_class(x, k, reparam)), 0)

    def class_elbos(self, x: Tensor) -> Tensor:
        """``ELBO(x, y) = E_q(z|x,y)[log p(x | y, z)] + log p(y) - KL(q(z | x, y) || p(z))`` per class:
        ``[B, classes]``, one reparameterised sample of ``z`` per class, the KL in closed form."""
        y = self.all_classes(x.shape[0])
        qz = self.q_z(x, y)
        rec = self.likelihood(y, qz.rsample()).log_prob(x.flatten(1))
        return (rec + self.prior_y().log_prob(y) - kl_divergence(qz, self.prior_z())).T

    def analytic_elbo(self, x: Tensor) -> Tensor:
        """``-U(x) = sum_y q(y | x) (ELBO(x, y) - log q(y | x))``: ``[B]``."""
        log_qy = self.classify(x).log_softmax(-1)
        return (log_qy.exp() * (self.class_elbos(x) - log_qy)).sum(-1)
