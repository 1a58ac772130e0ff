"""SIGTERM and SIGINT: stop starting cells, interrupt running ones at a batch boundary, exit 128+signum.

A signal handler only records the signal; the running cell stops at the next batch end (a
:class:`StopCallback` raises :class:`Interrupted` there), so nothing is torn mid-write and the
cell's last epoch-end checkpoint is kept for a resume. Lightning's own SIGTERM handling (a
``SystemExit`` with no code, so a silent exit 0) is caught and treated the same way.

Worker processes of a ``--jobs N`` matrix are tied to their parent: on Linux the kernel sends them
SIGTERM when it dies (``PR_SET_PDEATHSIG``), whatever killed it, and a worker that is told to stop
while it holds no cell exits at once.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any

from lightning.pytorch.callbacks import Callback

SIGNALS = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1


class Interrupted(BaseException):
    """A cell stopped by a signal; a BaseException so that ``except Exception`` does not record it as failed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class _State:
    signum: int | None = None  # the first stop signal received
    busy: bool = False  # this process is running a cell
    parent_pid: int | None = None  # a pool worker's parent: once it is gone, an idle worker exits


STATE = _State()


def requested() -> int | None:
    """The signal that asked this process to stop, or None."""
    return STATE.signum


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + signal number (143 for SIGTERM, 130 for SIGINT)."""
    return 128 + int(signum)


def _handler(signum: int, frame: Any) -> None:
    if STATE.signum is None:
        STATE.signum = signum
    if not STATE.busy:
        exit_if_orphaned()


def exit_if_orphaned() -> None:
    """End a pool worker whose parent has died (the pool would otherwise keep it waiting forever)."""
    if STATE.parent_pid is not None and os.getppid() != STATE.parent_pid:
        os._exit(exit_code(STATE.signum or signal.SIGTERM))


def install() -> None:
    """Route SIGTERM and SIGINT to :func:`_handler` (call from the main thread)."""
    STATE.signum = None
    for sig in SIGNALS:
        signal.signal(sig, _handler)


def describe(err: BaseException) -> dict:
    """The record's ``error`` for an interruption (Lightning's SIGTERMException carries no signal)."""
    signum = getattr(err, "signum", None) or STATE.signum or signal.SIGTERM
    return {"type": "Interrupted", "message": str(Interrupted(signum))}


def current_handlers() -> dict:
    return {sig: signal.getsignal(sig) for sig in SIGNALS}


def restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


def check() -> None:
    """Raise :class:`Interrupted` if a stop was requested."""
    if STATE.signum is not None:
        raise Interrupted(STATE.signum)


class StopCallback(Callback):
    """Raise :class:`Interrupted` at the first batch boundary after a stop signal; in training, first
    write a checkpoint there (``ckpt_dir/last.ckpt``) so that the resume starts at the next batch."""

    def __init__(self, ckpt_dir: Any = None) -> None:
        self.ckpt_dir = ckpt_dir

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.world_size > 1:  # ranks see a signal at different batches: stop together (as Lightning
            # does for its own SIGTERM), else one saves (a collective) while another trains on
            if trainer.strategy.reduce_boolean_decision(STATE.signum is not None, all=False) and STATE.signum is None:
                STATE.signum = signal.SIGTERM
        if STATE.signum is not None and self.ckpt_dir is not None:
            from benchmarks.resume import save_resume_point

            save_resume_point(trainer, self.ckpt_dir)
        check()

    def on_validation_batch_end(self, *args: Any) -> None:
        check()

    def on_test_batch_end(self, *args: Any) -> None:
        check()

    def on_train_epoch_start(self, *args: Any) -> None:
        check()


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: fall back to the parent check below
            pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(exit_code(signal.SIGTERM))


def init_worker(parent_pid: int) -> None:
    """ProcessPoolExecutor initializer: die with the parent, stop on signals, exit at once when idle."""
    die_with_parent(parent_pid)
    install()
    STATE.parent_pid = parent_pid


def summary(labels: list[str], records: list[dict | None], queued: dict[str, str] | None = None) -> str:
    """What an interrupted matrix kept and what a re-run of the same command will do; ``queued``:
    the cells left to Slurm jobs (label -> ``job ID (STATE)``), which a re-run collects."""
    queued = queued or {}
    groups: dict[str, list[str]] = {"kept": [], "interrupted": [], "queued": [], "not started": []}
    for label, record in zip(labels, records):
        status = (record or {}).get("status")
        key = ("kept" if status in ("completed", "diverged", "failed") else "queued" if label in queued
               else "interrupted" if record else "not started")
        groups[key].append(label)
    lines = [f"stopped by {signal.Signals(STATE.signum or signal.SIGTERM).name}: {len(groups['kept'])} cell(s) kept, "
             f"{len(groups['interrupted'])} interrupted (resume from their last checkpoint), "
             + (f"{len(groups['queued'])} left to their queued or running Slurm jobs, " if queued else "")
             + f"{len(groups['not started'])} not started; run the same command again to finish"]
    lines += [f"  interrupted: {label}" for label in groups["interrupted"]]
    lines += [f"  left to Slurm: {label}: {queued[label]}" for label in groups["queued"]]
    return "\n".join(lines)
