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
    """Larsen et al. (2016), Algorithm 1, with per-example sums, all three losses from one forward
    pass (the players are updated simultaneously, as there):

    - encoder: ``KL(q(z|x) || p(z)) + L_llike``, where ``L_llike = -log N(Dis_l(x); Dis_l(x~), I)``
      is the reconstruction error in the discriminator's feature layer;
    - decoder: ``gamma * L_llike + L_GAN`` (non-saturating, on prior samples ``x_p``, and on
      reconstructions ``x~`` too if ``discriminate_reconstructions``);
    - discriminator: ``-[log D(x) + log(1 - D(x_p))]``, plus ``log(1 - D(x~))`` likewise.

    The paper's Algorithm 1 feeds the discriminator ``x~`` as well; every experiment of the
    authors' released code turns that off (``discriminate_ae_recon=False``), which is the default
    here. Why it matters: reconstructions are nearly perfect, so with ``x~`` in the fake batch the
    fakes' mean cross-entropy (which the balancing rule reads) hides how easily the discriminator
    tells prior samples apart, and half the decoder's GAN gradient goes to images that already
    look real. With ``x~`` in, a width-16 run reached FID 334.6 from prior draws but 116.8 from a
    Gaussian fitted to its codes (results/sample-quality-mnist): the decoder had learnt the codes'
    region, not the prior's.

    Balancing (the authors' released code): with ``real`` and ``fake`` the discriminator's mean
    cross-entropy on data and on ``x~, x_p``, its update is skipped while it wins by more than
    ``margin`` (``real`` or ``fake`` below ``equilibrium - margin``), the decoder's while it loses by
    more (either above ``equilibrium + margin``); never both. ``margin=None`` updates every step.

    Args:
        gamma: weight of content (feature reconstruction) against style (GAN) in the decoder's loss.
        equilibrium: the cross-entropy around which the game is balanced (the code's 0.68, ~ln 2).
        margin: half-width of the band in which both are updated, or ``None`` (no balancing).
        discriminate_reconstructions: also show the discriminator (and the decoder's GAN loss)
            the reconstructions ``x~``, as the paper's Algorithm 1 does.
    """

    supported_latents = frozenset({LatentKind.CONTINUOUS})
    players = ("encoder", "decoder", "discriminator")
    player_modules = {"encoder": "inference", "decoder": "generative", "discriminator": "discriminator"}
    simultaneous: ClassVar[bool] = True

    def __init__(self, gamma: float = 1e-2, equilibrium: float = 0.68, margin: float | None = 0.4,
                 discriminate_reconstructions: bool = False) -> None:
        super().__init__()
        if not gamma > 0:
            raise ValueError(f"objective.gamma must be > 0, got {gamma}")
        if not equilibrium > 0:
            raise ValueError(f"objective.equilibrium must be > 0, got {equilibrium}")
        if margin is not None and not margin > 0:
            raise ValueError(f"objective.margin must be > 0 or null (no balancing), got {margin}")
        if not isinstance(discriminate_reconstructions, bool):
            raise ValueError(f"objective.discriminate_reconstructions must be true or false, "
                             f"got {discriminate_reconstructions!r}")
        self.gamma, self.equilibrium, self.margin = gamma, equilibrium, margin
        self.discriminate_reconstructions = discriminate_reconstructions

    def losses(self, model: nn.Module, x: Tensor) -> dict[str, ObjectiveOutput]:
        """Every player's loss from one forward pass. Each loss's gradient is meant for its own
        player's parameters only (the method backpropagates it with ``inputs=`` those): the
        discriminator's loss, for one, reaches the decoder through ``x~`` and ``x_p``."""
        n = x.shape[0]
        q = model.q(x)
        # one decoder pass for x~ and x_p, one discriminator pass for x, x~ and x_p: batch norm then
        # normalises data and fakes alike (in separate batches, a batch of near-identical
        # reconstructions normalises to near-zero features whatever its content)
        x_rec, x_prior = model.decode(torch.cat([q.rsample(), model.prior().sample((n,))])).split(n)
        f, d = model.discriminator.features_and_logit(torch.cat([x, x_rec, x_prior]))
        (f_real, f_rec, _), (d_real, d_rec, d_prior) = f.split(n), d.split(n)
        feature_nll = -Independent(Normal(f_rec, 1.0), 1).log_prob(f_real.detach())
        kl = kl_divergence(q, model.prior())
        # the fakes the discriminator sees: prior samples, and reconstructions if asked
        d_fake = torch.cat([d_rec, d_prior]) if self.discriminate_reconstructions else d_prior
        gan = -log_d(d_fake, True).view(-1, n).sum(0)
        real, fake_xent = -log_d(d_real, True), -log_d(d_fake, False)
        dis_loss = real + fake_xent.view(-1, n).sum(0)
        terms = {"kl": kl.mean().detach(), "feature_nll": feature_nll.mean().detach(), "gan": gan.mean().detach(),
                 "real_xent": real.mean().detach(), "fake_xent": fake_xent.mean().detach()}
        out = {}
        for player, per_example in (("encoder", kl + feature_nll), ("decoder", self.gamma * feature_nll + gan),
                                    ("discriminator", dis_loss)):
            loss = per_example.mean()
            out[player] = ObjectiveOutput(loss=loss, bound=per_example.detach(),
                                          terms={**terms, f"{player}_loss": loss.detach()})
        return out

    def updates(self, out: dict[str, ObjectiveOutput]) -> tuple[str, ...]:
        """The players to step this time, by the balancing rule."""
        if self.margin is None:
            return self.players
        terms = out["discriminator"].terms
        real, fake = float(terms["real_xent"]), float(terms["fake_xent"])
        train_dis = not (real < self.equilibrium - self.margin or fake < self.equilibrium - self.margin)
        train_dec = not (real > self.equilibrium + self.margin or fake > self.equilibrium + self.margin)
        if not (train_dis or train_dec):
            train_dis = train_dec = True
        return tuple(p for p, on in (("encoder", True), ("decoder", train_dec), ("discriminator", train_dis)) if on)

    def forward(self, model: nn.Module, x: Tensor, player: str) -> ObjectiveOutput:
        return self.losses(model, x)[player]
