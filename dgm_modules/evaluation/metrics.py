"""Sum-reducible metric components (torchmetrics) for per-example quantities."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class MeanPerExample(Metric):
    """Mean of a per-example value over a whole split, exact under DDP.

    State is a float64 sum and count that add up across processes; each process only ever sees
    its own examples (no sampler padding), so every example counts exactly once.
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor) -> None:
        values = values.detach().to(torch.float64)
        self.total += values.sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        self.examples = int(self.count)  # reduced across processes here: 0 means the split gave it no data
        return self.total / self.count
