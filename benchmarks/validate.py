"""Check every cell of a matrix before the first one trains: configs built, data files found.

Resolving a config checks option names and types; this goes on to what only building finds: values
a constructor refuses (``k=0``), an objective that does not fit the model, a seed torch cannot use,
Trainer options Lightning refuses (``devices=abc``) and data files that are missing. Each error is
one line naming the spec file, the cell and the option.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from dgm_modules.registry import ConfigError

MAX_SEED = 2**32 - 1  # numpy's limit, which Lightning's seed_everything enforces by replacing the seed


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def check_seed(seed: Any) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed: expected an integer in [0, {MAX_SEED}], got {seed!r}")


def check_trainer(options: dict) -> None:
    """Construct a Trainer with these options (and nothing else) so that Lightning checks them here."""
    import lightning as L

    try:
        L.Trainer(**options, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False)
    except Exception as err:  # noqa: BLE001 -- Lightning raises TypeError, ValueError or its own kinds
        raise ConfigError(f"trainer: {one_line(err)} (options {options})") from None


def check_steps_per_call(config: dict) -> None:
    """Several optimiser steps per Lightning step are the module's own (manual) optimisation, which
    Lightning's gradient clipping and accumulation do not act on: refuse the pair by name."""
    steps = config["module"].get("init_args", {}).get("steps_per_call", 1)
    options = config["trainer"]
    clashes = []
    if options.get("gradient_clip_val") not in (None, 0):
        clashes.append(f"trainer.gradient_clip_val={options['gradient_clip_val']}")
    if options.get("accumulate_grad_batches", 1) != 1:
        clashes.append(f"trainer.accumulate_grad_batches={options['accumulate_grad_batches']}")
    if steps != 1 and clashes:
        raise ConfigError(f"module.steps_per_call={steps} cannot be combined with {', '.join(clashes)}: "
                          f"set module.steps_per_call=1 for them")


def check_config(config: dict, trainer: bool = True, data: bool = True) -> None:
    """Build one resolved config; ``trainer``/``data``: also construct its Trainer, load its data."""
    from benchmarks.config import build

    check_seed(config["seed"])
    try:
        datamodule, _ = build(config)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(one_line(err)) from None
    if trainer:
        check_trainer(config["trainer"])
        check_steps_per_call(config)
    if data:
        try:
            datamodule.prepare_data()
            datamodule.setup("fit")
        except FileNotFoundError as err:
            raise ConfigError(f"data: {one_line(err)}") from None


def check_cells(cells: Iterable[Any], where: str, trainer: bool = True) -> None:
    """Check every cell (``Cell`` of benchmarks.matrix); each Trainer setting and data config once."""
    seen_trainer: set[str] = set()
    seen_data: set[str] = set()
    for cell in cells:
        config = cell.config
        t_key = json.dumps(config["trainer"], sort_keys=True, default=str)
        d_key = json.dumps(config["data"], sort_keys=True, default=str)
        try:
            check_config(config, trainer=trainer and t_key not in seen_trainer, data=d_key not in seen_data)
        except ConfigError as err:
            raise ConfigError(f"{where}: cell {cell.label}: {err}") from None
        seen_trainer.add(t_key)
        seen_data.add(d_key)


def check_out_dir(out: str | Path, option: str = "--out") -> None:
    """The output folder, or the nearest folder above it that exists, must take a new file.

    Writability is found by writing (a byte, into a probe file removed at once): permission bits
    say nothing for root, a read-only mount or a full disk."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file; give a folder for the run records (it may not exist yet)")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is a file, so no folder can be made under it; give a folder path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dgm-bench-write-test.", dir=existing)
        try:
            os.write(fd, b"x")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"{option} {path}: cannot write in {existing} ({err.strerror}); "
                          "give a folder you can write to") from None
