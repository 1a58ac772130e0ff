"""Weights & Biases: one wandb run per cell, metric directions declared, the record attached.

wandb keeps one active run per process and Lightning's ``WandbLogger`` adopts whatever run is
active, so a process that trains several cells must ``finish()`` each run before the next cell
starts; otherwise every cell of a worker lands in one run (the VAE's run holding the GAN's FID).
``run_cell_logged`` does that around :func:`benchmarks.run.run_cell`, and adds the per-step training
curves (:class:`StepCurves`) that only wandb receives.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from benchmarks.metric_info import metric_info
from benchmarks.records import RECORD, read_record
from benchmarks.run import run_cell, run_id

MODES = ("offline", "online", "disabled")
#: wandb's summary aggregation for each direction ("min" keeps the best epoch's value)
SUMMARY = {"lower": "min", "higher": "max"}


def add_wandb_argument(parser: argparse.ArgumentParser, group_help: str) -> None:
    parser.add_argument("--wandb", nargs="?", const="offline", default="disabled", choices=MODES,
                        help=f"log each cell as its own Weights & Biases run, {group_help} (bare --wandb: offline, "
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
        direction = "lower" if name == "train/loss" else metric_info(name).direction
        if direction is not None:
            experiment.define_metric(name, summary=SUMMARY[direction])


class StepCurves(Callback):
    """The training values of one step in every ``trainer.log_every_n_steps`` (Lightning's default 50)
    sent to wandb as ``train/<name>_step``; the CSV keeps its epoch means (``train/<name>``).

    The module keeps its last step's values as detached tensors (``train_step_values``), so the only
    cost is reading a few scalars once in n steps; Lightning's per-step ``self.log`` is not involved.
    Modules without ``train_step_values`` (the adversarial one logs its own terms) are left alone.
    """

    def __init__(self, logger: Any) -> None:
        self.logger, self.last_step = logger, -1

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        values, step = getattr(pl_module, "train_step_values", None), trainer.global_step
        if (values and step != self.last_step  # accumulated batches share a step: one point each
                and step % max(1, trainer.log_every_n_steps) == 0 and trainer.global_rank == 0):
            self.logger.log_metrics({f"train/{k}_step": float(v) for k, v in values.items()}, step=step)
            self.last_step = step


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
        record = run_cell(config, out, loggers=loggers, callbacks=[StepCurves(loggers[0])], **options)
        define_directions(experiment, ["train/loss", *record.get("metrics", {})])
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
