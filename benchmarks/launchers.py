"""Where the cells of a matrix run: here one after another, here a few at a time, or on Slurm.

Every launcher calls the same ``run_cell``; records land in the same folder whichever is used.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from benchmarks import signals
from benchmarks.matrix import Cell, Progress
from benchmarks.wandb_log import run_cell_logged, wandb_loggers  # noqa: F401 -- wandb_loggers: the old import path
from dgm_modules.registry import ConfigError


def _run_cell_in_worker(config: dict, out: str, threads: int, wandb: str, group: str) -> dict | None:
    """Run one cell; None if a stop was asked for before it started."""
    import torch

    from benchmarks.cli import quiet_lightning

    if signals.requested():
        return None
    quiet_lightning()
    torch.set_num_threads(threads)
    signals.STATE.busy = True
    try:
        return run_cell_logged(config, out, wandb, group, enable_progress_bar=False)
    finally:
        signals.STATE.busy = False
        signals.exit_if_orphaned()


@dataclass
class LocalLauncher:
    """``jobs=1``: one cell after another in this process; ``jobs>1``: that many processes at once."""

    jobs: int = 1
    wandb: str = "disabled"
    group: str = "dgm-bench"

    def __call__(self, cells: list[Cell], out: Path, progress: Progress) -> None:
        if self.jobs <= 1:
            for cell in cells:
                if signals.requested():
                    return
                record = run_cell_logged(cell.config, out, self.wandb, self.group, enable_progress_bar=False)
                progress.update(cell, record, skipped=False)
            return
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        pool = ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn"), initializer=signals.init_worker,
                                   initargs=(os.getpid(),))
        try:
            futures = {pool.submit(_run_cell_in_worker, c.config, str(out), threads, self.wandb, self.group): c
                       for c in cells}
            pending, forwarded = set(futures), False
            while pending:  # poll, so that a signal is acted on within a second
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    record = None if future.cancelled() else future.result()
                    if record is not None:
                        progress.update(futures[future], record, skipped=False)
                if signals.requested() and not forwarded:  # stop the running cells, start no others
                    for future in pending:
                        future.cancel()
                    _signal_workers(pool, signals.requested())
                    forwarded = True
        except BrokenProcessPool:
            if not signals.requested():
                raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _signal_workers(pool: ProcessPoolExecutor, signum: int) -> None:
    for process in list(getattr(pool, "_processes", {}).values()):  # the pool exposes no public list
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass


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
    array_parallelism: int | None = None  # at most this many cells at once (sbatch --array=0-N%P)

    def __post_init__(self) -> None:
        if self.array_parallelism is not None and self.array_parallelism < 1:
            raise ConfigError(f"--array-parallelism must be >= 1, got {self.array_parallelism}")

    def parameters(self) -> dict:
        """submitit AutoExecutor parameters of every cell's job."""
        params = dict(timeout_min=self.time_min, gpus_per_node=self.gpus_per_cell, cpus_per_task=self.cpus_per_cell,
                      mem_gb=self.mem_gb, name=f"dgm-bench-{self.group}")
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.array_parallelism is not None:
            params["slurm_array_parallelism"] = self.array_parallelism
        return params

    def __call__(self, cells: list[Cell], out: Path, progress: Progress) -> None:
        import submitit

        if not cells:
            return
        executor = submitit.AutoExecutor(folder=str(out / ".submitit" / "%j"), cluster=self.cluster)
        executor.update_parameters(**self.parameters())
        threads = self.cpus_per_cell
        with executor.batch():  # one job array for the whole matrix, not one job per cell
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
