"""Convergence curves and early stopping: they observe training without changing it."""
import csv
import json
import math

import pytest

from benchmarks.config import resolve_config
from benchmarks.curves import curve_epochs
from benchmarks.run import run_cell
from dgm_modules.registry import ConfigError

TINY = {"model": {"init_args": {"latent_dim": 2, "hidden": [16]}},
        "module": {"init_args": {"eval_k": [1, 5], "val_k": [1]}},
        "trainer": {"max_epochs": 6, "accelerator": "cpu"}}


def _rows(run_dir):
    with open(run_dir / "logs" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_curve_epochs_are_log_spaced_and_end_at_the_budget():
    assert curve_epochs(10) == [1, 2, 3, 5, 8, 10]
    assert curve_epochs(1) == [1]
    e = curve_epochs(3280)
    assert e[-1] == 3280 and all(b >= 1.5 * a or b == a + 1 or b == 3280 for a, b in zip(e, e[1:]))


def test_the_curve_leaves_training_and_test_metrics_unchanged(tmp_path):
    plain = run_cell(resolve_config("vae", "digits", 0, TINY), tmp_path / "a")
    with_curve = run_cell(resolve_config("vae", "digits", 0, {**TINY, "curve": {"k": 1}}), tmp_path / "b")
    assert plain["status"] == with_curve["status"] == "completed"
    for name in ("test/nll_k1", "test/nll_k5", "val/nll_k1"):
        assert with_curve["metrics"][name] == pytest.approx(plain["metrics"][name], rel=1e-6), name
    rows = _rows(tmp_path / "b" / with_curve["run_id"])
    points = [(int(r["epoch"]) + 1, float(r["curve/test_nll_k1"])) for r in rows if r.get("curve/test_nll_k1")]
    assert [p for p, _ in points] == curve_epochs(6)
    assert all(math.isfinite(v) and v > 0 for _, v in points)
    assert points[-1][1] < points[0][1]  # the model learns: the test bound improves over passes


def test_early_stopping_tests_the_best_validation_epoch(tmp_path):
    config = resolve_config("vae", "digits", 0, {**TINY, "early_stopping": {"patience": 2}})
    record = run_cell(config, tmp_path)
    assert record["status"] == "completed"
    val = [(int(r["epoch"]) + 1, float(r["val/nll_k1"])) for r in _rows(tmp_path / record["run_id"])
           if r.get("val/nll_k1")]
    best_epoch, best_value = min(val, key=lambda p: p[1])
    assert record["tested_checkpoint"]["epoch"] == best_epoch
    assert record["tested_checkpoint"]["value"] == pytest.approx(best_value, rel=1e-6)


def test_a_run_ended_by_early_stopping_scores_its_last_epoch_on_the_curve(tmp_path):
    """An improvement must beat the best by 1e3 nats: never after the first epoch, so patience 3 stops
    the run at pass 4, which is not one of the curve's passes (1, 2, 3, 5, ...): it is scored too."""
    config = resolve_config("vae", "digits", 0, {**TINY, "trainer": {**TINY["trainer"], "max_epochs": 10},
                                                 "early_stopping": {"patience": 3, "min_delta": 1000.0},
                                                 "curve": {"k": 1}})
    record = run_cell(config, tmp_path)
    assert record["status"] == "completed" and record["epochs"] == 4
    rows = _rows(tmp_path / record["run_id"])
    assert [int(r["epoch"]) + 1 for r in rows if r.get("curve/test_nll_k1")] == [1, 2, 3, 4]


@pytest.mark.parametrize("overrides, message", [
    ({"curve": {"k": 0}}, "curve.k must be an integer >= 1"),
    ({"curve": {"every": 2}}, r"curve: unknown option\(s\) \['every'\]"),
    ({"early_stopping": {"monitor": "train/loss"}}, "early_stopping.monitor must be a validation metric"),
    ({"early_stopping": {"patience": 0}}, "early_stopping.patience must be an integer >= 1"),
])
def test_bad_curve_and_early_stopping_options_are_refused_naming_the_option(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("vae", "digits", 0, overrides)


def test_reproduce_draws_the_convergence_figure_and_reports_without_retraining(shared_data, tmp_path, monkeypatch):
    from benchmarks.cli import main
    from benchmarks.figures.convergence import read_curve
    from benchmarks.reproduce import load_reproduction
    from benchmarks.run import run_id

    monkeypatch.setenv("DGM_BENCH_DATA", str(shared_data))
    args = ["reproduce", "sbn-nvil", "--budget", "smoke", "--out", str(tmp_path), "--only", "setting=sbn-200",
            "--only", "method=sbn-nvil", "--set", "curve.k=1"]
    assert main(args) == 0
    out = tmp_path / "sbn-nvil"
    assert (out / "convergence.png").stat().st_size > 1000
    cell = load_reproduction("sbn-nvil", "smoke", {"curve": {"k": 1}}).cells
    run_dir = out / "runs" / run_id([c for c in cell if c.method == "sbn-nvil" and c.setting == "sbn-200"][0].config)
    column, points = read_curve(run_dir)
    assert column == "curve/test_nll_k1" and [p for p, _ in points] == [1]
    table = (out / "table.md").read_text()
    (out / "table.md").unlink()
    mtime = (run_dir / "record.json").stat().st_mtime_ns
    assert main([*args, "--report-only"]) == 0  # the same table from the folders, nothing retrained
    assert (run_dir / "record.json").stat().st_mtime_ns == mtime
    strip = lambda t: [line for line in t.splitlines() if not line.startswith(("Command:", "Wall time:"))]
    assert strip((out / "table.md").read_text()) == strip(table)
    # the report's wall time is the cells' own (from their records), not the report's second
    cell_s = json.loads((run_dir / "record.json").read_text())["wall_time_s"]
    assert f"Wall time: the cells' own, longest {cell_s:.0f} s" in (out / "table.md").read_text()


def test_a_row_of_another_bound_gets_its_star_not_the_curve_under_its_name(tmp_path):
    """The sbn-nvil figure once drew the -L_1 curve twice, the second time labelled as the -L_1000 row."""
    from benchmarks.figures.convergence import plot_lines

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.csv").write_text(
        "epoch,curve/test_nll_k1,test/nll_k1\n0,150.0,\n1,120.0,\n1,,120.0\n")
    rows = [{"label": "NVIL", "run_dir": tmp_path, "metric": "test/nll_k1", "published": 113.5, "final": 120.0},
            {"label": "NVIL, -L_1000", "run_dir": tmp_path, "metric": "test/nll_k1000", "published": None,
             "final": 108.4}]
    curve, star, other = plot_lines(rows)
    assert (curve["xs"], curve["ys"], curve["style"]) == ([1, 2], [150.0, 120.0], "o-")
    assert (star["xs"], star["ys"], star["style"], star["published"]) == ([2], [120.0], "*", 113.5)
    assert (other["xs"], other["ys"], other["style"]) == ([2], [108.4], "*")
    assert other["label"] == "NVIL, -L_1000 (final -L_1000)"


def test_a_row_of_another_bound_alone_gets_the_curve_named_by_its_own_bound(tmp_path):
    """The stick-breaking rows are -L_100 and the runs log a -L_1 curve: the figure showed only stars.
    Now the curve is drawn, once, and named for what it is."""
    from benchmarks.figures.convergence import plot_lines

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.csv").write_text("epoch,curve/test_nll_k1,test/nll_k100\n0,110.0,\n2,100.0,\n2,,96.0\n")
    rows = [{"label": "Gauss-VAE", "run_dir": tmp_path, "metric": "test/nll_k100", "published": 93.9, "final": 96.0},
            {"label": "Gauss-VAE, kNN", "run_dir": tmp_path, "metric": "test/knn_error_k5", "published": None,
             "final": None}]
    curve, star = plot_lines(rows)
    assert (curve["xs"], curve["ys"], curve["style"]) == ([1, 3], [110.0, 100.0], "o-")
    assert curve["label"] == "Gauss-VAE: test -L_1 during training"
    assert (star["xs"], star["ys"], star["style"], star["published"]) == ([3], [96.0], "*", 93.9)
    assert star["label"] == "Gauss-VAE (final -L_100)"
    # early stopping tested an epoch after the curve's last point: the star sits at that pass
    (star,) = plot_lines([{**rows[0], "final_pass": 5}])[1:]
    assert (star["xs"], star["ys"]) == ([5], [96.0])
