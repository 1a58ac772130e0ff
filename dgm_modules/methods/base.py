"""What every method (LightningModule) shares: divergence detection."""
from __future__ import annotations

import torch
from torch import Tensor


class DivergedError(RuntimeError):
    """The training loss became non-finite; the run is recorded as ``diverged`` with the step."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"non-finite training loss {value} at step {step}")
        self.step = step


def check_finite(loss: Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise DivergedError(step, loss.detach().item())
