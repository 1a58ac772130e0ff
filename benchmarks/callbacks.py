"""Lightning callbacks the runner adds from config: gradient-estimator variance during training."""
from __future__ import annotations

import json
import time
import zlib
from pathlib import Path
from typing import Any, Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback

from benchmarks.records import write_json_atomic
from dgm_modules.evaluation.gradient_variance import (GROUPS, Estimator, fixed_minibatch, measure_estimators,
                                                      resolve_estimators)
from dgm_modules.models.base import LatentVariableModel
from dgm_modules.objectives.base import Objective
from dgm_modules.registry import MODELS, ConfigError, normalise_spec, resolve_init_args

GRADVAR_FILE = "gradvar.json"


def estimator_seed(seed: int, label: str) -> int:
    """One seed per (seed, estimator): the same numbers whatever else is measured alongside."""
    return seed * 1_000_003 + zlib.crc32(label.encode()) % 1_000_003


def gradvar_metrics(results: dict[str, dict]) -> dict[str, float]:
    """``gradvar/<group>/<stat>`` for the run's own objective, ``gradvar/<label>/<group>/<stat>`` else."""
    out = {}
    for label, groups in results.items():
        prefix = "gradvar" if label == "run" else f"gradvar/{label}"
        for group, stats in groups.items():
            if isinstance(stats, dict):
                out.update({f"{prefix}/{group}/{k}": float(stats[k])
                            for k in ("trace_cov", "mean_sq_norm", "snr_mean", "snr_median")})
    return out


def measure(module: L.LightningModule, datamodule: Any, x: Any, estimators: Sequence[Estimator], *,
            model_spec: dict | None, groups: Sequence[str], samples: int, seed: int, adapt_lr: float,
            objectives: dict | None = None, process: tuple[int, int] = (0, 1)) -> dict[str, dict]:
    """The protocol for every estimator at ``module``'s current state (shared by the callback and
    ``dgm-bench gradvar``)."""
    check_module(module)
    out = {}
    for est in estimators:
        out.update(measure_estimators(module.model, x.to(module.device), [est], run_objective=module.objective,
                                      model_spec=model_spec, groups=groups, num_samples=samples,
                                      seed=estimator_seed(seed, est.label), adapt_data=datamodule,
                                      adapt_lr=adapt_lr, objectives=objectives, process=process))
    return out


def check_module(module: Any) -> None:
    if not (isinstance(getattr(module, "model", None), LatentVariableModel)
            and isinstance(getattr(module, "objective", None), Objective)):
        raise ConfigError(f"gradvar: {type(module).__name__} has no latent-variable model with an objective "
                          "(module.model, module.objective) whose gradients could be measured")


class GradientVarianceCallback(Callback):
    """Measures gradient-estimator variance every ``every_n_steps`` optimiser steps (and at step 0).

    On a fixed minibatch drawn when training starts (:func:`fixed_minibatch`, the same one
    ``dgm-bench gradvar`` uses on the run's checkpoint), each estimator's ``M`` gradients of each
    group are drawn at the current parameters. The measurement uses its own random stream and copies
    of the model and objectives (see :mod:`dgm_modules.evaluation.gradient_variance`), so the
    training run is bit-for-bit the one without the callback. Each measurement goes to the run's
    loggers as ``gradvar/[<label>/]<group>/<stat>`` and to ``out_file`` (the full history); the
    last one is in :attr:`last_metrics` for the run's record. Estimators other than the run's own
    keep their fitted state (NVIL's baseline) between measurements, in memory only.

    Args:
        every_n_steps: measurement interval in optimiser steps; 0 turns the measurement off.
        samples: ``M``, gradient estimates per estimator and measurement (>= 2).
        groups: parameter groups, ``phi`` (inference network) and/or ``theta`` (generative model).
        estimators: what to measure: ``None`` (the run's own objective), ``"vae"`` / ``"sbn"``
            (the default comparisons), or a list of names / mappings (see
            :func:`~dgm_modules.evaluation.gradient_variance.parse_estimator`).
        batch_size: size of the fixed minibatch; 0 means the training batch size.
        seed: seed of the minibatch and of the measurement's random stream.
        adapt_lr: learning rate of the fit of an estimator's own parameters (``adapt_steps``).
        model_spec: the run's model spec, to build estimators that override model options (injected).
        out_file: where the history is written (injected: ``<run_dir>/gradvar.json``).
    """

    def __init__(self, every_n_steps: int = 0, samples: int = 100, groups: Sequence[str] = GROUPS,
                 estimators: Sequence[str | dict] | str | None = None, batch_size: int = 0, seed: int = 0,
                 adapt_lr: float = 1e-3, model_spec: dict | None = None, out_file: str | None = None) -> None:
        if every_n_steps < 0:
            raise ConfigError(f"gradvar.every_n_steps must be >= 0, got {every_n_steps}")
        if samples < 2:
            raise ConfigError(f"gradvar.samples must be >= 2, got {samples}")
        if not groups or any(g not in GROUPS for g in groups):
            raise ConfigError(f"gradvar.groups must be a non-empty list of {list(GROUPS)}, got {list(groups)}")
        if batch_size < 0:
            raise ConfigError(f"gradvar.batch_size must be >= 0, got {batch_size}")
        if adapt_lr <= 0:
            raise ConfigError(f"gradvar.adapt_lr must be > 0, got {adapt_lr}")
        self.every_n_steps, self.samples, self.groups = every_n_steps, samples, list(groups)
        self.estimators = resolve_estimators(estimators)
        self.batch_size, self.seed, self.adapt_lr = batch_size, seed, adapt_lr
        self.model_spec, self.out_file = model_spec, None if out_file is None else Path(out_file)
        if model_spec is not None:  # model overrides fail before training, naming the option
            spec = normalise_spec(model_spec, "model")
            cls = MODELS.get(spec["class_path"], "model.class_path")
            for est in self.estimators:
                if est.model_overrides:
                    resolve_init_args(cls, {**spec["init_args"], **est.model_overrides},
                                      f"gradvar.estimators[{est.label}].model_overrides", ("input_shape",))
        self.history: list[dict] = []
        self.last_metrics: dict[str, float] = {}
        self._x = None
        self._objectives: dict = {}

    def protocol(self) -> dict:
        return {"samples": self.samples, "groups": self.groups, "batch_size": self.batch_size, "seed": self.seed,
                "every_n_steps": self.every_n_steps, "adapt_lr": self.adapt_lr,
                "estimators": [e.to_dict() for e in self.estimators]}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        check_module(pl_module)
        datamodule = trainer.datamodule
        batch_size = self.batch_size or datamodule.batch_size
        self._x = fixed_minibatch(datamodule, batch_size, self.seed)  # its own generator
        self.batch_size = batch_size
        if self.out_file is not None and self.out_file.exists():  # a resumed run keeps its history
            self.history = json.loads(self.out_file.read_text()).get("history", [])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe_measure(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._maybe_measure(trainer, pl_module)

    def _maybe_measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step % self.every_n_steps or any(h["step"] == step for h in self.history):
            return
        t0 = time.perf_counter()
        results = measure(pl_module, trainer.datamodule, self._x, self.estimators, model_spec=self.model_spec,
                          groups=self.groups, samples=self.samples, seed=self.seed, adapt_lr=self.adapt_lr,
                          objectives=self._objectives, process=(trainer.global_rank, trainer.world_size))
        self.history.append({"step": step, "epoch": trainer.current_epoch,
                             "wall_s": round(time.perf_counter() - t0, 3), "estimators": results})
        self.last_metrics = gradvar_metrics(results)
        for logger in trainer.loggers:
            logger.log_metrics(self.last_metrics, step=step)
        if self.out_file is not None and trainer.global_rank == 0:
            write_json_atomic(self.out_file, {"protocol": self.protocol(), "history": self.history})


def resolve_gradvar(options: Any, model_spec: dict | None = None) -> dict:
    """The config section ``gradvar``, validated (against the run's model spec too) and with every
    default filled in."""
    if not isinstance(options, dict):
        raise ConfigError(f"gradvar: expected a mapping of options (every_n_steps, samples, groups, ...), "
                          f"got {options!r}")
    init = resolve_init_args(GradientVarianceCallback, options, "gradvar", ("model_spec", "out_file"))
    GradientVarianceCallback(**init, model_spec=model_spec)  # the constructor's checks, before training
    return init


def gradvar_callback(config: dict, run_dir: str | Path) -> GradientVarianceCallback | None:
    """The run's callback, or None when ``gradvar.every_n_steps`` is 0 or absent."""
    options = config.get("gradvar") or {}
    if not options.get("every_n_steps"):
        return None
    return GradientVarianceCallback(**options, model_spec=config["model"], out_file=str(Path(run_dir) / GRADVAR_FILE))
