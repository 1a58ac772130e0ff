"""The semi-supervised objective of M2 (Kingma, Rezende, Mohamed & Welling 2014, eq. 9)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.objectives.base import Objective, ObjectiveOutput
from dgm_modules.registry import OBJECTIVES


@OBJECTIVES.register("semi-supervised-elbo")
class SemiSupervisedELBO(Objective):
    """Labelled examples: ``ELBO(x, y)``; unlabelled: ``y`` summed out exactly; plus classification.

    For a labelled pair the bound is ``ELBO(x, y)``; for an unlabelled ``x`` (label ``-1`` or no
    labels at all) it is ``-U(x) = sum_y q(y | x) (ELBO(x, y) - log q(y | x))``, an exact sum over
    the classes, so no score-function gradient is needed for the discrete ``y``.

    The paper's objective over ``N`` training examples, ``N_l`` of them labelled, is
    ``J^alpha = sum_x -bound(x) + alpha N * mean_labelled(-log q(y | x))`` (its ``alpha = 0.1 N``).
    The loss is an unbiased minibatch estimate of ``J^alpha / N``:
    ``mean over the batch of (-bound + (alpha / f) [labelled] (-log q(y | x)))`` with
    ``f = N_l / N`` the training split's labelled fraction, a constant. Dividing by the batch's
    *realised* number of labelled examples instead is biased: at 1% labels and batch 100, 37% of
    batches hold none and a labelled example weighs ``alpha * 6.3`` bound units, not ``alpha N / N_l = alpha * 100``.
    ``terms``: ``bound`` and ``classification``, which sum to ``loss``.

    Args:
        alpha: weight of the classification loss, relative to the per-example bound (>= 0);
            0.1 is the paper's ``alpha = 0.1 N``.
        labelled_fraction: ``N_l / N`` of the training split, in (0, 1]; ``None`` (default): read
            from the run's training labels when the method binds the data.
    """

    supported_latents = frozenset({LatentKind.CLASS_CONTINUOUS})

    def __init__(self, alpha: float = 0.1, labelled_fraction: float | None = None) -> None:
        super().__init__()
        if alpha < 0:
            raise ValueError(f"objective.alpha must be >= 0, got {alpha}")
        if labelled_fraction is not None and not 0 < labelled_fraction <= 1:
            raise ValueError(f"objective.labelled_fraction must be in (0, 1] or null, got {labelled_fraction}")
        self.alpha, self.labelled_fraction = alpha, labelled_fraction

    def bind_data(self, datamodule: Any) -> None:
        """Take ``labelled_fraction`` from the training labels (the method calls this in ``setup``)."""
        if self.labelled_fraction is not None or datamodule is None:
            return
        if getattr(datamodule, "train_y", None) is None:
            datamodule.setup("fit")
        y = datamodule.train_y
        if y is not None and bool((y >= 0).any()):
            self.labelled_fraction = (y >= 0).double().mean().item()

    def forward(self, model: LatentVariableModel, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        elbos = model.class_elbos(x)  # [B, classes]
        log_qy = model.classify(x).log_softmax(-1)
        unlabelled = (log_qy.exp() * (elbos - log_qy)).sum(-1)
        labelled = torch.zeros_like(unlabelled, dtype=torch.bool) if y is None else y >= 0
        y_safe = torch.zeros_like(unlabelled, dtype=torch.long) if y is None else y.clamp(min=0)
        bound = torch.where(labelled, elbos.gather(1, y_safe[:, None]).squeeze(1), unlabelled)
        nll_y = -log_qy.gather(1, y_safe[:, None]).squeeze(1)
        if self.labelled_fraction is None and self.alpha > 0 and bool(labelled.any()):
            raise ValueError("objective 'semi-supervised-elbo' got labelled examples but no "
                             "objective.labelled_fraction: set it, or train through the method, which reads it from the data")
        weight = self.alpha / self.labelled_fraction if self.labelled_fraction else 0.0
        classification = weight * (nll_y * labelled).mean()
        neg_bound = -bound.mean()
        return ObjectiveOutput(loss=neg_bound + classification, bound=bound.detach(),
                               terms={"bound": neg_bound.detach(), "classification": classification.detach()})
