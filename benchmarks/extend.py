"""Carry a run on to a larger budget without training its first epochs again.

``--extend-from DIR`` (``matrix``, ``reproduce``): a cell whose run folder is still empty starts from
a run in DIR of the same configuration and seed but a smaller budget, that is a smaller or equal
``trainer.max_epochs`` and ``early_stopping.patience``. Up to that run's last checkpoint the two are
one run: the same seed, data order, noise and early-stopping state (a patience that never ran out
did nothing; a run whose early stopping had run out under the new patience is not carried on), so
the cell resumes from that checkpoint exactly as an interrupted run resumes
(``tests/test_extend.py``: an extended run ends with the numbers and the history of a run trained
at the larger budget from the start).

Copied into the cell's folder: the checkpoints, with the callbacks' folder paths, the early-stopping
patience and the identity stamp made the cell's, and the CSV history without what the old budget
alone wrote (its test stage, and its last curve point where the larger budget has none). The
cell's record says ``extended_from`` (the old run, its epochs and wall time).
"""
from __future__ import annotations

import copy
import csv
import os
from pathlib import Path
from typing import Any

import torch

from benchmarks.checkpoints import IDENTITY_KEY
from benchmarks.config import load_yaml
from benchmarks.curves import curve_epochs
from benchmarks.fingerprint import config_fingerprint
from benchmarks.records import CONFIG, EXTENDED, RECORD, read_record, write_json_atomic
from benchmarks.run import CHECKPOINTS, run_id
from dgm_modules.registry import ConfigError

#: the options that only say how long a run trains: a run is a prefix of any run that differs
#: from it only by larger values of these
BUDGET_KEYS: tuple[tuple[str, str], ...] = (("trainer", "max_epochs"), ("early_stopping", "patience"))
HISTORY = Path("logs") / "metrics.csv"


def _get(config: dict, path: tuple[str, str]) -> Any:
    return (config.get(path[0]) or {}).get(path[1])


def _without_budget(config: dict) -> str:
    out = copy.deepcopy(config)
    for section, key in BUDGET_KEYS:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return config_fingerprint(out)


def why_not(old: dict, new: dict) -> str | None:
    """Why a run of config ``old`` cannot be carried on as a run of ``new`` (None if it can)."""
    if old.get("seed") != new.get("seed"):
        return f"seed {old.get('seed')} is not {new.get('seed')}"
    if _without_budget(old) != _without_budget(new):
        return "another configuration (beyond max_epochs and patience)"
    for path in BUDGET_KEYS:
        a, b = _get(old, path), _get(new, path)
        name = ".".join(path)
        if (a is None) != (b is None):
            return f"{name} is {a} there and {b} here"
        if a is not None and a > b:
            return f"{name} {a} is larger than {b}: it may have trained past where this run stops"
    return None


def stopped_for_good(state: dict, config: dict) -> str | None:
    """Whether early stopping had run out at this checkpoint under ``config``'s patience: the longer run
    stops there too, and resuming would train an epoch it never trains (Lightning checks only after
    the next validation)."""
    if "early_stopping" not in config:
        return None
    patience = config["early_stopping"]["patience"]
    for key, value in (state.get("callbacks") or {}).items():
        if key.startswith("EarlyStopping") and isinstance(value, dict) and value.get("wait_count", 0) >= patience:
            return (f"early stopping had run out there ({value['wait_count']} epochs without improvement, patience "
                    f"{patience}): a run of this budget stops at the same epoch, with the same numbers")
    return None


def find_source(config: dict, source: Path, echo=print) -> Path | None:
    """The run folder under ``source`` that ``config`` can carry on (the longest such budget)."""
    found = []
    for cfg in sorted(source.rglob(CONFIG)):
        run = cfg.parent
        if not (run / CHECKPOINTS / "last.ckpt").is_file():
            continue
        old = load_yaml(str(cfg))
        if why_not(old, config) is not None:
            continue
        why = stopped_for_good(torch.load(run / CHECKPOINTS / "last.ckpt", map_location="cpu", weights_only=False),
                               config)
        if why:
            echo(f"{run.name}: not carried on: {why}")
            continue
        found.append((tuple(_get(old, p) or 0 for p in BUDGET_KEYS), run))
    return max(found)[1] if found else None


def _repath(value: Any, old: list[str], new: str) -> Any:
    if isinstance(value, str):
        for prefix in old:
            if value == prefix or value.startswith(prefix + os.sep):
                return new + value[len(prefix):]
        return value
    if isinstance(value, dict):
        return {_repath(k, old, new): _repath(v, old, new) for k, v in value.items()}
    return value


def _checkpoint(path: Path, target: Path, source_dir: Path, config: dict) -> None:
    state = torch.load(path, map_location="cpu", weights_only=False)
    new_dir = os.path.realpath(target)
    callbacks = state.get("callbacks", {})
    old_dirs = {os.path.realpath(source_dir)} | {
        v["dirpath"] for v in callbacks.values() if isinstance(v, dict) and isinstance(v.get("dirpath"), str)}
    old_dirs = sorted(old_dirs, key=len, reverse=True)
    for key, value in callbacks.items():
        value = _repath(value, old_dirs, new_dir)
        if key.startswith("EarlyStopping") and isinstance(value, dict) and "early_stopping" in config:
            value["patience"] = config["early_stopping"]["patience"]  # Lightning restores the saved one
        callbacks[key] = value
    state[IDENTITY_KEY] = {"fingerprint": config_fingerprint(config), "seed": config.get("seed")}
    tmp = target / f".{path.name}.extend.tmp"
    torch.save(state, tmp)
    os.replace(tmp, target / path.name)


def _history(source: Path, target: Path, config: dict) -> None:
    """The old run's CSV rows that the longer run writes too."""
    if not source.is_file():
        return
    with open(source, newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = list(reader.fieldnames or []), list(reader)
    due = set()
    if "curve" in config:
        due = set(curve_epochs(config["trainer"]["max_epochs"], config["curve"]["growth"]))
    kept = []
    for row in rows:
        if any(v not in ("", None) for k, v in row.items() if k.startswith("test/")):
            continue  # the old budget's test stage
        if row.get("epoch") not in ("", None) and int(row["epoch"]) + 1 not in due:
            for k in row:
                if k.startswith("curve/"):
                    row[k] = ""
        if any(v not in ("", None) for k, v in row.items() if k not in ("epoch", "step")):
            kept.append(row)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)


def _completed(state: dict) -> int | None:
    """Epochs finished at a checkpoint (one saved mid-epoch has not finished its ``epoch``)."""
    try:
        return int(state["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"])
    except (KeyError, TypeError):
        return None


def carry_on(config: dict, run_dir: Path, source_run: Path) -> dict:
    """Set ``run_dir`` up to resume from ``source_run``'s checkpoints; return what the record says."""
    ckpt_dir = run_dir / CHECKPOINTS
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted((source_run / CHECKPOINTS).glob("*.ckpt")):
        _checkpoint(path, ckpt_dir, source_run / CHECKPOINTS, config)
    _history(source_run / HISTORY, run_dir / HISTORY, config)
    old_config = load_yaml(str(source_run / CONFIG))
    old_record = read_record(source_run) or {}
    last = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False) \
        if (ckpt_dir / "last.ckpt").exists() else {}
    note = {"run_id": source_run.name, "path": str(source_run), "status": old_record.get("status"),
            "steps": last.get("global_step"),
            # the old run's own count where its record is of this checkpoint (an epoch's-end checkpoint
            # does not count its epoch as completed yet); else the checkpoint's finished epochs
            "epochs": old_record["epochs"] if old_record.get("steps") == last.get("global_step") else _completed(last),
            "wall_time_s": old_record.get("wall_time_s"),
            **{".".join(p): _get(old_config, p) for p in BUDGET_KEYS}}
    write_json_atomic(run_dir / EXTENDED, note)
    return note


def extend_cells(cells: list, out: Path, source: str | Path, pack: int | None = None, echo=print) -> None:
    """For each cell with an empty run folder in ``out``, carry on its run from ``source`` if one fits."""
    if pack is not None:  # a packed group keeps one checkpoint for all its cells (benchmarks/packing.py)
        raise ConfigError("--extend-from carries on runs of single cells; use it with --pack off")
    source = Path(source)
    if not source.is_dir():
        raise ConfigError(f"--extend-from {source}: no such folder (a folder of run folders, e.g. a matrix's --out)")
    for cell in cells:
        run_dir = Path(out) / run_id(cell.config)
        if (run_dir / RECORD).exists() or any((run_dir / CHECKPOINTS).glob("*.ckpt")):
            continue  # started here already: its own checkpoint wins
        found = find_source(cell.config, source, echo)
        if found is None:
            echo(f"{cell.label}: no run under {source} to carry on (same config and seed, smaller budget); "
                 "trains from the start")
            continue
        note = carry_on(cell.config, run_dir, found)
        echo(f"{cell.label}: carried on from {found.name} at step {note['steps']} ({note['epochs']} epochs done)")
