"""The LightningModule of every method that is a model + objective + one optimiser."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

from datamodules.base import Batch
from dgm_modules.evaluation.latent_structure import LatentStructureEvaluator
from dgm_modules.evaluation.log_likelihood import LogLikelihoodEvaluator
from dgm_modules.evaluation.reconstruction import ReconstructionAccuracyEvaluator
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
        log_every_n_steps: also log the means of every n training batches (``train/<name>_step``);
            0: epoch means only (see :class:`~dgm_modules.methods.base.EvaluatedMethod`).
        steps_per_call: optimiser steps per Lightning training step, on that many consecutive
            batches (the train loader hands them over together). Lightning's per-step cost (its
            loop, hooks and progress tracking: ~1.5 ms a step on a 2-core CPU, more than a
            batch-20 step's own arithmetic) is then paid once per ``steps_per_call`` steps. It
            changes no number: the same batches, noise and updates in the same order
            (``tests/test_steps_per_call.py``), so it is left out of the run's fingerprint.
    """

    def __init__(self, model: LatentVariableModel, objective: Objective, optimizer: OptimizerFactory,
                 eval_k: Sequence[int] = (1, 5000), val_k: Sequence[int] = (1,),
                 chunk_pairs: int = 4_096, eval_seed: int = 0, fid_samples: int = 0,
                 lr_schedule: str = "constant", log_every_n_steps: int = 0, steps_per_call: int = 1) -> None:
        super().__init__(log_every_n_steps)
        if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int) or steps_per_call < 1:
            raise ValueError(f"module.steps_per_call={steps_per_call!r} is not valid; choose an integer >= 1 "
                             f"(1: one optimiser step per Lightning step)")
        self.steps_per_call = steps_per_call
        # several steps per call: the module steps the optimiser itself (Lightning's manual optimisation)
        self.automatic_optimization = steps_per_call == 1
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"module.lr_schedule={lr_schedule!r} is not valid; choose one of {sorted(LR_SCHEDULES)}")
        self.lr_schedule = lr_schedule
        objective.check_model(model)
        self.model, self.objective, self.optimizer_factory = model, objective, optimizer
        self.val_eval = LogLikelihoodEvaluator(val_k, chunk_pairs, eval_seed, "module.val_k")
        self.test_eval = LogLikelihoodEvaluator(eval_k, chunk_pairs, eval_seed, "module.eval_k")
        self.sample_quality = SampleQualityEvaluator(fid_samples, seed=eval_seed) if fid_samples else None
        self.recon_accuracy = ReconstructionAccuracyEvaluator()
        self.test_structure = LatentStructureEvaluator(seed=eval_seed)  # kNN error, components used

    def evaluators(self, stage: str) -> list:
        if stage == "val":
            return [self.val_eval]
        # with FID, the same classifier asks whether reconstructions keep their label
        quality = [self.sample_quality, self.recon_accuracy] if self.sample_quality else []
        return [self.test_eval, self.test_structure, *quality]

    def setup(self, stage: str) -> None:
        bind = getattr(self.objective, "bind_data", None)  # e.g. a perceptual loss's feature network
        if bind is not None:
            bind(self.trainer.datamodule)

    def train_output(self, batch: Batch) -> ObjectiveOutput:
        """The objective on one training batch."""
        return self.objective(self.model, batch.x)

    def _train_loss(self, batch: Batch) -> torch.Tensor:
        out = self.train_output(batch)
        check_finite(out.loss, self.global_step)
        self.record_train(self.objective_values(out))
        return out.loss

    def training_step(self, batch: Batch | list[Batch], batch_idx: int) -> torch.Tensor | None:
        if self.automatic_optimization:
            return self._train_loss(batch)
        optimizer = self.optimizers()
        for one in batch:  # steps_per_call consecutive batches, one optimiser step each, as Lightning would
            loss = self._train_loss(one)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            self.log_interval_if_due()  # at the step it falls on, as one step a call logs it
        # the loggers' step (Lightning counts one per call; it adds this call's 1 itself), so every
        # logged row carries the step it would carry one batch a call
        self.trainer.fit_loop.epoch_loop._batches_that_stepped += len(batch) - 1
        return None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["steps_per_call"] = self.steps_per_call

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        # Lightning counts a stopped epoch's progress in calls: a mid-epoch resume must group as the stop did
        saved = checkpoint.get("steps_per_call", 1)
        if saved != self.steps_per_call and "train_sums" in checkpoint:  # saved mid-epoch (EvaluatedMethod)
            raise ValueError(f"module.steps_per_call={self.steps_per_call}: the checkpoint was saved mid-epoch with "
                             f"module.steps_per_call={saved}; resume with {saved} (it may change at an epoch's end)")

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        # Lightning steps an epoch-interval schedule only under automatic optimisation; as it does
        # (fit_loop.on_advance_end), not again when an epoch's end is replayed on a resume
        if not self.automatic_optimization and not self.trainer.fit_loop.restarting:
            schedule = self.lr_schedulers()
            if schedule is not None:
                schedule.step()

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_schedule == "constant":
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, LR_SCHEDULES[self.lr_schedule])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}
