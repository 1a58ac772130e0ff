"""Pure functions on log-weights ``log w = log p(x, z) - log q(z | x)`` of shape ``[k, batch]``.

Objectives, metrics and tests all call these, so the maths exists once.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """Numerically stable ``log(mean(exp(x)))`` along ``dim``."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def iwae_bound(log_weights: Tensor) -> Tensor:
    """``L_k = log (1/k) sum_i w_i`` per example: ``[k, B] -> [B]`` (Burda et al. 2016, eq. 8)."""
    return log_mean_exp(log_weights, 0)


def elbo_estimate(log_weights: Tensor) -> Tensor:
    """Monte Carlo ELBO ``(1/k) sum_i log w_i`` per example: ``[k, B] -> [B]``."""
    return log_weights.mean(0)


def self_normalized_weights(log_weights: Tensor) -> Tensor:
    """``w_i / sum_j w_j`` along the sample dimension: ``[k, B] -> [k, B]``."""
    return torch.softmax(log_weights, 0)


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """Kish's effective sample size ``1 / sum_i wbar_i^2`` per example: ``[k, B] -> [B]``."""
    return 1.0 / self_normalized_weights(log_weights).pow(2).sum(0)


def vimco_leave_one_out(log_weights: Tensor) -> Tensor:
    """VIMCO's per-sample learning signals ``L_hat - L_hat_{-j}`` (Mnih & Rezende 2016, eqs. 8-10).

    ``L_hat_{-j}`` is the bound with ``log w_j`` replaced by the mean of the other ``k - 1``
    log-weights (their geometric mean), a baseline that does not depend on ``z_j``.

    Args:
        log_weights: ``[k, B]`` with ``k >= 2``.

    Returns:
        ``[k, B]``, detached.
    """
    k = log_weights.shape[0]
    if k < 2:
        raise ValueError(f"VIMCO needs k >= 2 samples, got {k}")
    lw = log_weights.detach()
    others_mean = (lw.sum(0, keepdim=True) - lw) / (k - 1)  # [k, B]: mean of log w_i, i != j
    # row j of `loo` is the log-weights with entry j replaced by others_mean[j]
    eye = torch.eye(k, dtype=torch.bool, device=lw.device).unsqueeze(-1)  # [k, k, 1]
    loo = torch.where(eye, others_mean.unsqueeze(1), lw.unsqueeze(0))  # [k(j), k(i), B]
    return iwae_bound(lw) - log_mean_exp(loo, 1)
