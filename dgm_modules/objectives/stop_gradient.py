"""A model's densities with its parameters held fixed, so that gradients flow only through the
latents: the stop-gradients of the path-derivative estimators (STL, DReG) and of REBAR's relaxed
control variate.

STL and DReG need ``log q(z | x)`` whose gradient reaches phi through the sample ``z`` but not
through q's parameters; DReG's inference-network term also needs ``log p(x, z)`` with theta held
fixed. Both are the model's own methods evaluated under :func:`torch.func.functional_call` with
every parameter detached (buffers untouched), so every :class:`LatentVariableModel` that scores
latents (``log_q``) gets them without per-model code.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.func import functional_call

from dgm_modules.models.base import Latents, LatentVariableModel
from dgm_modules.models.capabilities import ScoresLatents


class _BoundMethod(nn.Module):
    """``model.<name>(*args)`` as a module's forward, so ``functional_call`` can swap parameters."""

    def __init__(self, model: LatentVariableModel, name: str) -> None:
        super().__init__()
        self.model, self.name = model, name

    def forward(self, *args: Any) -> Any:
        return getattr(self.model, self.name)(*args)


def call_path_only(model: LatentVariableModel, method: str, *args: Any) -> Any:
    """``model.<method>(*args)`` with every parameter detached: gradients flow only through ``args``."""
    params = {f"model.{n}": p.detach() for n, p in model.named_parameters()}
    return functional_call(_BoundMethod(model, method), params, args)


def log_q_path(model: LatentVariableModel, x: Tensor, z: Latents) -> Tensor:
    """``log q(z | x)`` whose gradient reaches the parameters only through ``z``: ``[k, B]``."""
    return call_path_only(model, "log_q", x, z)


def log_joint_path(model: LatentVariableModel, x: Tensor, z: Latents) -> Tensor:
    """``log p(x, z)`` whose gradient reaches the parameters only through ``z``: ``[k, B]``."""
    return call_path_only(model, "log_joint", x, z)


def check_scores_latents(model: LatentVariableModel, option: str) -> None:
    """Refuse, before training, a model that cannot score given latents under q (``log_q``)."""
    if not isinstance(model, ScoresLatents):
        raise ValueError(f"{option}: {type(model).__name__} does not implement log_q(x, z), "
                         "which the path-derivative estimators need")
