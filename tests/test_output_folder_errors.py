"""An output folder that cannot be written, found before training; a disk that fills up while a cell
runs, reported as that cell failing (one line naming the path), with nothing completed lost."""
import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.cli import main

TINY = ["--set", "model.latent_dim=2", "--set", "model.hidden=[16]", "--set", "module.eval_k=[1]",
        "--set", "module.val_k=[1]", "--set", "trainer.max_epochs=1", "--set", "trainer.accelerator=cpu"]
SPEC = """
name: disk
methods: [vae]
datasets: [digits]
seeds: [0, 1]
overrides:
  model: {latent_dim: 2, hidden: [16]}
  module: {eval_k: [1], val_k: [1]}
  trainer: {max_epochs: 1, accelerator: cpu}
"""


pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@contextmanager
def tmpfs(path: Path, options: str):
    """A small filesystem of our own: the only way to make a full (or, for root, read-only) disk."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): needs root/CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_out_under_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "sub"
    code, err = run_cli(capsys, "run", "--method", "vae", "--data", "digits", "--out", out, *TINY)
    assert code == 2 and err.strip().splitlines() == [
        f"dgm-bench: error: --out {out}: {tmp_path / 'file'} is a file, so no folder can be made under it; "
        "give a folder path"]
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    code, err = run_cli(capsys, "matrix", spec, "--out", out)
    assert code == 2 and f"--out {out}: {tmp_path / 'file'} is a file" in err and len(err.strip().splitlines()) == 1


@contextmanager
def read_only_folder(tmp_path: Path):
    """chmod 0o555 where that stops writes; as root (where it does not), a read-only tmpfs."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        yield folder
        return
    finally:
        folder.chmod(0o755)
    (folder / "probe").unlink()
    with tmpfs(tmp_path / "ro-mount", "ro,size=64k") as mounted:
        yield mounted


@pytest.mark.parametrize("below", ["", "new/sub"])
def test_a_read_only_out_folder_is_refused_before_training(tmp_path, capsys, below):
    with read_only_folder(tmp_path) as folder:
        out = folder / below if below else folder
        code, err = run_cli(capsys, "run", "--method", "vae", "--data", "digits", "--out", out, *TINY)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"dgm-bench: error: --out {out}: cannot write in {folder} (") and \
            "give a folder you can write to" in lines[0], lines[0]


def test_a_full_disk_at_checkpoint_time_fails_the_cell_in_one_line_naming_the_file(tmp_path, capsys, caplog):
    # 16 KiB: the lock, the CSV log and the record fit; a 39 KB checkpoint does not
    with tmpfs(tmp_path / "small", "size=16k") as out:
        code, err = run_cli(capsys, "run", "--method", "vae", "--data", "digits", "--out", out, *TINY)
        assert code == 1
        (run_dir,) = out.iterdir()
        record = json.loads((run_dir / "record.json").read_text())
        assert record["status"] == "failed"
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        assert record["error"]["type"] == "DiskFull"
        assert record["error"]["message"].startswith(f"cannot write {ckpt}") and "No space left on device" in \
            record["error"]["message"], record["error"]
        assert f"cannot write {ckpt}" in caplog.text and "Traceback" not in caplog.text  # the runner's log line
        assert not ckpt.exists() and not list((run_dir / "checkpoints").glob(".*tmp")), "a partial file was left"


def inodes_used(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_files - st.f_ffree


def test_a_full_disk_at_record_time_fails_that_cell_and_keeps_the_completed_ones(tmp_path, capsys, caplog):
    """Inodes run out when the second cell's record is written: space for its checkpoint, none for a new
    file. The first cell's record is intact, the second is reported failed naming its record's path."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    with tmpfs(tmp_path / "probe", "size=4m") as probe:  # count the files one cell makes
        code, _ = run_cli(capsys, "run", "--method", "vae", "--data", "digits", "--out", probe, *TINY)
        assert code == 0
        per_cell = inodes_used(probe) - 1  # less the root folder
    # root + cell 1 whole + cell 2 less its record + the probe file the up-front check makes: the check
    # passes and cell 2's checkpoint's temporary file fits (it replaces nothing), its record does not
    with tmpfs(tmp_path / "full", f"size=4m,nr_inodes={1 + 2 * per_cell - 1}") as out:
        code, err = run_cli(capsys, "matrix", spec, "--out", out)
        assert code == 1
        records = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/record.json")}
        assert len(records) == 1 and next(iter(records.values()))["status"] == "completed"
        (second,) = [d for d in out.iterdir() if d.name not in records]
        assert f"cannot write {second / 'record.json'}: No space left on device" in caplog.text, caplog.text
        assert "Traceback" not in caplog.text
        # then the leaderboard cannot be written either: one line naming it
        assert err.strip().splitlines()[-1] == f"dgm-bench: error: {out / 'leaderboard.md'}: No space left on device"
        assert (second / "checkpoints" / "last.ckpt").exists(), "the trained cell's checkpoint is kept for a re-run"
