"""The LightningModule of every method that is a model + objective + one optimiser."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

from datamodules.base import Batch
from dgm_modules.evaluation.latent_structure import LatentStructureEvaluator
from dgm_modules.evaluation.log_likelihood import LogLikelihoodEvaluator
from dgm_modules.evaluation.sample_quality import SampleQualityEvaluator
from dgm_modules.methods.base import EvaluatedMethod, check_finite
from dgm_modules.methods.schedules import LR_SCHEDULES
from dgm_modules.models.base import LatentVariableModel
from dgm_modules.objectives.base import Objective, ObjectiveOutput
from dgm_modules.registry import MODULES

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


@MODULES.register("variational")
class VariationalMethod(EvaluatedMethod):
    """Trains ``model`` by ``objective``; scores it by the shared log-likelihood protocol.

    Args:
        model: the generative model with its inference network.
        objective: the loss whose gradient is the estimator; checked against the model here.
        optimizer: builds the optimiser from the parameters (model and objective).
        eval_k: numbers of importance samples of the test bounds ``L_k``.
        val_k: the same for validation (kept small: it runs every epoch).
        chunk_pairs: at most this many (image, sample) pairs per forward pass in evaluation.
        eval_seed: seed of the evaluation's Monte Carlo noise.
        fid_samples: model samples scored by FID/KID against the test split at test end (0 = off).
        lr_schedule: a name in :data:`~dgm_modules.methods.schedules.LR_SCHEDULES` (per epoch):
            ``constant`` or ``iwae`` (Burda et al. 2016's 3**i passes at 10**(-i/7)).
    """

    def __init__(self, model: LatentVariableModel, objective: Objective, optimizer: OptimizerFactory,
                 eval_k: Sequence[int] = (1, 5000), val_k: Sequence[int] = (1,),
                 chunk_pairs: int = 4_096, eval_seed: int = 0, fid_samples: int = 0,
                 lr_schedule: str = "constant") -> None:
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"module.lr_schedule={lr_schedule!r} is not valid; choose one of {sorted(LR_SCHEDULES)}")
        self.lr_schedule = lr_schedule
        objective.check_model(model)
        self.model, self.objective, self.optimizer_factory = model, objective, optimizer
        self._train_sums: dict[str, torch.Tensor] = {}  # detached running sums of the epoch's train values
        self._train_count = 0
        self.train_step_values: dict[str, torch.Tensor] = {}  # the last step's values (per-step curves)
        self.val_eval = LogLikelihoodEvaluator(val_k, chunk_pairs, eval_seed)
        self.test_eval = LogLikelihoodEvaluator(eval_k, chunk_pairs, eval_seed)
        self.sample_quality = SampleQualityEvaluator(fid_samples, seed=eval_seed) if fid_samples else None
        self.test_structure = LatentStructureEvaluator(seed=eval_seed)  # kNN error, components used

    def evaluators(self, stage: str) -> list:
        if stage == "val":
            return [self.val_eval]
        return [self.test_eval, self.test_structure, *([self.sample_quality] if self.sample_quality else [])]

    def setup(self, stage: str) -> None:
        bind = getattr(self.objective, "bind_data", None)  # e.g. a perceptual loss's feature network
        if bind is not None:
            bind(self.trainer.datamodule)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self.objective(self.model, batch.x)
        check_finite(out.loss, self.global_step)
        self.accumulate_train(out)
        return out.loss

    def accumulate_train(self, out: ObjectiveOutput) -> None:
        """Add this step's loss, objective terms and mean bound (``train/bound``: what NVIL's or RWS's
        surrogate loss does not show) to the epoch's sums; detached, no host sync."""
        values = {name: value.detach() for name, value in out.terms.items()}
        values["loss"] = out.loss.detach()
        if out.bound is not None:  # the bound being optimised wins over a term of the same name
            values["bound"] = out.bound.detach().float().mean()
        for name, value in values.items():
            self._train_sums[name] = self._train_sums[name] + value if name in self._train_sums else value
        self._train_count += 1
        self.train_step_values = values

    def on_train_epoch_end(self) -> None:
        # Logged once an epoch: Lightning's per-step self.log costs ~2 ms a step on small models,
        # more than the step itself at batch size 20.
        if self._train_count:
            for name, total in self._train_sums.items():
                self.log(f"train/{name}", total / self._train_count, prog_bar=name == "loss", sync_dist=True)
        self._train_sums = {}
        self._train_count = 0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # a checkpoint written mid-epoch (a stop signal) carries the epoch's sums so far; after the
        # epoch's last batch they are the finished epoch's, logged before the next one starts
        trainer = self._trainer
        if trainer is not None and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            checkpoint["train_sums"] = {"sums": dict(self._train_sums), "count": self._train_count}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("train_sums") or {"sums": {}, "count": 0}
        self._train_sums, self._train_count = dict(state["sums"]), int(state["count"])

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_schedule == "constant":
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, LR_SCHEDULES[self.lr_schedule])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}
