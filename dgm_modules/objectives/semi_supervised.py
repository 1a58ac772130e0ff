"""The semi-supervised objective of M2 (Kingma, Rezende, Mohamed & Welling 2014, eq. 9)."""
from __future__ import annotations

import torch
from torch import Tensor

from dgm_modules.models.base import LatentVariableModel
from dgm_modules.objectives.base import Objective, ObjectiveOutput


class SemiSupervisedELBO(Objective):
    """Labelled examples: ``ELBO(x, y)``; unlabelled: ``y`` summed out exactly; plus classification.

    For a labelled pair the bound is ``ELBO(x, y)``; for an unlabelled ``x`` (label ``-1`` or no
    labels at all) it is ``-U(x) = sum_y q(y | x) (ELBO(x, y) - log q(y | x))``, an exact sum over
    the classes, so no score-function gradient is needed for the discrete ``y``. The loss is
    ``-mean(bound) + alpha * mean over labelled examples of -log q(y | x)``: with sums over the data
    in place of means this is the paper's ``J^alpha`` with its ``alpha = 0.1 N`` for ``alpha = 0.1``.
    ``terms``: ``bound`` and ``classification``, which sum to ``loss``.

    Args:
        alpha: weight of the classification loss on labelled examples (>= 0).
    """

    supported_latents = frozenset({"class+continuous"})

    def __init__(self, alpha: float = 0.1) -> None:
        super().__init__()
        if alpha < 0:
            raise ValueError(f"objective.alpha must be >= 0, got {alpha}")
        self.alpha = alpha

    def forward(self, model: LatentVariableModel, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        elbos = model.class_elbos(x)  # [B, classes]
        log_qy = model.classify(x).log_softmax(-1)
        unlabelled = (log_qy.exp() * (elbos - log_qy)).sum(-1)
        labelled = torch.zeros_like(unlabelled, dtype=torch.bool) if y is None else y >= 0
        y_safe = torch.zeros_like(unlabelled, dtype=torch.long) if y is None else y.clamp(min=0)
        bound = torch.where(labelled, elbos.gather(1, y_safe[:, None]).squeeze(1), unlabelled)
        nll_y = -log_qy.gather(1, y_safe[:, None]).squeeze(1)
        classification = self.alpha * (nll_y * labelled).sum() / labelled.sum().clamp(min=1)
        neg_bound = -bound.mean()
        return ObjectiveOutput(loss=neg_bound + classification, bound=bound.detach(),
                               terms={"bound": neg_bound.detach(), "classification": classification.detach()})
