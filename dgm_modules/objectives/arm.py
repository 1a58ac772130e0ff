"""ARM: the augment-REINFORCE-merge estimator for Bernoulli latents (Yin & Zhou 2019)."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Bernoulli

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.models.capabilities import LayeredDiscrete
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.base import Objective, ObjectiveOutput
from dgm_modules.registry import OBJECTIVES, check_k


def check_layered_bernoulli(model: LatentVariableModel, option: str) -> None:
    """Refuse a model without per-layer access to q's logits (``n_layers``, ``q_logits``)."""
    if not isinstance(model, LayeredDiscrete):
        raise ValueError(f"{option}: {type(model).__name__} does not expose q's per-layer logits "
                         "(n_layers, q_logits(x, z, layer)), which the antithetic estimators need")


@OBJECTIVES.register("arm")
class ARM(Objective):
    """The ELBO; phi's gradient by antithetic pairs of Bernoulli draws, one layer at a time.

    For layer ``t`` the layers below come from one draw of q, ``z_t`` from the pair
    ``b = 1[u < sigmoid(a)]``, ``b~ = 1[1 - u < sigmoid(a)]`` (``a`` the layer's logits given the
    layers below), and the layers above from q given each of the pair. With
    ``f = log p(x, z) - log q(z | x)`` at the two completed draws, the estimate of
    ``d E[f] / d a`` (:func:`~dgm_modules.objectives.functional.arm_coefficients`) enters phi through
    ``a``; summed over layers this is an unbiased estimate of ``grad_phi ELBO`` (the term
    ``E[grad_phi log q] = 0`` is dropped). One layer (the SBN of the papers) costs two evaluations
    of ``f``; ``L`` layers ``2L``. Every completed draw is a draw from q, so theta gets
    ``grad_theta log p(x, z)`` averaged over all ``2L`` of them (``k`` times), and ``bound`` is the
    mean of ``f`` over them (the ELBO estimate, also in ``log_weights``); ``loss`` equals ``-bound``
    in value.

    Args:
        k: independent antithetic pairs per example, averaged.
    """

    supported_latents = frozenset({LatentKind.BERNOULLI})

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        check_k(k, "objective.k")
        self.k = k

    def check_model(self, model: LatentVariableModel) -> None:
        super().check_model(model)
        check_layered_bernoulli(model, f"objective {type(self).__name__}")

    def coefficients(self, f: Tensor, f_anti: Tensor, u: Tensor, b: Tensor, b_anti: Tensor,
                     logits: Tensor) -> Tensor:
        """``d E[f] / d logits`` from one antithetic pair: ``[k, B, units]``."""
        return F.arm_coefficients(f, f_anti, u)

    def _pair(self, model: LatentVariableModel, x: Tensor, base: tuple[Tensor, ...],
              t: int) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
        """Logits of layer ``t`` (with phi's graph), the uniforms, and the two completed draws."""
        logits = model.q_logits(x, base, t)
        logits = logits.expand(self.k, *logits.shape) if t == 0 else logits
        u = torch.rand_like(logits)
        p = torch.sigmoid(logits.detach())
        b, b_anti = (u < p).to(u.dtype), (1.0 - u < p).to(u.dtype)
        pair = [torch.cat([z, z]) for z in base[:t]] + [torch.cat([b, b_anti])]
        with torch.no_grad():  # the layers above, drawn from q given each of the pair
            for layer in range(t + 1, model.n_layers):
                pair.append(Bernoulli(logits=model.q_logits(x, tuple(pair), layer), validate_args=False).sample())
        return logits, u, b, b_anti, pair

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        with torch.no_grad():
            base, _ = model.sample_q(x, self.k, reparam=False)
        draws = [self._pair(model, x, base, t) for t in range(model.n_layers)]
        z_all = tuple(torch.cat([d[4][l] for d in draws]) for l in range(model.n_layers))  # [2kL, B, ...]
        log_joint = model.log_joint(x, z_all)
        with torch.no_grad():
            f = (log_joint - model.log_q(x, z_all)).view(len(draws), 2, self.k, -1)  # [L, 2, k, B]
        phi_part = 0.0
        for (logits, u, b, b_anti, _), f_t in zip(draws, f):
            coef = self.coefficients(f_t[0], f_t[1], u, b, b_anti, logits.detach())
            phi_part = phi_part + (coef * (logits - logits.detach())).sum(-1).mean(0)  # [B], value 0
        theta_part = log_joint.mean(0)
        bound = f.flatten(0, 2).mean(0)
        surrogate = bound + (theta_part - theta_part.detach()) + phi_part
        return ObjectiveOutput(loss=-surrogate.mean(), bound=bound, log_weights=f.flatten(0, 2))
