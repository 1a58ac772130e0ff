"""Slurm at benchmark scale: per-cell resources, the sbatch script line by line, requeue, no duplicates.

The script is made by submitit's own Slurm executor (nothing submitted; it wants ``srun`` on the
PATH, so a stub is put there). Requeue and duplicate submission run real processes through
submitit's local executor, which implements the same checkpoint/requeue protocol as on Slurm.
"""
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from benchmarks.launchers import SlurmLauncher
from benchmarks.matrix import load_spec, run_matrix
from benchmarks.run import run_id
from benchmarks.slurm import JOB_FILE, merge_slurm_options, parse_slurm_options, sbatch_script
from dgm_modules.registry import ConfigError
from test_runner_faults import alive, assert_all_gone, descendants

TINY = """
  model: {latent_dim: 2, hidden: [16]}
  module: {eval_k: [1, 5], val_k: [1]}
  trainer: {max_epochs: 2, accelerator: cpu}
"""

RESOURCES_SPEC = """
name: big
methods: [vae, iwae]
datasets: [digits]
seeds: [0, 1]
resources: {gpus: 2, cpus: 8, mem_gb: 32, time_min: 600}
cells:
  - match: {method: iwae}
    resources: {gpus: 0, cpus: 2, mem_gb: 4, time_min: 30}
slurm:
  account: acc
  qos: high
  constraint: a100
  additional_parameters: {reservation: demo}
  setup: [module load cuda, source .venv/bin/activate]
"""


@pytest.fixture
def srun_on_path(tmp_path, monkeypatch):
    stub = tmp_path / "bin" / "srun"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}{os.pathsep}{os.environ['PATH']}")


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def two_seed_spec(tmp_path: Path, name: str, max_epochs: int) -> Path:
    """Two VAE cells (seeds 0, 1) on digits that train long enough to still be queued or running."""
    return write(tmp_path, f"""
name: {name}
methods: [vae]
datasets: [digits]
seeds: [0, 1]
overrides:{TINY.replace("max_epochs: 2", f"max_epochs: {max_epochs}")}
""")


def test_each_cells_resources_reach_its_sbatch_script_and_trainer(tmp_path, srun_on_path):
    _, cells = load_spec(write(tmp_path, RESOURCES_SPEC))
    vae, iwae = ([c for c in cells if c.method == m] for m in ("vae", "iwae"))
    for cell in vae:  # Lightning wants trainer.devices == Slurm's tasks per node
        assert cell.config["trainer"]["devices"] == 2 and cell.config["trainer"]["accelerator"] == "gpu"
    for cell in iwae:
        assert cell.config["trainer"]["devices"] == 1 and cell.config["trainer"]["accelerator"] == "auto"
    launcher = SlurmLauncher(array_parallelism=1, group="big", slurm=merge_slurm_options(
        {"account": "acc", "qos": "high", "constraint": "a100", "additional_parameters": {"reservation": "demo"},
         "setup": ["module load cuda", "source .venv/bin/activate"]},
        parse_slurm_options(["qos=low", "exclusive", "setup=echo ready"])))  # the command line wins
    arrays = launcher.arrays(cells)
    assert [([c.label for c in group]) for _, group in arrays] == [[c.label for c in vae], [c.label for c in iwae]]

    (big, _), (small, _) = arrays
    script = sbatch_script(launcher.parameters(big), tmp_path / "sub" / "%j", cells=2).splitlines()
    sbatch = [line for line in script if line.startswith("#SBATCH")]
    for expected in ["--gpus-per-node=2", "--ntasks-per-node=2", "--cpus-per-task=8", "--mem=32GB", "--time=600",
                     "--array=0-1%1", "--account=acc", "--qos=low", "--constraint=a100", "--reservation=demo",
                     "--exclusive", "--signal=USR2@90", "--job-name=dgm-bench-big", "--nodes=1"]:
        assert f"#SBATCH {expected}" in sbatch, expected
    assert len(sbatch) == 18  # the 14 above, output, error, open-mode, wckey: nothing else
    setup = script[script.index("# setup") + 1: script.index("# command") - 1]
    assert setup == ["module load cuda", "source .venv/bin/activate", "echo ready"]
    assert script[-1].startswith("srun ") and "submitit.core._submit" in script[-1]

    script = sbatch_script(launcher.parameters(small), tmp_path / "sub" / "%j", cells=2).splitlines()
    assert "#SBATCH --gpus-per-node=0" in script and "#SBATCH --ntasks-per-node=1" in script
    assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH --mem=4GB" in script and "#SBATCH --time=30" in script


@pytest.mark.parametrize("body, expected", [
    ("resources: {gpus: -1}", "spec.yaml: resources.gpus: expected an integer >= 0, got -1"),
    ("resources: {gpu: 1}", "spec.yaml: resources: unknown key(s) ['gpu']"),
    ("cells: [{match: {seed: 0}, resources: {mem_gb: 0}}]", "spec.yaml: cells[0].resources.mem_gb: expected an integer >= 1"),
    ("slurm: {acount: x}", "spec.yaml: slurm: unknown key(s) ['acount']"),
    ("slurm: {setup: module load cuda}", "spec.yaml: slurm.setup: expected a list of shell lines"),
    ("resources: {gpus: 2}\noverrides: {trainer: {devices: 1}}",
     "cell digits/vae/default/seed0: resources.gpus=2 but trainer.devices=1"),
])
def test_bad_resources_and_slurm_sections_fail_before_anything_runs_naming_the_place(tmp_path, body, expected):
    spec = write(tmp_path, f"name: x\nmethods: [vae]\ndatasets: [digits]\nseeds: [0]\n{body}\n")
    with pytest.raises(ConfigError) as err:
        load_spec(spec)
    assert expected in str(err.value)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def job_of(out: Path, cell) -> dict:
    return json.loads((out / run_id(cell.config) / JOB_FILE).read_text())


def test_preempted_job_is_requeued_and_resumes_exactly_from_its_mid_epoch_checkpoint(tmp_path):
    spec = write(tmp_path, f"""
name: requeue
methods: [vae]
datasets: [digits]
seeds: [0]
overrides:{TINY.replace("max_epochs: 2", "max_epochs: 12")}
""")
    _, cells = load_spec(spec)
    out = tmp_path / "out"
    launcher = SlurmLauncher(cluster="local", time_min=10, cpus_per_cell=1, group="t", wait=False, echo=lambda s: None)
    run_matrix(cells, out, launcher, echo=lambda s: None)
    controller = int(job_of(out, cells[0])["job_id"])
    run_dir = out / run_id(cells[0].config)
    wait_until(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), 240, "the first epoch's checkpoint")
    tasks = descendants(controller)
    assert tasks
    for pid in tasks:  # what Slurm does before a time limit or a preemption (submitit's --signal=USR2@90)
        os.kill(pid, signal.SIGUSR2)
    wait_until(lambda: not alive(controller), 300, "the requeued job to finish")
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "completed", record.get("error")
    assert record["resumed_from"].endswith("last.ckpt")
    logs = "".join(p.read_text() for p in (out / ".submitit").rglob("*_log.*"))
    assert "Calling checkpoint method" in logs and "Requeued job" in logs
    # where USR2 came: mid-epoch, or (had it come after an epoch's last batch) that epoch's start
    assert record["resumed_at_step"] >= 26  # 26 batches an epoch; the first epoch's checkpoint was there

    from benchmarks.run import run_cell  # the same cell, never interrupted, in this process

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = run_cell(cells[0].config, tmp_path / "whole", enable_progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    assert record["steps"] == whole["steps"]
    for name, value in whole["metrics"].items():
        assert record["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_pending_or_running_cells_are_not_submitted_twice_and_no_wait_returns(tmp_path, capsys, keep_signal_handlers):
    from benchmarks.cli import main

    spec = two_seed_spec(tmp_path, "dup", max_epochs=40)
    _, cells = load_spec(spec)
    out = tmp_path / "out"
    cmd = ["matrix", str(spec), "--out", str(out), "--launcher", "slurm", "--cluster", "local",
           "--cpus-per-cell", "1", "--time-min", "10"]
    t0 = time.time()
    assert main(cmd + ["--no-wait"]) == 0
    assert time.time() - t0 < 60  # returned without waiting for 40 epochs
    first = capsys.readouterr().out
    jobs = [job_of(out, c)["job_id"] for c in cells]
    assert all(j in first for j in jobs) and "run the same command again" in first

    assert main(cmd + ["--no-wait"]) == 0  # both still running: nothing submitted again
    second = capsys.readouterr().out
    assert second.count("not submitted again") == 2 and "submitted 1" not in second and "submitted 2" not in second
    assert [job_of(out, c)["job_id"] for c in cells] == jobs

    lost = int(jobs[1])  # a job lost without a record (as after a node failure): submitted again
    victims = {lost} | descendants(lost)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert_all_gone(victims)
    assert main(cmd) == 0  # waits for both: the running one and the resubmitted one
    third = capsys.readouterr().out
    assert third.count("not submitted again") == 1 and "submitted 1 cell(s)" in third
    assert job_of(out, cells[1])["job_id"] != jobs[1] and job_of(out, cells[0])["job_id"] == jobs[0]
    assert all(json.loads((out / run_id(c.config) / "record.json").read_text())["status"] == "completed" for c in cells)

    assert main(cmd) == 0  # all done: nothing submitted
    assert "submitted" not in capsys.readouterr().out.replace("not submitted again", "")


def test_a_waiting_submitter_stopped_by_sigterm_names_the_queued_jobs_leaves_them_and_exits_nonzero(tmp_path):
    """The jobs belong to Slurm: the submitter stops waiting (promptly, poll or not), cancels nothing,
    says which cells' jobs are still queued or running, and exits 143 (a re-run collects them)."""
    import subprocess
    import sys

    spec = two_seed_spec(tmp_path, "waited", max_epochs=400)
    _, cells = load_spec(spec)
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    log = tmp_path / "submitter.log"  # a file, not a pipe: the local jobs inherit it and keep it open
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.cli", "matrix", str(spec), "--out", str(out),
                                 "--launcher", "slurm", "--cluster", "local", "--cpus-per-cell", "1", "--time-min", "10"],
                                env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1",
                                     "PYTHONUNBUFFERED": "1"}, stdout=fh, stderr=subprocess.STDOUT)
    jobs: list[int] = []
    try:
        wait_until(lambda: all((out / run_id(c.config) / JOB_FILE).exists() for c in cells), 120, "the submission")
        jobs = [int(job_of(out, c)["job_id"]) for c in cells]
        time.sleep(1.0)  # into the wait
        t_signal = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        text = log.read_text()
        assert proc.returncode == 143, text[-3000:]
        assert time.time() - t_signal < 15
        assert all(alive(j) for j in jobs), "a queued or running job was cancelled"
        after = text[text.index("stopped waiting"):]
        for cell, job in zip(cells, jobs):  # each cell named with its job, as left, not as "not started"
            assert f"left to Slurm: {cell.label}: job {job} (RUNNING)" in after, text[-3000:]
        assert "0 not started" in after and "Traceback" not in text
    finally:
        proc.kill()
        victims = set(jobs) | {d for j in jobs for d in descendants(j)}
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        assert_all_gone(victims)
