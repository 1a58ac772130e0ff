"""Exact resumes: a resumed run takes the same steps, with the same data and noise, as one never stopped.

What a Lightning 2.6 checkpoint restores by itself: weights, optimiser and scheduler states, the
loops' progress (epoch, global step, batches done in the epoch). What it does not:

- the data's position inside an epoch (a loader without ``state_dict`` starts the epoch again);
  our loader's order and binarisation noise are functions of ``(seed, epoch)``, so the datamodule
  skips the batches the restored progress says were done (:func:`datamodules.base.train_position`);
- the random number generators (torch, CUDA, numpy, python) that draw the model's Monte Carlo
  noise: :class:`ResumeCallback` saves them in every checkpoint and sets them back when training
  resumes.

And a checkpoint written where the run stops (:func:`save_resume_point`): a signal (SIGTERM from
``kill`` or Slurm, Slurm's pre-timeout signal through submitit) stops the cell at a batch end, and
the checkpoint saved there lets the resume start at the very next batch. A process that gets no
signal (SIGKILL, the out-of-memory killer, a lost node) saves nothing where it dies: the config's
``checkpoint: {every_n_steps: N, every_minutes: M}`` writes the same mid-epoch checkpoint
periodically (:class:`PeriodicCheckpoint`), so such a run resumes from the last one.
"""
from __future__ import annotations

import math
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from dgm_modules.registry import ConfigError, section_options

# Lightning warns that a mid-epoch resume of a loader without ``state_dict`` may be unreliable;
# ours is exact (the datamodule skips the batches done), so the warning would only mislead
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended",
                        category=PossibleUserWarning)

RNG_KEY = "dgm_bench_rng"


def rng_states() -> dict:
    # plain types and tensors only: Lightning loads checkpoints with ``weights_only=True``
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
              "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumeCallback(Callback):
    """Save the generators' states in each checkpoint; set them back when the resumed fit starts;
    remember the step the fit resumed at (:attr:`resumed_step`, for the record).

    They are set at ``on_train_start``, not when the checkpoint is loaded: between the two, Lightning
    runs set-up code (and the sanity check, under ``isolate_rng``) that the uninterrupted run ran
    before its first step, not at the step where the checkpoint was written.
    """

    def __init__(self) -> None:
        self._pending: dict | None = None
        self.resumed_step: int | None = None

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(RNG_KEY)
        self.resumed_step = int(checkpoint.get("global_step", 0))

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None


def save_resume_point(trainer: Any, ckpt_dir: str | Path, name: str = "last.ckpt") -> bool:
    """Write the resume point at this batch end (mid-epoch); every rank must call it. Returns whether
    it was written; it never is after an epoch's last batch (below).

    Not after an epoch's last batch: Lightning resumes such a checkpoint as a finished epoch and
    skips that epoch's validation, so the cell resumes from the epoch's start checkpoint instead
    (the same numbers, one epoch of work repeated).
    """
    if (trainer.state.fn == "fit" and trainer.training and not trainer.sanity_checking
            and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
        trainer.save_checkpoint(str(Path(ckpt_dir) / name))
        return True
    return False


CHECKPOINT_KEYS = {"every_n_steps": None, "every_minutes": None}


def resolve_checkpoint(options: Any) -> dict:
    """The ``checkpoint`` section: ``every_n_steps`` (optimiser steps) and/or ``every_minutes``."""
    out = section_options("checkpoint", options, CHECKPOINT_KEYS)
    n, minutes = out["every_n_steps"], out["every_minutes"]
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ConfigError(f"checkpoint.every_n_steps must be an integer >= 1, got {n!r}")
    if minutes is not None and (not isinstance(minutes, (int, float)) or isinstance(minutes, bool)
                                or not math.isfinite(minutes) or minutes <= 0):
        raise ConfigError(f"checkpoint.every_minutes must be a number > 0, got {minutes!r}")
    if n is None and minutes is None:
        raise ConfigError("checkpoint: set every_n_steps and/or every_minutes (e.g. checkpoint.every_n_steps=500)")
    return out


class PeriodicCheckpoint(Callback):
    """The mid-epoch resume point every ``every_n_steps`` optimiser steps and/or ``every_minutes``,
    written like a stop signal's (atomically, the previous kept). (Lightning flushes the CSV log at
    each row it logs, so the history on disk already reaches the checkpoint.)

    Only at a batch that took an optimiser step: with gradient accumulation, a batch in between
    holds gradients no checkpoint carries. Under DDP rank 0's clock decides, so all ranks save together.
    """

    def __init__(self, ckpt_dir: str | Path, every_n_steps: int | None = None,
                 every_minutes: float | None = None) -> None:
        self.ckpt_dir, self.every_n_steps, self.every_minutes = ckpt_dir, every_n_steps, every_minutes
        self._step = -1  # global step at the previous batch end
        self._saved_at = time.monotonic()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._step, self._saved_at = trainer.global_step, time.monotonic()

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        stepped, self._step = trainer.global_step != self._step, trainer.global_step
        due = stepped and self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0
        if self.every_minutes is not None:
            late = stepped and time.monotonic() - self._saved_at >= 60 * self.every_minutes
            due = due or (trainer.strategy.broadcast(late) if trainer.world_size > 1 else late)
        if due and save_resume_point(trainer, self.ckpt_dir):
            self._saved_at = time.monotonic()
