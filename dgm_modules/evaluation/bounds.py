"""Log-likelihood bounds over many samples in memory-bounded chunks.

``L_k`` for several ``k`` comes from one pass over ``max(k)`` samples: chunk boundaries are
aligned to each requested ``k``, and a running log-sum-exp carries the sum across chunks, so
``L_5000`` never materialises more than ``max_pairs`` (image, sample) pairs at once.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from dgm_modules.models.base import LatentVariableModel
from dgm_modules.registry import check_ks


@torch.no_grad()
def importance_weighted_bounds(model: LatentVariableModel, x: Tensor, ks: Sequence[int],
                               max_pairs: int = 4_096) -> dict[int, Tensor]:
    """``{k: L_k(x) [B]}`` with q as the proposal, for every ``k`` in ``ks``.

    Args:
        model: any :class:`LatentVariableModel`.
        x: a batch of images ``[B, ...]``.
        ks: the numbers of importance samples wanted; ``L_k`` uses the first ``k`` samples.
        max_pairs: at most this many (image, sample) pairs are evaluated at once, which bounds
            peak memory; images are split too when a batch alone exceeds it.
    """
    ks = check_ks(ks, "ks")
    if max_pairs < 1:
        raise ValueError(f"module.chunk_pairs must be >= 1, got {max_pairs}")
    if x.shape[0] > max_pairs:  # more images than the budget: one image slice at a time
        parts = [importance_weighted_bounds(model, xs, ks, max_pairs) for xs in x.split(max_pairs)]
        return {k: torch.cat([p[k] for p in parts]) for k in ks}
    per_chunk = max(1, max_pairs // x.shape[0])
    log_weights = model.importance_sampler(x)
    running: Tensor | None = None
    done, out = 0, {}
    for target in ks:
        while done < target:
            n = min(per_chunk, target - done)
            lse = torch.logsumexp(log_weights(n).double(), 0)
            running = lse if running is None else torch.logaddexp(running, lse)
            done += n
        out[target] = running - math.log(target)
    return out
