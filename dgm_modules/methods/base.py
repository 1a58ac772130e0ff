"""What every method (LightningModule) shares: divergence detection, the evaluation hooks."""
from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn

from datamodules.base import Batch
from dgm_modules.evaluation.base import Evaluator


class DivergedError(RuntimeError):
    """The training loss became non-finite; the run is recorded as ``diverged`` with the step."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"non-finite training loss {value} at step {step}")
        self.step = step


def check_finite(loss: Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise DivergedError(step, loss.detach().item())


class EvaluatedMethod(L.LightningModule):
    """The validation and test hooks every method shares: each split's :class:`Evaluator` s see every
    batch, then their metrics are logged as ``val/<name>`` / ``test/<name>`` and they are reset.

    Subclasses set ``self.model`` and list their evaluators in :meth:`evaluators` (in logging order).
    """

    model: nn.Module

    def evaluators(self, stage: str) -> list[Evaluator]:  # pragma: no cover - every method overrides
        raise NotImplementedError

    def transfer_batch_to_device(self, batch: object, device: torch.device, dataloader_idx: int) -> object:
        # Lightning's generic transfer walks the batch with isinstance checks every step (~50 us, about
        # 1% of a batch-20 CPU step); a Batch is two tensors, moved as Lightning would move them
        if not isinstance(batch, Batch):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        non_blocking = device.type not in ("cpu", "mps")  # as Lightning's own transfer
        y = None if batch.y is None else batch.y.to(device, non_blocking=non_blocking)
        return Batch(batch.x.to(device, non_blocking=non_blocking), y, batch.index)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        for evaluator in self.evaluators("val"):
            evaluator.update(self.model, batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        for evaluator in self.evaluators("test"):
            evaluator.update(self.model, batch)

    def on_validation_epoch_end(self) -> None:
        self._log_and_reset("val")

    def on_test_epoch_end(self) -> None:
        self._log_and_reset("test")

    def _log_and_reset(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)  # the one this fit/test runs on
        for evaluator in self.evaluators(stage):
            evaluator.bind_data(datamodule)
            for name, value in evaluator.compute().items():  # already reduced across processes
                self.log(f"{stage}/{name}", value, prog_bar=stage == "val", sync_dist=False)
            evaluator.reset()
