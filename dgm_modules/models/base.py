"""The interface every generative model with an inference network implements.

A model owns parameters and distributions, nothing about training: objectives, metrics and
the sleep phase only ever call the methods below.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Iterator

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from dgm_modules.models.capabilities import LatentKind, Latents

__all__ = ["ExplicitLatentModel", "LatentKind", "LatentVariableModel", "Latents"]


class LatentVariableModel(nn.Module, ABC):
    """``p_theta(x, z)`` paired with ``q_phi(z | x)``.

    Subclasses put generative parameters under ``self.generative`` and inference parameters under
    ``self.inference`` (two ``nn.Module``s), declare ``latent_kind`` and implement the three
    abstract methods. Shapes: ``x`` is ``[B, *input_shape]``; latent samples are ``[k, B, ...]``.
    """

    #: what the latents are, checked against each objective's ``supported_latents``
    latent_kind: ClassVar[LatentKind]

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)

    def theta_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the generative model p(x, z)."""
        return self.generative.parameters()

    def phi_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the inference network q(z | x)."""
        return self.inference.parameters()

    @abstractmethod
    def sample_q(self, x: Tensor, k: int = 1, reparam: bool = True) -> tuple[Latents, Tensor]:
        """Draw ``k`` latents per example from q(z | x); return ``(z, log_q [k, B])``.

        With ``reparam=False`` the samples carry no gradient while ``log_q`` still does (the
        score-function estimators need exactly that).
        """

    @abstractmethod
    def log_joint(self, x: Tensor, z: Latents) -> Tensor:
        """``log p(x, z)`` (prior plus likelihood, all layers) per sample: ``[k, B]``."""

    @abstractmethod
    def sample_joint(self, n: int, mean: bool = False) -> tuple[Tensor, Latents]:
        """Ancestral sample ``(x [n, ...], z)`` drawn top-down (the sleep phase's "dream"); with
        ``mean=True`` ``x`` is the mean of ``p(x | z)`` at the drawn latents instead of a draw."""

    # Optional: ``log_q(x, z)``, ``log q(z | x)`` of given latents ``[k, B, ...]`` as ``[k, B]``
    # (capabilities.ScoresLatents): the sleep phase and the path-derivative estimators need it.

    def log_weights(self, x: Tensor, k: int = 1, reparam: bool = True) -> Tensor:
        """``log p(x, z_i) - log q(z_i | x)`` for ``z_i ~ q``: ``[k, B]``."""
        z, log_q = self.sample_q(x, k, reparam)
        return self.log_joint(x, z) - log_q

    def importance_sampler(self, x: Tensor) -> Callable[[int], Tensor]:
        """``n -> log_weights(x, n)`` for one fixed batch: the inner loop of the ``L_k`` bounds, which
        asks it for chunk after chunk of samples (without gradients). Models may override it to do once
        what depends only on ``x`` (the encoder) and to use faster arithmetic, equal to
        :meth:`log_weights` to float rounding with the same random draws."""
        return lambda n: self.log_weights(x, n, reparam=True)

    def analytic_elbo(self, x: Tensor) -> Tensor | None:
        """The ELBO with the KL term in closed form where it exists (``[B]``), else ``None``."""
        return None

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """``n`` images from the model as papers show them and FID scores them: the mean of
        ``p(x | z)`` (pixel intensities) at ``n`` ancestral draws of the latents. (A draw of
        Bernoulli pixels would be a binary image, which on grey-level data FID would score
        against grey test images: not what a GAN's or VAE-GAN's output is compared as.)"""
        return self.sample_joint(n, mean=True)[0]


class ExplicitLatentModel(LatentVariableModel):
    """One latent layer given by three distributions (:class:`~dgm_modules.models.capabilities.ExplicitLatent`):
    subclasses implement ``q(x)``, ``prior()`` and ``likelihood(z)``; sampling and scoring follow.

    Hooks: :meth:`log_likelihood` (a faster form of ``likelihood(z).log_prob(x)``) and
    :meth:`clamp_latent` (keep samples inside the support, e.g. sticks inside ``(0, 1)``).
    """

    @abstractmethod
    def q(self, x: Tensor) -> Distribution:
        """``q(z | x)`` with batch shape ``[B]``."""

    @abstractmethod
    def prior(self) -> Distribution:
        """``p(z)``."""

    @abstractmethod
    def likelihood(self, z: Tensor) -> Distribution:
        """``p(x | z)`` over the flattened example."""

    def clamp_latent(self, z: Tensor) -> Tensor:
        return z

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x | z)``: ``[k, B]``."""
        return self.likelihood(z).log_prob(x.flatten(1))

    def sample_q(self, x: Tensor, k: int = 1, reparam: bool = True) -> tuple[Latents, Tensor]:
        q = self.q(x)
        z = self.clamp_latent(q.rsample((k,)) if reparam else q.sample((k,)))
        return (z,), q.log_prob(z)

    def log_q(self, x: Tensor, z: Latents) -> Tensor:
        return self.q(x).log_prob(self.clamp_latent(z[0]))

    def log_joint(self, x: Tensor, z: Latents) -> Tensor:
        (z0,) = z
        return self.prior().log_prob(z0) + self.log_likelihood(x, z0)

    def sample_joint(self, n: int, mean: bool = False) -> tuple[Tensor, Latents]:
        z = self.clamp_latent(self.prior().sample((n,)))
        px = self.likelihood(z)
        return (px.mean if mean else px.sample()).view(n, *self.input_shape), (z,)
