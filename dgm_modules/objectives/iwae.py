"""The importance-weighted bound L_k (Burda, Grosse & Salakhutdinov 2016)."""
from __future__ import annotations

from torch import Tensor

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.base import GradvarDefault, Objective, ObjectiveOutput
from dgm_modules.registry import OBJECTIVES, check_k


@OBJECTIVES.register("iwae")
class IWAEBound(Objective):
    """``L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)]`` with reparameterised gradients.

    Training a VAE with this objective is what the literature calls the IWAE; ``k = 1`` is the
    Monte Carlo ELBO.

    Args:
        k: number of importance samples per example (>= 1).
    """

    supported_latents = frozenset({LatentKind.CONTINUOUS, LatentKind.RELAXED})
    gradvar_defaults = tuple(GradvarDefault("vae", 4 + i, f"iwae-k{k}", {"k": k}) for i, k in enumerate((1, 5, 50)))

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        check_k(k, "objective.k")
        self.k = k

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        log_weights = model.log_weights(x, self.k, reparam=True)
        bound = F.iwae_bound(log_weights)
        return ObjectiveOutput(loss=-bound.mean(), bound=bound.detach(), log_weights=log_weights.detach())
