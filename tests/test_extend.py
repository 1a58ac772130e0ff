"""A run carried on to a larger budget (``--extend-from``) ends as a run trained at that budget from the start."""
import json

import pytest
import torch

from benchmarks.config import resolve_config
from benchmarks.extend import extend_cells, why_not
from benchmarks.matrix import Cell
from benchmarks.run import run_cell, run_id
from dgm_modules.registry import ConfigError
from resume_checks import assert_same_rows, history


def config(max_epochs: int, patience: int, seed: int = 0, lr: float = 1e-3) -> dict:
    # digits: 13 batches an epoch; early stopping on the validation bound (the best epoch is tested)
    # and the test-bound curve, as the paper budgets use them
    return resolve_config("vae", "digits", seed, {
        "model": {"init_args": {"latent_dim": 2, "hidden": [32]}},
        "module": {"init_args": {"eval_k": [1, 5], "val_k": [1]}},
        "data": {"init_args": {"batch_size": 100}},
        "optimizer": {"init_args": {"lr": lr}},
        "trainer": {"max_epochs": max_epochs, "accelerator": "cpu"},
        "early_stopping": {"monitor": "val/nll_k1", "patience": patience},
        "curve": {"k": 1}})


def cell(cfg: dict) -> Cell:
    return Cell("vae", "digits", cfg["seed"], "default", cfg)


def test_a_carried_on_run_ends_with_the_longer_runs_numbers_and_history(tmp_path):
    # the test curve is scored after passes 1, 2, 3, 4 at 4 epochs and 1, 2, 3, 5, 7 at 7: not after 4
    short = run_cell(config(4, 2), tmp_path / "short", enable_progress_bar=False)
    whole = run_cell(config(7, 4), tmp_path / "whole", enable_progress_bar=False)
    assert short["status"] == whole["status"] == "completed"
    assert short["run_id"] != whole["run_id"]

    out = tmp_path / "longer"
    said = []
    extend_cells([cell(config(7, 4))], out, tmp_path / "short", echo=said.append)
    assert said == [f"digits/vae/default/seed0: carried on from {short['run_id']} at step 52 (4 epochs done)"]
    # the callbacks' saved state is the new run's: its folder and its patience (Lightning restores both)
    state = torch.load(out / whole["run_id"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    stops = [v for k, v in state["callbacks"].items() if k.startswith("EarlyStopping")]
    assert [s["patience"] for s in stops] == [4]
    assert state["dgm_bench"]["fingerprint"] == whole["fingerprint"]
    dirs = {v["dirpath"] for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint")}
    assert dirs == {str((out / whole["run_id"] / "checkpoints").resolve())}

    longer = run_cell(config(7, 4), out, enable_progress_bar=False)
    assert longer["status"] == "completed", longer.get("error")
    assert longer["run_id"] == whole["run_id"] and longer["steps"] == whole["steps"] == longer["epochs"] * 13
    assert longer["resumed_at_step"] == 4 * 13
    assert longer["extended_from"]["run_id"] == short["run_id"]
    assert longer["extended_from"]["epochs"] == 4 and longer["extended_from"]["trainer.max_epochs"] == 4
    assert longer["tested_checkpoint"] == whole["tested_checkpoint"]  # the best epoch over all epochs
    assert longer["metrics"].keys() == whole["metrics"].keys()
    for name, value in whole["metrics"].items():
        assert longer["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    rows_whole, rows_longer = history(tmp_path / "whole" / whole["run_id"]), history(out / longer["run_id"])
    assert len(rows_longer) == len(rows_whole)  # the short run's test stage and its last curve point are gone
    assert_same_rows(rows_whole, rows_longer)


def test_a_cell_already_started_keeps_its_own_checkpoint(tmp_path):
    run_cell(config(2, 2), tmp_path / "short", enable_progress_bar=False)
    out = tmp_path / "out"
    (out / run_id(config(4, 2)) / "checkpoints").mkdir(parents=True)
    torch.save({"marker": 1}, out / run_id(config(4, 2)) / "checkpoints" / "last.ckpt")
    said = []
    extend_cells([cell(config(4, 2))], out, tmp_path / "short", echo=said.append)
    assert said == []
    assert torch.load(out / run_id(config(4, 2)) / "checkpoints" / "last.ckpt") == {"marker": 1}


@pytest.mark.parametrize("old, reason", [
    (config(3, 2, seed=1), "seed 1 is not 0"),
    (config(3, 2, lr=3e-4), "another configuration"),
    (config(9, 2), "trainer.max_epochs 9 is larger than 7"),
    (config(3, 5), "early_stopping.patience 5 is larger than 4"),
])
def test_only_a_shorter_run_of_the_same_config_and_seed_is_carried_on(old, reason):
    assert reason in why_not(old, config(7, 4))
    assert why_not(config(3, 2), config(7, 4)) is None
    no_stopping = {k: v for k, v in config(3, 2).items() if k != "early_stopping"}
    assert "another configuration" in why_not(no_stopping, config(7, 4))  # no best-epoch test there


def test_no_fitting_run_is_said_and_the_cell_trains_from_the_start(tmp_path):
    run_cell(config(2, 2, lr=3e-4), tmp_path / "short", enable_progress_bar=False)
    said = []
    extend_cells([cell(config(4, 2))], tmp_path / "out", tmp_path / "short", echo=said.append)
    assert len(said) == 1 and "no run under" in said[0] and "trains from the start" in said[0]
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="--extend-from .*nowhere: no such folder"):
        extend_cells([cell(config(4, 2))], tmp_path / "out", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--extend-from .* --pack off"):
        extend_cells([cell(config(4, 2))], tmp_path / "out", tmp_path / "short", pack=0)


def test_the_record_names_the_run_it_carried_on(tmp_path):
    short = run_cell(config(2, 2), tmp_path / "short", enable_progress_bar=False)
    extend_cells([cell(config(3, 2))], tmp_path / "out", tmp_path / "short", echo=lambda s: None)
    note = json.loads((tmp_path / "out" / run_id(config(3, 2)) / "extended_from.json").read_text())
    assert note["run_id"] == short["run_id"] and note["status"] == "completed"
    assert note["wall_time_s"] == short["wall_time_s"] and note["early_stopping.patience"] == 2


def test_reproduce_carries_its_cells_on_from_a_shorter_budget(tmp_path, capsys, shared_data, monkeypatch):
    from benchmarks.cli import main

    monkeypatch.setenv("DGM_BENCH_DATA", str(shared_data))

    smoke = ["reproduce", "stick-breaking", "--budget", "smoke", "--only", "method=vae"]
    assert main([*smoke, "--out", str(tmp_path / "a")]) == 0
    assert main([*smoke, "--out", str(tmp_path / "b"), "--set", "trainer.max_epochs=2",
                 "--extend-from", str(tmp_path / "a")]) == 0
    (short,) = [json.loads(p.read_text()) for p in (tmp_path / "a").rglob("record.json")]
    (longer,) = [json.loads(p.read_text()) for p in (tmp_path / "b").rglob("record.json")]
    assert longer["extended_from"]["run_id"] == short["run_id"] != longer["run_id"]
    assert (short["steps"], longer["steps"], longer["resumed_at_step"]) == (2, 4, 2)
    assert "carried on from" in capsys.readouterr().out
    assert "--extend-from" in (tmp_path / "b" / "stick-breaking" / "command.txt").read_text()
    # the report's wall time counts the run it carried on too
    assert main([*smoke, "--out", str(tmp_path / "b"), "--set", "trainer.max_epochs=2", "--report-only"]) == 0
    table = (tmp_path / "b" / "stick-breaking" / "table.md").read_text()
    total = longer["wall_time_s"] + short["wall_time_s"]
    assert f"longest {total:.0f} s, sum {total:.0f} s (records' wall_time_s, with that of the runs they carried on)" in table


def test_a_run_whose_early_stopping_ran_out_is_not_carried_on(tmp_path):
    """With patience 2 used up, the longer run stops at the same epoch: resuming would train one more."""
    short = run_cell(config(2, 2), tmp_path / "short", enable_progress_bar=False)
    last = tmp_path / "short" / short["run_id"] / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    (key,) = [k for k in state["callbacks"] if k.startswith("EarlyStopping")]
    state["callbacks"][key]["wait_count"] = 2  # as if the last two epochs had not improved
    torch.save(state, last)
    said = []
    extend_cells([cell(config(4, 2))], tmp_path / "out", tmp_path / "short", echo=said.append)
    assert "early stopping had run out there (2 epochs without improvement, patience 2)" in said[0]
    assert "trains from the start" in said[1]
    said.clear()  # a larger patience has not run out: carried on
    extend_cells([cell(config(4, 3))], tmp_path / "out", tmp_path / "short", echo=said.append)
    assert said == [f"digits/vae/default/seed0: carried on from {short['run_id']} at step 26 (2 epochs done)"]


def test_matrix_carries_its_cells_on_too(tmp_path, capsys):
    from benchmarks.cli import main

    def spec(epochs: int):
        path = tmp_path / f"spec{epochs}.yaml"
        path.write_text("methods: [vae]\ndatasets: [digits]\nseeds: [0]\noverrides:\n"
                        "  model: {latent_dim: 2, hidden: [32]}\n  module: {eval_k: [1], val_k: [1]}\n"
                        f"  trainer: {{max_epochs: {epochs}, accelerator: cpu}}\n")
        return str(path)

    assert main(["matrix", spec(1), "--out", str(tmp_path / "a")]) == 0
    assert main(["matrix", spec(2), "--out", str(tmp_path / "b"), "--extend-from", str(tmp_path / "a")]) == 0
    assert "carried on from" in capsys.readouterr().out
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "b").rglob("record.json")]
    assert record["extended_from"]["epochs"] == 1 and record["epochs"] == 2
    assert record["resumed_at_step"] == record["extended_from"]["steps"] == record["steps"] // 2
    assert main(["matrix", spec(2), "--out", str(tmp_path / "c"), "--extend-from", str(tmp_path / "a"),
                 "--pack", "auto"]) == 2  # refused by name before anything trains
    assert "--pack off" in capsys.readouterr().err


def test_run_carries_its_run_on_too(tmp_path, capsys):
    from benchmarks.cli import main

    base = ["run", "--method", "vae", "--data", "digits", "--model.latent_dim", "2", "--model.hidden", "[32]",
            "--module.eval_k", "[1]", "--module.val_k", "[1]", "--trainer.accelerator", "cpu"]
    assert main([*base, "--max-epochs", "1", "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--max-epochs", "2", "--out", str(tmp_path / "b"), "--extend-from", str(tmp_path / "a")]) == 0
    assert "carried on from" in capsys.readouterr().out
    (short,) = [json.loads(p.read_text()) for p in (tmp_path / "a").rglob("record.json")]
    (longer,) = [json.loads(p.read_text()) for p in (tmp_path / "b").rglob("record.json")]
    assert longer["extended_from"]["run_id"] == short["run_id"]
    assert longer["steps"] == 2 * short["steps"] and longer["resumed_at_step"] == short["steps"]
    assert longer["config"]["trainer"]["max_epochs"] == 2
    assert "extend_from" not in longer["config"] and "extend-from" not in longer["config"]  # the runner's option
