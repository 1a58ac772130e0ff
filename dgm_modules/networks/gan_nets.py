"""Generators and discriminators: MLPs (Goodfellow et al. 2014) and DCGAN-style conv nets
(Radford et al. 2016). Generators output pixel intensities in [0, 1]; discriminators output a
logit and expose ``features(x)``, the layer in which the VAE-GAN measures reconstructions.
"""
from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn



class MLPGenerator(nn.Module):
    """Linear -> batch norm -> leaky ReLU per hidden layer (batch norm as in DCGAN's generator:
    without it this MLP collapsed to one image within an epoch on MNIST), sigmoid output."""

    def __init__(self, latent_dim: int, hidden: Sequence[int], out_shape: Sequence[int]) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        layers: list[nn.Module] = []
        for a, b in zip([latent_dim, *hidden[:-1]], hidden):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Linear(hidden[-1], math.prod(out_shape)))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).sigmoid().view(-1, *self.out_shape)


class MLPDiscriminator(nn.Module):
    """Leaky-ReLU MLP; ``dropout`` after each hidden layer (Goodfellow et al. 2014 regularised D
    with dropout, which keeps it from winning outright against a small generator)."""

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip([math.prod(in_shape), *hidden[:-1]], hidden):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)] + ([nn.Dropout(dropout)] if dropout else [])
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden[-1], 1)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(-1)


def _check_conv_shape(shape: Sequence[int]) -> None:
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"model.arch='dcgan' needs images (C, H, W) with H and W divisible by 4, got {tuple(shape)}")


class DCGANGenerator(nn.Module):
    """``z -> (2c, H/4, W/4) -> (c, H/2, W/2) -> (C, H, W)`` with transposed convs and batch norm."""

    def __init__(self, latent_dim: int, out_shape: Sequence[int], channels: int = 64) -> None:
        super().__init__()
        _check_conv_shape(out_shape)
        c_out, h, w = out_shape
        self.start = (2 * channels, h // 4, w // 4)
        self.project = nn.Sequential(nn.Linear(latent_dim, math.prod(self.start)),
                                     nn.BatchNorm1d(math.prod(self.start)), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.ConvTranspose2d(channels, c_out, 4, 2, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.project(z).view(-1, *self.start)).sigmoid()


class DCGANDiscriminator(nn.Module):
    """Two stride-2 convs with leaky ReLUs (no batch norm: the VAE-GAN compares single images)."""

    def __init__(self, in_shape: Sequence[int], channels: int = 64) -> None:
        super().__init__()
        _check_conv_shape(in_shape)
        c_in, h, w = in_shape
        self.body = nn.Sequential(
            nn.Conv2d(c_in, channels, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten())
        self.head = nn.Linear(2 * channels * (h // 4) * (w // 4), 1)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(-1)


def make_generator(arch: str, latent_dim: int, hidden: Sequence[int], shape: Sequence[int], channels: int) -> nn.Module:
    return DCGANGenerator(latent_dim, shape, channels) if arch == "dcgan" else MLPGenerator(latent_dim, hidden, shape)


def make_discriminator(arch: str, hidden: Sequence[int], shape: Sequence[int], channels: int,
                       dropout: float = 0.0) -> nn.Module:
    return DCGANDiscriminator(shape, channels) if arch == "dcgan" else MLPDiscriminator(shape, hidden, dropout)
