"""Adversarial losses, one per player: the GAN (Goodfellow et al. 2014) with the non-saturating
generator loss, and the VAE-GAN (Larsen et al. 2016).

An adversarial objective names its ``players``; ``forward(model, x, player)`` returns that
player's loss, and ``player_parameters(model, player)`` the parameters its optimiser updates.
The discriminator's output is the logit of a Bernoulli "x is real", so every term is a
``Bernoulli(logits=D(x)).log_prob(label)``.
"""
from __future__ import annotations

from typing import ClassVar, Iterator

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from dgm_modules.models.capabilities import LatentKind
from dgm_modules.objectives.base import IncompatibleObjectiveError, Objective, ObjectiveOutput
from dgm_modules.registry import OBJECTIVES


def log_d(logits: Tensor, real: bool) -> Tensor:
    """``log D(x)`` (``real=True``) or ``log (1 - D(x))`` per example, from the discriminator's logits."""
    return Bernoulli(logits=logits, validate_args=False).log_prob(torch.full_like(logits, float(real)))


class AdversarialObjective(Objective):
    """One loss per player; the method steps each player's optimiser on its own loss."""

    players: ClassVar[tuple[str, ...]] = ()
    #: the model attribute holding each player's parameters
    player_modules: ClassVar[dict[str, str]] = {}

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        missing = [a for a in self.player_modules.values() if not isinstance(getattr(model, a, None), nn.Module)]
        if missing:
            raise IncompatibleObjectiveError(
                f"{type(self).__name__} needs a model with {sorted(self.player_modules.values())}; "
                f"{type(model).__name__} lacks {missing}")

    def player_parameters(self, model: nn.Module, player: str) -> Iterator[nn.Parameter]:
        return getattr(model, self.player_modules[player]).parameters()

    def forward(self, model: nn.Module, x: Tensor, player: str) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError


@OBJECTIVES.register("gan")
class GANLoss(AdversarialObjective):
    """``max_D E log D(x) + E log(1 - D(G(z)))``; the generator minimises ``-E log D(G(z))``.

    The non-saturating generator loss of Goodfellow et al. (2014, section 3) has strong gradients
    early in training, where ``log(1 - D(G(z)))`` saturates. ``bound`` holds the per-example loss.
    """

    supported_latents = frozenset({LatentKind.IMPLICIT})
    players = ("discriminator", "generator")
    player_modules = {"discriminator": "discriminator", "generator": "generator"}

    def forward(self, model: nn.Module, x: Tensor, player: str) -> ObjectiveOutput:
        if player == "discriminator":
            with torch.no_grad():
                fake = model.generate(x.shape[0])
            per_example = -(log_d(model.discriminator(x), True) + log_d(model.discriminator(fake), False))
        else:
            per_example = -log_d(model.discriminator(model.generate(x.shape[0])), True)
        loss = per_example.mean()
        return ObjectiveOutput(loss=loss, bound=per_example.detach(), terms={f"{player}_loss": loss.detach()})


@OBJECTIVES.register("vae-gan")
class VAEGANLoss(AdversarialObjective):
    """Larsen et al. (2016), Algorithm 1, with per-example sums:

    - encoder: ``KL(q(z|x) || p(z)) + L_llike``, where ``L_llike = -log N(Dis_l(x); Dis_l(x~), I)``
      is the reconstruction error in the discriminator's feature layer;
    - decoder: ``gamma * L_llike + L_GAN`` (non-saturating, on reconstructions ``x~`` and on
      prior samples ``x_p``);
    - discriminator: ``-[log D(x) + log(1 - D(x~)) + log(1 - D(x_p))]``.

    Args:
        gamma: weight of content (feature reconstruction) against style (GAN) in the decoder's loss.
    """

    supported_latents = frozenset({LatentKind.CONTINUOUS})
    players = ("encoder", "decoder", "discriminator")
    player_modules = {"encoder": "inference", "decoder": "generative", "discriminator": "discriminator"}

    def __init__(self, gamma: float = 0.1) -> None:
        super().__init__()
        if not gamma > 0:
            raise ValueError(f"objective.gamma must be > 0, got {gamma}")
        self.gamma = gamma

    def forward(self, model: nn.Module, x: Tensor, player: str) -> ObjectiveOutput:
        q = model.q(x)
        x_rec = model.decode(q.rsample())
        x_prior = None if player == "encoder" else model.decode(model.prior().sample((x.shape[0],)))
        dis = model.discriminator
        terms: dict[str, Tensor] = {}
        if player == "discriminator":
            per_example = -(log_d(dis(x), True) + log_d(dis(x_rec.detach()), False)
                            + log_d(dis(x_prior.detach()), False))
        else:
            target = dis.features(x).detach()
            feature_nll = -Independent(Normal(dis.features(x_rec), 1.0), 1).log_prob(target)
            terms["feature_nll"] = feature_nll.mean().detach()
            if player == "encoder":
                kl = kl_divergence(q, model.prior())
                terms["kl"] = kl.mean().detach()
                per_example = kl + feature_nll
            else:
                gan = -(log_d(dis(x_rec), True) + log_d(dis(x_prior), True))
                terms["gan"] = gan.mean().detach()
                per_example = self.gamma * feature_nll + gan
        loss = per_example.mean()
        terms[f"{player}_loss"] = loss.detach()
        return ObjectiveOutput(loss=loss, bound=per_example.detach(), terms=terms)
