"""Train and score one (method, dataset, seed, setting) cell and write its record."""
from __future__ import annotations

import errno
import logging
import os
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from benchmarks import signals
from benchmarks.ais import ais_callbacks
from benchmarks.callbacks import check_module, gradvar_callback
from benchmarks.checkpoints import AtomicCheckpointIO, IdentityCallback, os_error_in, resume_point
from benchmarks.config import build
from benchmarks.csvlog import AppendingCSVLogger
from benchmarks.curves import curve_callbacks
from benchmarks.evaluator import prepare_run_feature_nets
from benchmarks.fingerprint import config_fingerprint
from benchmarks.locks import RunLock, is_secondary_rank
from benchmarks.records import (RECORD, command_line, device_description, git_state, read_extended, read_record,
                               versions, write_config, write_json_atomic)
from benchmarks.resume import PeriodicCheckpoint, ResumeCallback
from benchmarks.slurm import slurm_plugins
from dgm_modules.methods.base import DivergedError

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


def skip_per_step_cuda_probe() -> None:
    """Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` on import (to keep forks usable with CUDA);
    with no GPU that makes every Adam step re-probe NVML through ctypes (about 1 ms a step here).
    Without a GPU there is nothing for the setting to protect, so turn it off."""
    import torch

    if not torch.cuda.is_available():
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"


def run_id(config: dict) -> str:
    """A readable prefix and the config's fingerprint: replaying a run's own saved config (where ``0``
    may come back as ``0.0``) names the same folder, and two settings with one config share it."""
    return f"{config['data']['class_path']}__{config['method']}__seed{config['seed']}__{config_fingerprint(config)}"


def protocol_of(datamodule: Any, module: Any) -> dict:
    """What a record must say for its numbers to be comparable: the data's protocol, k, FID network."""
    protocol = dict(datamodule.protocol())
    test_eval = getattr(module, "test_eval", None)
    if test_eval is not None:
        protocol["k"] = list(test_eval.ks)
    sample_quality = getattr(module, "sample_quality", None)  # FID/KID: which feature network made them
    if sample_quality is not None:
        protocol.update(fid_samples=sample_quality.num_samples, feature_net=sample_quality.feature_net,
                        feature_net_sha256=sample_quality.feature_net_sha256)
    return protocol


def run_cell(config: dict, out_dir: str | Path, loggers: list | None = None,
             callbacks: list | None = None, enable_progress_bar: bool | None = None) -> dict:
    """Run one resolved config in ``out_dir/<run-id>/``; return its record.

    A completed record is never re-run or overwritten. An interrupted run resumes from its last
    checkpoint. A non-finite loss is recorded as ``diverged``, any other exception as ``failed``,
    both with the step; the exception does not propagate (a matrix goes on). A cell another live
    process holds (``run.lock``) is not touched: the returned record says ``locked`` and by whom.
    """
    skip_per_step_cuda_probe()
    run_dir = Path(out_dir) / run_id(config)
    if is_secondary_rank():  # DDP's other ranks re-enter here and work under rank 0's lock
        return _run_cell(config, run_dir, loggers, callbacks, enable_progress_bar)
    lock = RunLock(run_dir)
    if not lock.acquire():  # another live runner is training this cell: leave it to that one
        holder = lock.holder()
        log.warning("%s is being run by %s; skipped here", run_dir.name, holder)
        return {"run_id": run_dir.name, "status": "locked", "error": {"type": "Locked", "message": f"held by {holder}"}}
    try:
        return _run_cell(config, run_dir, loggers, callbacks, enable_progress_bar)
    finally:
        lock.release()


def _run_cell(config: dict, run_dir: Path, loggers: list | None, callbacks: list | None,
              enable_progress_bar: bool | None) -> dict:
    previous = read_record(run_dir)  # read under the lock: another runner may have just finished it
    if previous is not None and previous.get("status") == "completed":
        return previous
    if not is_secondary_rank():
        try:  # the resolved config, before anything is built or trained
            write_config(run_dir, config)
        except OSError as err:  # a full disk: the checkpoint fails next and the record says so
            if err.errno not in DISK_ERRNOS:
                raise
            log.warning("%s: %s", run_dir.name, disk_error(err, run_dir / "config.yaml")["message"])
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    record: dict[str, Any] = {
        "run_id": run_dir.name, "method": config["method"], "setting": config.get("setting", "default"),
        "dataset": config["data"]["class_path"], "model": config["model"]["class_path"],
        "objective": config["objective"]["class_path"], "seed": config["seed"], "config": config,
        "fingerprint": config_fingerprint(config), "git": git_state(),
        "versions": versions(), "command": command_line(), "started_at": started.isoformat(),
        "metrics": {}, "error": None,
    }
    extended = read_extended(run_dir)  # carried on from a shorter run (benchmarks/extend.py)
    if extended is not None:
        record["extended_from"] = extended
    datamodule, module = build(config)  # invalid options raise here, before any training
    gradvar = gradvar_callback(config, run_dir)  # gradient-estimator variance, when config asks for it
    if gradvar is not None:
        check_module(module)
    datamodule.prepare_data()  # so do missing or malformed data files
    datamodule.setup("fit")
    prepare_run_feature_nets(datamodule, module)  # FID's network is made now if missing, never after training
    trainer_options = dict(config["trainer"])
    if enable_progress_bar is not None:  # the caller's terminal decides unless the config does
        trainer_options.setdefault("enable_progress_bar", enable_progress_bar)
    trainer_options.setdefault("enable_model_summary", False)
    best = None  # with early stopping, the test stage scores the best validation epoch's weights
    if "early_stopping" in config:
        es = config["early_stopping"]
        best = ModelCheckpoint(dirpath=str(run_dir / CHECKPOINTS), filename="best", monitor=es["monitor"],
                               mode=es["mode"], save_top_k=1, enable_version_counter=False)
    trainer_options.setdefault("plugins", [AtomicCheckpointIO(), *slurm_plugins()])
    resume = ResumeCallback()  # RNG states in checkpoints; the step a resume starts at
    periodic = [PeriodicCheckpoint(run_dir / CHECKPOINTS, **config["checkpoint"])] if "checkpoint" in config else []
    trainer = L.Trainer(
        **trainer_options, default_root_dir=str(run_dir), use_distributed_sampler=False,
        logger=[AppendingCSVLogger(str(run_dir), name="logs", version="")] + list(loggers or []),
        callbacks=[ModelCheckpoint(dirpath=str(run_dir / CHECKPOINTS), filename="last",
                                   save_top_k=1, every_n_epochs=1, enable_version_counter=False)]
        + ([gradvar] if gradvar is not None else []) + ([best] if best else []) + curve_callbacks(config)
        + ais_callbacks(config, module) + periodic
        + [signals.StopCallback(run_dir / CHECKPOINTS), IdentityCallback(config), resume] + list(callbacks or []),
        )
    try:
        ckpt, note = resume_point(run_dir / CHECKPOINTS)  # a torn checkpoint is found by loading it
        if note:
            log.warning("%s: %s", run_dir.name, note)
            record["resume_note"] = note
        record["resumed_from"] = ckpt
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
        if resume.resumed_step is not None:
            record["resumed_at_step"] = resume.resumed_step
        val = _val_metrics(trainer)
        best_path = best.best_model_path if best is not None else ""
        results = trainer.test(module, datamodule=datamodule, verbose=False, ckpt_path=best_path or None)
        if best_path:
            record["tested_checkpoint"] = {"epoch": int(torch.load(best_path, map_location="cpu",
                                                                   weights_only=False)["epoch"]) + 1,
                                           "monitor": best.monitor, "value": float(best.best_model_score)}
        record["metrics"] = {**val, **(results[0] if results else {}), **(gradvar.last_metrics if gradvar else {})}
        record["status"] = "completed"
    except (signals.Interrupted, SIGTERMException) as err:  # resumable: last.ckpt is kept
        record.update(status="interrupted", error={**signals.describe(err), "step": trainer.global_step})
    except DivergedError as err:
        record.update(status="diverged", error={"type": "DivergedError", "message": str(err), "step": err.step})
    except Exception as err:  # noqa: BLE001 -- any failure is recorded and the matrix goes on
        full = os_error_in(err)
        if full is not None and full.errno in DISK_ERRNOS:  # the disk, not the code: one line, no traceback
            record.update(status="failed", error={**disk_error(full, full.filename), "step": trainer.global_step})
            log.error("run %s failed: %s", run_dir.name, record["error"]["message"])
        else:
            log.exception("run %s failed", run_dir.name)
            record.update(status="failed", error={"type": type(err).__name__, "message": str(err),
                                                  "step": trainer.global_step, "traceback": traceback.format_exc()})
    steps, epochs = progress(trainer, run_dir / CHECKPOINTS / "last.ckpt")
    record.update(
        protocol=protocol_of(datamodule, module), steps=steps,
        epochs=epochs, wall_time_s=round(time.perf_counter() - t0, 3),
        device=device_description(trainer), finished_at=datetime.now(timezone.utc).isoformat())
    if trainer.global_rank == 0:
        try:
            write_json_atomic(run_dir / RECORD, record)
        except OSError as err:  # the result is reported, not saved; a re-run resumes from the checkpoint
            if err.errno not in DISK_ERRNOS:
                raise
            record.update(status="failed", error={**disk_error(err, run_dir / RECORD), "step": trainer.global_step,
                                                  "unsaved_status": record["status"]})
            log.error("run %s failed: %s", run_dir.name, record["error"]["message"])
    return record


def progress(trainer: L.Trainer, last: Path) -> tuple[int, int]:
    """``(steps, epochs)`` trained. Under ``ddp_spawn`` the fit ran in child processes and this
    process's trainer still reads 0: the last checkpoint (written at every epoch's end) has them."""
    if trainer.global_step == 0 and last.exists():
        try:
            ckpt = torch.load(last, map_location="cpu", weights_only=False)
            return int(ckpt["global_step"]), int(ckpt["epoch"]) + 1
        except Exception:  # noqa: BLE001 -- a torn file: report what this process knows
            pass
    return trainer.global_step, trainer.current_epoch


#: errors of the output folder's disk: full, over quota, read-only
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def disk_error(err: OSError, path: Any) -> dict:
    return {"type": "DiskFull" if err.errno != errno.EROFS else "ReadOnly",
            "message": f"cannot write {path}: {err.strerror}; free space (or choose another --out) and run again: "
                       "completed cells are kept and this one resumes from its last checkpoint"}


def _val_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
