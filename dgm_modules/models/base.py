"""The interface every generative model with an inference network implements.

A model owns parameters and distributions, nothing about training: objectives, metrics and
the sleep phase only ever call the methods below.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Iterator

import torch
from torch import Tensor, nn

Latents = tuple[Tensor, ...]  # one entry per stochastic layer, each [k, B, ...]


class LatentVariableModel(nn.Module, ABC):
    """``p_theta(x, z)`` paired with ``q_phi(z | x)``.

    Subclasses put generative parameters under ``self.generative`` and inference parameters under
    ``self.inference`` (two ``nn.Module``s), declare ``latent_kind`` and implement the three
    abstract methods. Shapes: ``x`` is ``[B, *input_shape]``; latent samples are ``[k, B, ...]``.
    """

    #: what the latents are, checked by objectives: "continuous-reparam", "bernoulli", "categorical", ...
    latent_kind: ClassVar[str]

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
    def sample_joint(self, n: int) -> tuple[Tensor, Latents]:
        """Ancestral sample ``(x [n, ...], z)`` drawn top-down (the sleep phase's "dream")."""

    def log_q(self, x: Tensor, z: Latents) -> Tensor:
        """``log q(z | x)`` of given latents ``[k, B, ...]``: ``[k, B]`` (the sleep phase scores dreams).

        Optional: only the objectives with a sleep phase need it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not score given latents under q (log_q)")

    def log_weights(self, x: Tensor, k: int = 1, reparam: bool = True) -> Tensor:
        """``log p(x, z_i) - log q(z_i | x)`` for ``z_i ~ q``: ``[k, B]``."""
        z, log_q = self.sample_q(x, k, reparam)
        return self.log_joint(x, z) - log_q

    def analytic_elbo(self, x: Tensor) -> Tensor | None:
        """The ELBO with the KL term in closed form where it exists (``[B]``), else ``None``."""
        return None

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Draw ``n`` images from the model."""
        return self.sample_joint(n)[0]
