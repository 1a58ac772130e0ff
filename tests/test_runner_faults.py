"""What machines and clusters do to a matrix: signals, a killed parent, two runners in one folder."""
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TINY = """
  model: {latent_dim: 2, hidden: [16]}
  module: {eval_k: [1, 5], val_k: [1]}
  trainer: {max_epochs: 2, accelerator: cpu}
"""
LONG = {"trainer": {"max_epochs": 2000}}  # a cell that is still training when the test acts on it


def write_spec(tmp_path: Path, seeds: list[int], long_seeds: list[int], name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"""
name: faults
methods: [vae]
datasets: [digits]
seeds: {seeds}
overrides:{TINY}
cells:
  - match: {{seed: {long_seeds or [-1]}}}
    overrides: {json.dumps(LONG)}
""")
    return path


def start_matrix(spec: Path, out: Path, *extra: str, command: str = "matrix") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchmarks.cli", command, str(spec), "--out", str(out), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 180.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"matrix ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def checkpoints(out: Path, seed: int | None = None) -> list[Path]:
    return list(out.glob(f"*__seed{'' if seed is None else seed}*/checkpoints/last.ckpt"))


def records(out: Path) -> dict[int, dict]:
    return {r["seed"]: r for r in (json.loads(p.read_text()) for p in out.glob("*/record.json"))}


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid``, from /proc (psutil is not a dependency)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - out
        out |= frontier
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_all_gone(pids: set[int], timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)], "orphaned worker process(es) left running"


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_matrix_keeps_the_cell_resumable_and_exits_nonzero(tmp_path, signum, code):
    spec, out = write_spec(tmp_path, [0, 1], long_seeds=[0]), tmp_path / "out"
    proc = start_matrix(spec, out)
    wait_for(lambda: checkpoints(out, 0), proc, what="the first cell's first checkpoint")
    t_signal = time.time()
    proc.send_signal(signum)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == code, stderr[-2000:]
    assert time.time() - t_signal < 30  # stops at a batch end, not at the end of 2000 epochs
    recs = records(out)
    assert list(recs) == [0], "a cell started after the signal"
    assert recs[0]["status"] == "interrupted" and recs[0]["epochs"] < 2000
    assert checkpoints(out, 0), "the interrupted cell's checkpoint was not kept"
    assert not list(out.glob("*__seed1*")), "the second cell was started"
    assert "1 interrupted" in stderr and "1 not started" in stderr


@pytest.mark.slow
def test_sigterm_with_two_jobs_stops_both_workers_and_starts_nothing_else(tmp_path):
    spec, out = write_spec(tmp_path, [0, 1, 2, 3], long_seeds=[0, 1, 2, 3]), tmp_path / "out"
    proc = start_matrix(spec, out, "--jobs", "2")
    wait_for(lambda: len(checkpoints(out)) == 2, proc, what="both workers' first checkpoints")
    workers = descendants(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 143, stderr[-2000:]
    recs = records(out)
    assert sorted(recs) == [0, 1] and {r["status"] for r in recs.values()} == {"interrupted"}
    assert len(checkpoints(out)) == 2
    assert not list(out.glob("*__seed2*")) and not list(out.glob("*__seed3*"))
    assert_all_gone(workers)


@pytest.mark.slow
def test_workers_die_with_a_sigkilled_parent(tmp_path):
    spec, out = write_spec(tmp_path, [0, 1, 2], long_seeds=[0, 1, 2]), tmp_path / "out"
    proc = start_matrix(spec, out, "--jobs", "2")
    wait_for(lambda: len(checkpoints(out)) == 2, proc, what="both workers' first checkpoints")
    workers = descendants(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert_all_gone(workers)
    assert not list(out.glob("*__seed2*"))


def test_second_runner_skips_the_cell_a_live_runner_holds_and_says_so(tmp_path):
    spec, out = write_spec(tmp_path, [0, 1], long_seeds=[0]), tmp_path / "out"
    first = start_matrix(spec, out)
    try:
        wait_for(lambda: checkpoints(out, 0), first, what="the first runner's checkpoint")
        second = start_matrix(spec, out)
        try:
            stdout, stderr = second.communicate(timeout=150)  # it must not train seed 0's 2000 epochs
        except subprocess.TimeoutExpired:
            second.kill()
            pytest.fail("the second runner trained the cell the first one holds")
        assert f"pid {first.pid}" in stdout and "skipped here" in stdout, stdout + stderr[-2000:]
        assert second.returncode == 1  # not everything is done, and it says why above
        recs = records(out)
        assert recs[1]["status"] == "completed"  # the free cell was trained by the second runner
        assert 0 not in recs  # seed 0 is still the first runner's, untouched
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143
    recs = records(out)
    assert recs[0]["status"] == "interrupted" and recs[1]["status"] == "completed"


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    from benchmarks.locks import RunLock

    code = f"from benchmarks.locks import RunLock; assert RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert holder.stdout.readline().strip() == "held"
    lock = RunLock(tmp_path)
    assert not lock.acquire() and f"pid {holder.pid}" in lock.holder()
    holder.kill()
    holder.wait(10)
    assert lock.acquire() and f"pid {os.getpid()}" in lock.holder()
    lock.release()


def test_torn_checkpoint_is_set_aside_and_the_cell_resumes_from_the_previous_or_restarts(tmp_path):
    from benchmarks.config import resolve_config
    from benchmarks.run import run_cell

    config = resolve_config("vae", "digits", 0, {
        "model": {"init_args": {"latent_dim": 2, "hidden": [128, 128]}},
        "module": {"init_args": {"eval_k": [1], "val_k": [1]}},
        "trainer": {"max_epochs": 3, "accelerator": "cpu"}})
    out = tmp_path / "out"
    first = run_cell(config, out, enable_progress_bar=False)
    assert first["status"] == "completed" and first["resumed_from"] is None
    run_dir = out / first["run_id"]
    ckpts = run_dir / "checkpoints"
    last = ckpts / "last.ckpt"

    def tear() -> None:  # as a full disk leaves it; and the record was never written
        assert last.stat().st_size > 28_672
        with open(last, "r+b") as fh:
            fh.truncate(28_672)
        (run_dir / "record.json").unlink()

    tear()
    again = run_cell(config, out, enable_progress_bar=False)
    assert again["status"] == "completed", again.get("error")
    assert again["resumed_from"] == str(ckpts / "last-previous.ckpt")  # epoch 2's checkpoint
    assert again["epochs"] == 3 and again["steps"] == first["steps"]
    assert "set aside" in again["resume_note"] and len(list(ckpts.glob("last.ckpt.torn-*"))) == 1
    with open(run_dir / "logs" / "metrics.csv") as fh:  # the resumed attempt appended to the history
        epochs = {int(float(row["epoch"])) for row in csv.DictReader(fh) if row.get("epoch")}
    assert {0, 1, 2} <= epochs  # a rewritten log would start at the resumed epoch 2

    tear()
    (ckpts / "last-previous.ckpt").unlink()
    scratch = run_cell(config, out, enable_progress_bar=False)
    assert scratch["status"] == "completed", scratch.get("error")
    assert scratch["resumed_from"] is None and "training from the start" in scratch["resume_note"]
    assert scratch["steps"] == first["steps"]


def test_evaluate_refuses_a_checkpoint_of_another_configuration_naming_both(tmp_path, capsys):
    import shutil

    from benchmarks.cli import main
    from benchmarks.config import resolve_config
    from benchmarks.fingerprint import config_fingerprint
    from benchmarks.run import run_cell

    over = {"model": {"init_args": {"latent_dim": 2, "hidden": [16]}},
            "module": {"init_args": {"eval_k": [1], "val_k": [1]}}, "trainer": {"max_epochs": 1, "accelerator": "cpu"}}
    vae, iwae = (resolve_config(m, "digits", 0, over) for m in ("vae", "iwae"))
    out = tmp_path / "out"
    vae_dir, iwae_dir = (out / run_cell(c, out, enable_progress_bar=False)["run_id"] for c in (vae, iwae))
    assert main(["evaluate", str(vae_dir)]) == 0  # its own checkpoint: scored
    capsys.readouterr()
    stray = vae_dir / "checkpoints" / "stray.ckpt"  # an IWAE checkpoint whose keys fit the VAE
    shutil.copy(iwae_dir / "checkpoints" / "last.ckpt", stray)
    assert main(["evaluate", str(stray)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert config_fingerprint(iwae) in err and config_fingerprint(vae) in err and str(vae_dir) in err
    assert not (vae_dir / "evaluations").exists() or len(list((vae_dir / "evaluations").iterdir())) == 1

    with open(stray, "r+b") as fh:  # a torn checkpoint: one line, no traceback
        fh.truncate(4096)
    assert main(["evaluate", str(stray)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be loaded" in err


@pytest.mark.slow  # the same path as test_matrix's submitit test, with the array limit set
def test_slurm_cells_go_out_as_one_job_array_with_a_parallelism_limit(tmp_path):
    from benchmarks.launchers import SlurmLauncher
    from benchmarks.matrix import load_spec, run_matrix
    from dgm_modules.registry import ConfigError

    with pytest.raises(ConfigError, match="--array-parallelism must be >= 1"):
        SlurmLauncher(array_parallelism=0)
    launcher = SlurmLauncher(cluster="local", time_min=10, cpus_per_cell=1, group="t", array_parallelism=1)
    assert launcher.parameters()["slurm_array_parallelism"] == 1  # sbatch --array=0-(N-1)%1
    _, cells = load_spec(write_spec(tmp_path, [0, 1], long_seeds=[]))
    records = run_matrix(cells, tmp_path / "out", launcher, echo=lambda s: None)
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert len(list((tmp_path / "out" / ".submitit").rglob("*_result.pkl"))) == 2


def test_sigterm_stops_a_reproduction_too(tmp_path):
    """`reproduce` did not install the runner's handlers: Lightning's own SIGTERM handler ended the
    running cell (recorded interrupted) and the next cell started (seen on iwae-table1, 2026-12-03)."""
    spec = tmp_path / "faults.yaml"
    spec.write_text(f"""
name: faults
title: a reproduction that a signal stops
matrix:
  methods: [vae]
  datasets: [digits]
  seeds: [0, 1]
  overrides:{textwrap.indent(TINY, "  ")}
budgets:
  paper: {{description: long cells, overrides: {json.dumps(LONG)}}}
  cpu: {{description: long cells, overrides: {json.dumps(LONG)}}}
  smoke: {{description: long cells, overrides: {json.dumps(LONG)}}}
published:
  - {{label: "VAE", match: {{method: vae}}, metric: test/nll_k1, note: "ours only"}}
""")
    out = tmp_path / "out"
    proc = start_matrix(spec, out, "--budget", "cpu", command="reproduce")
    runs = out / "faults" / "runs"
    wait_for(lambda: checkpoints(runs, 0), proc, what="the first cell's first checkpoint")
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 143, stderr[-2000:]
    recs = records(runs)
    assert list(recs) == [0] and recs[0]["status"] == "interrupted", "a cell started after the signal"
    assert not list(runs.glob("*__seed1*")), "the second cell was started"
    assert "1 interrupted" in stderr and "1 not started" in stderr
