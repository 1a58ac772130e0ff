"""The conv encoder, decoder and discriminator of the VAE-GAN (Larsen et al. 2016, appendix),
adapted from 64x64 colour faces to 28x28 (and 8x8) grey-level images.

The paper's nets, with ``c`` its width (64 there): encoder three 5x5 stride-2 convs of c, 2c, 4c
channels with batch norm and ReLU, then a linear layer to ``(mu, log sigma)``; decoder a linear
layer to ``(4c, H/4, W/4)``, two 5x5 stride-2 transposed convs (2c, c) with batch norm and ReLU,
and a 5x5 conv to the pixel logits; discriminator a 5x5 conv of c/2 channels with ReLU, two 5x5
stride-2 convs (2c, 4c) with batch norm and ReLU -- the last is the layer ``l`` whose activations
measure reconstructions -- then a linear layer of 8c units (512 for c = 64) and the logit. The paper
has one more down/upsampling stage and a 2048-unit encoder layer, which 28x28 images do not need.

The encoder and decoder take and return flat vectors, so that they slot into
:class:`~dgm_modules.models.gaussian_vae.GaussianVAE` (which flattens images and evaluates the
decoder on ``[k, B, latent]`` latents) in place of its MLPs.
"""
from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn


def check_conv_shape(shape: Sequence[int], option: str = "model.arch='conv'") -> None:
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"{option} needs images (C, H, W) with H and W divisible by 4, got {tuple(shape)}")


def _down(a: int, b: int, stride: int = 2, norm: bool = True) -> list[nn.Module]:
    """5x5 conv (H -> ceil(H / stride)), optional batch norm, ReLU."""
    return [nn.Conv2d(a, b, 5, stride, 2, bias=not norm), *([nn.BatchNorm2d(b)] if norm else []), nn.ReLU()]


class ConvEncoder(nn.Module):
    """Flat image ``[..., C*H*W]`` -> ``[..., out_features]`` (``(mu, log sigma)`` side by side)."""

    def __init__(self, in_shape: Sequence[int], out_features: int, channels: int = 64) -> None:
        super().__init__()
        check_conv_shape(in_shape)
        self.in_shape = tuple(in_shape)
        c, h, w = self.in_shape
        self.body = nn.Sequential(*_down(c, channels), *_down(channels, 2 * channels),
                                  *_down(2 * channels, 4 * channels), nn.Flatten())
        side = lambda n: math.ceil(n / 8)  # noqa: E731 -- three stride-2 convs
        self.head = nn.Linear(4 * channels * side(h) * side(w), out_features)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        return self.head(self.body(x.reshape(-1, *self.in_shape))).view(*lead, -1)


class ConvDecoder(nn.Module):
    """Latents ``[..., latent_dim]`` -> flat pixel logits ``[..., C*H*W]``."""

    def __init__(self, latent_dim: int, out_shape: Sequence[int], channels: int = 64) -> None:
        super().__init__()
        check_conv_shape(out_shape)
        c_out, h, w = out_shape
        self.start = (4 * channels, h // 4, w // 4)
        self.project = nn.Sequential(nn.Linear(latent_dim, math.prod(self.start), bias=False),
                                     nn.BatchNorm1d(math.prod(self.start)), nn.ReLU())

        def up(a: int, b: int) -> list[nn.Module]:  # 5x5 transposed conv, H -> 2H
            return [nn.ConvTranspose2d(a, b, 5, 2, 2, output_padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]

        self.net = nn.Sequential(*up(4 * channels, 2 * channels), *up(2 * channels, channels),
                                 nn.Conv2d(channels, c_out, 5, 1, 2), nn.Flatten())

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        h = self.project(z.reshape(-1, z.shape[-1])).view(-1, *self.start)
        return self.net(h).view(*lead, -1)


class ConvDiscriminator(nn.Module):
    """Image -> logit of "real"; ``features(x)`` is the third conv layer (the paper's ``Dis_l``)."""

    def __init__(self, in_shape: Sequence[int], channels: int = 64) -> None:
        super().__init__()
        check_conv_shape(in_shape)
        c, h, w = in_shape
        self.body = nn.Sequential(*_down(c, max(1, channels // 2), stride=1, norm=False),
                                  *_down(max(1, channels // 2), 2 * channels),
                                  *_down(2 * channels, 4 * channels), nn.Flatten())
        width = 8 * channels
        self.head = nn.Sequential(nn.Linear(4 * channels * (h // 4) * (w // 4), width, bias=False),
                                  nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 1))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def features_and_logit(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.body(x)
        return f, self.head(f).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.features_and_logit(x)[1]
