"""Convergence curves and early stopping, added to a run from its config.

``curve: {k: 1}`` scores the test split by ``-L_k`` after log-spaced numbers of passes (1, 2, 3, 5,
8, 12, 18, ... and the last), so a reproduction can draw its bound against passes on a log axis.
It uses the evaluation's own seeded noise, so a run with the curve trains exactly as one without.
``early_stopping: {monitor: val/nll_k1, patience: 20}`` stops on the validation bound, as the
papers that train "to convergence" do, and the test stage then scores the best epoch's weights.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

from dgm_modules.evaluation.log_likelihood import LogLikelihoodEvaluator
from dgm_modules.registry import ConfigError, check_k, section_options

CURVE_KEYS = {"k": 1, "growth": 1.5}
EARLY_STOPPING_KEYS = {"monitor": "val/nll_k1", "patience": 20, "mode": "min", "min_delta": 0.0}


def curve_epochs(max_epochs: int, growth: float = 1.5) -> list[int]:
    """Pass counts ``1, 2, 3, 5, 8, 12, ...`` (each at least ``growth`` times the last) up to ``max_epochs``."""
    out, e = [], 1
    while e < max_epochs:
        out.append(e)
        e = max(e + 1, math.ceil(e * growth))
    return out + [max_epochs]


class TestCurve(Callback):
    """Logs ``curve/test_nll_k{k}`` at the end of the training epochs of :func:`curve_epochs`."""

    def __init__(self, k: int = 1, growth: float = 1.5) -> None:
        self.k, self.growth = k, growth

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        passes = trainer.current_epoch + 1
        due = curve_epochs(trainer.max_epochs or passes, self.growth)
        if passes not in due and not trainer.should_stop:  # early stopping: score the last epoch too
            return
        dm = trainer.datamodule
        evaluator = LogLikelihoodEvaluator([self.k], getattr(pl_module, "chunk_pairs", 4_096), seed=0)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            for batch in dm.test_dataloader():
                evaluator.update(pl_module.model, batch._replace(x=batch.x.to(pl_module.device)))
        pl_module.train(was_training)
        value = evaluator.compute()[f"nll_k{self.k}"]
        pl_module.log(f"curve/test_nll_k{self.k}", value, sync_dist=False)


def resolve_curve(options: Any) -> dict:
    out = section_options("curve", options, CURVE_KEYS)
    check_k(out["k"], "curve.k")
    if not isinstance(out["growth"], (int, float)) or out["growth"] <= 1:
        raise ConfigError(f"curve.growth must be a number > 1, got {out['growth']!r}")
    return out


def resolve_early_stopping(options: Any) -> dict:
    out = section_options("early_stopping", options, EARLY_STOPPING_KEYS)
    if not str(out["monitor"]).startswith("val/"):
        raise ConfigError(f"early_stopping.monitor must be a validation metric (val/...), got {out['monitor']!r}")
    if not isinstance(out["patience"], int) or out["patience"] < 1:
        raise ConfigError(f"early_stopping.patience must be an integer >= 1, got {out['patience']!r}")
    if out["mode"] not in ("min", "max"):
        raise ConfigError(f"early_stopping.mode must be 'min' or 'max', got {out['mode']!r}")
    return out


def curve_callbacks(config: dict) -> list[Callback]:
    out: list[Callback] = []
    if "curve" in config:
        out.append(TestCurve(config["curve"]["k"], config["curve"]["growth"]))
    if "early_stopping" in config:
        es = config["early_stopping"]
        # decided when validation ends, not at the train epoch's end: there Lightning runs it after every
        # other callback, so the curve would not know that this epoch is the last one to score it
        out.append(EarlyStopping(monitor=es["monitor"], patience=es["patience"], mode=es["mode"],
                                 min_delta=es["min_delta"], check_finite=False, check_on_train_epoch_end=False))
    return out
