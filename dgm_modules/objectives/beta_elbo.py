"""The beta-VAE objective (Higgins et al. 2017): the ELBO with its KL term weighted by ``beta``."""
from __future__ import annotations

from torch import Tensor
from torch.distributions import kl_divergence

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.models.capabilities import ExplicitLatent
from dgm_modules.objectives.base import Objective, ObjectiveOutput
from dgm_modules.registry import OBJECTIVES


@OBJECTIVES.register("beta-elbo")
class BetaELBO(Objective):
    """``E_q[log p(x | z)] - beta * KL(q(z | x) || p(z))``, one reparameterised sample per example.

    ``beta = 1`` is the ELBO (exactly ``elbo``'s analytic-KL estimate); ``beta > 1`` is a looser
    lower bound on ``log p(x)`` that trades reconstruction for a posterior closer to the prior.
    ``terms`` hold ``recon`` and ``kl`` (means over the batch). The KL is in closed form where
    torch.distributions has one, else the single-sample estimate ``log q(z | x) - log p(z)``.

    Args:
        beta: weight of the KL term (>= 0; a lower bound on log p(x) for beta >= 1).
    """

    supported_latents = frozenset({LatentKind.CONTINUOUS})

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if not beta >= 0:
            raise ValueError(f"objective.beta must be >= 0, got {beta}")
        self.beta = beta

    def check_model(self, model: LatentVariableModel) -> None:
        super().check_model(model)
        if not isinstance(model, ExplicitLatent):
            raise ValueError(f"objective 'beta-elbo' needs a model with q(x), prior() and likelihood(z) "
                             f"(e.g. gaussian-vae); {type(model).__name__} has not")

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        q, prior = model.q(x), model.prior()
        z = q.rsample()
        recon = model.likelihood(z).log_prob(x.flatten(1))
        try:
            kl = kl_divergence(q, prior)
        except NotImplementedError:  # e.g. a mixture prior: Monte Carlo at the same sample
            kl = q.log_prob(z) - prior.log_prob(z)
        bound = recon - self.beta * kl
        return ObjectiveOutput(loss=-bound.mean(), bound=bound.detach(),
                               terms={"recon": recon.mean().detach(), "kl": kl.mean().detach()})
