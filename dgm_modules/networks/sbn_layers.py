"""Layers of discrete stochastic units: sigmoid belief net layers (Neal 1992) and categorical ones.

A layer maps an input vector to the logits of ``units`` independent discrete variables, each a
Bernoulli unit or a one-hot categorical over ``categories`` classes. The conditional map is linear
(the classic SBN) or passes through deterministic hidden layers ("nonlinear", Mnih & Gregor 2014).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, OneHotCategorical
from torch.distributions import RelaxedBernoulli, RelaxedOneHotCategorical

from dgm_modules.networks.mlp import MLP

LATENT_KINDS = ("bernoulli", "categorical")


class DiscreteFamily:
    """The distribution family of ``units`` independent Bernoulli or one-hot categorical variables.

    Samples are ``[..., units]`` (Bernoulli) or ``[..., units, categories]`` (one-hot).
    """

    def __init__(self, kind: str, units: int, categories: int = 2) -> None:
        if kind not in LATENT_KINDS:
            raise ValueError(f"model.latent={kind!r} is not valid; choose one of {list(LATENT_KINDS)}")
        self.kind, self.units, self.categories = kind, units, categories

    @property
    def n_logits(self) -> int:
        return self.units * (self.categories if self.kind == "categorical" else 1)

    @property
    def n_features(self) -> int:
        """Width of a flattened sample (the next layer's input)."""
        return self.n_logits

    def shape_logits(self, logits: Tensor) -> Tensor:
        return logits if self.kind == "bernoulli" else logits.unflatten(-1, (self.units, self.categories))

    def flatten(self, z: Tensor) -> Tensor:
        return z if self.kind == "bernoulli" else z.flatten(-2)

    def exact(self, logits: Tensor) -> Distribution:
        """The discrete distribution, one event of all ``units`` variables."""
        base = (Bernoulli(logits=logits, validate_args=False) if self.kind == "bernoulli"
                else OneHotCategorical(logits=logits, validate_args=False))
        return Independent(base, 1)

    def mean(self, logits: Tensor) -> Tensor:
        """``E[z]``: the probabilities (Bernoulli) or the softmax over classes (categorical)."""
        return logits.sigmoid() if self.kind == "bernoulli" else logits.softmax(-1)

    def relaxed(self, logits: Tensor, temperature: Tensor) -> Distribution:
        """Its Concrete / Gumbel-softmax relaxation (Maddison et al. 2017; Jang et al. 2017)."""
        if self.kind == "bernoulli":
            return RelaxedBernoulli(temperature, logits=logits, validate_args=False)
        return RelaxedOneHotCategorical(temperature, logits=logits, validate_args=False)

    def relaxed_log_mass(self, logits: Tensor, z: Tensor) -> Tensor:
        """The log-mass extended to relaxed points of the simplex: ``sum z * log pi`` per event.

        Equals the exact log-mass at vertices and is differentiable in ``z``, so the relaxed
        objective tends to the discrete one as the temperature falls (Jang et al. 2017). torch's
        ``OneHotCategorical.log_prob`` takes an argmax of ``z``, hence the explicit form there.
        """
        if self.kind == "bernoulli":
            return self.exact(logits).log_prob(z)  # -BCE-with-logits: already the extension
        return (z * logits.log_softmax(-1)).sum((-2, -1))

    def harden(self, z: Tensor) -> Tensor:
        """The nearest vertex: thresholding (Bernoulli) or argmax (categorical)."""
        if self.kind == "bernoulli":
            return (z > 0.5).to(z.dtype)
        return torch.zeros_like(z).scatter_(-1, z.argmax(-1, keepdim=True), 1.0)

    def enumerate(self) -> Tensor:
        """Every configuration of the layer, ``[n_configs, ...]`` (for tests on tiny models)."""
        values = torch.tensor([0.0, 1.0]) if self.kind == "bernoulli" else torch.eye(self.categories)
        grids = torch.meshgrid(*[torch.arange(values.shape[0])] * self.units, indexing="ij")
        return values[torch.stack([g.flatten() for g in grids], -1)]  # product of per-variable supports


class DiscreteLayer(nn.Module):
    """``input -> logits`` of one stochastic layer: linear, or through deterministic hidden layers.

    Args:
        in_features: width of the input vector.
        family: the layer's distribution family.
        hidden: widths of the deterministic hidden layers, input side first; empty for the linear
            SBN layer.
        activation: nonlinearity of the hidden layers.
    """

    def __init__(self, in_features: int, family: DiscreteFamily, hidden: Sequence[int] = (),
                 activation: str = "tanh") -> None:
        super().__init__()
        self.family = family
        self.net = MLP(in_features, list(hidden), family.n_logits, activation)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.family.shape_logits(self.net(inputs))


class PriorLayer(nn.Module):
    """Learned logits of the top stochastic layer: ``p(z_L)`` with no parents."""

    def __init__(self, family: DiscreteFamily) -> None:
        super().__init__()
        self.family = family
        self.logits = nn.Parameter(family.shape_logits(torch.zeros(family.n_logits)))

    def forward(self) -> Tensor:
        return self.logits
