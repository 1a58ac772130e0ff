"""KL divergence from a Kumaraswamy to a Beta distribution (Nalisnick & Smyth 2017, eq. 12).

``KL(Kuma(a, b) || Beta(alpha, beta))`` has no closed form: ``E_q[log(1 - v)]`` is the series
``-b sum_{m>=1} B(m/a, b) / (m + a b)``. The paper truncates it at 10 terms. The terms decay like
``m^(-1-b)``, so the truncation error shrinks like ``M^(-b)`` and is not small when ``b < 1``; this is why
the function takes the number of terms and is *not* registered with ``torch.distributions.kl.register_kl``
(which would fix a truncation silently). The truncated sum underestimates the KL when ``beta > 1``.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions.utils import euler_constant

#: the paper's truncation of the series
PAPER_TERMS = 10


def log_beta_function(x: Tensor, y: Tensor) -> Tensor:
    """``log B(x, y) = lgamma(x) + lgamma(y) - lgamma(x + y)``."""
    return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)


def kl_kumaraswamy_beta(a: Tensor, b: Tensor, alpha: Tensor | float, beta: Tensor | float,
                        terms: int = PAPER_TERMS) -> Tensor:
    """``KL(Kumaraswamy(a, b) || Beta(alpha, beta))``, elementwise (broadcast).

    Args:
        a, b: Kumaraswamy concentrations (``concentration1``, ``concentration0``), > 0.
        alpha, beta: Beta concentrations, > 0.
        terms: number of terms ``M`` of the series for ``E_q[log(1 - v)]`` (>= 1).
    """
    if terms < 1:
        raise ValueError(f"model.kl_terms must be >= 1, got {terms}")
    alpha = torch.as_tensor(alpha, dtype=a.dtype, device=a.device)
    beta = torch.as_tensor(beta, dtype=a.dtype, device=a.device)
    m = torch.arange(1, terms + 1, dtype=a.dtype, device=a.device)
    a_, b_ = a.unsqueeze(-1), b.unsqueeze(-1)
    # sum_m B(m/a, b) / (m + a b), in log space for the Beta function
    series = (log_beta_function(m / a_, b_).exp() / (m + a_ * b_)).sum(-1)
    # E_q[log v] = (-gamma - digamma(b) - 1/b) / a
    e_log_v = (-euler_constant - torch.digamma(b) - b.reciprocal()) / a
    return ((a - alpha) * e_log_v + torch.log(a * b) + log_beta_function(alpha, beta)
            - (b - 1) / b + (beta - 1) * b * series)
