"""Where the cells of a matrix run: here one after another, here a few at a time, or on Slurm.

Every launcher calls the same ``run_cell``; records land in the same folder whichever is used.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from benchmarks import signals
from benchmarks.matrix import Cell, Progress
from benchmarks.records import read_record
from benchmarks.run import run_id
from benchmarks.slurm import (CellJob, active_job, check_resources, check_slurm_section, executor_parameters,
                              job_state, record_submission, submitted_job)
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
    """Cells as Slurm job arrays through submitit (``cluster="local"`` runs the same path without Slurm).

    Defaults here (``--time-min`` etc.) are overridden per cell by the spec's ``resources``; cells
    with different resources go out as different arrays. A cell whose recorded job is still pending
    or running is not submitted again; ``wait=False`` submits and returns.
    """

    partition: str | None = None
    time_min: int = 240
    gpus_per_cell: int = 0
    cpus_per_cell: int = 2
    mem_gb: int = 16
    cluster: str | None = None  # None: Slurm if available; "local": submitit's local executor; "debug"
    wandb: str = "disabled"
    group: str = "dgm-bench"
    array_parallelism: int | None = None  # at most this many cells at once (sbatch --array=0-N%P)
    slurm: dict = field(default_factory=dict)  # account, qos, constraint, additional_parameters, setup
    wait: bool = True
    poll_s: float = 5.0
    echo: Callable[[str], None] = print
    #: after a stop signal: the cells whose jobs were left queued or running, with their job
    left: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array_parallelism is not None and self.array_parallelism < 1:
            raise ConfigError(f"--array-parallelism must be >= 1, got {self.array_parallelism}")
        self.slurm = check_slurm_section(self.slurm, "slurm")
        check_resources(self.defaults(), "--gpus-per-cell/--cpus-per-cell/--mem-gb/--time-min")

    def defaults(self) -> dict:
        return {"gpus": self.gpus_per_cell, "cpus": self.cpus_per_cell, "mem_gb": self.mem_gb, "time_min": self.time_min}

    def resources(self, cell: Cell) -> dict:
        return {**self.defaults(), **cell.resources}

    def parameters(self, resources: dict | None = None) -> dict:
        """submitit AutoExecutor parameters of the jobs of cells with these resources."""
        section = {**({"partition": self.partition} if self.partition else {}), **self.slurm}
        return executor_parameters(resources or self.defaults(), section, name=f"dgm-bench-{self.group}",
                                   array_parallelism=self.array_parallelism)

    def arrays(self, cells: list[Cell]) -> list[tuple[dict, list[Cell]]]:
        """The cells grouped into job arrays: one per distinct set of resources, in spec order."""
        groups: dict[tuple, list[Cell]] = {}
        for cell in cells:
            groups.setdefault(tuple(sorted(self.resources(cell).items())), []).append(cell)
        return [(dict(key), group) for key, group in groups.items()]

    def __call__(self, cells: list[Cell], out: Path, progress: Progress) -> None:
        import submitit

        waiting: list[tuple[Cell, object | None]] = []  # (cell, its job if submitted by this call)
        todo = []
        for cell in cells:
            active = active_job(out / run_id(cell.config))
            if active is not None:
                self.echo(f"{cell.label}: already submitted as job {active['job_id']} ({active['state']}); "
                          "not submitted again")
                waiting.append((cell, None))
            else:
                todo.append(cell)
        for resources, group in self.arrays(todo):
            executor = submitit.AutoExecutor(folder=str(out / ".submitit" / "%j"), cluster=self.cluster)
            executor.update_parameters(**self.parameters(resources))
            threads = resources["cpus"]
            with executor.batch():  # one job array per set of resources, not one job per cell
                jobs = [executor.submit(CellJob(c.config, str(out), threads, self.wandb, self.group)) for c in group]
            for cell, job in zip(group, jobs):
                record_submission(out / run_id(cell.config), job, executor.cluster)
                waiting.append((cell, job))
            self.echo(f"submitted {len(jobs)} cell(s) as {executor.cluster} job array "
                      f"{str(jobs[0].job_id).split('_')[0]} with {resources}: "
                      + ", ".join(f"{c.label}={j.job_id}" for c, j in zip(group, jobs)))
        if not self.wait:
            self.echo(f"not waiting (--no-wait): {len(waiting)} cell(s) pending or running; run the same command again "
                      "to collect them (pending and running cells are not submitted twice), or "
                      f"`dgm-bench leaderboard --out {out}` for the finished ones")
            return
        self._collect(waiting, out, progress)

    def _collect(self, waiting: list[tuple[Cell, object | None]], out: Path, progress: Progress) -> None:
        """Report each cell as it finishes, in whatever order (not in submission order)."""
        while waiting:
            still = []
            for cell, job in waiting:
                run_dir = out / run_id(cell.config)
                if job is not None and job.done():
                    try:
                        record = job.result()
                    except Exception as err:  # noqa: BLE001 -- a lost job must not stop the others' results
                        record = {"status": "failed", "error": {"type": type(err).__name__, "message": str(err)}}
                elif job is None and active_job(run_dir) is None:  # another submission's job has ended
                    record = read_record(run_dir)
                else:
                    still.append((cell, job))
                    continue
                if record is None:
                    record = {"status": "interrupted", "error": {"type": "Lost", "message": "the job ended without a record"}}
                progress.update(cell, record, skipped=False)
            waiting = still
            if waiting and signals.requested():  # the jobs go on without the submitter; a re-run collects them
                self.left = {cell.label: _job_text(job, out / run_id(cell.config)) for cell, job in waiting}
                self.echo(f"stopped waiting: {len(waiting)} cell(s) left to their queued or running jobs (not "
                          "cancelled); run the same command again to collect them")
                return
            deadline = time.monotonic() + self.poll_s
            while waiting and time.monotonic() < deadline and not signals.requested():  # a signal: act at once
                time.sleep(min(0.2, self.poll_s))


def _job_text(job: object | None, run_dir: Path) -> str:
    """``job ID (STATE)`` of a cell's job: this submission's, else the one recorded in its run folder."""
    entry = submitted_job(run_dir) or {}
    job_id = getattr(job, "job_id", None) or entry.get("job_id", "?")
    try:
        state = str(job.state) if job is not None else job_state(entry)
    except Exception:  # noqa: BLE001 -- sacct unreachable: the id is what matters
        state = "UNKNOWN"
    return f"job {job_id} ({state})"


def make_launcher(kind: str, **options) -> Callable[[list[Cell], Path, Progress], None]:
    if kind == "local":
        if not options.get("wait", True):
            raise ConfigError("--no-wait is for --launcher slurm (a local matrix runs in this process)")
        return LocalLauncher(**{k: v for k, v in options.items() if k in ("jobs", "wandb", "group")})
    if kind == "slurm":
        return SlurmLauncher(**{k: v for k, v in options.items() if k != "jobs"})
    raise ValueError(f"--launcher {kind!r} is not valid; choose one of: local, slurm")


__all__ = ["LocalLauncher", "SlurmLauncher", "make_launcher"]
