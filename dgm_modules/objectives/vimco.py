"""VIMCO: variational inference for Monte Carlo objectives (Mnih & Rezende 2016)."""
from __future__ import annotations

from torch import Tensor

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.base import DISCRETE, GradvarDefault, Objective, ObjectiveOutput
from dgm_modules.objectives.wake_sleep import DISCRETE_OR_CONTINUOUS
from dgm_modules.registry import OBJECTIVES, check_k


@OBJECTIVES.register("vimco")
class VIMCO(Objective):
    """Unbiased gradients of ``L_k`` without reparameterisation, with leave-one-out baselines.

    ``grad L_k = sum_j wbar_j grad log w_j + sum_j (L_k - L_k^{-j}) grad_phi log q(z_j | x)``, where
    ``L_k^{-j}`` replaces ``log w_j`` by the mean of the other log-weights
    (:func:`~dgm_modules.objectives.functional.vimco_leave_one_out`). The first sum is the
    gradient of ``L_k`` at fixed samples; the loss adds the second as a surrogate.
    ``bound`` is ``L_k``.

    Args:
        k: samples per example (>= 2, the leave-one-out baseline needs another sample).
    """

    supported_latents = frozenset({LatentKind.BERNOULLI, LatentKind.CATEGORICAL, LatentKind.CONTINUOUS})
    gradvar_defaults = (GradvarDefault("sbn", 2, "vimco-k5", {"k": 5}, DISCRETE),)

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        check_k(k, "objective.k", 2, " for VIMCO")  # leave-one-out baselines need a second sample
        self.k = k

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        z, log_q = model.sample_q(x, self.k, reparam=False)
        log_weights = model.log_joint(x, z) - log_q
        bound = F.iwae_bound(log_weights)
        signals = F.vimco_leave_one_out(log_weights)
        surrogate = bound + (signals * log_q).sum(0)
        return ObjectiveOutput(loss=-surrogate.mean(), bound=bound.detach(), log_weights=log_weights.detach())
