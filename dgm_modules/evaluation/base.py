"""The one interface of every evaluator a method runs over a split (validation or test)."""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from datamodules.base import Batch


@runtime_checkable
class Evaluator(Protocol):
    """Fed batch by batch, read once per split, then cleared.

    ``compute`` returns the split's metrics by name (already reduced across processes, so the
    method logs them with ``sync_dist=False``); metrics with no data are left out.
    """

    def bind_data(self, datamodule: Any) -> None:
        """The run's DataModule (for evaluators that need the train split or the test images)."""

    def update(self, model: Any, batch: Batch) -> None: ...

    def compute(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...


class WholeSplitEvaluator:
    """An evaluator that reads the DataModule, not the batches (FID of samples, reconstructions of the
    whole test split): ``update`` only remembers the model, ``compute`` does the work once."""

    def __init__(self) -> None:
        self.datamodule: Any = None
        self.model: Any = None

    def bind_data(self, datamodule: Any) -> None:
        self.datamodule = datamodule

    def update(self, model: Any, batch: Batch) -> None:
        self.model = model

    def reset(self) -> None:
        self.model = None
