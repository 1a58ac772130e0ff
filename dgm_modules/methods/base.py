"""What every method (LightningModule) shares: divergence detection, the training log, the evaluation hooks."""
from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn

from datamodules.base import Batch
from dgm_modules.evaluation.base import Evaluator
from dgm_modules.objectives.base import ObjectiveOutput


class DivergedError(RuntimeError):
    """The training loss became non-finite; the run is recorded as ``diverged`` with the step."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"non-finite training loss {value} at step {step}")
        self.step = step


def check_finite(loss: Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise DivergedError(step, loss.detach().item())


class EvaluatedMethod(L.LightningModule):
    """What every method shares: the training log and the validation and test hooks.

    Training: each step hands its values (loss, the objective's terms and bound) to :meth:`record_train`,
    which adds them, detached, to running sums on the device: no host sync, no ``self.log`` (Lightning's
    per-step logging costs ~2 ms a step, more than the step of a small model). Their epoch means are
    logged as ``train/<name>``; with ``log_every_n_steps`` n > 0, the means of every n training batches
    also go to the loggers as ``train/<name>_step`` (one host read per interval).

    Evaluation: each split's :class:`Evaluator` s see every batch, then their metrics are logged as
    ``val/<name>`` / ``test/<name>`` and they are reset. Subclasses set ``self.model`` and list their
    evaluators in :meth:`evaluators` (in logging order).
    """

    model: nn.Module

    def __init__(self, log_every_n_steps: int = 0) -> None:
        super().__init__()
        if isinstance(log_every_n_steps, bool) or not isinstance(log_every_n_steps, int) or log_every_n_steps < 0:
            raise ValueError(f"module.log_every_n_steps={log_every_n_steps!r} is not valid; choose an integer >= 0 "
                             f"(0: epoch means only)")
        self.log_every_n_steps = log_every_n_steps
        self._train_sums: dict[str, Tensor] = {}  # detached running sums of the epoch's train values
        self._train_count = 0
        self._interval_sums: dict[str, Tensor] = {}  # the same since the last interval was logged
        self._interval_count = 0
        self.train_step_values: dict[str, Tensor] = {}  # the last step's values (wandb's StepCurves)

    # -- training log --------------------------------------------------------------------------------
    @staticmethod
    def objective_values(out: ObjectiveOutput) -> dict[str, Tensor]:
        """A step's loss, objective terms and mean bound (``bound``: what NVIL's or RWS's surrogate
        loss does not show); the bound being optimised wins over a term of the same name."""
        values = dict(out.terms)
        values["loss"] = out.loss
        if out.bound is not None:
            values["bound"] = out.bound.float().mean()
        return values

    def record_train(self, values: dict[str, Tensor]) -> None:
        """Add one training step's values to the epoch's (and the interval's) sums; detached, no host sync."""
        values = {name: value.detach() for name, value in values.items()}
        sums = [self._train_sums, self._interval_sums] if self.log_every_n_steps else [self._train_sums]
        for total in sums:
            for name, value in values.items():
                total[name] = total[name] + value if name in total else value
        self._train_count += 1
        self._interval_count += bool(self.log_every_n_steps)
        self.train_step_values = values

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.log_interval_if_due()

    def log_interval_if_due(self) -> None:
        """After an optimiser step: log the interval's means once it holds ``log_every_n_steps`` steps."""
        if self.log_every_n_steps and self._interval_count >= self.log_every_n_steps:
            self._log_interval()

    def _log_interval(self) -> None:
        names = list(self._interval_sums)
        means = torch.stack([self._interval_sums[n].double() for n in names]) / self._interval_count
        means = self.trainer.strategy.reduce(means, reduce_op="mean")  # a collective: every rank is here
        self._interval_sums, self._interval_count = {}, 0
        if self.trainer.is_global_zero:
            metrics = {f"train/{n}_step": v for n, v in zip(names, means.tolist())}  # the interval's one host read
            for logger in self.loggers:
                logger.log_metrics({**metrics, "epoch": self.current_epoch}, step=self.global_step)

    def on_train_epoch_end(self) -> None:
        if self._train_count:
            for name, total in self._train_sums.items():
                self.log(f"train/{name}", total / self._train_count, prog_bar=name == "loss" or name.endswith("_loss"),
                         sync_dist=True)
        self._train_sums = {}
        self._train_count = 0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # a checkpoint written mid-epoch (a stop signal) carries the epoch's sums so far; after the
        # epoch's last batch they are the finished epoch's, logged before the next one starts. The
        # interval's sums span epochs: always carried.
        trainer = self._trainer
        if trainer is not None and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            checkpoint["train_sums"] = {"sums": dict(self._train_sums), "count": self._train_count}
        if self.log_every_n_steps:
            checkpoint["interval_sums"] = {"sums": dict(self._interval_sums), "count": self._interval_count}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("train_sums") or {"sums": {}, "count": 0}
        self._train_sums, self._train_count = dict(state["sums"]), int(state["count"])
        state = checkpoint.get("interval_sums") or {"sums": {}, "count": 0}
        self._interval_sums, self._interval_count = dict(state["sums"]), int(state["count"])

    # -- evaluation ----------------------------------------------------------------------------------
    def evaluators(self, stage: str) -> list[Evaluator]:  # pragma: no cover - every method overrides
        raise NotImplementedError

    def transfer_batch_to_device(self, batch: object, device: torch.device, dataloader_idx: int) -> object:
        # Lightning's generic transfer walks the batch with isinstance checks every step (~50 us, about
        # 1% of a batch-20 CPU step); a Batch is two tensors, moved as Lightning would move them
        if isinstance(batch, list):  # the consecutive batches of one call (steps_per_call > 1)
            return [self.transfer_batch_to_device(b, device, dataloader_idx) for b in batch]
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
