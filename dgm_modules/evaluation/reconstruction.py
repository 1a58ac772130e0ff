"""Reconstructions, and how often the dataset's classifier still recognises them.

``recon_accuracy`` is the fraction of test images whose reconstruction (the decoder's mean image
at the posterior mean) the suite's classifier of that dataset -- the network behind the FID/KID
columns -- labels with the image's own label. A model that ignores its latents (posterior
collapse) reconstructs every image as one digit and scores about 0.1 on MNIST; the classifier
itself scores 0.99 on the test images.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dgm_modules.evaluation.base import WholeSplitEvaluator
from dgm_modules.models.capabilities import ExplicitLatent
from dgm_modules.networks.feature_nets import feature_net_for


@torch.no_grad()
def reconstruct(model: nn.Module, x: Tensor) -> Tensor:
    """The decoder's mean image at the posterior mean, ``[B, *input_shape]``."""
    if not isinstance(model, ExplicitLatent):
        raise ValueError(f"{type(model).__name__} has no encoder q(x) and decoder likelihood(z) to reconstruct with")
    return model.likelihood(model.q(x).mean).mean.view_as(x)


def can_reconstruct(model: nn.Module, x: Tensor) -> bool:
    """Whether :func:`reconstruct` works on ``model`` (a q that needs more than ``x`` does not)."""
    try:
        reconstruct(model, x[:2].to(next(model.parameters()).device))
    except (ValueError, TypeError, NotImplementedError):
        return False
    return True


@torch.no_grad()
def recon_accuracy(model: nn.Module, classifier: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Fraction of ``x`` whose reconstruction ``classifier`` (logits) labels as ``y``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    classifier = classifier.to(device).eval()
    correct = 0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        rec = reconstruct(model, xb.to(device)).clamp(0, 1)
        correct += int((classifier(rec.float()).argmax(1) == yb.to(device)).sum())
    model.train(was_training)
    return correct / len(y)


def recon_accuracy_of_run(model: nn.Module, datamodule: Any) -> dict[str, float]:
    """``{"recon_accuracy": ...}`` on the test split, or ``{}`` where the data has no labels or
    classifier, or the model cannot reconstruct."""
    x, y = getattr(datamodule, "test_x", None), getattr(datamodule, "test_y", None)
    dims = getattr(datamodule, "dims", ())
    if x is None or y is None or len(dims) != 3 or dims[0] == 3 or not can_reconstruct(model, x):
        return {}  # colour images are scored by Inception features, which have no digit labels
    net = feature_net_for(datamodule).net
    return {"recon_accuracy": recon_accuracy(model, net, x, y)}


class ReconstructionAccuracyEvaluator(WholeSplitEvaluator):
    """The test split's ``recon_accuracy`` as an evaluator: reconstructs the whole split once, at
    :meth:`compute` (like FID, it reads the DataModule, not the batches)."""

    def compute(self) -> dict[str, float]:
        return recon_accuracy_of_run(self.model, self.datamodule) if self.model is not None else {}
