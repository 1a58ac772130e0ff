"""The evidence lower bound with reparameterised gradients (Kingma & Welling 2014)."""
from __future__ import annotations

from torch import Tensor

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.base import GradvarDefault, Objective, ObjectiveOutput
from dgm_modules.objectives.wake_sleep import check_sleep_capable, sleep_phi_loss
from dgm_modules.registry import OBJECTIVES, check_k


@OBJECTIVES.register("elbo")
class ELBO(Objective):
    """``E_q[log p(x, z) - log q(z | x)]``, ``k`` reparameterised samples per example (default 1).

    ``k > 1`` averages ``k`` single-sample estimates: the same bound with a lower-variance gradient
    (the "VAE, k samples" rows of Burda et al. 2016, Table 1), unlike ``iwae``'s tighter bound.

    With ``sleep_weight > 0`` the inference network also takes a sleep-phase update: phi ascends
    ``sleep_weight * log q(z | x)`` on dreamed ``(x, z) ~ p(x, z)`` (the VAE / wake-sleep
    combination discussed by Hu et al. 2017); ``terms`` then holds ``elbo`` and ``sleep_phi``,
    which sum to ``loss``.

    Args:
        analytic_kl: use the closed-form KL term where the model has one (lower variance);
            otherwise the single-sample Monte Carlo estimate of the whole bound.
        sleep_weight: weight of the sleep-phase term (>= 0; 0 is the plain ELBO).
        k: samples per example averaged in the estimate (>= 1).
    """

    supported_latents = frozenset({LatentKind.CONTINUOUS, LatentKind.RELAXED})
    gradvar_defaults = (
        GradvarDefault("vae", 0, "reparam", {"analytic_kl": False}),
        GradvarDefault("vae", 1, "reparam-analytic-kl", {"analytic_kl": True}),
        # a fixed temperature: the same at every measurement
        *(GradvarDefault("sbn", 3 + i, label, None, {"relaxation": relaxation, "temperature": 0.5, "anneal_rate": 0.0})
          for i, (label, relaxation) in enumerate([("gumbel-softmax", "concrete"),
                                                   ("straight-through", "straight-through")])),
    )

    def __init__(self, analytic_kl: bool = True, sleep_weight: float = 0.0, k: int = 1) -> None:
        super().__init__()
        if sleep_weight < 0:
            raise ValueError(f"objective.sleep_weight must be >= 0, got {sleep_weight}")
        check_k(k, "objective.k")
        self.analytic_kl, self.sleep_weight, self.k = analytic_kl, sleep_weight, k

    def check_model(self, model: LatentVariableModel) -> None:
        super().check_model(model)
        if self.sleep_weight > 0:
            check_sleep_capable(model, "objective elbo (sleep_weight > 0)")

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        bound = self._analytic(model, x) if self.analytic_kl else None
        log_weights = None
        if bound is None:
            log_weights = model.log_weights(x, self.k, reparam=True)
            bound = F.elbo_estimate(log_weights)
        loss, terms = -bound.mean(), {}
        if self.sleep_weight > 0:
            sleep_phi = self.sleep_weight * sleep_phi_loss(model, x.shape[0])
            terms = {"elbo": loss.detach(), "sleep_phi": sleep_phi.detach()}
            loss = loss + sleep_phi
        return ObjectiveOutput(loss=loss, bound=bound.detach(), terms=terms,
                               log_weights=None if log_weights is None else log_weights.detach())

    def _analytic(self, model: LatentVariableModel, x: Tensor) -> Tensor | None:
        if self.k == 1:
            return model.analytic_elbo(x)
        # k copies of the batch: every model's analytic_elbo draws one sample per row
        bound = model.analytic_elbo(x.repeat(self.k, *([1] * (x.dim() - 1))))
        return None if bound is None else bound.view(self.k, x.shape[0]).mean(0)
