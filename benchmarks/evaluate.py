"""Re-score a saved run without training: the same evaluation code, any number of processes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.config import build, deep_merge
from benchmarks.records import read_record
from benchmarks.run import CHECKPOINTS, skip_per_step_cuda_probe


def load_run(run_dir: str | Path, overrides: dict | None = None) -> tuple[dict, L.LightningDataModule, L.LightningModule]:
    """Rebuild a run's DataModule and module from its record and load its last checkpoint's weights."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    if record is None:
        raise FileNotFoundError(f"no record.json in {run_dir}")
    ckpt = run_dir / CHECKPOINTS / "last.ckpt"
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    config = deep_merge(record["config"], overrides or {})
    datamodule, module = build(config)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    return config, datamodule, module


def evaluate_run(run_dir: str | Path, overrides: dict | None = None, **trainer_options: Any) -> dict[str, float]:
    """Test-split metrics of a saved run; ``trainer_options`` (devices, strategy, ...) go to Lightning."""
    skip_per_step_cuda_probe()
    _, datamodule, module = load_run(run_dir, overrides)
    options = {"accelerator": "cpu", "devices": 1, **trainer_options}
    trainer = L.Trainer(**options, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in results[0].items()}
