"""What every objective is and returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from dgm_modules.models.base import LatentVariableModel
from dgm_modules.registry import OBJECTIVES


@dataclass
class ObjectiveOutput:
    """The one return type of every objective.

    Attributes:
        loss: scalar differentiable surrogate; its gradient is the estimator.
        bound: detached per-example estimate of the bound being optimised, ``[B]``.
        log_weights: ``[k, B]`` log importance weights, where the objective draws any.
        terms: named scalar parts (e.g. wake-theta, wake-phi, sleep-phi); they sum to ``loss``
            when the objective says so in its docstring.
    """

    loss: Tensor
    bound: Tensor
    log_weights: Tensor | None = None
    terms: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class GradvarDefault:
    """This objective's place in a default gradient-variance comparison (``gradvar.estimators: [vae]``).

    Attributes:
        group: the comparison, named for the model family it measures (``vae``, ``sbn``).
        order: the estimator's position in the group's list; fixed, since the i-th estimator
            measured draws from the measurement's seed + i.
        label: its name in records and figures.
        init_args: the objective's options; ``None``: the objective by its name, with its defaults.
        model_overrides: model options changed for this estimator (e.g. ``relaxation``).
        adapt_steps: minibatches on which the objective's own state is fitted before measuring.
    """

    group: str
    order: int
    label: str
    init_args: dict | None = None
    model_overrides: dict = field(default_factory=dict)
    adapt_steps: int = 0


#: an SBN's discrete estimators name relaxation "none" so that they also measure an SBN trained relaxed
DISCRETE = {"relaxation": "none"}


class IncompatibleObjectiveError(ValueError):
    """An objective was paired with a model whose latents it cannot train."""


class Objective(nn.Module):
    """A function of ``(model, x)`` returning an :class:`ObjectiveOutput`.

    An ``nn.Module`` so that baselines, control variates and schedules are the objective's own
    state, saved in checkpoints with the model.
    """

    #: latent kinds (``LatentVariableModel.latent_kind``) this objective can train
    supported_latents: ClassVar[frozenset[str]] = frozenset()
    #: the default gradient-variance comparisons this objective takes part in
    gradvar_defaults: ClassVar[tuple[GradvarDefault, ...]] = ()

    def check_model(self, model: LatentVariableModel) -> None:
        """Refuse a model this objective cannot train, naming the objectives that can."""
        if model.latent_kind in self.supported_latents:
            return
        compatible = [n for n, cls in OBJECTIVES.items()
                      if model.latent_kind in getattr(cls, "supported_latents", ())]
        raise IncompatibleObjectiveError(
            f"objective {OBJECTIVES.name_of(self)!r} cannot train a model with {model.latent_kind!r} "
            f"latents ({type(model).__name__}); compatible objectives: {', '.join(compatible) or 'none'}")

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError
