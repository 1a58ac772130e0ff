"""A Kumaraswamy distribution whose samples, densities and gradients stay finite in float32.

``torch.distributions.Kumaraswamy`` samples and scores through a chain of power transforms. In
float32, ``u^(1/b)`` and ``v^a`` round to exactly 1 for large ``b`` or small ``a``, which gives
``v = 0`` or ``log q = inf`` and NaN gradients (a stick-breaking VAE hits this within an epoch on
MNIST). This subclass keeps the same parameters, moments and KL, and works in log space:

- ``rsample``: ``log v = log(1 - exp(log(u) / b)) / a`` with ``log(1 - exp(t)) = log(-expm1(t))``;
- ``log_prob``: ``log a + log b + (a - 1) log v + (b - 1) log(1 - exp(a log v))``.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Kumaraswamy


def log1mexp(t: Tensor) -> Tensor:
    """``log(1 - exp(t))`` for ``t <= 0``, floored at the smallest normal number so ``t = 0`` stays finite."""
    return torch.log((-torch.expm1(t)).clamp_min(torch.finfo(t.dtype).tiny))


class StableKumaraswamy(Kumaraswamy):
    """``Kumaraswamy(concentration1=a, concentration0=b)`` sampled and scored in log space."""

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        a, b = self.concentration1, self.concentration0
        shape = self._extended_shape(torch.Size(sample_shape))
        u = torch.rand(shape, dtype=a.dtype, device=a.device).clamp_min(torch.finfo(a.dtype).tiny)
        return (log1mexp(u.log() / b) / a).exp()

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        a, b = self.concentration1, self.concentration0
        log_v = value.log()
        return a.log() + b.log() + (a - 1) * log_v + (b - 1) * log1mexp(a * log_v)
