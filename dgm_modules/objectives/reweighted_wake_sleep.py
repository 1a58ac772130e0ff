"""Reweighted wake-sleep (Bornschein & Bengio 2015)."""
from __future__ import annotations

import torch
from torch import Tensor

from dgm_modules.models.base import LatentVariableModel
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.base import DISCRETE, GradvarDefault, Objective, ObjectiveOutput
from dgm_modules.objectives.wake_sleep import DISCRETE_OR_CONTINUOUS, check_sleep_capable, sleep_phi_loss
from dgm_modules.registry import OBJECTIVES, check_k


@OBJECTIVES.register("rws")
class ReweightedWakeSleep(Objective):
    """Importance-weighted wake and sleep updates with ``k`` samples from ``q(z | x)``.

    With self-normalised weights ``wbar_i`` of ``w_i = p(x, z_i) / q(z_i | x)``:

    - wake-theta: ``sum_i wbar_i grad_theta log p(x, z_i)`` (the gradient of ``L_k`` in theta);
    - wake-phi: ``sum_i wbar_i grad_phi log q(z_i | x)`` (descends ``KL(p(z | x) || q(z | x))``);
    - sleep-phi: ``grad_phi log q(z | x)`` at dreamed ``(x, z) ~ p``.

    phi follows ``insomnia * wake-phi + (1 - insomnia) * sleep-phi`` (pyro's name for the mixture;
    Bornschein & Bengio found the even mixture and wake-phi alone best). The weights are detached
    and the samples carry no gradient, so one optimiser over all parameters makes every update.
    ``bound`` is ``L_k``; ``terms`` (``wake_theta``, ``wake_phi``, ``sleep_phi``) sum to ``loss``.

    Args:
        k: samples per example (>= 1).
        insomnia: weight of the wake-phase phi update in [0, 1]; 1 is wake-phi only, 0 sleep-phi only.
        sleep_samples: dreams per step; 0 means as many as the batch has examples.
    """

    supported_latents = DISCRETE_OR_CONTINUOUS
    gradvar_defaults = (GradvarDefault("sbn", 6, "rws-k5", {"k": 5}, DISCRETE),)

    def __init__(self, k: int = 5, insomnia: float = 1.0, sleep_samples: int = 0) -> None:
        super().__init__()
        check_k(k, "objective.k")
        if not 0.0 <= insomnia <= 1.0:
            raise ValueError(f"objective.insomnia must be in [0, 1], got {insomnia}")
        if sleep_samples < 0:
            raise ValueError(f"objective.sleep_samples must be >= 0, got {sleep_samples}")
        self.k, self.insomnia, self.sleep_samples = k, insomnia, sleep_samples

    def check_model(self, model: LatentVariableModel) -> None:
        super().check_model(model)
        if self.insomnia < 1.0:
            check_sleep_capable(model, "objective rws (insomnia < 1)")

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        z, log_q = model.sample_q(x, self.k, reparam=False)
        log_joint = model.log_joint(x, z)
        log_weights = (log_joint - log_q).detach()
        wbar = F.self_normalized_weights(log_weights)
        wake_theta = -(wbar * log_joint).sum(0).mean()
        wake_phi = -self.insomnia * (wbar * log_q).sum(0).mean()
        sleep_phi = ((1.0 - self.insomnia) * sleep_phi_loss(model, self.sleep_samples or x.shape[0])
                     if self.insomnia < 1.0 else torch.zeros((), device=x.device))
        return ObjectiveOutput(loss=wake_theta + wake_phi + sleep_phi, bound=F.iwae_bound(log_weights),
                               log_weights=log_weights,
                               terms={"wake_theta": wake_theta.detach(), "wake_phi": wake_phi.detach(),
                                      "sleep_phi": sleep_phi.detach()})
