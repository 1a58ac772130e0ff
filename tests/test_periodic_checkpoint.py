"""``checkpoint.every_n_steps``: a process killed without a signal (SIGKILL) resumes from the last
periodic mid-epoch checkpoint and ends exactly where an uninterrupted run ends."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.config import resolve_config
from benchmarks.run import run_cell, run_id
from benchmarks.run_cli import parse_run
from dgm_modules.registry import ConfigError
from resume_checks import assert_same_rows, history

ROOT = Path(__file__).resolve().parents[1]
# digits: 1297 training images, batch 100 -> 13 steps an epoch, 39 in all; dynamic binarisation
OPTIONS = ["--method", "vae", "--data", "digits", "--data.batch_size", "100", "--model.latent_dim", "2",
           "--model.hidden", "[32]", "--module.eval_k", "[1, 5]", "--module.val_k", "[1]",
           "--trainer.max_epochs", "3", "--trainer.accelerator", "cpu", "--checkpoint.every_n_steps", "5"]
KILL_AT = 23  # in epoch 1 (steps 13-25): the last checkpoint is step 20's, steps 21-23 are lost


def child(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)


def test_a_killed_run_resumes_from_its_last_periodic_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path):
    out = tmp_path / "killed"
    killed = child([str(ROOT / "tests" / "kill_at_step.py"), str(KILL_AT), *OPTIONS, "--out", str(out)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    config, _ = parse_run(OPTIONS)
    run_dir = out / run_id(config)
    assert not (run_dir / "record.json").exists()  # no signal handler ran: nothing was written at the end
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 20  # mid-epoch (epoch ends are at 13, 26, 39), not the epoch-end one at 13
    stale = run_dir / "checkpoints" / ".last.ckpt.4242.tmp"
    stale.write_bytes(b"cut")  # what a process killed inside AtomicCheckpointIO's write leaves behind

    resumed = child(["-m", "benchmarks.cli", "run", *OPTIONS, "--out", str(out)])  # dgm-bench run, the same command
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "completed" and record["steps"] == 39
    assert record["resumed_at_step"] == 20  # steps 1-20 were not redone
    assert not stale.exists() and "resume_note" not in record  # removed, not taken for a torn checkpoint

    whole = run_cell(config, tmp_path / "whole", enable_progress_bar=False)
    assert whole["status"] == "completed" and whole["run_id"] == record["run_id"]
    assert record["metrics"].keys() == whole["metrics"].keys()
    assert any(k.startswith("val/") for k in record["metrics"])
    for name, value in whole["metrics"].items():
        assert record["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    rows_whole, rows_resumed = history(tmp_path / "whole" / whole["run_id"]), history(run_dir)
    assert len(rows_resumed) == len(rows_whole)  # epoch 0's rows kept from the killed process, none repeated
    assert_same_rows(rows_whole, rows_resumed)


def test_the_option_is_checked_up_front_and_leaves_the_run_identity_alone():
    base = {"model": {"init_args": {"latent_dim": 2}}}
    with_option = resolve_config("vae", "digits", 0, {**base, "checkpoint": {"every_minutes": 0.5}})
    assert run_id(with_option) == run_id(resolve_config("vae", "digits", 0, base))  # same folder: add it to resume
    for bad, option in (({"every_n_steps": 0}, "checkpoint.every_n_steps"),
                        ({"every_n_steps": 2.5}, "checkpoint.every_n_steps"),
                        ({"every_minutes": -1}, "checkpoint.every_minutes"),
                        ({}, "every_n_steps and/or every_minutes"), ({"every_step": 5}, "every_step")):
        with pytest.raises(ConfigError, match=option.replace(".", r"\.")):
            resolve_config("vae", "digits", 0, {"checkpoint": bad})
