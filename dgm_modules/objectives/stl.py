"""Sticking the landing: the path-derivative ELBO gradient (Roeder, Wu & Duvenaud 2017)."""
from __future__ import annotations

from torch import Tensor

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.base import Objective, ObjectiveOutput
from dgm_modules.objectives.stop_gradient import check_scores_latents, log_q_path
from dgm_modules.registry import OBJECTIVES, check_k


@OBJECTIVES.register("stl")
class STL(Objective):
    """The reparameterised ELBO gradient without the score term of q.

    The total derivative of ``log p(x, z) - log q_phi(z | x)`` at ``z = g_phi(eps)`` has a path
    part (through ``z``) and a score part ``grad_phi log q_phi(z | x)`` at fixed ``z``, whose
    expectation is zero. STL drops the score part by holding q's parameters fixed inside
    ``log q`` (:func:`~dgm_modules.objectives.stop_gradient.log_q_path`); the estimate stays
    unbiased, and its variance vanishes as q reaches the exact posterior. theta gets the usual
    reparameterised gradient. ``bound`` is the Monte Carlo ELBO; ``loss`` is its negative.

    Args:
        k: reparameterised samples per example, averaged (the ELBO, not ``L_k``).
    """

    supported_latents = frozenset({LatentKind.CONTINUOUS})

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        check_k(k, "objective.k")
        self.k = k

    def check_model(self, model: LatentVariableModel) -> None:
        super().check_model(model)
        check_scores_latents(model, "objective stl")

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        z, log_q = model.sample_q(x, self.k, reparam=True)
        log_joint = model.log_joint(x, z)
        path_log_weights = log_joint - log_q_path(model, x, z)  # equal in value to log p - log q
        bound = F.elbo_estimate(path_log_weights)
        return ObjectiveOutput(loss=-bound.mean(), bound=bound.detach(),
                               log_weights=(log_joint - log_q).detach())
