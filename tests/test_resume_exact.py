"""A cell stopped mid-epoch by a signal and resumed ends exactly where an uninterrupted run ends."""
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from benchmarks import signals
from benchmarks.config import resolve_config
from benchmarks.run import run_cell
from resume_checks import assert_same_rows, history

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


class SignalAtStep(Callback):
    """What SIGTERM from ``kill`` or Slurm does, at a chosen step: the handler records the signal."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            signals._handler(signal.SIGTERM, None)


def config(seed: int = 0, log_every_n_steps: int = 0, steps_per_call: int = 1) -> dict:
    # digits: 1297 training images, batch 100 -> 13 batches an epoch; dynamic binarisation
    return resolve_config("vae", "digits", seed, {
        "model": {"init_args": {"latent_dim": 2, "hidden": [32]}},
        "module": {"init_args": {"eval_k": [1, 5], "val_k": [1], "log_every_n_steps": log_every_n_steps,
                                 "steps_per_call": steps_per_call}},
        "data": {"init_args": {"batch_size": 100}},
        "trainer": {"max_epochs": 3, "accelerator": "cpu"}})


# mid-epoch 1; the last batch of epoch 1 (13 batches an epoch); mid-epoch 1 with means of every 5 batches
# logged (the stop falls mid-interval: the interval's sums must survive as the epoch's do); mid-epoch 1
# with 4 optimiser steps per Lightning step (groups 13-16, 17-20, ...: the stop ends the group 17-20,
# and the resume must skip 8 batches of the epoch, not 2)
@pytest.mark.parametrize("stop_step, interval, group", [(17, 0, 1), (25, 0, 1), (17, 5, 1), (17, 0, 4), (17, 5, 4)])
def test_a_resumed_cell_ends_with_the_uninterrupted_runs_metrics_and_history(tmp_path, stop_step, interval, group):
    signals.install()
    whole = run_cell(config(log_every_n_steps=interval), tmp_path / "whole", enable_progress_bar=False)
    assert whole["status"] == "completed", whole.get("error")
    assert whole["steps"] == 39

    out = tmp_path / "stopped"
    stopped = run_cell(config(log_every_n_steps=interval, steps_per_call=group), out,
                       callbacks=[SignalAtStep(stop_step)], enable_progress_bar=False)
    assert stopped["status"] == "interrupted" and stopped["steps"] == stop_step + group
    # mid-epoch: saved where it stopped; after an epoch's last batch: that epoch's start (resume.save_resume_point)
    ckpt = torch.load(out / stopped["run_id"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == (stop_step + group if stop_step == 17 else 13)
    signals.install()  # a new process would start without the stop request
    resumed = run_cell(config(log_every_n_steps=interval, steps_per_call=group), out, enable_progress_bar=False)
    assert resumed["status"] == "completed", resumed.get("error")
    assert resumed["resumed_from"].endswith("last.ckpt") and resumed["steps"] == 39
    assert resumed["resumed_at_step"] == ckpt["global_step"]

    assert resumed["metrics"].keys() == whole["metrics"].keys()
    assert any(k.startswith("val/") for k in resumed["metrics"])  # val metrics are kept
    for name, value in whole["metrics"].items():
        assert resumed["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    rows_whole, rows_resumed = history(tmp_path / "whole" / whole["run_id"]), history(out / resumed["run_id"])
    assert len(rows_resumed) == len(rows_whole)  # no row lost, none repeated
    assert sum("train/loss_step" in r and r["train/loss_step"] != "" for r in rows_whole) == (7 if interval else 0)
    assert_same_rows(rows_whole, rows_resumed)


@pytest.mark.slow
def test_under_ddp_a_signal_on_one_rank_stops_both_and_the_resume_is_exact(tmp_path):
    """Slurm signals every task, but each sees it at its own batch: without agreeing, one rank would
    save (a collective) while the other trains on, and the job would hang."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "tests" / "ddp_stop_resume.py"), str(tmp_path)],
                          env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RUNS ")]
    assert lines, proc.stderr[-3000:]
    runs = json.loads(lines[-1][5:])
    assert runs["stopped"]["status"] == "interrupted" and runs["stopped"]["steps"] == 6
    assert runs["resumed"]["status"] == "completed" and runs["resumed"]["resumed_at_step"] == 6
    assert runs["resumed"]["steps"] == runs["whole"]["steps"] == 26
    for name, value in runs["whole"]["metrics"].items():
        assert runs["resumed"]["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_a_mid_epoch_stop_resumes_only_with_its_own_steps_per_call(tmp_path):
    """Lightning counts a stopped epoch's progress in calls (groups of steps_per_call batches), so a
    mid-epoch resume under another grouping would skip the wrong batches: it is refused by name,
    the checkpoint kept, and the resume with the stop's own value is exact."""
    signals.install()
    stopped = run_cell(config(steps_per_call=4), tmp_path, callbacks=[SignalAtStep(17)], enable_progress_bar=False)
    assert stopped["status"] == "interrupted" and stopped["steps"] == 21
    signals.install()
    refused = run_cell(config(steps_per_call=1), tmp_path, enable_progress_bar=False)
    assert refused["status"] != "completed"
    assert "module.steps_per_call=1" in refused["error"]["message"] and "resume with 4" in refused["error"]["message"]
    resumed = run_cell(config(steps_per_call=4), tmp_path, enable_progress_bar=False)
    assert resumed["status"] == "completed" and resumed["resumed_at_step"] == 21 and resumed["steps"] == 39
