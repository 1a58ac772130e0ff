"""Pure functions on log-weights ``log w = log p(x, z) - log q(z | x)`` of shape ``[k, batch]``.

Objectives, metrics and tests all call these, so the maths exists once.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm_modules.registry import check_k


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
    k = check_k(log_weights.shape[0], "objective.k", 2, " for VIMCO")
    lw = log_weights.detach()
    others_mean = (lw.sum(0, keepdim=True) - lw) / (k - 1)  # [k, B]: mean of log w_i, i != j
    # row j of `loo` is the log-weights with entry j replaced by others_mean[j]
    eye = torch.eye(k, dtype=torch.bool, device=lw.device).unsqueeze(-1)  # [k, k, 1]
    loo = torch.where(eye, others_mean.unsqueeze(1), lw.unsqueeze(0))  # [k(j), k(i), B]
    return iwae_bound(lw) - log_mean_exp(loo, 1)


def dreg_phi_weights(log_weights: Tensor, alpha: float = 0.0) -> Tensor:
    """Per-sample weights of DReG's inference-network gradient (Tucker, Lawson, Gu & Maddison 2019).

    The phi-gradient is ``sum_i c_i d log w_i / d z_i * d z_i / d phi`` (q's parameters held fixed
    inside ``log q``) with ``c_i = alpha * wbar_i + (1 - 2 alpha) * wbar_i^2``: ``alpha = 0`` is
    IWAE-DReG (``wbar^2``, the gradient of ``L_k``), ``alpha = 1`` is RWS-DReG (``wbar - wbar^2``,
    reweighted wake-sleep's wake-phi update), values between interpolate as the paper's DReG(alpha).

    Args:
        log_weights: ``[k, B]``.
        alpha: in [0, 1].

    Returns:
        ``[k, B]``, detached.
    """
    wbar = self_normalized_weights(log_weights.detach())
    return alpha * wbar + (1.0 - 2.0 * alpha) * wbar.square()


def arm_coefficients(f: Tensor, f_anti: Tensor, u: Tensor) -> Tensor:
    """ARM's estimate of ``d E[f(b)] / d logits`` for ``b ~ Bernoulli(sigmoid(logits))`` (Yin & Zhou 2019).

    With ``b = 1[u < sigmoid(a)]`` and its antithetic ``b~ = 1[1 - u < sigmoid(a)]``, the estimate is
    ``(f(b~) - f(b)) (u - 1/2)`` per unit.

    Args:
        f: ``f(b)``, ``[k, B]``.
        f_anti: ``f(b~)``, ``[k, B]``.
        u: the uniforms, ``[k, B, units]``.

    Returns:
        ``[k, B, units]``.
    """
    return (f_anti - f).unsqueeze(-1) * (u - 0.5)


def disarm_coefficients(f: Tensor, f_anti: Tensor, b: Tensor, b_anti: Tensor, logits: Tensor) -> Tensor:
    """DisARM's estimate of the same gradient (Dong, Mnih & Tucker 2020): ARM with the
    uniform integrated out given the pair, ``1/2 (f(b) - f(b~)) (-1)^{b~} 1[b != b~] sigmoid(|a|)``.

    Args:
        f: ``f(b)``, ``[k, B]``.
        f_anti: ``f(b~)``, ``[k, B]``.
        b: ``[k, B, units]``.
        b_anti: ``[k, B, units]``.
        logits: ``a``, ``[k, B, units]``.

    Returns:
        ``[k, B, units]``.
    """
    sign = 1.0 - 2.0 * b_anti  # (-1)^{b~}
    return 0.5 * (f - f_anti).unsqueeze(-1) * sign * (b != b_anti).to(f.dtype) * torch.sigmoid(logits.abs())
