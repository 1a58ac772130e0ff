"""Checkpoints a cell can trust: written atomically, the previous one kept, checked by loading.

A checkpoint is judged by loading it, never by the text of an error: a file cut short (a full disk,
a copy interrupted) fails ``torch.load`` or lacks the trainer state. A torn ``last.ckpt`` is set
aside (renamed, not deleted) and the cell resumes from the previous good one or, if none, trains
from the start; the choice is logged and written into the record.
"""
from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from benchmarks.fingerprint import config_fingerprint
from dgm_modules.registry import ConfigError

log = logging.getLogger(__name__)
LAST, PREVIOUS = "last.ckpt", "last-previous.ckpt"
#: what Lightning needs to resume a fit
RESUME_KEYS = ("state_dict", "epoch", "global_step", "loops", "optimizer_states")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, fsync, rename; the ``last.ckpt`` it replaces becomes ``last-previous.ckpt``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            try:
                with open(tmp, "wb") as fh:
                    torch.save(checkpoint, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            except (OSError, RuntimeError) as err:
                cause = os_error_in(err)
                if cause is None:
                    raise
                # torch's writer reports a full disk as "unexpected pos": name the errno and the file
                raise OSError(cause.errno, cause.strerror, str(path)) from None
            if path.name == LAST and path.exists():
                os.replace(path, path.with_name(PREVIOUS))  # in between, PREVIOUS alone is a resume point
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def os_error_in(err: BaseException | None) -> OSError | None:
    """The first OSError with an errno in ``err``'s chain of causes and contexts, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be resumed from (None if it can): found by loading it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 -- any failure to load means the file is unusable
        return f"does not load ({type(err).__name__})"
    if not isinstance(state, dict):
        return "is not a Lightning checkpoint"
    missing = [k for k in RESUME_KEYS if k not in state]
    return f"lacks {', '.join(missing)}" if missing else None


def resume_point(ckpt_dir: str | Path) -> tuple[str | None, str | None]:
    """``(checkpoint to resume from or None, note for the log and the record or None)``.

    Torn files are renamed to ``<name>.torn-<UTC time>`` so that they are never tried again;
    temporary files of a killed writer (:class:`AtomicCheckpointIO`) are removed.
    """
    ckpt_dir = Path(ckpt_dir)
    for tmp in ckpt_dir.glob(".*.ckpt.*.tmp"):  # a writer killed mid-write (SIGKILL) left it; the run lock
        tmp.unlink(missing_ok=True)            # means no live writer owns it
    set_aside = []
    for name in (LAST, PREVIOUS):
        path = ckpt_dir / name
        if not path.exists():
            continue
        why = problem(path)
        if why is None:
            note = (f"{set_aside[0]}; resuming from {name}" if set_aside else None)
            return str(path), note
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        torn = path.with_name(f"{name}.torn-{stamp}")
        os.replace(path, torn)
        set_aside.append(f"{path} {why}, set aside as {torn.name}")
    if set_aside:
        return None, "; ".join(set_aside) + "; training from the start"
    return None, None


IDENTITY_KEY = "dgm_bench"


class IdentityCallback(Callback):
    """Stamp every checkpoint with the run's config fingerprint and seed, so that ``evaluate`` can
    refuse a checkpoint that belongs to another configuration."""

    def __init__(self, config: dict) -> None:
        self.identity = {"fingerprint": config_fingerprint(config), "seed": config.get("seed")}

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[IDENTITY_KEY] = dict(self.identity)


def check_identity(state: dict, config: dict, ckpt: str | Path, run_dir: str | Path) -> str | None:
    """Raise if ``state`` (a loaded checkpoint) was saved by another configuration or seed than
    ``config`` (its run folder's); return a warning for a checkpoint that carries no identity."""
    stamp = state.get(IDENTITY_KEY)
    if not isinstance(stamp, dict):
        return f"{ckpt} carries no config fingerprint (saved before dgm-bench stamped checkpoints); trusting its run folder"
    want = {"fingerprint": config_fingerprint(config), "seed": config.get("seed")}
    if stamp != want:
        raise ConfigError(
            f"{ckpt} was saved by configuration {stamp.get('fingerprint')} seed {stamp.get('seed')}, but its run folder "
            f"{run_dir} is configuration {want['fingerprint']} seed {want['seed']}; evaluate it from its own run folder")
    return None
