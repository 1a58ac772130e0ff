"""Models with a discriminator: the GAN (Goodfellow et al. 2014) and the VAE-GAN (Larsen et al. 2016).

A GAN is an implicit model: a prior, a generator and the critic that trains it; it has no
likelihood, so it is scored by FID/KID only. The VAE-GAN is the Gaussian VAE with a
discriminator handed to it as a likelihood surrogate; its pixel decoder still defines the
Bernoulli likelihood that the shared L_k evaluation scores.
"""
from __future__ import annotations

from typing import ClassVar, Literal, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.models.gaussian_vae import GaussianVAE
from dgm_modules.networks.gan_nets import make_discriminator, make_generator
from dgm_modules.networks.vaegan_nets import ConvDecoder, ConvDiscriminator, ConvEncoder
from dgm_modules.registry import MODELS

Arch = Literal["mlp", "dcgan"]


def _check(latent_dim: int, hidden: Sequence[int], channels: int, dropout: float = 0.0) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.discriminator_dropout must be in [0, 1), got {dropout}")
    if latent_dim < 1:
        raise ValueError(f"model.latent_dim must be >= 1, got {latent_dim}")
    if not hidden or any(h < 1 for h in hidden):
        raise ValueError(f"model.hidden must be a non-empty list of widths >= 1, got {list(hidden)}")
    if channels < 1:
        raise ValueError(f"model.channels must be >= 1, got {channels}")


@MODELS.register("gan")
class GAN(nn.Module):
    """``x = G(z)``, ``z ~ N(0, I)``, with a discriminator ``D(x)`` returning a logit.

    Args:
        input_shape: shape of one image, injected from the data.
        latent_dim: dimension of ``z``.
        hidden: widths of the MLP generator (the discriminator mirrors them).
        arch: ``mlp`` or ``dcgan`` (conv nets; H and W divisible by 4).
        channels: width of the DCGAN conv layers.
        discriminator_dropout: dropout after each hidden layer of the MLP discriminator.
    """

    latent_kind: ClassVar[LatentKind] = LatentKind.IMPLICIT

    def __init__(self, input_shape: tuple[int, ...], latent_dim: int = 64, hidden: Sequence[int] = (256, 256),
                 arch: Arch = "mlp", channels: int = 64, discriminator_dropout: float = 0.0) -> None:
        super().__init__()
        _check(latent_dim, hidden, channels, discriminator_dropout)
        self.input_shape, self.latent_dim = tuple(input_shape), latent_dim
        self.generator = make_generator(arch, latent_dim, hidden, self.input_shape, channels)
        self.discriminator = make_discriminator(arch, list(reversed(hidden)), self.input_shape, channels,
                                                discriminator_dropout)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def prior(self) -> Independent:
        zero = self._zero.expand(self.latent_dim)
        return Independent(Normal(zero, zero + 1.0, validate_args=False), 1)

    def generate(self, n: int) -> Tensor:
        """``n`` images ``G(z)`` with gradients to the generator."""
        return self.generator(self.prior().sample((n,)))

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        was_training = self.generator.training
        self.generator.eval()  # batch-norm running statistics, as at test time
        x = self.generate(n)
        self.generator.train(was_training)
        return x


@MODELS.register("vae-gan")
class VAEGAN(GaussianVAE):
    """The Gaussian VAE with Larsen et al.'s (2016) conv encoder, decoder and discriminator, whose
    ``features`` layer measures reconstructions (:mod:`dgm_modules.networks.vaegan_nets`).

    The decoder's pixel logits still define the Bernoulli likelihood that the shared L_k
    evaluation scores. (An MLP version with a 200-unit discriminator layer did not train: its
    feature term was worth 0.16 nats an image at initialisation, so the encoder's KL collapsed and
    every reconstruction was the same digit, FID 774 on MNIST; see results/sample-quality-mnist.)

    Args:
        input_shape: shape of one image (H and W divisible by 4), injected from the data.
        latent_dim: dimension of ``z``.
        channels: the width ``c`` of the conv nets: the paper's 64 (encoder 64-128-256, decoder
            256-128-64, discriminator 32-128-256 then 512 units); smaller for a CPU budget.
        likelihood, obs_sigma: as :class:`GaussianVAE` (``gaussian`` scores continuous data).
    """

    def __init__(self, input_shape: tuple[int, ...], latent_dim: int = 50, channels: int = 64,
                 likelihood: str = "bernoulli", obs_sigma: float = 0.1) -> None:
        LatentVariableModel.__init__(self, input_shape)  # GaussianVAE's q, prior and likelihood; these nets
        if latent_dim < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {latent_dim}")
        if channels < 1:
            raise ValueError(f"model.channels must be >= 1, got {channels}")
        if likelihood not in self.likelihoods:
            raise ValueError(f"model.likelihood must be one of {list(self.likelihoods)}, got {likelihood!r}")
        if isinstance(obs_sigma, bool) or not isinstance(obs_sigma, (int, float)) or not obs_sigma > 0:
            raise ValueError(f"model.obs_sigma must be a number > 0, got {obs_sigma!r}")
        self.latent_dim = latent_dim
        self.likelihood_kind, self.obs_sigma = likelihood, float(obs_sigma)
        self.inference = ConvEncoder(self.input_shape, 2 * latent_dim, channels)
        self.generative = ConvDecoder(latent_dim, self.input_shape, channels)
        self.discriminator = ConvDiscriminator(self.input_shape, channels)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def decode(self, z: Tensor) -> Tensor:
        """The decoder's mean image (Bernoulli probabilities or Gaussian means), ``[B, *input_shape]``."""
        return self.likelihood(z).mean.view(-1, *self.input_shape)

