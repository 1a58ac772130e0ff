"""A run's identity and its record: the run id is a readable prefix and the config fingerprint, so
replaying a run's own saved config (where JSON or YAML turns ``0`` into ``0.0``) finds the same
folder and does not train again; the record says which commit made it and is readable by others."""
import json
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

import benchmarks
from benchmarks.cli import main
from benchmarks.config import resolve_config
from benchmarks.fingerprint import config_fingerprint
from benchmarks.run import run_id

TINY = ["--set", "model.latent_dim=2", "--set", "model.hidden=[16]", "--set", "module.eval_k=[1,5]",
        "--set", "trainer.accelerator=cpu", "--max-epochs", "1"]


def test_run_id_is_prefix_and_fingerprint():
    config = resolve_config("iwae", "digits", 3, {"objective": {"init_args": {"k": 50}}})
    assert run_id(config) == f"digits__iwae__seed3__{config_fingerprint(config)}"
    floats = json.loads(json.dumps(config).replace('"weight_decay": 0', '"weight_decay": 0.0'))
    assert floats["optimizer"]["init_args"]["weight_decay"] == 0.0
    assert run_id(floats) == run_id(config)
    other_k = resolve_config("iwae", "digits", 3, {"objective": {"init_args": {"k": 5}}})
    assert run_id(other_k) != run_id(config)
    assert run_id(resolve_config("iwae", "digits", 4, {"objective": {"init_args": {"k": 50}}})).endswith(
        config_fingerprint(config))  # another seed, the same configuration


def test_replaying_a_saved_config_finds_the_same_run(tmp_path, capsys):
    assert main(["run", "--method", "vae", "--data", "digits", "--seed", "1", "--out", str(tmp_path), *TINY]) == 0
    (path,) = tmp_path.glob("*/record.json")
    record = json.loads(path.read_text())
    saved = dict(record["config"])
    saved["optimizer"]["init_args"]["weight_decay"] = 0.0  # what a float-typed writer leaves
    replay = tmp_path / "replay.yaml"
    replay.write_text(yaml.safe_dump(saved))
    capsys.readouterr()
    mtime = path.stat().st_mtime_ns
    assert main(["run", "--config", str(replay), "--out", str(tmp_path)]) == 0
    assert f"record: {path}" in capsys.readouterr().out
    assert path.stat().st_mtime_ns == mtime and len(list(tmp_path.glob("*/record.json"))) == 1  # not re-trained

    # the record: fingerprint, git commit and dirty flag of this checkout, mode 0644
    head = subprocess.run(["git", "-C", str(Path(benchmarks.__file__).parent), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    assert record["fingerprint"] == config_fingerprint(record["config"]) and record["run_id"].endswith(record["fingerprint"])
    if head.returncode == 0:
        assert record["git"]["commit"] == head.stdout.strip() and isinstance(record["git"]["dirty"], bool)
    else:  # not a git checkout (an installed package): said, not guessed
        assert record["git"] == {"commit": None, "dirty": None}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("path, ignored", [
    ("results/any/runs/cell/record.json", False), ("results/any/runs/cell/config.yaml", False),
    ("results/any/runs/cell/logs/metrics.csv", False), ("results/any/leaderboard.csv", False),
    ("results/any/runs/cell/checkpoints/last.ckpt", True), ("results/any/runs/cell/checkpoints/best.ckpt", True),
    ("results/any/runs/cell/lightning_logs/version_0/metrics.csv", True), ("results/any/runs/cell/wandb/run", True),
    ("runs/cell/record.json", True),
])
def test_published_records_are_committable_and_checkpoints_are_not(path, ignored):
    root = Path(__file__).parents[1]
    out = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", "--no-index", path], capture_output=True)
    if out.returncode == 128:
        pytest.skip("not a git checkout")
    assert (out.returncode == 0) == ignored
