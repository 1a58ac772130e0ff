"""The LightningModule of semi-supervised methods (M2): the variational glue plus labels and accuracy."""
from __future__ import annotations

from torchmetrics.classification import MulticlassAccuracy

from datamodules.base import Batch
from dgm_modules.models.capabilities import Classifier
from dgm_modules.objectives.base import ObjectiveOutput
from dgm_modules.methods.variational import VariationalMethod
from dgm_modules.registry import MODULES


@MODULES.register("semi-supervised")
class SemiSupervisedMethod(VariationalMethod):
    """Trains on labelled and unlabelled examples (label ``-1``); reports classification accuracy.

    Takes the options of :class:`VariationalMethod`. The objective receives the labels
    (``objective(model, x, y)``); bounds are scored by the shared evaluator exactly as for every
    other method, and ``accuracy`` is that of the model's classifier ``q(y | x)`` (argmax), on the
    validation and test splits where they have labels.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.model, Classifier):
            raise ValueError(f"module semi-supervised needs a model with a classifier (classify(x)); "
                             f"{type(self.model).__name__} has none")
        classes = self.model.classes
        self.val_accuracy = MulticlassAccuracy(classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(classes, average="micro")

    def train_output(self, batch: Batch) -> ObjectiveOutput:
        return self.objective(self.model, batch.x, batch.y)

    def _accuracy(self, metric: MulticlassAccuracy, batch: Batch) -> None:
        if batch.y is not None and len(batch.y) and bool((batch.y >= 0).all()):  # not a rank's empty share
            metric.update(self.model.classify(batch.x).argmax(-1), batch.y)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self._accuracy(self.val_accuracy, batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        self._accuracy(self.test_accuracy, batch)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_accuracy(self.val_accuracy, "val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_accuracy(self.test_accuracy, "test")

    def _log_accuracy(self, metric: MulticlassAccuracy, stage: str) -> None:
        # computed on every rank if on any (the reduction is collective), whichever saw labelled batches
        if self.trainer.strategy.reduce_boolean_decision(metric.update_called, all=False):
            self.log(f"{stage}/accuracy", metric.compute(), sync_dist=False)
        metric.reset()
