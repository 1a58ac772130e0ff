"""The run record: the unit every leaderboard is rebuilt from. Written atomically."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

RECORD = "record.json"
CONFIG = "config.yaml"
EXTENDED = "extended_from.json"  # a run carried on from a shorter one (benchmarks/extend.py)
STATUSES = ("completed", "failed", "diverged")
#: records are published: readable by the group and others (mkstemp alone gives 0600)
RECORD_MODE = 0o644


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def config_yaml(config: dict) -> str:
    """A resolved config as YAML (tuples as lists): ``dgm-bench run --config`` reads it back to the same run id."""
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)


def write_config(run_dir: Path, config: dict) -> None:
    """The resolved config beside the run, written when it starts (the record has it only at the end)."""
    write_text_atomic(run_dir / CONFIG, config_yaml(config))


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, RECORD_MODE)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_record(run_dir: Path) -> dict | None:
    """The record in ``run_dir``, or None if there is none (or only a torn one)."""
    try:
        return json.loads((Path(run_dir) / RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_extended(run_dir: Path) -> dict | None:
    """The shorter run this one carried on from (:mod:`benchmarks.extend`), or None."""
    path = Path(run_dir) / EXTENDED
    return json.loads(path.read_text()) if path.is_file() else None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("dgm-bench", "torch", "lightning", "torchmetrics", "torch-fidelity", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_state(where: str | Path = Path(__file__).parent) -> dict[str, Any]:
    """The commit of the code that made a record and whether tracked files differed from it.

    Untracked files are not counted: run folders and results inside the clone would otherwise mark
    every run dirty. ``None`` for both outside a git checkout (an installed package)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:  # not Linux
        return None


def device_description(trainer: Any) -> dict[str, Any]:
    import torch

    root = trainer.strategy.root_device
    # The kernels torch picks for this CPU (AVX2, AVX512, ...) set the rounding of every float op, so two
    # machines with different capabilities train the same config and seed along (slightly) different paths.
    out = {"accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
           "world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
           "cpu": platform.processor() or platform.machine(), "cpu_model": _cpu_model(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads()}
    if root.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(root)
    return out


def command_line() -> list[str]:
    return [os.path.basename(sys.argv[0]), *sys.argv[1:]]
