"""What a model can do beyond :class:`~dgm_modules.models.base.LatentVariableModel`, declared as
typed protocols that objectives, evaluators and figures check with ``isinstance`` (before
training, naming what is missing), and the kinds of latents an objective can train.
"""
from __future__ import annotations

from enum import Enum
from typing import Protocol, runtime_checkable

from torch import Tensor
from torch.distributions import Distribution

Latents = tuple[Tensor, ...]  # one entry per stochastic layer, each [k, B, ...]


class LatentKind(str, Enum):
    """What a model's latents are; each objective lists the kinds it can train.

    A ``str``: equal to, hashed and printed as its value, so configs, records and messages
    read ``'bernoulli'`` as before.
    """

    CONTINUOUS = "continuous-reparam"  # reparameterisable continuous latents
    RELAXED = "relaxed"  # discrete units trained through a continuous relaxation
    BERNOULLI = "bernoulli"
    CATEGORICAL = "categorical"
    CLASS_CONTINUOUS = "class+continuous"  # a class label y (summed out) and a continuous z (M2)
    IMPLICIT = "implicit"  # no density over x (GANs)

    __hash__ = str.__hash__

    def __repr__(self) -> str:
        return repr(self.value)

    def __str__(self) -> str:
        return self.value


@runtime_checkable
class ExplicitLatent(Protocol):
    """One latent layer with its distributions in closed form: ``q(z | x)``, ``p(z)``, ``p(x | z)``."""

    def q(self, x: Tensor) -> Distribution: ...

    def prior(self) -> Distribution: ...

    def likelihood(self, z: Tensor) -> Distribution: ...


@runtime_checkable
class ScoresLatents(Protocol):
    """Scores given latents under q (the sleep phase's dreams, the path-derivative estimators)."""

    def log_q(self, x: Tensor, z: Latents) -> Tensor: ...


@runtime_checkable
class LayeredDiscrete(Protocol):
    """Discrete layers with per-layer access to q's logits (the antithetic estimators ARM, DisARM)."""

    @property
    def n_layers(self) -> int: ...

    def q_logits(self, x: Tensor, z: Latents, layer: int) -> Tensor: ...


@runtime_checkable
class Classifier(Protocol):
    """A model with a classifier ``q(y | x)`` over ``classes`` labels (semi-supervised training)."""

    classes: int

    def classify(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class HasLatentMeans(Protocol):
    """Its own representation of ``x`` for the kNN probe, where ``q(x).mean`` is not the one."""

    def latent_means(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class HasComponents(Protocol):
    """Per-example weights of mixture or stick-breaking components, ``[B, T]``."""

    def component_weights(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class HasLatentLayers(Protocol):
    """Several stochastic layers: units per layer, bottom first."""

    @property
    def latent_layer_sizes(self) -> tuple[int, ...]: ...
