"""The LightningModule of every method that is a model + objective + one optimiser."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import lightning as L
import torch

from datamodules.base import Batch
from dgm_modules.evaluation.log_likelihood import LogLikelihoodEvaluator
from dgm_modules.methods.base import check_finite
from dgm_modules.models.base import LatentVariableModel
from dgm_modules.objectives.base import Objective

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


class VariationalMethod(L.LightningModule):
    """Trains ``model`` by ``objective``; scores it by the shared log-likelihood protocol.

    Args:
        model: the generative model with its inference network.
        objective: the loss whose gradient is the estimator; checked against the model here.
        optimizer: builds the optimiser from the parameters (model and objective).
        eval_k: numbers of importance samples of the test bounds ``L_k``.
        val_k: the same for validation (kept small: it runs every epoch).
        chunk_pairs: at most this many (image, sample) pairs per forward pass in evaluation.
        eval_seed: seed of the evaluation's Monte Carlo noise.
    """

    def __init__(self, model: LatentVariableModel, objective: Objective, optimizer: OptimizerFactory,
                 eval_k: Sequence[int] = (1, 5000), val_k: Sequence[int] = (1,),
                 chunk_pairs: int = 16_384, eval_seed: int = 0) -> None:
        super().__init__()
        objective.check_model(model)
        self.model, self.objective, self.optimizer_factory = model, objective, optimizer
        self.val_eval = LogLikelihoodEvaluator(val_k, chunk_pairs, eval_seed)
        self.test_eval = LogLikelihoodEvaluator(eval_k, chunk_pairs, eval_seed)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self.objective(self.model, batch.x)
        check_finite(out.loss, self.global_step)
        self.log("train/loss", out.loss, prog_bar=True)
        return out.loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.val_eval.update(self.model, batch.x, batch.index)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_eval.update(self.model, batch.x, batch.index)

    def on_validation_epoch_end(self) -> None:
        self._log_and_reset(self.val_eval, "val")

    def on_test_epoch_end(self) -> None:
        self._log_and_reset(self.test_eval, "test")

    def _log_and_reset(self, evaluator: LogLikelihoodEvaluator, stage: str) -> None:
        for name, value in evaluator.compute().items():  # already reduced across processes
            self.log(f"{stage}/{name}", value, prog_bar=stage == "val", sync_dist=False)
        evaluator.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())
