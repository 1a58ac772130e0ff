"""The log-likelihood evaluation protocol shared by every latent-variable method."""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor, nn

from datamodules.base import Batch
from dgm_modules.evaluation.bounds import check_ks, importance_weighted_bounds
from dgm_modules.evaluation.metrics import MeanPerExample
from dgm_modules.models.base import LatentVariableModel


class LogLikelihoodEvaluator(nn.Module):
    """Accumulates ``nll_k{k} = -L_k`` for each ``k`` and ``neg_elbo`` (analytic KL) over a split.

    The Monte Carlo noise of each batch is seeded by ``(seed, batch index)`` inside a forked RNG,
    so the numbers do not depend on how batches are dealt to processes and the training random
    stream is left untouched.
    """

    def __init__(self, ks: Sequence[int], chunk_pairs: int = 4_096, seed: int = 0, option: str = "ks") -> None:
        super().__init__()
        self.ks, self.chunk_pairs, self.seed = check_ks(ks, option), chunk_pairs, seed
        names = [f"nll_k{k}" for k in self.ks] + ["neg_elbo"]
        self.metrics = nn.ModuleDict({n: MeanPerExample() for n in names})

    def bind_data(self, datamodule: object) -> None:
        pass

    @torch.no_grad()
    def update(self, model: LatentVariableModel, batch: Batch) -> None:
        x, batch_index = batch.x, batch.index
        if not len(x):  # a rank's empty share of a small split (datamodules.base.IndexBatchLoader)
            return
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + batch_index)
            bounds = importance_weighted_bounds(model, x, self.ks, self.chunk_pairs)
            elbo = model.analytic_elbo(x)
        for k, b in bounds.items():
            self.metrics[f"nll_k{k}"].update(-b)
        if elbo is not None:
            self.metrics["neg_elbo"].update(-elbo)

    def compute(self) -> dict[str, Tensor]:
        """The split's means (synced across processes); metrics with no data are left out.

        Every process computes every metric, whether or not it saw data: the reduction is collective
        (a process that skipped it would leave the others waiting), and only its result says
        whether any process had data for a metric.
        """
        out = {}
        with warnings.catch_warnings():  # computed before any update on purpose (above)
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
            for name, metric in self.metrics.items():
                value = metric.compute()
                if metric.examples:
                    out[name] = value
        return out

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
