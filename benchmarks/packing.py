"""The matrix runner's packing: which pending cells train side by side, and running such a group.

Cells pack when their resolved configs are equal but for the seed (and the setting's name), and the
learning rate where the optimiser's step is proportional to it: one model shape, one objective,
one trainer. A group trains as one
:class:`~dgm_modules.methods.packed.PackedMethod`; each cell still gets its own record in its own
run folder (same schema and run id as a single run), its own CSV log of the test stage, and its
test metrics from its own single-cell module. Cells that cannot pack run singly, and the plan says
why.
"""
from __future__ import annotations

import json
import logging
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from benchmarks import signals
from benchmarks.checkpoints import AtomicCheckpointIO, resume_point
from benchmarks.config import build
from benchmarks.csvlog import AppendingCSVLogger
from benchmarks.evaluator import prepare_run_feature_nets
from benchmarks.fingerprint import canonical, config_fingerprint
from benchmarks.locks import RunLock
from benchmarks.records import (RECORD, command_line, device_description, git_state, versions,
                               write_json_atomic)
from benchmarks.run import protocol_of, run_id, skip_per_step_cuda_probe
from datamodules.base import Batch
from dgm_modules.methods.base import DivergedError
from dgm_modules.methods.packed import _SPLITS, LR_LINEAR, PackedDataModule, PackedMethod, _same_splits
from dgm_modules.registry import ConfigError

log = logging.getLogger(__name__)
#: the only module a packed group wraps; the others train with loops of their own
PACKABLE_MODULES = ("variational",)
#: optional sections whose callbacks work on one cell's module
PER_CELL_SECTIONS = ("gradvar", "curve", "early_stopping", "ais", "checkpoint")
PACKED_DIR = "packed"


def parse_pack(value: str | int) -> int | None:
    """``--pack``: ``off`` -> None, ``auto`` -> 0 (no size limit), ``N`` -> at most N cells a group."""
    text = str(value).strip().lower()
    if text == "off":
        return None
    if text == "auto":
        return 0
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ConfigError(f"--pack={value!r} is not valid; choose auto, off or a number of cells >= 1")


def unpackable(config: dict) -> str | None:
    """Why this cell can never pack (None if it can)."""
    module = config["module"]["class_path"]
    if module not in PACKABLE_MODULES:
        return f"module {module!r} trains with its own loop (adversarial or semi-supervised); packing wraps " \
               f"{', '.join(PACKABLE_MODULES)} only"
    from dgm_modules.components import OBJECTIVES

    objective = config["objective"]["class_path"]
    if hasattr(OBJECTIVES.get(objective, "objective.class_path"), "bind_data"):
        return f"objective {objective!r} binds to its cell's data (a feature network); packing does not bind it yet"
    if config["module"].get("init_args", {}).get("log_every_n_steps"):
        return "a packed group logs epoch means only (module.log_every_n_steps)"
    present = [s for s in PER_CELL_SECTIONS if s in config]
    if present:
        return f"its {', '.join(present)} callbacks run on one cell's module"
    clip = config["trainer"].get("gradient_clip_val")
    if clip:
        return "gradient clipping by norm would mix the replicas (trainer.gradient_clip_val)"
    if config["trainer"].get("devices", 1) not in (1, "1", "auto"):
        return "a packed group trains on one device (trainer.devices)"
    if config["trainer"].get("accumulate_grad_batches", 1) != 1:
        return "trainer.accumulate_grad_batches"
    return None


def lr_packs(config: dict) -> bool:
    """Whether cells of this config may differ in their learning rate: the optimiser's step is
    proportional to it (see :class:`~dgm_modules.methods.packed.PackedMethod`)."""
    opt = config["optimizer"]
    return opt["class_path"] in LR_LINEAR or (opt["class_path"] == "adamw"
                                               and not opt["init_args"].get("weight_decay"))


def pack_key(config: dict) -> str:
    """Equal for cells whose configs differ only in the seed (or the setting's name), or also in the
    learning rate where the optimiser allows it."""
    rest = {k: v for k, v in canonical(config).items() if k not in ("seed", "setting")}
    if lr_packs(config):
        rest["optimizer"]["init_args"].pop("lr", None)
    return json.dumps(rest, sort_keys=True)


def plan(cells: list, size: int) -> tuple[list[list], list[tuple[Any, str]]]:
    """Groups of packable cells (``size`` 0: unlimited) and the cells that run singly, with why."""
    groups: dict[str, list] = {}
    singles: list[tuple[Any, str]] = []
    for cell in cells:
        reason = unpackable(cell.config)
        if reason:
            singles.append((cell, reason))
        else:
            groups.setdefault(pack_key(cell.config), []).append(cell)
    out = []
    for members in groups.values():
        if len(members) == 1:
            singles.append((members[0], "no other pending cell shares its configuration (only the seed, and the "
                                        "learning rate of adam/sgd/rmsprop/adagrad, may differ)"))
            continue
        step = size or len(members)
        chunks = [members[i : i + step] for i in range(0, len(members), step)]
        for chunk in chunks:
            if len(chunk) == 1:
                singles.append((chunk[0], f"left over when its configuration's cells were packed {step} a group"))
            else:
                out.append(chunk)
    return out, singles


def vmap_trial(config: dict) -> str | None:
    """One packed training step of two replicas of ``config`` on random data: the error if it fails
    (an objective that branches on tensor values, reads them into Python, or draws noise a replica
    cannot have alone). The global RNG is left as it was."""
    with torch.random.fork_rng():
        try:
            replicas, states = [], []
            for seed in (0, 1):
                datamodule, module = build({**config, "seed": seed})
                replicas.append(module)
                states.append(torch.get_rng_state())
            packed = PackedMethod(replicas, states)
            x = torch.rand(2, 2, *datamodule.dims).bernoulli()
            packed.train()
            packed.training_step(Batch(x, None, 0), 0).backward()
        except Exception as err:  # noqa: BLE001 -- the reason is reported, the cells run singly
            return f"its objective cannot be vmapped: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return None


def _record_head(config: dict, run_dir: Path) -> dict:
    """The fields of a record known before training (as run.py writes them)."""
    return {"run_id": run_dir.name, "method": config["method"], "setting": config.get("setting", "default"),
            "dataset": config["data"]["class_path"], "model": config["model"]["class_path"],
            "objective": config["objective"]["class_path"], "seed": config["seed"], "config": config,
            "fingerprint": config_fingerprint(config), "git": git_state(), "versions": versions(),
            "command": command_line(), "started_at": datetime.now(timezone.utc).isoformat(), "metrics": {},
            "error": None}


def group_dir(out: Path, cells: list) -> Path:
    """Where a group keeps its shared checkpoint: named by its cells' run ids, so a rerun finds it."""
    first = run_id(cells[0].config)
    seeds = "-".join(str(c.config["seed"]) for c in cells)
    return out / PACKED_DIR / f"{first.rsplit('__', 1)[-1]}__seeds{seeds}"


def run_group(cells: list, out: Path, echo: Callable[[str], None] = print) -> list[dict]:
    """Train ``cells`` packed, then test each by its own module; write and return their records."""
    skip_per_step_cuda_probe()
    out = Path(out)
    locks, mine = [], []
    for cell in cells:  # a cell another runner holds is left to it
        lock = RunLock(out / run_id(cell.config))
        if lock.acquire():
            locks.append(lock)
            mine.append(cell)
        else:
            echo(f"{cell.label}: held by {lock.holder()}; skipped here")
    try:
        return _run_group(mine, out) if mine else []
    finally:
        for lock in locks:
            lock.release()


def _run_group(cells: list, out: Path) -> list[dict]:
    t0 = time.perf_counter()
    run_dirs = [out / run_id(c.config) for c in cells]
    heads = [_record_head(c.config, d) for c, d in zip(cells, run_dirs)]
    replicas, datamodules, states = [], [], []
    for cell in cells:  # each cell's steps of run_cell up to its first training step, in its order
        datamodule, module = build(cell.config)
        if datamodules and _same_splits(datamodule, datamodules[0]):  # one copy of the data for all
            for name in _SPLITS:
                setattr(datamodule, name, getattr(datamodules[0], name))
        datamodule.prepare_data()
        datamodule.setup("fit")
        prepare_run_feature_nets(datamodule, module)  # it draws from the global RNG, as in run_cell
        replicas.append(module)
        datamodules.append(datamodule)
        states.append(torch.get_rng_state())  # what the cell's single run draws its training noise from
    lrs = [c.config["optimizer"]["init_args"].get("lr") for c in cells]
    packed = PackedMethod(replicas, states, lrs=lrs if len(set(lrs)) > 1 else None)
    data = PackedDataModule(datamodules)
    gdir = group_dir(out, cells)
    trainer_options = {**cells[0].config["trainer"], "enable_progress_bar": False, "enable_model_summary": False}
    trainer = L.Trainer(**trainer_options, default_root_dir=str(gdir), use_distributed_sampler=False,
                        logger=[AppendingCSVLogger(str(gdir), name="logs", version="")],
                        plugins=[AtomicCheckpointIO()],
                        callbacks=[ModelCheckpoint(dirpath=str(gdir / "checkpoints"), filename="last", save_top_k=1,
                                                   every_n_epochs=1, enable_version_counter=False),
                                   signals.StopCallback()])
    status, error, ckpt = "completed", None, None
    try:
        ckpt, _ = resume_point(gdir / "checkpoints")
        trainer.fit(packed, datamodule=data, ckpt_path=ckpt)
    except DivergedError as err:
        status = "diverged"
        error = {"type": "DivergedError", "message": str(err), "step": err.step}
    except Exception as err:  # noqa: BLE001 -- every cell of the group is recorded as failed
        status = "interrupted" if isinstance(err, signals.Interrupted) else "failed"
        error = {"type": type(err).__name__, "message": str(err), "step": trainer.global_step,
                 "traceback": traceback.format_exc()}
        log.exception("packed group %s failed", gdir.name)
    train_wall = time.perf_counter() - t0
    records = []
    for i, (cell, run_dir, head) in enumerate(zip(cells, run_dirs, heads)):
        record = {**head, "resumed_from": ckpt}  # the group's checkpoint, when it resumed
        val = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"r{i}/val/")}
        if status == "completed" and i in packed.diverged:
            step, message = packed.diverged[i]
            record.update(status="diverged", error={"type": "DivergedError", "message": message, "step": step})
        elif status == "completed":
            t_test = time.perf_counter()
            record.update(_test_cell(cell.config, replicas[i], datamodules[i], run_dir), status="completed")
            record["metrics"] = {**val, **record["metrics"]}
            record["test_wall_time_s"] = round(time.perf_counter() - t_test, 3)
        else:
            record.update(status=status, error=error)
        record.update(protocol=protocol_of(datamodules[i], replicas[i]), steps=trainer.global_step,
                      epochs=trainer.current_epoch, wall_time_s=round(train_wall / len(cells), 3),
                      device=device_description(trainer), finished_at=datetime.now(timezone.utc).isoformat(),
                      packed={"cells": len(cells), "replica": i, "group": gdir.name,
                              "group_train_wall_time_s": round(train_wall, 3)})
        write_json_atomic(run_dir / RECORD, record)
        records.append(record)
    return records


def _test_cell(config: dict, module: L.LightningModule, datamodule: L.LightningDataModule, run_dir: Path) -> dict:
    """The test stage of one replica, by its own module and Trainer (the single-cell code); its
    final weights saved as the cell's ``checkpoints/last.ckpt`` for later re-scoring."""
    trainer_options = {**config["trainer"], "enable_progress_bar": False, "enable_model_summary": False}
    trainer = L.Trainer(**trainer_options, default_root_dir=str(run_dir), use_distributed_sampler=False,
                        logger=[AppendingCSVLogger(str(run_dir), name="logs", version="")],
                        plugins=[AtomicCheckpointIO()], enable_checkpointing=False)
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    trainer.save_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"), weights_only=True)
    return {"metrics": dict(results[0]) if results else {}}


def run_packed(cells: list, out: Path, size: int, progress: Any, echo: Callable[[str], None] = print) -> list:
    """Train the packable groups of ``cells`` (pending ones only); return the cells left to run singly,
    having said why each could not pack."""
    groups, singles = plan(cells, size)
    trials: dict[str, str | None] = {}
    runnable = []
    for group in groups:
        key = pack_key(group[0].config)
        if key not in trials:
            trials[key] = vmap_trial(group[0].config)
        if trials[key]:
            singles += [(c, trials[key]) for c in group]
        else:
            runnable.append(group)
    echo(f"packing: {sum(map(len, runnable))} cells in {len(runnable)} packed group(s) "
         f"({', '.join(str(len(g)) for g in runnable) or 'none'}); {len(singles)} run singly")
    for cell, reason in singles:
        echo(f"  not packed: {cell.label}: {reason}")
    for group in runnable:
        if signals.requested():
            break
        for cell, record in zip(group, run_group(group, out, echo)):
            progress.update(cell, record, skipped=False)
    order = {id(c): i for i, c in enumerate(cells)}
    return sorted((c for c, _ in singles), key=lambda c: order[id(c)])
