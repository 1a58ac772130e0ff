"""End to end through the real command line: a run on digits, its record, and bad input."""
import json

import pytest
import torch

from benchmarks.cli import main

REQUIRED = {"run_id", "method", "objective", "model", "dataset", "protocol", "seed", "config", "metrics",
            "status", "error", "steps", "epochs", "wall_time_s", "device", "versions", "command",
            "started_at", "finished_at"}


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_full_run_on_digits_writes_a_complete_record(tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--method", "iwae", "--data", "digits", "--seed", "3",
                             "--max-epochs", "2", "--out", str(tmp_path), "--set", "objective.k=3",
                             "--set", "module.eval_k=[1,20]", "--set", "model.hidden=[32]")
    assert code == 0, err
    (path,) = tmp_path.glob("*/record.json")
    record = json.loads(path.read_text())
    assert REQUIRED <= set(record)
    assert record["status"] == "completed" and record["error"] is None
    assert record["seed"] == 3 and record["epochs"] == 2 and record["steps"] > 0
    assert record["config"]["objective"] == {"class_path": "iwae", "init_args": {"k": 3}}
    assert record["config"]["model"]["init_args"]["hidden"] == [32]
    assert record["protocol"]["binarization"] == "dynamic" and record["protocol"]["k"] == [1, 20]
    assert record["protocol"]["split"] == {"train": 1297, "val": 200, "test": 300}
    m = record["metrics"]
    # nats per image: L_20 is a tighter bound than L_1, so its negative is smaller
    assert 0 < m["test/nll_k20"] < m["test/nll_k1"] < 64 * 0.7  # below the 0.5-coin baseline
    assert "val/nll_k1" in m and "test/neg_elbo" in m
    assert record["versions"]["torch"] and record["command"][0]
    # the kernels' instruction set decides float rounding, hence which trajectory a seed follows
    assert record["device"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert (path.parent / "checkpoints" / "last.ckpt").exists()
    assert (path.parent / "logs" / "metrics.csv").exists()
    # the same command again does not re-train a completed cell
    mtime = path.stat().st_mtime_ns
    assert main(["run", "--method", "iwae", "--data", "digits", "--seed", "3", "--max-epochs", "2",
                 "--out", str(tmp_path), "--set", "objective.k=3", "--set", "module.eval_k=[1,20]",
                 "--set", "model.hidden=[32]"]) == 0
    assert path.stat().st_mtime_ns == mtime


def test_yaml_config_file_sets_options(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("objective: {class_path: iwae, init_args: {k: 2}}\nmodel: {latent_dim: 4, hidden: [16]}\n"
                   "trainer: {max_epochs: 1}\nmodule: {eval_k: [1, 5]}\n")
    code, out, err = run_cli(capsys, "run", "--method", "vae", "--data", "digits", "--config", str(cfg),
                             "--out", str(tmp_path / "o"))
    assert code == 0, err
    record = json.loads(next((tmp_path / "o").glob("*/record.json")).read_text())
    assert record["objective"] == "iwae" and record["config"]["model"]["init_args"]["latent_dim"] == 4


@pytest.mark.parametrize("argv, expected", [
    (["--method", "nope", "--data", "digits"], "unknown method 'nope'.*choose one of: .*iwae.*vae"),
    (["--method", "vae", "--data", "nope"], "unknown dataset 'nope'.*choose one of: .*digits"),
    (["--method", "iwae", "--data", "digits", "--set", "objective.k=0"], "objective.k must be an integer >= 1, got 0"),
    (["--method", "vae", "--data", "digits", "--set", "optimizer.lr=-0.1"], "optimizer.lr must be > 0"),
    (["--method", "vae", "--data", "digits", "--set", "objective.kk=1"], r"unknown option\(s\) \['kk'\]"),
    (["--method", "vae", "--data", "digits", "--set", "objective.analytic_kl=maybe"], "objective.analytic_kl: expected bool"),
    (["--method", "vae", "--data", "digits", "--set", "trainer.max_epoch=3"], r"trainer: unknown option\(s\) \['max_epoch'\]"),
    (["--method", "vae", "--data", "digits", "--set", "data.binarization=grey"], "data.binarization='grey' is not valid"),
    (["--method", "vae", "--data", "digits", "--set", "module.eval_k=[0]"], "module.eval_k must be"),
])
def test_bad_input_is_refused_before_training(tmp_path, capsys, argv, expected):
    code, out, err = run_cli(capsys, "run", *argv, "--out", str(tmp_path))
    assert code == 2
    assert __import__("re").search(expected, err), err
    assert not list(tmp_path.glob("*/record.json"))  # nothing ran


def test_missing_data_names_the_files_and_how_to_get_them(tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--method", "vae", "--data", "mnist", "--out", str(tmp_path / "o"),
                             "--set", f"data.data_dir={tmp_path / 'empty'}")
    assert code == 2  # refused before training: no record
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*/record.json"))
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "empty") in err
    assert "download" in err


def test_diverging_run_is_recorded_as_diverged(tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--method", "iwae", "--data", "digits", "--max-epochs", "3",
                             "--out", str(tmp_path), "--set", "optimizer.lr=1000", "--set", "module.eval_k=[1]")
    assert code == 1
    record = json.loads(next(tmp_path.glob("*/record.json")).read_text())
    assert record["status"] == "diverged"
    assert record["error"]["step"] >= 0 and "non-finite" in record["error"]["message"]


def test_list_names_methods_and_datasets(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ("vae", "iwae", "digits", "mnist", "binarized-mnist", "omniglot", "cifar10", "ring", "grid"):
        assert f"  {name} " in out
