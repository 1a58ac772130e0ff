"""Weights & Biases: one wandb run per cell, metric directions declared, the record attached.

wandb keeps one active run per process and Lightning's ``WandbLogger`` adopts whatever run is
active, so a process that trains several cells must ``finish()`` each run before the next cell
starts; otherwise every cell of a worker lands in one run (the VAE's run holding the GAN's FID).
``run_cell_logged`` does that around :func:`benchmarks.run.run_cell`, and adds the per-step training
curves (:class:`StepCurves`) and the grid of samples (:class:`SampleGrid`) that only wandb receives.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from benchmarks.metric_info import metric_info
from benchmarks.records import RECORD, read_record
from benchmarks.run import run_cell, run_id

MODES = ("offline", "online", "disabled")
#: wandb's summary aggregation for each direction ("min" keeps the best epoch's value)
SUMMARY = {"lower": "min", "higher": "max"}
#: the training curves' directions (epoch means); the bound is a log-likelihood bound
TRAIN_DIRECTIONS = {"train/loss": "lower", "train/bound": "higher"}


def add_wandb_argument(parser: argparse.ArgumentParser, group_help: str,
                       what: str = "log each cell as its own Weights & Biases run") -> None:
    parser.add_argument("--wandb", nargs="?", const="offline", default="disabled", choices=MODES,
                        help=f"{what}, {group_help} (bare --wandb: offline, "
                             "which needs no account; `wandb sync` uploads later)")


def wandb_loggers(mode: str, group: str, config: dict, out: str | Path) -> list:
    """A WandbLogger for this cell when asked (``offline`` needs no account); the matrix is the group."""
    if mode == "disabled":
        return []
    from lightning.pytorch.loggers import WandbLogger

    run_dir = Path(out) / run_id(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    return [WandbLogger(project=os.environ.get("WANDB_PROJECT", "dgm-bench"), group=group, name=run_dir.name,
                        save_dir=str(run_dir), mode=mode, config=config, job_type=config["method"])]


def define_directions(experiment: Any, names: list[str]) -> None:
    """``define_metric`` with the summary that keeps the best value, for each logged name whose
    metric has a declared direction. Exact names, not globs: Lightning's WandbLogger defines the
    glob ``*`` (its step axis), and which of two matching globs wandb applies is not defined."""
    for name in names:
        direction = TRAIN_DIRECTIONS.get(name) or metric_info(name).direction
        if direction is not None:
            experiment.define_metric(name, summary=SUMMARY[direction])


class StepCurves(Callback):
    """The training values of one step in every ``trainer.log_every_n_steps`` (Lightning's default 50)
    sent to wandb as ``train/<name>_step``; the CSV keeps its epoch means (``train/<name>``).

    The module keeps its last step's values as detached tensors (``train_step_values``), so the only
    cost is reading a few scalars once in n steps; Lightning's per-step ``self.log`` is not involved.
    A module that logs interval means itself (``module.log_every_n_steps``) is left alone: its
    ``train/<name>_step`` are those means.
    """

    def __init__(self, logger: Any) -> None:
        self.logger, self.last_step = logger, -1

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        values, step = getattr(pl_module, "train_step_values", None), trainer.global_step
        if (values and step != self.last_step  # accumulated batches share a step: one point each
                and not getattr(pl_module, "log_every_n_steps", 0)
                and step % max(1, trainer.log_every_n_steps) == 0 and trainer.global_rank == 0):
            self.logger.log_metrics({f"train/{k}_step": float(v) for k, v in values.items()}, step=step)
            self.last_step = step


@torch.no_grad()
def sample_grid(model: Any, n: int = 64, seed: int = 0) -> torch.Tensor | None:
    """``n`` samples of ``model`` (drawn under ``seed``, as ``dgm-bench figure samples`` draws them) in
    one ``uint8`` ``[C, H, W]`` grid, or None where the model cannot sample images."""
    from torchvision.utils import make_grid

    shape = tuple(getattr(model, "input_shape", ()))
    shape = (1, *shape) if len(shape) == 2 else shape
    if not callable(getattr(model, "sample", None)) or len(shape) != 3:
        return None  # e.g. 2-d points of a toy mixture: no image to show
    device = next(iter(model.parameters()), torch.empty(0)).device
    training = model.training
    model.eval()
    try:  # the training run's random state is not touched
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            x = model.sample(n)
    except NotImplementedError:
        return None
    finally:
        model.train(training)
    grid = make_grid(x.reshape(n, *shape).float().clamp(0, 1).cpu(), nrow=round(n ** 0.5), padding=2, pad_value=1.0)
    # uint8: wandb casts a float tensor to uint8 without scaling (every pixel 0); one channel stays grey
    return (grid[:shape[0]] * 255).round().to(torch.uint8)


class SampleGrid(Callback):
    """At test end, a grid of ``n`` model samples logged as the image ``samples`` (WandbLogger.log_image)."""

    def __init__(self, logger: Any, n: int = 64, seed: int = 0) -> None:
        self.logger, self.n, self.seed = logger, n, seed

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_rank != 0:
            return
        grid = sample_grid(getattr(pl_module, "model", None), self.n, self.seed)
        if grid is not None:
            self.logger.log_image("samples", [grid], step=trainer.global_step,
                                  caption=[f"{self.n} samples (seed {self.seed}) after {trainer.global_step} steps"])


def run_cell_logged(config: dict, out: str | Path, mode: str = "disabled", group: str = "dgm-bench",
                    **options: Any) -> dict:
    """:func:`run_cell` with its own wandb run when ``mode`` is not ``disabled``; the run is finished
    before this returns, whatever happened in the cell."""
    if mode == "disabled":
        return run_cell(config, out, **options)
    if mode not in MODES:
        raise ValueError(f"--wandb {mode!r} is not valid; choose one of: {', '.join(MODES)}")
    previous = read_record(Path(out) / run_id(config))
    if previous is not None and previous.get("status") == "completed":
        return previous  # nothing trains, so nothing to log: no empty wandb run
    loggers = wandb_loggers(mode, group, config, out)
    experiment = loggers[0].experiment  # starts this cell's own run now
    try:
        record = run_cell(config, out, loggers=loggers, callbacks=[StepCurves(loggers[0]), SampleGrid(loggers[0])],
                          **options)
        define_directions(experiment, [*TRAIN_DIRECTIONS, *record.get("metrics", {})])
        experiment.summary.update({"status": record["status"], **{
            k: v for k, v in record.get("metrics", {}).items()
            if k.startswith("test/") and isinstance(v, (int, float)) and math.isfinite(v)}})
        path = Path(out) / record["run_id"] / RECORD
        if path.exists():
            import wandb

            artifact = wandb.Artifact(f"record-{record['run_id']}", type="record",
                                      metadata={"fingerprint": record.get("fingerprint"), "seed": record.get("seed")})
            artifact.add_file(str(path))
            experiment.log_artifact(artifact)
    finally:
        experiment.finish()
    return record


#: typed columns of ``leaderboard.csv`` (the rest are text); empty cells become None
_LEADERBOARD_TYPES = {"n": int, "mean": float, "std": float, "ci95_low": float, "ci95_high": float, "best": bool}


def _typed(column: str, text: str) -> Any:
    kind = _LEADERBOARD_TYPES.get(column, str)
    if kind is str:
        return text
    return None if text == "" else bool(int(text)) if kind is bool else kind(text)


def log_leaderboard(root: str | Path, mode: str, group: str, current: set[str] | None = None,
                    out: str | Path | None = None) -> str | None:
    """The leaderboard of the records under ``root`` (the rows of ``leaderboard.csv``: one per table,
    configuration and metric) as the wandb Table ``leaderboard`` of a run of its own
    (``job_type="leaderboard"``, in ``group``); its files go under ``out`` (default ``root``).
    Return the run's id, or None when ``mode`` is ``disabled``."""
    if mode == "disabled":
        return None
    if mode not in MODES:
        raise ValueError(f"--wandb {mode!r} is not valid; choose one of: {', '.join(MODES)}")
    import csv
    import io

    import wandb

    from benchmarks.leaderboard import build_leaderboard, render_csv

    header, *lines = list(csv.reader(io.StringIO(render_csv(build_leaderboard(root, current)))))
    rows = [[_typed(column, text) for column, text in zip(header, line)] for line in lines]
    save_dir = Path(out or root)
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "dgm-bench"), group=group, job_type="leaderboard",
                     name=f"leaderboard-{group}", dir=str(save_dir), mode=mode,
                     config={"records": str(root), "spec_configurations": len(current) if current else None})
    try:
        run.log({"leaderboard": wandb.Table(columns=header, data=rows)})
        return run.id
    finally:
        run.finish()
