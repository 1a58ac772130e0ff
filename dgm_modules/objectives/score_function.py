"""Score-function gradients of the ELBO: REINFORCE (Williams 1992) and NVIL (Mnih & Gregor 2014)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm_modules.models.base import LatentVariableModel
from dgm_modules.networks.mlp import MLP
from dgm_modules.objectives import functional as F
from dgm_modules.objectives.base import DISCRETE, GradvarDefault, Objective, ObjectiveOutput
from dgm_modules.objectives.wake_sleep import DISCRETE_OR_CONTINUOUS
from dgm_modules.registry import OBJECTIVES, check_k


#: NVIL (Mnih & Gregor 2014): every variance reduction on
NVIL = {"input_baseline": True, "centering": True, "variance_normalization": True}


@OBJECTIVES.register("score-function")
class ScoreFunction(Objective):
    """The ELBO with the likelihood-ratio gradient in phi: no gradient flows through the samples.

    With the learning signal ``l = log p(x, z) - log q(z | x)`` at ``z ~ q`` (detached), the loss is
    ``-[log p(x, z) + A * log q(z | x)]`` whose gradient is ``grad_theta log p(x, z)`` in theta and
    ``A grad_phi log q(z | x)`` in phi, with ``A = (l - b(x) - c) / max(1, sqrt(v))``. Plain
    REINFORCE has ``A = l``. NVIL's variance reductions are options:

    - ``input_baseline``: ``b(x)``, an MLP owned by this objective, fitted by least squares to
      ``l - c`` (the ``baseline`` term of the loss; it reaches no model parameter);
    - ``centering``: ``c``, a running mean of ``l - b(x)`` (exponential, factor ``decay``);
    - ``variance_normalization``: ``v``, a running variance of ``l - b(x)`` likewise.

    The running statistics are read before the current batch updates them (so ``A`` stays
    independent of ``z``, save on the first batch, which initialises them), and are updated in
    training mode only. ``bound`` is the ELBO estimate; ``terms`` (``surrogate``, ``baseline``)
    sum to ``loss``.

    Args:
        k: samples per example, each its own estimate (averaged).
        input_baseline: learn the input-dependent baseline ``b(x)``.
        baseline_hidden: width of the baseline network's hidden layer.
        centering: subtract the running mean ``c``.
        variance_normalization: divide by ``max(1, sqrt(v))``.
        decay: factor of the running averages, in [0, 1) (Mnih & Gregor used 0.8).
    """

    supported_latents = DISCRETE_OR_CONTINUOUS
    gradvar_defaults = (
        GradvarDefault("vae", 2, "reinforce"),
        GradvarDefault("vae", 3, "nvil", NVIL, adapt_steps=100),
        GradvarDefault("sbn", 0, "reinforce", None, DISCRETE),
        GradvarDefault("sbn", 1, "nvil", NVIL, DISCRETE, adapt_steps=100),
    )

    def __init__(self, k: int = 1, input_baseline: bool = False, baseline_hidden: int = 100,
                 centering: bool = False, variance_normalization: bool = False, decay: float = 0.8) -> None:
        super().__init__()
        check_k(k, "objective.k")
        if baseline_hidden < 1:
            raise ValueError(f"objective.baseline_hidden must be >= 1, got {baseline_hidden}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"objective.decay must be in [0, 1), got {decay}")
        self.k, self.input_baseline, self.baseline_hidden = k, input_baseline, baseline_hidden
        self.centering, self.variance_normalization, self.decay = centering, variance_normalization, decay
        self.baseline: nn.Module | None = None
        self.register_buffer("running_mean", torch.zeros(()))
        self.register_buffer("running_var", torch.ones(()))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def check_model(self, model: LatentVariableModel) -> None:
        """Refuse an incompatible model; build the baseline network for the model's input size.

        Called when the method is built, so the baseline exists before the optimiser does.
        """
        super().check_model(model)
        if self.input_baseline and self.baseline is None:
            self.baseline = MLP(math.prod(model.input_shape), [self.baseline_hidden], 1, "tanh")

    def _update_statistics(self, residual: Tensor) -> None:
        mean, var = residual.mean(), residual.var(unbiased=False)
        if not bool(self.initialised):
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
            self.initialised.fill_(True)
        else:
            self.running_mean.mul_(self.decay).add_((1 - self.decay) * mean)
            self.running_var.mul_(self.decay).add_((1 - self.decay) * var)

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        z, log_q = model.sample_q(x, self.k, reparam=False)
        log_joint = model.log_joint(x, z)
        log_weights = (log_joint - log_q).detach()  # the learning signal l, [k, B]
        b = torch.zeros((), device=x.device)
        if self.input_baseline:
            if self.baseline is None:
                raise RuntimeError("ScoreFunction.check_model(model) must be called before training (it builds b(x))")
            b = self.baseline(x.flatten(1)).squeeze(-1)  # [B]
        c, v = self.running_mean, self.running_var
        if self.centering or self.variance_normalization:
            residual = log_weights - b.detach()
            if not bool(self.initialised):
                self._update_statistics(residual)
            c, v = self.running_mean.clone(), self.running_var.clone()
            if self.training:
                self._update_statistics(residual)
        c = c if self.centering else torch.zeros_like(c)
        baseline_loss = (log_weights - c - b).pow(2).mean() if self.input_baseline else torch.zeros((), device=x.device)
        signal = log_weights - b.detach() - c
        if self.variance_normalization:
            signal = signal / v.sqrt().clamp(min=1.0)
        surrogate = -(log_joint + signal * log_q).mean()
        return ObjectiveOutput(loss=surrogate + baseline_loss, bound=F.elbo_estimate(log_weights),
                               log_weights=log_weights,
                               terms={"surrogate": surrogate.detach(), "baseline": baseline_loss.detach()})
