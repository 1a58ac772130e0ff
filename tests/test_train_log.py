"""The training log every method shares (EvaluatedMethod): epoch means of the step values, and with
``module.log_every_n_steps`` n the means of every n training batches as ``train/<name>_step``.

Real runs on the embedded digits data (1297 training images, batch 100: 13 batches an epoch)."""
import csv
import math
from pathlib import Path

import pytest

from benchmarks.config import build, resolve_config
from benchmarks.run import run_cell

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """metrics.csv's interval rows (``train/loss_step`` or ``train/generator_loss_step`` set) and epoch rows."""
    with open(run_dir / "logs" / "metrics.csv", newline="") as fh:
        all_rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(fh)]
    steps = [r for r in all_rows if any(k.endswith("_step") for k in r)]
    epochs = [r for r in all_rows if "train/loss" in r or "train/generator_loss" in r]
    return steps, epochs


def run(tmp_path: Path, method: str, module: dict, model: dict, epochs: int) -> tuple[dict, Path]:
    config = resolve_config(method, "digits", 0, {
        "model": {"init_args": model}, "module": {"init_args": module},
        "data": {"init_args": {"batch_size": 100}}, "trainer": {"max_epochs": epochs, "accelerator": "cpu"}})
    record = run_cell(config, tmp_path, enable_progress_bar=False)
    assert record["status"] == "completed", record.get("error")
    return record, tmp_path / record["run_id"]


def test_an_adversarial_run_logs_every_steps_terms_and_epoch_means_of_them(tmp_path):
    """The GAN's players' losses: one row a step at n=1, and the epoch rows are those steps' means
    (before, the adversarial method logged single steps' values through Lightning, 2 ms a step)."""
    record, run_dir = run(tmp_path, "gan", {"fid_samples": 0, "log_every_n_steps": 1},
                          {"latent_dim": 8, "hidden": [32]}, epochs=2)
    steps, epochs = rows(run_dir)
    assert len(steps) == 26 and len(epochs) == 2
    # manual optimisation: Lightning's global step counts both players' optimiser steps
    assert [r["step"] for r in steps] == [2 * (i + 1) for i in range(26)]
    assert [r["epoch"] for r in steps] == [0] * 13 + [1] * 13
    for e, epoch in enumerate(epochs):
        for name in ("discriminator_loss", "generator_loss"):
            values = [r[f"train/{name}_step"] for r in steps[13 * e:13 * (e + 1)]]
            assert all(math.isfinite(v) for v in values) and len(set(values)) > 1  # per-step values, not one repeated
            assert epoch[f"train/{name}"] == pytest.approx(sum(values) / 13, rel=1e-5), name


def test_nvil_logs_its_bound_per_interval_across_epochs(tmp_path):
    """NVIL's loss is a surrogate; its bound is logged beside it, per interval of 2 batches. An
    interval spans the epochs' boundary (batches 13 and 14): the 13 interval means average to the
    two epochs' means."""
    record, run_dir = run(tmp_path, "sbn-nvil", {"eval_k": [1], "val_k": [1], "log_every_n_steps": 2},
                          {"latent_sizes": [8]}, epochs=2)
    steps, epochs = rows(run_dir)
    assert [r["step"] for r in steps] == list(range(2, 27, 2))
    assert [r["epoch"] for r in steps] == [0] * 6 + [1] * 7  # the interval of batches 13, 14 ends in epoch 1
    assert len(epochs) == 2
    for name in ("bound", "loss"):
        mean = sum(r[f"train/{name}_step"] for r in steps) / len(steps)
        assert mean == pytest.approx((epochs[0][f"train/{name}"] + epochs[1][f"train/{name}"]) / 2, rel=1e-5)
    assert all(r["train/bound_step"] < 0 for r in steps)  # L_1 of binary images
    assert all(r["train/bound_step"] != pytest.approx(-r["train/loss_step"]) for r in steps)  # the surrogate is not -bound


def test_by_default_only_epoch_means_are_logged(tmp_path):
    record, run_dir = run(tmp_path, "vae", {"eval_k": [1], "val_k": [1]}, {"latent_dim": 2, "hidden": [16]}, epochs=1)
    steps, epochs = rows(run_dir)
    assert steps == [] and len(epochs) == 1 and "train/bound" in epochs[0]


@pytest.mark.parametrize("value", [-1, 1.5])
def test_log_every_n_steps_is_checked(value):
    with pytest.raises(ValueError, match=r"module\.log_every_n_steps.*(integer >= 0|expected int)"):
        build(resolve_config("vae", "digits", 0, {"module": {"init_args": {"log_every_n_steps": value}}}))
