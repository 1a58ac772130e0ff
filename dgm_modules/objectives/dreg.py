"""Doubly-reparameterised gradients of the importance-weighted bound (Tucker, Lawson, Gu & Maddison 2019)."""
from __future__ import annotations

from torch import Tensor

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.base import Objective, ObjectiveOutput
from dgm_modules.objectives.stop_gradient import check_scores_latents, log_joint_path, log_q_path
from dgm_modules.registry import OBJECTIVES, check_k


@OBJECTIVES.register("dreg")
class DReG(Objective):
    """``L_k`` trained with the DReG estimator for the inference network.

    theta gets the usual IWAE gradient ``sum_i wbar_i grad_theta log p(x, z_i)``. phi gets
    ``sum_i c_i (d log w_i / d z_i) (d z_i / d phi)`` with q's parameters held fixed inside
    ``log w_i`` and ``c_i`` from :func:`~dgm_modules.objectives.functional.dreg_phi_weights`:
    ``alpha = 0`` gives IWAE-DReG (``c = wbar^2``; unbiased for ``grad_phi L_k``, and its
    signal-to-noise ratio grows with ``k`` where the plain IWAE gradient's falls), ``alpha = 1``
    RWS-DReG (``c = wbar - wbar^2``; unbiased for reweighted wake-sleep's wake-phi update),
    values between the paper's DReG(alpha). With ``k = 1`` and ``alpha = 0`` it is STL.

    The two parts are two evaluations of ``log p``: at detached samples (theta's part) and with
    theta held fixed (phi's path through ``z``), so a step costs one more decoder pass than IWAE's.
    ``bound`` is ``L_k``; ``loss`` equals ``-L_k`` in value.

    Args:
        k: importance samples per example (>= 1).
        alpha: the phi estimator, in [0, 1]: 0 IWAE-DReG, 1 RWS-DReG.
    """

    supported_latents = frozenset({LatentKind.CONTINUOUS})

    def __init__(self, k: int = 5, alpha: float = 0.0) -> None:
        super().__init__()
        check_k(k, "objective.k")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"objective.alpha must be in [0, 1], got {alpha}")
        self.k, self.alpha = k, alpha

    def check_model(self, model: LatentVariableModel) -> None:
        super().check_model(model)
        check_scores_latents(model, "objective dreg")

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        z, log_q = model.sample_q(x, self.k, reparam=True)
        log_joint = model.log_joint(x, tuple(t.detach() for t in z))  # theta's part
        log_weights = (log_joint - log_q).detach()
        bound = F.iwae_bound(log_weights)
        theta_part = (F.self_normalized_weights(log_weights) * log_joint).sum(0)
        path_log_weights = log_joint_path(model, x, z) - log_q_path(model, x, z)  # phi's part
        phi_part = (F.dreg_phi_weights(log_weights, self.alpha) * path_log_weights).sum(0)
        # the parts carry the gradients and add nothing to the value
        surrogate = bound + (theta_part - theta_part.detach()) + (phi_part - phi_part.detach())
        return ObjectiveOutput(loss=-surrogate.mean(), bound=bound, log_weights=log_weights)
