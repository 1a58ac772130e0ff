"""Weights & Biases, offline (no account): every cell of a matrix gets its own wandb run, even when
one process trains them one after another, holding that cell's metrics and no other's, with the
metric directions declared and the record attached; per-step training curves, the objective's terms
and bound, a sample grid, and the leaderboard as a wandb Table in a run of its own.

The runs are read back from wandb's own transaction log (``run-<id>.wandb``: a leveldb-style log of
``wandb_internal_pb2.Record`` protobufs, which is what ``wandb sync`` uploads)."""
import csv
import json
import struct
import time
from pathlib import Path

import pytest

from benchmarks.config import resolve_config
from benchmarks.launchers import LocalLauncher
from benchmarks.matrix import load_spec, normalise_overrides, run_matrix
from benchmarks.wandb_log import run_cell_logged

SPEC = """
methods: [vae, iwae]
datasets: [digits]
seeds: [0]
overrides:
  model: {latent_dim: 2, hidden: [16]}
  module: {val_k: [1]}
  trainer: {max_epochs: 1, accelerator: cpu, log_every_n_steps: 5}
cells:
  - match: {method: vae}
    overrides: {module: {eval_k: [1, 5]}}
  - match: {method: iwae}
    overrides: {module: {eval_k: [1, 7]}, objective: {k: 2}}
"""


def wandb_records(path: Path):
    """The protobuf records of one offline run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, partial = 7, 32768, b""  # 7-byte file header; 32 KiB blocks of 7-byte-headed chunks
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # full, last
            record = pb.Record()
            record.ParseFromString(partial + chunk if kind == 4 else chunk)
            partial = b""
            yield record
        elif kind in (2, 3):  # first, middle
            partial += chunk
        else:
            break


def read_run(path: Path, timeout_s: float = 120.0) -> dict:
    """The run's name, history, metric definitions and artifacts, once its log is complete: wandb's
    service process writes the log, and may still be writing when ``finish()`` has returned."""
    deadline = time.monotonic() + timeout_s
    records = list(wandb_records(path))
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, f"{path}: no exit record after {timeout_s} s"
        time.sleep(0.5)
        records = list(wandb_records(path))
    out = {"history": {}, "rows": [], "defined": {}, "artifacts": [], "names": []}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["names"].append(rec.run.display_name)
            out["group"], out["job_type"] = rec.run.run_group, rec.run.job_type
        elif kind == "history":  # rows: every logged row; history: each key's last value
            out["rows"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
            out["history"].update(out["rows"][-1])
        elif kind == "metric" and rec.metric.name:
            out["defined"][rec.metric.name] = rec.metric.summary
        elif kind == "artifact":
            out["artifacts"].append(rec.artifact.name)
    return out


def test_one_wandb_run_per_cell_in_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    _, cells = load_spec(spec)
    records = run_matrix(cells, tmp_path / "out", LocalLauncher(jobs=1, wandb="offline", group="grp"),
                         echo=lambda s: None)
    assert [r["status"] for r in records] == ["completed", "completed"]
    for record, own, other in zip(records, ["test/nll_k5", "test/nll_k7"], ["test/nll_k7", "test/nll_k5"]):
        run_dir = tmp_path / "out" / record["run_id"]
        (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")  # exactly one run per cell
        run = read_run(wandb_file)
        assert run["names"] == [record["run_id"]] and run["group"] == "grp"
        assert run["history"][own] == pytest.approx(record["metrics"][own], rel=1e-6)
        assert other not in run["history"]  # the other cell's metrics are not in this run
        assert run["history"]["test/neg_elbo"] == pytest.approx(record["metrics"]["test/neg_elbo"], rel=1e-6)
        defined = run["defined"]  # directions: the summary keeps the best value
        assert defined[own].min and defined["val/nll_k1"].min and defined["test/active_units"].max
        assert not defined[own].max and "test/kid_std" not in defined
        assert run["artifacts"] == [f"record-{record['run_id']}"]
        # per-step curves: one point every log_every_n_steps steps, only in wandb
        assert [r["trainer/global_step"] for r in run["rows"] if "train/loss_step" in r] == \
            list(range(5, record["steps"] + 1, 5))
        (epoch,) = epoch_rows(run_dir)  # objective terms: the ELBO's bound is minus its loss
        assert not any(k.endswith("_step") for k in epoch)  # the CSV keeps epoch means only

    # the leaderboard as a wandb Table, in a run of its own: at the end of `matrix --wandb` (the cells
    # are done, so they are skipped and get no second run) and from `leaderboard DIR --wandb`
    from benchmarks.cli import main

    assert main(["matrix", str(spec), "--out", str(tmp_path / "out"), "--wandb"]) == 0
    assert main(["leaderboard", str(tmp_path / "out"), "--out", str(tmp_path / "board"), "--wandb"]) == 0
    for record in records:
        assert len(list((tmp_path / "out" / record["run_id"]).glob("wandb/offline-run-*/run-*.wandb"))) == 1
    with open(tmp_path / "board" / "leaderboard.csv", newline="") as fh:
        expected = list(csv.DictReader(fh))
    assert {r["configuration"].split()[0] for r in expected} == {"vae", "iwae"} and len(expected) > 10
    for folder, group in [(tmp_path / "out", "spec"), (tmp_path / "board", "out")]:  # the spec's, DIR's name
        (wandb_file,) = folder.glob("wandb/offline-run-*/run-*.wandb")
        board = read_run(wandb_file)
        assert board["job_type"] == "leaderboard" and board["group"] == group
        assert board["history"]["leaderboard/_type"] == "table-file"
        (table_file,) = wandb_file.parent.glob(f"files/{board['history']['leaderboard/path']}")
        table = json.loads(table_file.read_text())
        assert table["columns"] == list(expected[0])
        rows = [dict(zip(table["columns"], row)) for row in table["data"]]
        assert len(rows) == len(expected)
        for got, want in zip(rows, expected):  # the same rows, numbers as numbers
            assert (got["configuration"], got["metric"], got["n"]) == (want["configuration"], want["metric"], int(want["n"]))
            assert got["mean"] == float(want["mean"]) and got["best"] == bool(int(want["best"]))
        assert epoch["train/bound"] == pytest.approx(-epoch["train/loss"], rel=1e-6)


def test_wandb_flag_on_run_matrix_reproduce_and_leaderboard():
    from benchmarks.cli import build_parser
    from benchmarks.run_cli import parse_run

    cell = ["--method", "vae", "--data", "digits"]
    assert parse_run([*cell, "--wandb"])[1].wandb == "offline"  # run's parser is jsonargparse's (run_cli.py)
    assert parse_run([*cell, "--wandb", "online", "--seed", "1"])[1].wandb == "online"
    assert parse_run(cell)[1].wandb == "disabled"
    parser = build_parser()
    assert parser.parse_args(["matrix", "spec.yaml", "--wandb", "online"]).wandb == "online"
    assert parser.parse_args(["reproduce", "iwae-table1", "--wandb"]).wandb == "offline"
    assert parser.parse_args(["reproduce", "iwae-table1"]).wandb == "disabled"
    assert parser.parse_args(["leaderboard", "runs", "--wandb"]).wandb == "offline"
    assert parser.parse_args(["leaderboard", "runs"]).wandb == "disabled"


def epoch_rows(run_dir: Path) -> list[dict]:
    """The CSV log's rows of the training epochs' means (``train/loss`` set)."""
    with open(run_dir / "logs" / "metrics.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(fh) if row.get("train/loss")]


RWS = {"model": {"latent_sizes": [4]}, "module": {"eval_k": [1], "val_k": [1]},
       "trainer": {"max_epochs": 1, "accelerator": "cpu", "log_every_n_steps": 1}}
RWS_TERMS = ("wake_theta", "wake_phi", "sleep_phi")


@pytest.fixture(scope="module")
def rws_run(tmp_path_factory):
    """One reweighted wake-sleep cell (NVIL's and RWS's loss is a surrogate: the bound is logged apart),
    every step sent to wandb."""
    out = tmp_path_factory.mktemp("rws")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        record = run_cell_logged(resolve_config("sbn-rws", "digits", 0, normalise_overrides(RWS, "RWS")), out, "offline", group="grp")
    assert record["status"] == "completed"
    run_dir = out / record["run_id"]
    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return record, run_dir, read_run(wandb_file)


def test_objective_terms_and_bound_logged_as_epoch_means(rws_run):
    record, run_dir, run = rws_run
    (epoch,) = epoch_rows(run_dir)  # one epoch: one row of means in the CSV
    # the terms sum to the loss (the objective's contract), so their epoch means do too
    assert sum(epoch[f"train/{t}"] for t in RWS_TERMS) == pytest.approx(epoch["train/loss"], rel=1e-5)
    assert epoch["train/sleep_phi"] == 0.0  # insomnia 1: wake-phi only
    # the bound, not the surrogate: L_5 of binary images (< 0), and within 2 nats of the test split's
    # -L_1 (about 45 nats here; the model moves by less than a nat in its one epoch), where the
    # surrogate loss is 5 nats off
    assert epoch["train/bound"] < 0
    assert abs(-epoch["train/bound"] - record["metrics"]["test/nll_k1"]) < 2
    assert abs(epoch["train/loss"] - record["metrics"]["test/nll_k1"]) > 2
    assert run["defined"]["train/bound"].max and run["defined"]["train/loss"].min  # directions
    for name in ("loss", "bound", *RWS_TERMS):  # the same means reach wandb
        assert run["history"][f"train/{name}"] == pytest.approx(epoch[f"train/{name}"], rel=1e-6)


def test_semi_supervised_logs_the_bound_not_its_negation(tmp_path):
    """M2's objective names ``-bound`` "bound" among its terms; ``train/bound`` is the bound itself
    (as for every method), and loss = -bound + classification, so their epoch means obey it too."""
    from benchmarks.run import run_cell

    config = resolve_config("m2", "digits", 0, normalise_overrides({
        "data": {"labelled_fraction": 0.3}, "module": {"eval_k": [1], "val_k": [1]},
        "trainer": {"max_epochs": 1, "limit_train_batches": 4, "accelerator": "cpu"}}, "m2"))
    record = run_cell(config, tmp_path, enable_progress_bar=False)
    assert record["status"] == "completed", record["error"]
    (epoch,) = epoch_rows(tmp_path / record["run_id"])
    assert epoch["train/bound"] < 0 < epoch["train/classification"]
    assert epoch["train/loss"] == pytest.approx(-epoch["train/bound"] + epoch["train/classification"], rel=1e-5)


def test_per_step_training_curves_average_to_the_epoch_means(rws_run):
    record, run_dir, run = rws_run
    steps = [r for r in run["rows"] if "train/loss_step" in r]
    assert [r["trainer/global_step"] for r in steps] == list(range(1, record["steps"] + 1))  # every step (n=1)
    (epoch,) = epoch_rows(run_dir)
    for name in ("loss", "bound", *RWS_TERMS):  # the points are the steps' own values: they average to the epoch's
        mean = sum(r[f"train/{name}_step"] for r in steps) / len(steps)
        assert mean == pytest.approx(epoch[f"train/{name}"], rel=1e-5, abs=1e-6)
    for r in steps:  # and each step's terms sum to that step's loss
        assert sum(r[f"train/{t}_step"] for t in RWS_TERMS) == pytest.approx(r["train/loss_step"], rel=1e-5)


def test_sample_grid_logged_as_an_image(rws_run):
    """The image ``samples`` is exactly the grid of 64 samples of the trained model drawn under seed 0
    (what ``dgm-bench figure samples RUN`` draws), one 8x8 digit per tile."""
    import numpy
    import torch
    from PIL import Image
    from torchvision.utils import make_grid

    from benchmarks.figures.latent_usage import load_run

    _, run_dir, run = rws_run
    (logged,) = [{k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("samples/")}  # a nested key
                 for r in run["rows"] if "samples/_type" in r]
    assert logged["_type"] == "images/separated" and logged["count"] == 1
    (name,) = logged["filenames"]
    (png,) = run_dir.glob(f"wandb/offline-run-*/files/{name}")
    image = torch.tensor(numpy.array(Image.open(png)))
    assert image.shape == (8 * (8 + 2) + 2,) * 2  # 8 by 8 tiles of 8x8 pixels, 2-pixel borders; grey
    _, module, _ = load_run(run_dir)  # the tested weights (last.ckpt: no early stopping)
    torch.manual_seed(0)
    x = module.model.sample(64).view(64, 1, 8, 8)
    expected = (make_grid(x.float().clamp(0, 1), nrow=8, padding=2, pad_value=1.0)[0] * 255).round().to(torch.uint8)
    assert torch.equal(image, expected)
    tiles = image[2:, 2:].unfold(0, 8, 10).unfold(1, 8, 10)  # [8, 8, 8, 8]: no two samples alike
    # not one image repeated: tiles are the SBN's mean images, which repeat only where its binary
    # bottom-layer latents do (16 distinct of 64 after this short run; a collapsed model has 1)
    assert len({t.numpy().tobytes() for t in tiles.reshape(64, 8, 8)}) >= 8


REPRO = """
name: tiny
title: a two-cell reproduction on digits
matrix:
  methods: [vae, iwae]
  datasets: [digits]
  seeds: [0]
  overrides:
    model: {latent_dim: 2, hidden: [16]}
    module: {eval_k: [1], val_k: [1]}
    trainer: {max_epochs: 1, limit_train_batches: 3, accelerator: cpu}
budgets:
  paper: {description: paper}
  cpu: {description: cpu}
  smoke: {description: smoke}
published:
  - {label: VAE, match: {method: vae}, source: "nowhere", metric: test/nll_k1}
"""


def test_reproduce_wandb_logs_each_cell_and_the_leaderboard_table(tmp_path, monkeypatch):
    from benchmarks.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(REPRO)
    assert main(["reproduce", str(spec), "--budget", "smoke", "--out", str(tmp_path), "--wandb"]) == 0
    cells = sorted((tmp_path / "tiny" / "runs").glob("*/wandb/offline-run-*/run-*.wandb"))
    assert len(cells) == 2 and all(read_run(f)["job_type"] in ("vae", "iwae") for f in cells)
    (board_file,) = (tmp_path / "tiny").glob("wandb/offline-run-*/run-*.wandb")
    board = read_run(board_file)
    assert (board["job_type"], board["group"]) == ("leaderboard", "tiny")
    (table_file,) = board_file.parent.glob(f"files/{board['history']['leaderboard/path']}")
    rows = [dict(zip(t["columns"], r)) for t in [json.loads(table_file.read_text())] for r in t["data"]]
    assert {(r["configuration"], r["metric"]) for r in rows} >= {("vae", "test/nll_k1"), ("iwae", "test/nll_k1")}
