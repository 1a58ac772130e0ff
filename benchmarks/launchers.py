"""Where the cells of a matrix run: here one after another, here a few at a time, or on Slurm.

Every launcher calls the same ``run_cell``; records land in the same folder whichever is used.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from benchmarks.matrix import Cell, Progress
from benchmarks.wandb_log import run_cell_logged, wandb_loggers  # noqa: F401 -- wandb_loggers: the old import path


def _run_cell_in_worker(config: dict, out: str, threads: int, wandb: str, group: str) -> dict:
    import torch

    from benchmarks.cli import quiet_lightning

    quiet_lightning()
    torch.set_num_threads(threads)
    return run_cell_logged(config, out, wandb, group, enable_progress_bar=False)


@dataclass
class LocalLauncher:
    """``jobs=1``: one cell after another in this process; ``jobs>1``: that many processes at once."""

    jobs: int = 1
    wandb: str = "disabled"
    group: str = "dgm-bench"

    def __call__(self, cells: list[Cell], out: Path, progress: Progress) -> None:
        if self.jobs <= 1:
            for cell in cells:
                record = run_cell_logged(cell.config, out, self.wandb, self.group, enable_progress_bar=False)
                progress.update(cell, record, skipped=False)
            return
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        with ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_run_cell_in_worker, c.config, str(out), threads, self.wandb, self.group): c
                       for c in cells}
            for future in as_completed(futures):
                progress.update(futures[future], future.result(), skipped=False)


@dataclass
class SlurmLauncher:
    """Each cell a Slurm job through submitit (``cluster="local"`` runs the same path without Slurm)."""

    partition: str | None = None
    time_min: int = 240
    gpus_per_cell: int = 0
    cpus_per_cell: int = 2
    mem_gb: int = 16
    cluster: str | None = None  # None: Slurm if available; "local": submitit's local executor; "debug"
    wandb: str = "disabled"
    group: str = "dgm-bench"

    def __call__(self, cells: list[Cell], out: Path, progress: Progress) -> None:
        import submitit

        if not cells:
            return
        executor = submitit.AutoExecutor(folder=str(out / ".submitit" / "%j"), cluster=self.cluster)
        params = dict(timeout_min=self.time_min, gpus_per_node=self.gpus_per_cell, cpus_per_task=self.cpus_per_cell,
                      mem_gb=self.mem_gb, name=f"dgm-bench-{self.group}")
        if self.partition:
            params["slurm_partition"] = self.partition
        executor.update_parameters(**params)
        threads = self.cpus_per_cell
        jobs = [executor.submit(_run_cell_in_worker, c.config, str(out), threads, self.wandb, self.group)
                for c in cells]
        for cell, job in zip(cells, jobs):
            try:
                record = job.result()
            except Exception as err:  # noqa: BLE001 -- a lost job must not stop the others' results
                record = {"status": "failed", "error": {"type": type(err).__name__, "message": str(err)}}
            progress.update(cell, record, skipped=False)


def make_launcher(kind: str, **options) -> Callable[[list[Cell], Path, Progress], None]:
    if kind == "local":
        return LocalLauncher(**{k: v for k, v in options.items() if k in ("jobs", "wandb", "group")})
    if kind == "slurm":
        return SlurmLauncher(**{k: v for k, v in options.items() if k != "jobs"})
    raise ValueError(f"--launcher {kind!r} is not valid; choose one of: local, slurm")


__all__ = ["LocalLauncher", "SlurmLauncher", "make_launcher"]
