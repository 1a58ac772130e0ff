"""The wake-sleep algorithm (Hinton, Dayan, Frey & Neal 1995)."""
from __future__ import annotations

import torch
from torch import Tensor

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.models.capabilities import ScoresLatents
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.base import DISCRETE, GradvarDefault, Objective, ObjectiveOutput
from dgm_modules.registry import OBJECTIVES

#: latent kinds the sampling-based objectives train: no gradient flows through the samples
DISCRETE_OR_CONTINUOUS = frozenset({LatentKind.BERNOULLI, LatentKind.CATEGORICAL, LatentKind.CONTINUOUS})


def sleep_phi_loss(model: LatentVariableModel, n: int) -> Tensor:
    """``-mean log q(z | x)`` on ``n`` dreamed pairs ``(x, z) ~ p`` drawn top-down.

    Its gradient is an unbiased estimate of the gradient in phi of
    ``E_p(x) KL(p(z | x) || q(z | x))``; the dream is drawn without a graph, so theta gets none.
    """
    with torch.no_grad():
        x, z = model.sample_joint(n)
    return -model.log_q(x, tuple(t.unsqueeze(0) for t in z)).mean()


def check_sleep_capable(model: LatentVariableModel, option: str) -> None:
    """Refuse, before training, a model that cannot score dreams under q."""
    if not isinstance(model, ScoresLatents):
        raise ValueError(f"{option}: {type(model).__name__} does not implement log_q(x, z), "
                         "which the sleep phase needs")


@OBJECTIVES.register("wake-sleep")
class WakeSleep(Objective):
    """Wake phase: theta ascends ``log p(x, z)`` at ``z ~ q(z | x)``; sleep phase: phi ascends
    ``log q(z | x)`` at dreamed ``(x, z) ~ p(x, z)``.

    The two phases are two terms of one loss: the wake samples carry no gradient (so wake-theta
    gives phi none) and the dreams carry no graph (so sleep-phi gives theta none), hence a single
    optimiser over all parameters makes both updates. ``bound`` is the single-sample ELBO.
    ``terms``: ``wake_theta`` and ``sleep_phi``, which sum to ``loss``.

    Args:
        sleep_samples: dreams per step; 0 means as many as the batch has examples.
    """

    supported_latents = DISCRETE_OR_CONTINUOUS
    gradvar_defaults = (GradvarDefault("sbn", 5, "wake-sleep", None, DISCRETE),)

    def __init__(self, sleep_samples: int = 0) -> None:
        super().__init__()
        if sleep_samples < 0:
            raise ValueError(f"objective.sleep_samples must be >= 0, got {sleep_samples}")
        self.sleep_samples = sleep_samples

    def check_model(self, model: LatentVariableModel) -> None:
        super().check_model(model)
        check_sleep_capable(model, "objective wake-sleep")

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        z, log_q = model.sample_q(x, 1, reparam=False)
        log_joint = model.log_joint(x, z)
        wake_theta = -log_joint.mean()
        sleep_phi = sleep_phi_loss(model, self.sleep_samples or x.shape[0])
        bound = F.elbo_estimate((log_joint - log_q).detach())
        return ObjectiveOutput(loss=wake_theta + sleep_phi, bound=bound,
                               log_weights=(log_joint - log_q).detach(),
                               terms={"wake_theta": wake_theta.detach(), "sleep_phi": sleep_phi.detach()})
