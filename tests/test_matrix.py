"""The matrix runner: validation before anything runs, resumption after SIGKILL, launchers."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.launchers import LocalLauncher, SlurmLauncher
from benchmarks.matrix import SPECS_DIR, load_spec, run_matrix
from dgm_modules.registry import ConfigError

TINY = """
  model: {latent_dim: 2, hidden: [16]}
  module: {eval_k: [1, 5], val_k: [1]}
  trainer: {max_epochs: 2, accelerator: cpu}
"""


def write_spec(tmp_path, body, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(body)
    return path


@pytest.mark.parametrize("body, expected", [
    ("methods: [vae\n  datasets: [digits]", "invalid YAML"),
    ("methods: [vae, nope]\ndatasets: [digits]", r"unknown method 'nope' \(.*spec.yaml: methods\[1\]\); choose one of: .*vae"),
    ("methods: [vae]\ndatasets: [digits, mnits]", r"unknown dataset 'mnits' \(.*spec.yaml: datasets\[1\]\)"),
    ("methods: [vae]\ndatasets: [digits]\nseeds: [0, one]", "'seeds' must be a list of integers"),
    ("methods: [vae]\ndatasets: [digits]\nsedes: [0]", r"unknown key\(s\) \['sedes'\]"),
    ("methods: [vae]\ndatasets: [digits]\noverrides:\n  trainer: {max_epochs: ten}",
     r"cell digits/vae/default/seed0: trainer.max_epochs: expected an integer"),
    ("methods: [vae, iwae]\ndatasets: [digits]\ncells:\n  - match: {method: iwae}\n    overrides: {objective: {k: many}}",
     r"cell digits/iwae/default/seed0: objective.k: expected int, got 'many'"),
    ("methods: [vae]\ndatasets: [digits]\noverrides:\n  optimizer: {lr: fast}", r"optimizer.lr: expected float"),
])
def test_malformed_spec_fails_before_any_cell_runs_naming_the_place(tmp_path, body, expected):
    spec = write_spec(tmp_path, body)
    with pytest.raises(ConfigError, match=expected) as err:
        load_spec(spec)
    assert str(spec) in str(err.value)


def test_diverging_cell_is_recorded_while_the_others_complete(tmp_path):
    spec = write_spec(tmp_path, f"""
methods: [iwae]
datasets: [digits]
seeds: [0]
settings:
  default: {{}}
  hot: {{optimizer: {{lr: 1000.0}}}}
overrides:{TINY}""")
    _, cells = load_spec(spec)
    lines = []
    records = run_matrix(cells, tmp_path / "out", echo=lines.append)
    status = {r["setting"]: r["status"] for r in records}
    assert status == {"default": "completed", "hot": "diverged"}
    hot = next(r for r in records if r["setting"] == "hot")
    assert hot["error"]["step"] is not None and "non-finite" in hot["error"]["message"]
    assert "diverged 1" in lines[-1] and "remaining 0" in lines[-1] and "ETA" in lines[-1]
    # re-running skips both: completed and diverged cells are final
    lines.clear()
    run_matrix(cells, tmp_path / "out", echo=lines.append)
    assert all("already done" in line for line in lines)


def _records(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/record.json")}


def test_sigkill_mid_cell_then_rerun_completes_everything_once(tmp_path):
    spec = write_spec(tmp_path, f"""
name: killme
methods: [vae]
datasets: [digits]
seeds: [0, 1, 2]
overrides:{TINY}
cells:
  - match: {{seed: 1}}
    overrides: {{trainer: {{max_epochs: 150}}}}
""")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.cli", "matrix", str(spec), "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        # wait until seed 0 is recorded and seed 1 has written a checkpoint (it is mid-training)
        while time.time() < deadline:
            done = _records(out)
            ckpts = [p for p in out.glob("*seed1*/checkpoints/last.ckpt")]
            if len(done) == 1 and ckpts:
                break
            assert proc.poll() is None, "matrix ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("the matrix never reached the middle of the second cell")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = _records(out)
    assert len(first) == 1
    (first_id, first_record), = first.items()
    first_mtime = (out / first_id / "record.json").stat().st_mtime_ns
    assert not list(out.glob("*seed1*/record.json"))

    # resume: make seed 1 short now? No -- the same command must resume it; keep the spec as is but
    # bound the time by letting it run from its checkpoint to the end
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    final = _records(out)
    assert len(final) == 3 and len(list(out.glob("*__seed*"))) == 3  # no duplicated cell
    assert all(r["status"] == "completed" for r in final.values())
    assert final[first_id] == first_record  # the completed cell was not re-trained or rewritten
    assert (out / first_id / "record.json").stat().st_mtime_ns == first_mtime
    seed1 = next(r for r in final.values() if r["seed"] == 1)
    assert seed1["resumed_from"] and seed1["resumed_from"].endswith("last.ckpt")
    assert seed1["epochs"] == 150
    assert "already done" in result.stdout and (out / "leaderboard.md").exists()


def test_slurm_path_through_submitit_local_executor(tmp_path):
    spec = write_spec(tmp_path, f"""
methods: [vae]
datasets: [digits]
seeds: [0, 1]
overrides:{TINY}""")
    _, cells = load_spec(spec)
    launcher = SlurmLauncher(cluster="local", time_min=10, cpus_per_cell=1, group="test")
    records = run_matrix(cells, tmp_path / "out", launcher, echo=lambda s: None)
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert list((tmp_path / "out" / ".submitit").rglob("*_result.pkl"))  # really went through submitit


def test_wandb_offline_groups_runs_without_an_account(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = write_spec(tmp_path, f"""
methods: [vae]
datasets: [digits]
seeds: [0]
overrides:{TINY}""")
    _, cells = load_spec(spec)
    records = run_matrix(cells, tmp_path / "out", LocalLauncher(wandb="offline", group="grp"), echo=lambda s: None)
    assert records[0]["status"] == "completed"
    runs = list((tmp_path / "out").glob("*/wandb/offline-run-*"))
    assert runs, "no offline wandb run was written"


@pytest.mark.parametrize("spec", sorted(p.name for p in (Path(__file__).parents[1] / "benchmarks" / "specs").glob("*.yaml")))
def test_every_shipped_spec_validates(spec):
    from benchmarks.matrix import SPECS_DIR

    _, cells = load_spec(SPECS_DIR / spec)
    assert cells and len({c.label for c in cells}) == len(cells)


@pytest.mark.parametrize("spec", ["digits.yaml", "mnist.yaml"])
def test_specs_that_promise_every_registered_method_list_every_one(spec):
    import yaml

    from dgm_modules.components import METHODS

    methods = yaml.safe_load(open(SPECS_DIR / spec))["methods"]
    assert sorted(methods) == sorted(METHODS.names())
