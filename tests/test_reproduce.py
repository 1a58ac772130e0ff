"""Paper reproductions (`dgm-bench reproduce`) and re-scoring saved runs (`dgm-bench evaluate`)."""
import csv
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml

from benchmarks.cli import main
from benchmarks.config import parse_set, resolve_config
from benchmarks.evaluate import evaluate_checkpoint
from benchmarks.records import read_record
from benchmarks.reproduce import BUDGETS, REPRODUCTIONS_DIR, list_reproductions, load_reproduction
from benchmarks.run import run_cell, run_id
from dgm_modules.registry import ConfigError

SHIPPED = ("iwae-table1", "gumbel-softmax-table1", "sbn-nvil", "stick-breaking", "iwae-snr")


def test_the_issue_reproductions_are_shipped():
    assert set(SHIPPED) <= set(list_reproductions())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_budget_validates_and_states_itself(name):
    sizes = {}
    for budget in BUDGETS:
        repro = load_reproduction(name, budget)
        assert repro.cells and repro.budget_description
        sizes[budget] = len(repro.cells)
    assert sizes["cpu"] <= sizes["paper"]


@pytest.mark.parametrize("name", SHIPPED)
def test_smoke_budget_runs_end_to_end(name, shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DGM_BENCH_DATA", str(shared_data))
    assert main(["reproduce", name, "--budget", "smoke", "--out", str(tmp_path)]) == 0
    out = tmp_path / name
    rows = list(csv.DictReader(open(out / "table.csv")))
    raw = yaml.safe_load(open(REPRODUCTIONS_DIR / f"{name}.yaml"))
    assert [r["row"] for r in rows] == [e["label"] for e in raw["published"]]
    repro = load_reproduction(name, "smoke")
    records = {run_id(c.config): (c, read_record(out / "runs" / run_id(c.config))) for c in repro.cells}
    assert all(r is not None and r["status"] == "completed" for _, r in records.values())
    for entry, row in zip(raw["published"], rows):
        assert row["budget"] == "smoke"
        if "missing" in entry:
            assert row["ours"] == "" and "not in the suite" in row["status"]
            continue
        if "trend" in entry:  # a direction, checked against the measured series
            assert row["published"] == entry["trend"]["direction"]
            series = [float(v) for v in row["ours"].split(" -> ")]
            falls = series[-1] < series[0]
            assert row["difference"].startswith("holds" if falls == (entry["trend"]["direction"] == "decreasing")
                                                else "does not hold")
            continue
        # the published column comes from the spec; ours is the mean of the matching records
        assert (row["published"] == "") == (entry.get("value") is None)
        matched = [r for c, r in records.values()
                   if all(getattr(c, k) in (v if isinstance(v, list) else [v]) for k, v in entry["match"].items())]
        expected = statistics.fmean(r["metrics"][entry["metric"]] * entry.get("scale", 1) for r in matched)
        assert math.isclose(float(row["ours"]), expected, rel_tol=1e-9)
        if entry.get("value") is not None:
            assert math.isclose(float(row["published"]), entry["value"])
            assert math.isclose(float(row["difference"]), expected - entry["value"], rel_tol=1e-9, abs_tol=1e-9)
    assert "smoke" in (out / "table.md").read_text()
    assert (out / "command.txt").read_text().startswith("dgm-bench reproduce " + name)
    if raw.get("figure"):
        assert any(out.glob("*.png"))


def _spec_with(tmp_path, published: dict, dataset: str = "mnist") -> Path:
    spec = {
        "name": "mismatch", "title": "a published number under another protocol",
        "matrix": {"methods": ["vae"], "datasets": [dataset], "seeds": [0],
                   "overrides": {"module": {"eval_k": [1, 100]}}},
        "budgets": {b: {"description": b} for b in BUDGETS},
        "published": [{"label": "VAE", "match": {"method": "vae"}, "source": "Some paper, Table 1", **published}],
    }
    path = tmp_path / "mismatch.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_published_value_of_another_binarisation_is_refused_naming_both(tmp_path):
    path = _spec_with(tmp_path, {"metric": "test/nll_k100", "value": 88.7,
                                 "protocol": {"dataset": "mnist", "binarization": "fixed", "k": 100}})
    with pytest.raises(ConfigError) as err:
        load_reproduction(path, "smoke")
    assert "binarization=fixed" in str(err.value) and "binarization=dynamic" in str(err.value)


def test_a_published_value_of_another_k_or_dataset_is_refused(tmp_path):
    path = _spec_with(tmp_path, {"metric": "test/nll_k5000", "value": 86.8,
                                 "protocol": {"dataset": "mnist", "binarization": "dynamic", "k": 5000}})
    with pytest.raises(ConfigError, match="k=5000.*k=\\[1, 100\\]"):
        load_reproduction(path, "smoke")
    path = _spec_with(tmp_path, {"metric": "test/nll_k100", "value": 86.8,
                                 "protocol": {"dataset": "binarized-mnist", "k": 100}})
    with pytest.raises(ConfigError, match="dataset=binarized-mnist.*dataset=mnist"):
        load_reproduction(path, "smoke")
    # the same number under the cell's own protocol is accepted
    path = _spec_with(tmp_path, {"metric": "test/nll_k100", "value": 86.8,
                                 "protocol": {"dataset": "mnist", "binarization": "dynamic", "k": 100}})
    assert load_reproduction(path, "smoke").entries[0]["value"] == 86.8


def test_a_published_value_on_dequantised_data_is_refused_for_grey_levels(tmp_path):
    # Wu et al.'s continuous-MNIST numbers are densities of dequantised images, not of grey levels
    published = {"metric": "test/nll_k100", "value": -991.4,
                 "protocol": {"dataset": "mnist", "binarization": "none", "dequantize": True, "k": 100}}
    spec = yaml.safe_load(_spec_with(tmp_path, published).read_text())
    spec["matrix"]["overrides"]["data"] = {"binarization": "none"}
    (tmp_path / "mismatch.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="dequantize=True.*dequantize=False"):
        load_reproduction(tmp_path / "mismatch.yaml", "smoke")
    spec["matrix"]["overrides"]["data"]["dequantize"] = True
    (tmp_path / "mismatch.yaml").write_text(yaml.safe_dump(spec))
    assert load_reproduction(tmp_path / "mismatch.yaml", "smoke").entries[0]["value"] == -991.4


def test_bad_reproduction_input_is_refused_before_running(tmp_path, capsys):
    assert main(["reproduce", "no-such-paper"]) == 2
    assert "iwae-table1" in capsys.readouterr().err  # the valid names are listed
    assert main(["reproduce", "iwae-table1", "--budget", "weekend"]) == 2
    assert "paper, cpu, smoke" in capsys.readouterr().err
    path = _spec_with(tmp_path, {"metric": "test/nll_k100", "value": "86.8",
                                 "protocol": {"dataset": "mnist", "k": 100}})
    assert main(["reproduce", str(path), "--budget", "smoke", "--out", str(tmp_path)]) == 2
    assert "'value' must be a number" in capsys.readouterr().err
    assert not (tmp_path / "mismatch").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    config = resolve_config("vae", "digits", 3, parse_set([
        "trainer.max_epochs=2", "model.hidden=[32]", "model.latent_dim=4", "module.eval_k=[1,64]",
        "trainer.accelerator=cpu"]))
    record = run_cell(config, out, enable_progress_bar=False)
    assert record["status"] == "completed"
    return out / record["run_id"], record


def test_evaluate_reproduces_the_metrics_recorded_at_the_end_of_training(trained):
    run_dir, record = trained
    again = evaluate_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert set(record["metrics"]) - {k for k in record["metrics"] if k.startswith("val/")} == set(again["metrics"])
    for name, value in again["metrics"].items():
        assert math.isclose(value, record["metrics"][name], rel_tol=1e-6, abs_tol=1e-6), name
    for key in ("run_id", "status", "metrics", "protocol", "config", "seed", "method", "dataset", "device"):
        assert key in again
    assert again["protocol"] == record["protocol"]


def test_evaluate_scores_a_run_still_training_from_its_config(trained, tmp_path):
    """A cell in progress has no record yet, only the config it wrote before training: that is enough."""
    import shutil

    run_dir, record = trained
    live = tmp_path / run_dir.name
    (live / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "config.yaml", live)
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", live / "checkpoints")
    again = evaluate_checkpoint(live / "checkpoints" / "last.ckpt")
    assert again["run_in_progress"] is True and again["run_id"] == record["run_id"]
    assert (again["steps"], again["epochs"]) == (record["steps"], record["epochs"])  # from the checkpoint
    for name, value in again["metrics"].items():
        assert math.isclose(value, record["metrics"][name], rel_tol=1e-6, abs_tol=1e-6), name
    # stopped and resumed: its record says "interrupted" at an older step; the checkpoint says where it is
    (live / "record.json").write_text(json.dumps({**record, "status": "interrupted", "steps": 3, "epochs": 0}))
    again = evaluate_checkpoint(live / "checkpoints" / "last.ckpt")
    assert again["run_in_progress"] is True and (again["steps"], again["epochs"]) == (record["steps"], record["epochs"])
    (live / "record.json").unlink()
    (live / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="no record.json or config.yaml in"):
        evaluate_checkpoint(live / "checkpoints" / "last.ckpt")


def test_evaluate_cli_writes_a_record_with_the_new_k(trained, capsys):
    run_dir, record = trained
    out = run_dir / "rescored.json"
    assert main(["evaluate", str(run_dir), "--k", "1", "256", "--out", str(out)]) == 0
    rescored = json.loads(out.read_text())
    assert rescored["protocol"]["k"] == [1, 256] and "test/nll_k256" in rescored["metrics"]
    assert math.isclose(rescored["metrics"]["test/nll_k1"], record["metrics"]["test/nll_k1"], rel_tol=1e-6)
    # a tighter bound: L_256 >= L_64 on average, so the negative is lower
    assert rescored["metrics"]["test/nll_k256"] <= record["metrics"]["test/nll_k64"] + 1e-3
    assert main(["evaluate", str(run_dir / "nowhere.ckpt")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_failed_and_diverged_cells_are_listed_not_averaged(tmp_path):
    from benchmarks.reproduce import compare

    path = _spec_with(tmp_path, {"metric": "test/nll_k100", "value": 86.8,
                                 "protocol": {"dataset": "mnist", "binarization": "dynamic", "k": 100}})
    raw = yaml.safe_load(path.read_text())
    raw["matrix"]["seeds"] = [0, 1, 2]
    path.write_text(yaml.safe_dump(raw))
    repro = load_reproduction(path, "smoke")
    records = [{"status": "completed", "metrics": {"test/nll_k100": 90.0}, "epochs": 3},
               {"status": "diverged", "metrics": {}}, None]
    (row,) = compare(repro, records)
    assert row["ours"] == 90.0 and row["n"] == 1 and math.isclose(row["difference"], 90.0 - 86.8)
    assert row["status"] == "diverged; no record"


def test_table_prints_one_seed_without_a_spread(tmp_path):
    """n = 1 has no standard deviation: the table says n=1 instead of a misleading "± 0.00"."""
    from benchmarks.reproduce import compare, table_markdown

    path = _spec_with(tmp_path, {"metric": "test/nll_k100", "value": 86.8,
                                 "protocol": {"dataset": "mnist", "binarization": "dynamic", "k": 100}})
    raw = yaml.safe_load(path.read_text())
    raw["matrix"]["seeds"] = [0, 1]
    path.write_text(yaml.safe_dump(raw))
    repro = load_reproduction(path, "smoke")
    one = compare(repro, [{"status": "completed", "metrics": {"test/nll_k100": 90.0}, "epochs": 3}, None])
    two = compare(repro, [{"status": "completed", "metrics": {"test/nll_k100": 90.0}, "epochs": 3},
                          {"status": "completed", "metrics": {"test/nll_k100": 92.0}, "epochs": 3}])
    assert "| 90.00 (n=1)" in table_markdown(repro, one, "cmd", 1.0, ["cpu"])
    assert f"| 91.00 ± {2 ** 0.5:.2f} (n=2) |" in table_markdown(repro, two, "cmd", 1.0, ["cpu"])


def test_report_only_over_published_records_skips_what_needs_the_weights(tmp_path, capsys):
    """Published run folders keep records and logs, not checkpoints: the latent-usage figure and the
    gradient-variance measurement are skipped with a note (an earlier gradvar.json is reused)."""
    from benchmarks.reproduce import make_figure, measure_gradvar

    for name, call in (("stick-breaking", lambda r, rec: make_figure(r, rec, tmp_path)),
                       ("iwae-snr", lambda r, rec: measure_gradvar(r, rec, tmp_path, "cpu"))):
        repro = load_reproduction(name, "smoke")
        records = [{"status": "completed", "metrics": {}} for _ in repro.cells]
        assert call(repro, records) is None
        assert "has no checkpoints/last.ckpt" in capsys.readouterr().err
    (tmp_path / "gradvar.json").write_text(json.dumps({"estimators": {"iwae": {"snr": 1.5}}}))
    repro = load_reproduction("iwae-snr", "smoke")
    assert measure_gradvar(repro, [{"status": "completed"} for _ in repro.cells], tmp_path, "cpu") == \
        {"estimators": {"iwae": {"snr": 1.5}}}
    assert "(the one there is kept)" in capsys.readouterr().err
