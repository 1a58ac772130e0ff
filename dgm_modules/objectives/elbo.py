"""The evidence lower bound with reparameterised gradients (Kingma & Welling 2014)."""
from __future__ import annotations

from torch import Tensor

from dgm_modules.models.base import LatentVariableModel
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.base import Objective, ObjectiveOutput


class ELBO(Objective):
    """``E_q[log p(x, z) - log q(z | x)]``, one reparameterised sample per example.

    Args:
        analytic_kl: use the closed-form KL term where the model has one (lower variance);
            otherwise the single-sample Monte Carlo estimate of the whole bound.
    """

    supported_latents = frozenset({"continuous-reparam", "relaxed"})

    def __init__(self, analytic_kl: bool = True) -> None:
        super().__init__()
        self.analytic_kl = analytic_kl

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        bound = model.analytic_elbo(x) if self.analytic_kl else None
        log_weights = None
        if bound is None:
            log_weights = model.log_weights(x, 1, reparam=True)
            bound = F.elbo_estimate(log_weights)
        return ObjectiveOutput(loss=-bound.mean(), bound=bound.detach(),
                               log_weights=None if log_weights is None else log_weights.detach())
