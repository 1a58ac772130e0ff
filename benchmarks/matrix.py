"""Matrix specs (methods x datasets x seeds x settings) and the resumable runner.

A spec is YAML::

    name: digits-quick
    methods: [vae, iwae]             # registered method names, or `all` (every registered one)
    datasets: [digits]               # registered dataset names
    seeds: [0, 1, 2]
    settings: {default: {}}          # named override sets, one row each in the leaderboard
    overrides: {trainer: {max_epochs: 20}}   # applied to every cell
    cells:                           # per-cell overrides, applied where `match` holds
      - match: {method: [iwae, iwae-dreg]}    # a value or a list of values
        overrides: {objective: {k: 10}}
    exclude:                         # cells of the product left out (same match form)
      - {method: iwae-2l, dataset: binarized-mnist}
    resources: {gpus: 1, mem_gb: 32}  # Slurm, per cell (a cell rule may say it too); and a `slurm:`
                                      # section of sbatch options: see benchmarks/slurm.py

In override blocks a component section may list its options directly (``objective: {k: 10}``)
or in the full ``{class_path, init_args}`` form. Every cell is resolved (and so validated)
before the first one runs; errors name the file and the place in it.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from benchmarks.config import COMPONENT_SECTIONS, deep_merge, load_yaml, resolve_config
from benchmarks.records import read_record
from benchmarks.run import run_id
from benchmarks.slurm import apply_gpus, check_resources, check_slurm_section
from datamodules import DATAMODULES
from dgm_modules.components import METHODS
from dgm_modules.registry import ConfigError

SPEC_KEYS = {"name", "description", "methods", "datasets", "seeds", "settings", "overrides", "cells", "exclude",
             "resources", "slurm"}  # the last two: see benchmarks/slurm.py
MATCH_FACTS = ("method", "dataset", "setting", "seed")
SPECS_DIR = Path(__file__).parent / "specs"


@dataclass
class Cell:
    method: str
    dataset: str
    seed: int
    setting: str
    config: dict
    resources: dict = field(default_factory=dict)  # Slurm: gpus, cpus, mem_gb, time_min (benchmarks/slurm.py)

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.method}/{self.setting}/seed{self.seed}"


def normalise_overrides(block: Any, where: str) -> dict:
    """Component sections may give their init_args directly; return the full form."""
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(block).__name__}")
    out = {}
    for section, value in block.items():
        if section in COMPONENT_SECTIONS and isinstance(value, dict) and not ({"class_path", "init_args"} & set(value)):
            value = {"init_args": value}
        out[section] = value
    return out


def _names(spec: dict, key: str, registry: Any, where: str) -> list[str]:
    values = spec.get(key)
    if values == "all":  # every registered name, plugins' included; `exclude` takes some out
        return registry.names()
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: '{key}' must be a non-empty list or 'all'")
    for i, name in enumerate(values):
        if not isinstance(name, str):
            raise ConfigError(f"{where}: {key}[{i}]: expected a name, got {name!r}")
        registry.get(name, f"{where}: {key}[{i}]")
    return values


def load_spec(path: str | Path) -> tuple[dict, list[Cell]]:
    """Read and validate a spec; return it with its fully resolved cells."""
    where = str(path)
    shipped = SPECS_DIR / Path(path).name
    if not Path(path).exists() and Path(path).name == str(path) and shipped.exists():
        path = shipped  # a bare name (``digits.yaml``) means the shipped spec; a path means that file only
    if not Path(path).is_file():
        kind = "is a folder" if Path(path).is_dir() else "not found"
        raise ConfigError(f"spec {where}: {kind}; give a YAML file, or the name of a shipped spec: "
                          f"{', '.join(sorted(p.name for p in SPECS_DIR.glob('*.yaml')))}")
    try:
        spec = load_yaml(str(path))
    except UnicodeDecodeError:
        raise ConfigError(f"spec {where}: not a text (YAML) file") from None
    return spec, resolve_spec(spec, where)


def resolve_spec(spec: dict, where: str) -> list[Cell]:
    """Validate a spec's mapping and resolve every cell; errors name ``where`` and the place."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(sorted(SPEC_KEYS))}")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(SPEC_KEYS))}")
    methods = _names(spec, "methods", METHODS, where)
    datasets = _names(spec, "datasets", DATAMODULES, where)
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: 'seeds' must be a list of integers, got {seeds!r}")
    settings = spec.get("settings") or {"default": {}}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: 'settings' must map setting names to override blocks")
    common = normalise_overrides(spec.get("overrides"), f"{where}: overrides")
    rules = spec.get("cells") or []
    if not isinstance(rules, list):
        raise ConfigError(f"{where}: 'cells' must be a list of {{match, overrides}} entries")
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or set(rule) - {"match", "overrides", "resources"} or not isinstance(rule.get("match", {}), dict):
            raise ConfigError(f"{where}: cells[{i}]: expected {{match: {{method|dataset|setting|seed: ...}}, overrides: ..., "
                              "resources: ...}")
        bad = set(rule.get("match", {})) - {"method", "dataset", "setting", "seed"}
        if bad:
            raise ConfigError(f"{where}: cells[{i}].match: unknown key(s) {sorted(bad)}")
    exclude = spec.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(m, dict) and m and not set(m) - set(MATCH_FACTS)
                                                for m in exclude):
        raise ConfigError(f"{where}: 'exclude' must be a list of matches over {', '.join(MATCH_FACTS)}")
    common_resources = check_resources(spec.get("resources"), f"{where}: resources")
    check_slurm_section(spec.get("slurm"), f"{where}: slurm")
    cells = []
    for setting, dataset, method, seed in itertools.product(settings, datasets, methods, seeds):
        facts = {"method": method, "dataset": dataset, "setting": setting, "seed": seed}
        if any(_holds(m, facts) for m in exclude):
            continue
        over = deep_merge(common, normalise_overrides(settings[setting], f"{where}: settings.{setting}"))
        resources = dict(common_resources)
        for i, rule in enumerate(rules):
            if all(facts[k] in v if isinstance(v, list) else facts[k] == v for k, v in rule.get("match", {}).items()):
                over = deep_merge(over, normalise_overrides(rule.get("overrides"), f"{where}: cells[{i}].overrides"))
                resources.update(check_resources(rule.get("resources"), f"{where}: cells[{i}].resources"))
        over["setting"] = setting
        label = f"{where}: cell {dataset}/{method}/{setting}/seed{seed}"
        try:
            config = resolve_config(method, dataset, seed, over)
        except ConfigError as err:
            raise ConfigError(f"{label}: {err}") from None
        apply_gpus(config, resources, label, (over.get("trainer") or {}).get("devices"))
        cells.append(Cell(method, dataset, seed, setting, config, resources))
    return cells


def _holds(match: dict, facts: dict) -> bool:
    return all(facts[k] in v if isinstance(v, list) else facts[k] == v for k, v in match.items())


class Progress:
    """One line per event: cells done, failed and remaining, and an estimate of the time left."""

    def __init__(self, total: int, echo: Callable[[str], None] = print) -> None:
        self.total, self.echo = total, echo
        self.counts = {"completed": 0, "failed": 0, "diverged": 0, "interrupted": 0, "locked": 0, "skipped": 0}
        self.t0, self.trained = time.perf_counter(), 0

    def update(self, cell: Cell, record: dict, skipped: bool) -> None:
        self.counts["skipped" if skipped else record["status"]] += 1
        self.trained += 0 if skipped else 1
        done = sum(self.counts.values())
        rate = (time.perf_counter() - self.t0) / self.trained if self.trained else 0.0
        eta = rate * (self.total - done)
        note = " (already done)" if skipped else f" ({record['error']['message']}; skipped here)" if record["status"] == "locked" else ""
        self.echo(f"[{done}/{self.total}] {cell.label}: {record['status']}{note}"
                  f" | completed {self.counts['completed'] + self.counts['skipped']}, failed {self.counts['failed']},"
                  f" diverged {self.counts['diverged']}, remaining {self.total - done}, ETA {eta:.0f}s")


def already_done(cell: Cell, out: Path) -> dict | None:
    record = read_record(out / run_id(cell.config))
    return record if record is not None and record.get("status") in ("completed", "diverged") else None


def run_matrix(cells: list[Cell], out: str | Path, launcher: Callable[[list[Cell], Path, Progress], None] | None = None,
               echo: Callable[[str], None] = print, pack: int | None = None,
               extend_from: str | Path | None = None) -> list[dict]:
    """Run every cell not yet done (completed or diverged); return all records.

    ``pack`` (see :func:`benchmarks.packing.parse_pack`): None trains every cell alone; 0 or N
    trains cells that differ only in their seed side by side (at most N a group), the rest alone.
    ``extend_from``: a folder of shorter runs that cells not yet started carry on (benchmarks/extend.py).
    """
    out = Path(out)
    if extend_from:
        from benchmarks.extend import extend_cells

        extend_cells(cells, out, extend_from, pack, echo)
    progress = Progress(len(cells), echo)
    todo = []
    for cell in cells:
        done = already_done(cell, out)
        if done is not None:
            progress.update(cell, done, skipped=True)
        else:
            todo.append(cell)
    if todo:  # every cell's feature networks, before the first cell trains
        from benchmarks.evaluator import prepare_feature_nets

        prepare_feature_nets([c.config for c in todo], echo)
    if pack is not None and todo:
        from benchmarks.packing import run_packed

        todo = run_packed(todo, out, pack, progress, echo)
    if launcher is None:
        from benchmarks.launchers import LocalLauncher

        launcher = LocalLauncher()
    launcher(todo, out, progress)
    return [read_record(out / run_id(c.config)) for c in cells]

