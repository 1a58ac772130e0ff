"""Paper reproductions: a named matrix with the published numbers beside ours.

``dgm-bench reproduce NAME [--budget paper|cpu|smoke] [--out DIR]`` runs the reproduction's matrix
through the matrix runner (resumable, the same records) and writes ``DIR/NAME/``: ``table.md`` and
``table.csv`` (our value, the published value and the difference, row by row), the figure where
the paper has one, and ``command.txt``. A reproduction is a YAML file in
``benchmarks/reproductions/``::

    name: iwae-table1
    title: ...                      # the paper and table
    notes: ...                      # how our setup differs; printed under the table
    matrix: {methods, datasets, seeds, settings, overrides, cells}   # a matrix spec
    budgets:                        # each merged into the matrix; `cells` are appended
      paper: {description: ..., overrides: ...}
      cpu:   {description: ..., only: {dataset: mnist}, overrides: ...}   # only: a subset of cells
      smoke: {description: ..., overrides: ...}
    published:                      # the table's rows, in order
      - label: VAE, k=1
        match: {method: vae, setting: k1, dataset: mnist}
        metric: test/nll_k5000
        value: 86.76                # null: a row of ours with no published number
        source: Table 1, MNIST, 1 stochastic layer, VAE, k=1
        protocol: {dataset: mnist, binarization: dynamic, k: 5000}
      - label: two stochastic layers
        missing: the suite has no two-stochastic-layer Gaussian VAE   # a row we cannot fill
    gradvar: {match, estimators, samples}   # optional: measure a trained cell (figure snr-vs-k)
    figure: latent-usage | snr-vs-k         # optional

A published value is compared only with cells of its protocol (dataset, binarisation, ``k`` of
the bound): a mismatched pairing is refused, naming both protocols, before anything runs.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.config import deep_merge, load_yaml
from benchmarks.matrix import Cell, normalise_overrides, resolve_spec
from dgm_modules.registry import ConfigError

REPRODUCTIONS_DIR = Path(__file__).parent / "reproductions"
BUDGETS = ("paper", "cpu", "smoke")
KEYS = {"name", "title", "notes", "matrix", "budgets", "published", "gradvar", "figure"}
ENTRY_KEYS = {"label", "match", "metric", "value", "source", "protocol", "note", "scale", "trend", "missing"}
MATCH_KEYS = ("method", "dataset", "setting")
#: protocol fields a published number and our cell must share
PROTOCOL_KEYS = ("dataset", "binarization", "dequantize", "k")
FIGURES = ("latent-usage", "snr-vs-k")
GRADVAR_KEYS = {"match", "estimators", "samples", "batch_size", "seed"}


@dataclass
class Reproduction:
    name: str
    title: str
    budget: str
    budget_description: str
    cells: list[Cell]
    entries: list[dict]
    notes: str = ""
    gradvar: dict | None = None
    figure: str | None = None


def list_reproductions() -> list[str]:
    return sorted(p.stem for p in REPRODUCTIONS_DIR.glob("*.yaml"))


def reproduction_path(name: str | Path) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    if (REPRODUCTIONS_DIR / f"{name}.yaml").exists():
        return REPRODUCTIONS_DIR / f"{name}.yaml"
    raise ConfigError(f"unknown reproduction {str(name)!r}; valid: {', '.join(list_reproductions())}")


def matches(match: dict, cell: Cell) -> bool:
    facts = {"method": cell.method, "dataset": cell.dataset, "setting": cell.setting}
    return all(facts[k] in v if isinstance(v, list) else facts[k] == v for k, v in match.items())


def cell_protocol(cell: Cell) -> dict:
    """The cell's evaluation protocol, from its config alone (the DataModule is built, not loaded)."""
    from datamodules import DATAMODULES

    config = cell.config
    datamodule = DATAMODULES.get(config["data"]["class_path"], "data")(seed=cell.seed, **config["data"]["init_args"])
    ks = config["module"]["init_args"].get("eval_k") or []
    # dequantised grey levels (Wu et al. 2017) are a density on [0, 1]^D, not a mass on 256 levels:
    # nats are not comparable across the two
    return {"dataset": datamodule.name, "binarization": datamodule.binarization,
            "dequantize": bool(getattr(datamodule, "dequantize", False)), "k": [int(k) for k in ks]}


def _fmt(protocol: dict) -> str:
    return ", ".join(f"{k}={protocol[k]}" for k in PROTOCOL_KEYS if k in protocol)


def check_protocol(entry: dict, cell: Cell, where: str) -> None:
    """Refuse to place a published value beside a cell evaluated under another protocol."""
    published, ours = entry["protocol"], cell_protocol(cell)
    clash = [key for key in PROTOCOL_KEYS if key in published
             and not (published[key] in ours[key] if key == "k" else published[key] == ours[key])]
    if clash:
        raise ConfigError(
            f"{where}: {entry['label']!r} ({entry['value']}, {entry['source']}) was measured under "
            f"{_fmt(published)}, but cell {cell.label} is evaluated under {_fmt(ours)}: a published value is "
            f"only compared with a result of the same protocol ({', '.join(clash)} differ)")


def _entry(raw: Any, i: int, where: str) -> dict:
    place = f"{where}: published[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{place}: expected a mapping with keys {sorted(ENTRY_KEYS)}")
    unknown = sorted(set(raw) - ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{place}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(ENTRY_KEYS))}")
    entry = {"value": None, "source": "", "protocol": {}, "note": "", "scale": 1.0, **raw}
    if not isinstance(entry.get("label"), str):
        raise ConfigError(f"{place}: 'label' (the row's name) is required")
    place = f"{place} ({entry['label']})"
    if "missing" in entry:
        return entry
    if "trend" in entry:
        trend = entry["trend"]
        if not isinstance(trend, dict) or set(trend) != {"estimators", "group", "stat", "direction"} \
                or trend["direction"] not in ("increasing", "decreasing"):
            raise ConfigError(f"{place}: trend needs estimators, group, stat and direction (increasing|decreasing)")
        return entry
    if not isinstance(entry.get("match"), dict) or not entry["match"] or set(entry["match"]) - set(MATCH_KEYS):
        raise ConfigError(f"{place}: 'match' must map some of {list(MATCH_KEYS)} to a value or a list")
    if not isinstance(entry.get("metric"), str):
        raise ConfigError(f"{place}: 'metric' (a record metric, e.g. test/nll_k5000) is required")
    value = entry["value"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{place}: 'value' must be a number or null, got {value!r}")
    if not isinstance(entry["scale"], (int, float)) or isinstance(entry["scale"], bool):
        raise ConfigError(f"{place}: 'scale' must be a number, got {entry['scale']!r}")
    if value is not None:
        protocol = entry["protocol"]
        if not isinstance(protocol, dict) or "dataset" not in protocol or not entry["source"]:
            raise ConfigError(f"{place}: a published value needs its 'source' and its 'protocol' "
                              f"(at least the dataset; also {', '.join(PROTOCOL_KEYS[1:])})")
        k = re.search(r"nll_k(\d+)$", entry["metric"])
        if k and protocol.get("k") != int(k.group(1)):
            raise ConfigError(f"{place}: metric {entry['metric']} is L_{k.group(1)} but protocol k is {protocol.get('k')}")
    return entry


def load_reproduction(name: str | Path, budget: str, extra: dict | None = None) -> Reproduction:
    """Read, validate and resolve a reproduction at one budget (``extra``: overrides for every cell,
    e.g. ``{"trainer": {"accelerator": "gpu"}}``); nothing runs."""
    path = reproduction_path(name)
    where = str(path)
    raw = load_yaml(where)
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(KEYS))}")
    for key in ("name", "title", "matrix", "budgets", "published"):
        if key not in raw:
            raise ConfigError(f"{where}: '{key}' is required")
    budgets = raw["budgets"]
    if not isinstance(budgets, dict) or sorted(budgets) != sorted(BUDGETS):
        raise ConfigError(f"{where}: 'budgets' must define exactly {', '.join(BUDGETS)}")
    if budget not in BUDGETS:
        raise ConfigError(f"--budget {budget!r} is not valid; choose one of {', '.join(BUDGETS)}")
    block = dict(budgets[budget] or {})
    description = block.pop("description", None)
    if not isinstance(description, str):
        raise ConfigError(f"{where}: budgets.{budget}: 'description' (what the budget is, against the paper's) is required")
    extra_cells = block.pop("cells", [])
    gradvar_budget = block.pop("gradvar", {})
    only = block.pop("only", None)
    if only is not None and (not isinstance(only, dict) or set(only) - set(MATCH_KEYS)):
        raise ConfigError(f"{where}: budgets.{budget}.only must map some of {list(MATCH_KEYS)} to a value or a list")
    spec = deep_merge(raw["matrix"], block)
    if extra:
        spec["overrides"] = deep_merge(spec.get("overrides") or {}, normalise_overrides(extra, "--set"))
    spec["cells"] = list(raw["matrix"].get("cells") or []) + list(extra_cells or [])
    cells = resolve_spec(spec, f"{where}: budgets.{budget}")
    if only:  # the budget's subset of the matrix (e.g. the one-layer rows only)
        cells = [c for c in cells if matches(only, c)]
    if not isinstance(raw["published"], list) or not raw["published"]:
        raise ConfigError(f"{where}: 'published' must be a non-empty list of rows")
    entries = [_entry(e, i, where) for i, e in enumerate(raw["published"])]
    for entry in entries:
        if entry.get("value") is not None:
            for cell in (c for c in cells if matches(entry["match"], c)):
                check_protocol(entry, cell, where)
    gradvar = None
    if raw.get("gradvar") is not None:
        gradvar = deep_merge(raw["gradvar"], gradvar_budget or {})
        bad = sorted(set(gradvar) - GRADVAR_KEYS)
        if bad or "match" not in gradvar or "estimators" not in gradvar:
            raise ConfigError(f"{where}: gradvar needs 'match' and 'estimators' (keys: {sorted(GRADVAR_KEYS)}); got {bad or sorted(gradvar)}")
        from dgm_modules.evaluation.gradient_variance import resolve_estimators

        resolve_estimators(gradvar["estimators"])
    figure = raw.get("figure")
    if figure is not None and figure not in FIGURES:
        raise ConfigError(f"{where}: figure {figure!r} is not valid; choose one of {', '.join(FIGURES)}")
    return Reproduction(raw["name"], raw["title"], budget, description, cells, entries,
                        str(raw.get("notes") or "").strip(), gradvar, figure)


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare(repro: Reproduction, records: list[dict | None], gradvar: dict | None = None) -> list[dict]:
    """One row per published entry: ours (mean, std, n over seeds), published, difference, status."""
    rows = []
    for entry in repro.entries:
        row = {"row": entry["label"], "metric": entry.get("metric", ""), "ours": None, "std": None, "n": 0,
               "published": entry.get("value"), "difference": None, "status": "", "protocol": _fmt(entry["protocol"]),
               "source": entry.get("source", ""), "note": entry.get("note", ""), "epochs": ""}
        if "missing" in entry:
            row["status"] = f"not in the suite: {entry['missing']}"
        elif "trend" in entry:
            row.update(_trend_row(entry, gradvar))
        else:
            pairs = [(c, r) for c, r in zip(repro.cells, records) if matches(entry["match"], c)]
            done = [r for _, r in pairs if r and r.get("status") == "completed"]
            values = [r["metrics"][entry["metric"]] * entry["scale"] for r in done if entry["metric"] in r["metrics"]]
            values = [v for v in values if math.isfinite(v)]
            row["ours"], row["std"] = _stats(values)
            row["n"] = len(values)
            epochs = sorted({r.get("epochs") for r in done if r.get("epochs") is not None})
            row["epochs"] = "/".join(map(str, epochs))
            if not pairs:
                row["status"] = f"not run (not a cell of the {repro.budget} budget, or left out by --only)"
            elif len(values) < len(pairs):
                row["status"] = "; ".join(sorted({_why_missing(r, entry["metric"]) for _, r in pairs} - {""}))
            if row["ours"] is not None and row["published"] is not None:
                row["difference"] = row["ours"] - row["published"]
        rows.append(row)
    return rows


def _why_missing(record: dict | None, metric: str) -> str:
    """Why a matched cell gives no value ("" when it gives one): failed, diverged, ..."""
    if record is None:
        return "no record"
    if record.get("status") != "completed":
        return str(record.get("status"))
    value = record["metrics"].get(metric)
    return f"no {metric}" if value is None else "" if math.isfinite(value) else f"{metric} not finite"


def _trend_row(entry: dict, gradvar: dict | None) -> dict:
    trend = entry["trend"]
    if gradvar is None:
        return {"status": "no gradient-variance measurement", "published": trend["direction"]}
    stats = gradvar["history"][-1]["estimators"]
    series = [stats.get(label, {}).get(trend["group"], {}).get(trend["stat"]) for label in trend["estimators"]]
    if any(v is None for v in series):
        return {"status": "estimator not measured", "published": trend["direction"]}
    ratio = series[-1] / series[0] if series[0] else math.inf
    holds = ratio < 1 if trend["direction"] == "decreasing" else ratio > 1
    return {"ours": " -> ".join(f"{v:.3g}" for v in series), "published": trend["direction"],
            "difference": f"{'holds' if holds else 'does not hold'} (last/first {ratio:.2f})",
            "metric": f"{trend['group']} {trend['stat']} over {', '.join(trend['estimators'])}", "n": 1}


def table_markdown(repro: Reproduction, rows: list[dict], command: str, wall_s: float | str,
                   devices: list[str]) -> str:
    wall = f"{wall_s:.0f} s" if isinstance(wall_s, (int, float)) else wall_s
    lines = [f"# {repro.title}", "", f"Reproduction `{repro.name}` at the **{repro.budget}** budget: "
             f"{repro.budget_description}", "", f"Command: `{command}`  ", f"Wall time: {wall}; "
             f"device(s): {', '.join(sorted(set(devices))) or 'n/a'}", "",
             "| row | metric | ours (mean ± sd over n seeds) | published | ours − published | epochs | protocol | source |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if isinstance(r["ours"], float):
            # one seed has no spread: print the value and n=1, not a misleading "± 0.00"
            ours = (f"{r['ours']:.2f} (n=1)" if r["n"] == 1 else f"{r['ours']:.2f} ± {r['std']:.2f} (n={r['n']})")
        else:
            ours = r["ours"] if r["ours"] is not None else "—"
        diff = f"{r['difference']:+.2f}" if isinstance(r["difference"], float) else (r["difference"] or "—")
        if r["status"]:
            ours = f"{ours} [{r['status']}]" if r["ours"] is not None else r["status"]
        pub = f"{r['published']:.2f}" if isinstance(r["published"], (int, float)) else (r["published"] or "—")
        source = r["source"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {r['row']} | {r['metric']} | {ours} | {pub} | {diff} | {r['epochs'] or '—'} | {r['protocol']} | {source} |")
    if repro.notes:
        lines += ["", "## Notes", "", repro.notes]
    return "\n".join(lines) + "\n"


def write_table(out: Path, repro: Reproduction, rows: list[dict], command: str, wall_s: float | str,
                devices: list[str]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = table_markdown(repro, rows, command, wall_s, devices)
    (out / "table.md").write_text(text)
    with open(out / "table.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["row", "metric", "ours", "std", "n", "published", "difference",
                                                "epochs", "status", "protocol", "source", "note", "budget"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "budget": repro.budget})
    (out / "command.txt").write_text(command + "\n")
    return text


def measure_gradvar(repro: Reproduction, records: list[dict | None], out: Path, device: str) -> dict | None:
    """The gradient-variance protocol at the final checkpoint of the first matching completed cell."""
    from benchmarks.gradvar import gradvar_checkpoint
    from benchmarks.records import write_json_atomic
    from benchmarks.run import run_id

    spec = repro.gradvar
    for cell, record in zip(repro.cells, records):
        if matches(spec["match"], cell) and record and record.get("status") == "completed":
            if not _checkpointed(out / "runs" / run_id(cell.config), "gradvar.json", out):
                return json.loads((out / "gradvar.json").read_text()) if (out / "gradvar.json").exists() else None
            result = gradvar_checkpoint(out / "runs" / run_id(cell.config), spec["estimators"],
                                        spec.get("samples", 100), batch_size=spec.get("batch_size", 0),
                                        seed=spec.get("seed", 0), device=device)
            write_json_atomic(out / "gradvar.json", result)
            return result
    return None


def _checkpointed(run_dir: Path, product: str, out: Path) -> bool:
    """Whether ``run_dir`` keeps its last checkpoint; if not, say that ``product`` is not (re)made.

    Published run folders keep only records and logs, and ``--report-only`` redraws their tables
    from those: what needs the weights is skipped with this note, never an error.
    """
    from benchmarks.run import CHECKPOINTS

    if (run_dir / CHECKPOINTS / "last.ckpt").exists():
        return True
    kept = " (the one there is kept)" if (out / product).exists() else ""
    print(f"{product} not made: {run_dir} has no {CHECKPOINTS}/last.ckpt{kept}", file=sys.stderr)
    return False


def make_figure(repro: Reproduction, records: list[dict | None], out: Path) -> Path | None:
    from benchmarks.run import run_id

    if repro.figure == "snr-vs-k":
        from benchmarks.figures.gradient_variance import snr_vs_k_figure

        return snr_vs_k_figure([out / "gradvar.json"], out / "snr_vs_k.png") if (out / "gradvar.json").exists() else None
    if repro.figure == "latent-usage":  # the stick-breaking VAE's sticks against the Gaussian VAE's dimensions
        from benchmarks.figures.latent_usage import latent_usage_figure

        by_model: dict[str, Path] = {}
        for cell, record in zip(repro.cells, records):
            if record and record["status"] == "completed":
                by_model.setdefault(cell.config["model"]["class_path"], out / "runs" / run_id(cell.config))
        if ("stick-breaking-vae" in by_model and "gaussian-vae" in by_model
                and all(_checkpointed(by_model[m], "latent_usage.png", out) for m in ("stick-breaking-vae", "gaussian-vae"))):
            return latent_usage_figure(by_model["stick-breaking-vae"], by_model["gaussian-vae"], out / "latent_usage.png")
    return None


def convergence(repro: Reproduction, records: list[dict | None], out: Path) -> Path | None:
    """``convergence.png``: each published row's test curve (cells that logged ``curve``)."""
    from benchmarks.figures.convergence import convergence_figure
    from benchmarks.run import run_id

    curves = []
    for entry in repro.entries:
        if "match" not in entry or "metric" not in entry:
            continue
        for cell, record in zip(repro.cells, records):
            if matches(entry["match"], cell) and entry.get("scale", 1) == 1 and "nll" in entry["metric"]:
                final = (record or {}).get("metrics", {}).get(entry["metric"])
                tested = (record or {}).get("tested_checkpoint") or {}
                curves.append({"label": entry["label"], "run_dir": out / "runs" / run_id(cell.config),
                               "metric": entry["metric"], "published": entry.get("value"), "final": final,
                               "final_pass": tested.get("epoch") or (record or {}).get("epochs")})
                break
    return convergence_figure(curves, out / "convergence.png", f"{repro.title} ({repro.budget} budget)")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from benchmarks import signals
    from benchmarks.launchers import make_launcher
    from benchmarks.matrix import run_matrix

    if args.list or not args.name:
        for name in list_reproductions():
            raw = load_yaml(str(REPRODUCTIONS_DIR / f"{name}.yaml"))
            print(f"  {name:<24} {raw.get('title', '')}")
        return 0 if args.list else 2
    from benchmarks.config import parse_set

    extra: dict = {}
    for path in args.config or []:  # like run's --config: files merged in order, key by key, then --set
        extra = deep_merge(extra, normalise_overrides(load_yaml(path), path))
    repro = load_reproduction(args.name, args.budget, deep_merge(extra, parse_set(args.set or [])))
    if args.only:
        only = {}
        for item in args.only:
            key, sep, value = item.partition("=")
            if not sep or key not in MATCH_KEYS:
                raise ConfigError(f"--only {item!r}: expected KEY=VALUE with KEY one of {', '.join(MATCH_KEYS)}")
            only.setdefault(key, []).append(value)
        repro.cells = [c for c in repro.cells if matches(only, c)]
        if not repro.cells:
            raise ConfigError(f"--only {' '.join(args.only)} selects no cell of {repro.name} at the {args.budget} budget")
    out = Path(args.out) / repro.name
    command = shlex.join(["dgm-bench", "reproduce", args.name, "--budget", args.budget, "--out", args.out,
                          *(["--jobs", str(args.jobs)] if args.jobs != 1 else []),
                          *(["--pack", args.pack] if args.pack != "off" else []),
                          *[a for item in args.config or [] for a in ("--config", item)],
                          *[a for item in args.set or [] for a in ("--set", item)],
                          *[a for item in args.only or [] for a in ("--only", item)],
                          *(["--extend-from", args.extend_from] if args.extend_from else [])])
    if args.report_only:
        command += "  # then, for the table of what had finished: --report-only"
    print(f"reproduce {repro.name} ({repro.budget} budget): {len(repro.cells)} cells -> {out}")
    t0 = time.perf_counter()
    launcher = make_launcher("local", jobs=args.jobs, wandb=args.wandb, group=repro.name)
    if args.report_only:  # tables and figures from what the run folders hold now; nothing trains
        from benchmarks.records import read_record
        from benchmarks.run import run_id

        records = [read_record(out / "runs" / run_id(c.config)) for c in repro.cells]
    else:
        from benchmarks.packing import parse_pack

        # SIGTERM/SIGINT: no new cells, the running one stops at a batch end, exit 143/130 (as matrix).
        # Without this, Lightning's own SIGTERM handler ended the cell and the next one started.
        signals.install()
        records = run_matrix(repro.cells, out / "runs", launcher, pack=parse_pack(args.pack),
                             extend_from=args.extend_from)
        if signals.requested():
            print(signals.summary([c.label for c in repro.cells], records), file=sys.stderr)
            return signals.exit_code(signals.requested())
    gradvar = measure_gradvar(repro, records, out, args.gradvar_device) if repro.gradvar else None
    figure = make_figure(repro, records, out) if repro.figure else None
    rows = compare(repro, records, gradvar)
    curve = convergence(repro, records, out)
    devices = [" ".join(str(v) for k, v in (r.get("device") or {}).items() if k in ("accelerator", "gpu"))
               for r in records if r]
    wall: float | str = time.perf_counter() - t0
    if args.report_only:  # the table took no time: say what the cells themselves took
        cell_s = [r["wall_time_s"] + ((r.get("extended_from") or {}).get("wall_time_s") or 0)
                  for r in records if r and isinstance(r.get("wall_time_s"), (int, float))]
        carried = any(r and (r.get("extended_from") or {}).get("wall_time_s") for r in records)
        wall = (f"the cells' own, longest {max(cell_s):.0f} s, sum {sum(cell_s):.0f} s (records' wall_time_s"
                + (", with that of the runs they carried on" if carried else "") + ")"
                if cell_s else "no cell has finished")
    print(write_table(out, repro, rows, command, wall, devices))
    if args.wandb != "disabled":  # the leaderboard of the reproduction's runs, as a wandb Table
        from benchmarks.fingerprint import config_fingerprint
        from benchmarks.records import RECORD
        from benchmarks.wandb_log import log_leaderboard

        if any((out / "runs").rglob(RECORD)):
            log_leaderboard(out / "runs", args.wandb, group=repro.name, out=out,
                            current={config_fingerprint(c.config) for c in repro.cells})
    print(f"table: {out / 'table.md'}, {out / 'table.csv'}" + (f"; figure: {figure}" if figure else "")
          + (f"; convergence: {curve}" if curve else ""))
    return 0 if all(r and r["status"] in ("completed", "diverged") for r in records) else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``reproduce NAME [--budget paper|cpu|smoke] [--out DIR] [--jobs N]`` and ``reproduce --list``."""
    p = sub.add_parser("reproduce", help="run a paper reproduction; write our numbers beside the published ones")
    p.add_argument("name", nargs="?", help="a reproduction (see --list) or a YAML file")
    p.add_argument("--list", action="store_true", help="name the shipped reproductions")
    p.add_argument("--budget", default="cpu", help=f"one of {', '.join(BUDGETS)} (default cpu)")
    p.add_argument("--out", default="runs/reproductions", help="output folder (default runs/reproductions)")
    p.add_argument("--jobs", type=int, default=1, help="cells run at once (default 1)")
    p.add_argument("--pack", default="off", help="auto|N|off: cells that differ only in their seed train side by "
                   "side in one process (default off)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override an option of every cell (e.g. trainer.accelerator=gpu); the table's command says so")
    p.add_argument("--config", action="append", metavar="FILE",
                   help="a YAML file of overrides for every cell (sections as in `dgm-bench run --print_config`; "
                        "repeatable: merged in order, key by key, before --set)")
    p.add_argument("--only", action="append", metavar="KEY=VALUE",
                   help="run only the cells with this method, dataset or setting (repeatable)")
    p.add_argument("--report-only", action="store_true",
                   help="write the table and figures from the run folders as they are; train nothing")
    from benchmarks.cli import EXTEND_HELP

    p.add_argument("--extend-from", metavar="DIR", help=EXTEND_HELP)
    p.add_argument("--gradvar-device", default="cpu", help="device of the gradient-variance measurement")
    from benchmarks.wandb_log import add_wandb_argument

    add_wandb_argument(p, "grouped by reproduction")
    p.set_defaults(fn=cmd_reproduce)


if __name__ == "__main__":  # pragma: no cover
    from benchmarks.cli import main

    sys.exit(main(["reproduce", *sys.argv[1:]]))
