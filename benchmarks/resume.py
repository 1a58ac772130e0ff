"""Exact resumes: a resumed run takes the same steps, with the same data and noise, as one never stopped.

What a Lightning 2.6 checkpoint restores by itself: weights, optimiser and scheduler states, the
loops' progress (epoch, global step, batches done in the epoch). What it does not:

- the data's position inside an epoch (a loader without ``state_dict`` starts the epoch again);
  our loader's order and binarisation noise are functions of ``(seed, epoch)``, so the datamodule
  skips the batches the restored progress says were done (:func:`datamodules.base.train_position`);
- the random number generators (torch, CUDA, numpy, python) that draw the model's Monte Carlo
  noise: :class:`ResumeCallback` saves them in every checkpoint and sets them back when training
  resumes.

And a checkpoint written where the run stops (:func:`save_on_stop`): a signal (SIGTERM from
``kill`` or Slurm, Slurm's pre-timeout signal through submitit) stops the cell at a batch end, and
the checkpoint saved there lets the resume start at the very next batch.
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.warnings import PossibleUserWarning

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


def save_on_stop(trainer: Any, ckpt_dir: str | Path, name: str = "last.ckpt") -> None:
    """Write the resume point where a stopped cell stops (mid-epoch); every rank must call it.

    Not after an epoch's last batch: Lightning resumes such a checkpoint as a finished epoch and
    skips that epoch's validation, so the cell resumes from the epoch's start checkpoint instead
    (the same numbers, one epoch of work repeated).
    """
    if (trainer.state.fn == "fit" and trainer.training and not trainer.sanity_checking
            and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
        trainer.save_checkpoint(str(Path(ckpt_dir) / name))
