"""Re-score a saved run without training: the same evaluation code, any number of processes.

``dgm-bench evaluate CHECKPOINT [--k 5000] [--fid N] [--ais [--ais-steps N --chains C]]`` rebuilds
the run from its record, loads the checkpoint's weights and runs the test protocol, writing a record
of the same schema as training's (``status``, ``metrics``, ``protocol``, ``config``, ...) plus
``evaluated_from``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.ais import ais_callbacks
from benchmarks.checkpoints import PREVIOUS, check_identity
from benchmarks.config import build, deep_merge, load_yaml
from benchmarks.evaluator import prepare_run_feature_nets
from benchmarks.records import CONFIG, command_line, device_description, read_record, versions, write_json_atomic
from benchmarks.run import CHECKPOINTS, protocol_of, skip_per_step_cuda_probe
from dgm_modules.registry import ConfigError

log = logging.getLogger(__name__)


def locate(checkpoint: str | Path) -> tuple[Path, Path]:
    """``(run_dir, ckpt)`` from a run folder or a ``.ckpt`` file inside one."""
    path = Path(checkpoint)
    if path.is_dir():
        run_dir, ckpt = path, path / CHECKPOINTS / "last.ckpt"
    else:
        ckpt = path
        run_dir = path.parent.parent if path.parent.name == CHECKPOINTS else path.parent
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt} (expected RUN_DIR/{CHECKPOINTS}/last.ckpt or a .ckpt file)")
    if read_record(run_dir) is None and not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"no record.json or {CONFIG} in {run_dir}: evaluate needs the run folder the "
                                "checkpoint came from")
    return run_dir, ckpt


def run_facts(run_dir: Path, ckpt: Path) -> dict:
    """What the evaluation record says of the run: its record (or, for a run still training, the
    config.yaml it wrote before training), with the steps and epochs of the checkpoint scored."""
    record = read_record(run_dir)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    progress = {"steps": state.get("global_step"), "epochs": state.get("epoch", -1) + 1}
    if record is not None and record.get("status") != "interrupted":
        return {**record, **progress}
    config = load_yaml(str(run_dir / CONFIG)) if record is None else record["config"]
    return {"run_id": run_dir.name, "method": config["method"], "setting": config.get("setting", "default"),
            "dataset": config["data"]["class_path"], "model": config["model"]["class_path"],
            "objective": config["objective"]["class_path"], "seed": config["seed"], "config": config,
            **progress, "run_in_progress": True}


def load_run(run_dir: str | Path, overrides: dict | None = None,
             ckpt: str | Path | None = None) -> tuple[dict, L.LightningDataModule, L.LightningModule]:
    """Rebuild a run's DataModule and module from its record and load a checkpoint's weights
    (default: its last)."""
    run_dir, ckpt = locate(ckpt or run_dir)
    record = read_record(run_dir) or {"config": load_yaml(str(run_dir / CONFIG))}  # a run still training: its config
    config = deep_merge(record["config"], overrides or {})
    datamodule, module = build(config)
    try:
        loaded = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- torn, truncated or not a checkpoint at all
        raise ConfigError(f"{ckpt} cannot be loaded ({type(err).__name__}): it is torn or not a checkpoint; "
                          f"evaluate another one (e.g. {CHECKPOINTS}/{PREVIOUS})") from None
    if not isinstance(loaded, dict) or "state_dict" not in loaded:
        raise ConfigError(f"{ckpt} is not a Lightning checkpoint (no state_dict)")
    warning = check_identity(loaded, record["config"], ckpt, run_dir)  # raises for another configuration's
    if warning:
        log.warning(warning)
    state = loaded["state_dict"]
    missing, unexpected = module.load_state_dict(state, strict=False)
    # an evaluator asked for now (FID's feature network) may hold weights the checkpoint lacks
    missing = [k for k in missing if not k.startswith("sample_quality.")]
    if missing or unexpected:
        raise RuntimeError(f"{ckpt} does not fit the run's module: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return config, datamodule, module


def evaluate_run(run_dir: str | Path, overrides: dict | None = None, ckpt: str | Path | None = None,
                 **trainer_options: Any) -> dict[str, float]:
    """Test-split metrics of a saved run; ``trainer_options`` (devices, strategy, ...) go to Lightning."""
    return evaluate_checkpoint(ckpt or run_dir, overrides, **trainer_options)["metrics"]


def evaluate_checkpoint(checkpoint: str | Path, overrides: dict | None = None, **trainer_options: Any) -> dict:
    """The record of re-scoring ``checkpoint`` (a run folder or a ``.ckpt`` in one)."""
    skip_per_step_cuda_probe()
    run_dir, ckpt = locate(checkpoint)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    config, datamodule, module = load_run(run_dir, overrides, ckpt)  # refuses a torn or stray checkpoint
    trained = run_facts(run_dir, ckpt)  # now, not after testing: a live run replaces its checkpoints
    prepare_run_feature_nets(datamodule, module)
    options = {"accelerator": "cpu", "devices": 1, **trainer_options}
    trainer = L.Trainer(**options, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False,
                        callbacks=ais_callbacks(config, module))
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    return {
        "run_id": trained["run_id"], "status": "completed", "method": trained["method"],
        "setting": trained.get("setting", "default"), "dataset": trained["dataset"], "model": trained["model"],
        "objective": trained["objective"], "seed": trained["seed"], "config": config,
        "metrics": {k: float(v) for k, v in results[0].items()}, "error": None,
        "protocol": protocol_of(datamodule, module), "evaluated_from": str(ckpt),
        "steps": trained.get("steps"), "epochs": trained.get("epochs"), "versions": versions(),
        "command": command_line(), "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "wall_time_s": round(time.perf_counter() - t0, 3), "device": device_description(trainer),
        **({"run_in_progress": True} if trained.get("run_in_progress") else {}),
    }


def cmd_evaluate(args: argparse.Namespace) -> int:
    over: dict = {}
    if args.k:
        over = deep_merge(over, {"module": {"init_args": {"eval_k": sorted(set(args.k))}}})
    if args.fid is not None:
        over = deep_merge(over, {"module": {"init_args": {"fid_samples": args.fid}}})
    flags = {"steps": ("--ais-steps", args.ais_steps, 1), "chains": ("--chains", args.chains, 1),
             "images": ("--ais-images", args.ais_images, 1), "sim_images": ("--bdmc-images", args.bdmc_images, 0)}
    for flag, value, least in flags.values():
        if value is not None and value < least:
            raise ConfigError(f"{flag} must be >= {least}, got {value}")
    ais = {key: value for key, (_, value, _) in flags.items() if value is not None}
    if args.ais_sigma is not None:
        ais["obs_sigma"] = args.ais_sigma
    if args.ais or ais:  # the options alone imply --ais
        over = deep_merge(over, {"ais": ais})
    if args.eval_batch_size:
        over = deep_merge(over, {"data": {"init_args": {"eval_batch_size": args.eval_batch_size}}})
    record = evaluate_checkpoint(args.checkpoint, over, accelerator=args.accelerator, devices=args.devices)
    run_dir, _ = locate(args.checkpoint)
    digest = hashlib.sha256(json.dumps(over, sort_keys=True).encode()).hexdigest()[:8]
    out = Path(args.out) if args.out else run_dir / "evaluations" / f"record-{digest}.json"
    write_json_atomic(out, record)
    print(json.dumps(record["metrics"], indent=2, sort_keys=True))
    print(f"record: {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``evaluate CHECKPOINT [--k K ...] [--fid N] [--ais ...] [--out FILE]``."""
    p = sub.add_parser("evaluate", help="re-score a saved run (test ELBO, L_k, FID/KID) without training")
    p.add_argument("checkpoint", help="a run folder (record.json, checkpoints/last.ckpt) or a .ckpt file in one")
    p.add_argument("--k", type=int, nargs="+", metavar="K",
                   help="importance samples of the test bounds L_k (default: the run's own)")
    p.add_argument("--fid", type=int, nargs="?", const=10_000, default=None, metavar="N",
                   help="also score N model samples by FID/KID against the test split (bare --fid: 10000)")
    p.add_argument("--ais", action="store_true",
                   help="also estimate log p(x) by annealed importance sampling, with the BDMC gap on simulated data "
                        "(options: the config section ais, see benchmarks/ais.py)")
    p.add_argument("--ais-steps", type=int, default=None, metavar="N",
                   help="AIS intermediate distributions (default 1000)")
    p.add_argument("--chains", type=int, default=None, metavar="C", help="AIS chains per image (default 16)")
    p.add_argument("--ais-images", type=int, default=None, metavar="M", help="test images scored by AIS (default 1000)")
    p.add_argument("--bdmc-images", type=int, default=None, metavar="N",
                   help="images simulated from the model for the BDMC gap (default 100; 0: no BDMC)")
    p.add_argument("--ais-sigma", type=float, default=None, metavar="SIGMA",
                   help="Gaussian observation noise of a generator (GAN, VAE-GAN): required for a GAN")
    p.add_argument("--eval-batch-size", type=int, default=None, help="test batch size (default: the run's)")
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator (default cpu)")
    p.add_argument("--devices", type=int, default=1, help="processes (DDP when > 1; same numbers as one)")
    p.add_argument("--out", help="record file to write (default: RUN_DIR/evaluations/record-<hash>.json)")
    p.set_defaults(fn=cmd_evaluate)
