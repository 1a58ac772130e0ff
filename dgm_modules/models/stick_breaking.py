"""Truncated stick-breaking (GEM) weights, shared by the nonparametric-prior models.

Sethuraman (1994): with fractions ``v_k ~ Beta(1, alpha0)``, ``pi_k = v_k prod_{j<k} (1 - v_j)`` are
the weights of a Dirichlet process. Truncated at ``T`` weights, ``T - 1`` fractions are drawn and the
last weight is the stick left over, so the ``T`` weights sum to exactly 1.
"""
from __future__ import annotations

import torch
from torch import Tensor


def check_nonparametric_options(alpha0: float, truncation: int, option: str = "model") -> None:
    """Refuse a concentration ``alpha0 <= 0`` or a truncation below 2, naming the option."""
    if not alpha0 > 0:  # also refuses NaN
        raise ValueError(f"{option}.alpha0 must be > 0, got {alpha0:g}")
    if truncation < 2:
        raise ValueError(f"{option}.truncation must be >= 2, got {truncation}")


def stick_breaking_weights(v: Tensor) -> tuple[Tensor, Tensor]:
    """Break a unit stick at fractions ``v [..., K]``; return ``(pi [..., K], remainder [...])``.

    ``pi_k = v_k prod_{j<k} (1 - v_j)`` and ``remainder = prod_j (1 - v_j)``, so
    ``pi.sum(-1) + remainder == 1`` with every term non-negative for ``v`` in [0, 1].
    """
    left = torch.cumprod(1 - v, dim=-1)  # stick left after each break
    before = torch.cat([torch.ones_like(left[..., :1]), left[..., :-1]], dim=-1)
    return v * before, left[..., -1]


def truncated_weights(v: Tensor) -> Tensor:
    """The ``K + 1`` weights of a truncation at ``T = K + 1``: ``pi`` with the remainder appended."""
    pi, rest = stick_breaking_weights(v)
    return torch.cat([pi, rest.unsqueeze(-1)], dim=-1)
