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
