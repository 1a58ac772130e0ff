"""Aggregate run records into one table per (dataset, protocol), one row per configuration.

A row is one config fingerprint (:mod:`benchmarks.fingerprint`) over its seeds: runs that differ in
anything but the seed are never averaged together. The row label says how the config differs
from its method's preset (``iwae (objective.k=50)``); what every row of a table shares is said once
above it. Records whose configuration is not in the current spec are tabulated apart, and a record
that cannot be read is listed with its path and the reason, never dropped in silence.

Numbers made under different protocols never share a table or a column: the table key holds the
dataset, binarisation and split sizes; the metric name holds ``k`` (``nll_k5000``) and an FID's
column holds its feature network's checksum. Directions, units and precision come from
:data:`benchmarks.metric_info.METRICS`; intervals and the bold from :mod:`benchmarks.stats`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from benchmarks.fingerprint import config_fingerprint, identity
from benchmarks.metric_info import arrow, metric_info, sort_key
from benchmarks.records import RECORD, STATUSES
from benchmarks.stats import TEST_NAME, pick_best, summarise

REQUIRED = ("status", "method", "dataset", "seed", "config")
CAPTION = ("Mean ± half-width of the 95% t interval over seeds (one value where n = 1). **Bold**: the best "
           f"mean, only where {TEST_NAME} separates it from every other row.")


@dataclass
class Run:
    path: Path  # of the record file
    record: dict
    fingerprint: str


@dataclass
class Problem:
    path: Path
    reason: str


@dataclass
class Row:
    fingerprint: str
    method: str
    config: dict
    runs: list[Run] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    label: str = ""


@dataclass
class Table:
    name: str
    rows: dict[str, Row] = field(default_factory=dict)  # by fingerprint
    failed: list[Run] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)  # config differences every row has

    def columns(self) -> list[str]:
        return sorted({c for row in self.rows.values() for c in row.values}, key=sort_key)


@dataclass
class Leaderboard:
    tables: dict[str, Table]  # configurations of the current spec (all, where no spec is given)
    outside: dict[str, Table]  # configurations not in the current spec: shown apart, never pooled
    problems: list[Problem]
    root: Path


# ---------------------------------------------------------------- reading


def problem_of(record: Any) -> str | None:
    """Why ``record`` cannot be tabulated, or None."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__ if record is not None else 'null'}"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if record["status"] not in STATUSES:
        return f"status {record['status']!r} is not one of {', '.join(STATUSES)}"
    if not isinstance(record["config"], dict):
        return "config is not a mapping"
    if record["status"] == "completed" and not isinstance(record.get("metrics"), dict):
        return "completed but metrics is not a mapping"
    return None


def load_records(root: str | Path) -> tuple[list[Run], list[Problem]]:
    """Every record under ``root``, and every file that could not be read as one (with why)."""
    runs, problems = [], []
    for path in sorted(Path(root).rglob(RECORD)):
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            problems.append(Problem(path, f"invalid JSON ({err})"))
            continue
        except OSError as err:
            problems.append(Problem(path, f"unreadable ({err.strerror})"))
            continue
        reason = problem_of(record)
        if reason is not None:
            problems.append(Problem(path, reason))
            continue
        runs.append(Run(path, record, config_fingerprint(record["config"])))
    return runs, problems


# ---------------------------------------------------------------- grouping


def table_key(record: dict) -> str:
    p = record.get("protocol") or {}
    split = p.get("split") or {}
    sizes = "/".join(str(split.get(s)) for s in ("train", "val", "test"))
    dequantized = f", dequantize={p['dequantize']}" if p.get("dequantize") else ""
    return f"{record['dataset']} (binarization={p.get('binarization')}{dequantized}, train/val/test={sizes})"


def column_name(record: dict, metric: str) -> str:
    p = record.get("protocol") or {}
    if metric_info(metric).stem in ("fid", "kid", "kid_std"):
        sha = (p.get("feature_net_sha256") or "?")[:8]
        return f"{metric} [{p.get('feature_net', '?')}:{sha}]"
    return metric


def aggregate(runs: Iterable[Run], current: set[str] | None = None) -> tuple[dict[str, Table], dict[str, Table]]:
    """Group runs into tables and rows by fingerprint; ``current``: the spec's fingerprints (None: all)."""
    tables: dict[str, Table] = {}
    outside: dict[str, Table] = {}
    for run in runs:
        rec = run.record
        where = tables if current is None or run.fingerprint in current else outside
        name = table_key(rec)
        table = where.setdefault(name, Table(name))
        if rec["status"] != "completed":
            table.failed.append(run)
            continue
        row = table.rows.setdefault(run.fingerprint, Row(run.fingerprint, rec["method"], rec["config"]))
        row.runs.append(run)
        for metric, value in sorted(rec["metrics"].items()):
            if metric.startswith("test/") and isinstance(value, (int, float)) and not isinstance(value, bool):
                row.values.setdefault(column_name(rec, metric), []).append(float(value))
    for table in [*tables.values(), *outside.values()]:
        label_rows(table)
    return tables, outside


# ---------------------------------------------------------------- row labels


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def _show(path: str, value: Any) -> str:
    path = path.replace(".init_args", "").removesuffix(".class_path")
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return f"{path}={text}"


def preset_config(config: dict) -> tuple[dict, list[str]]:
    """The resolved config of the method's preset on the same dataset, with the run's component
    classes where it swapped one (so that only the options of that class are compared), and the
    swaps (``["objective=iwae"]``)."""
    from benchmarks.config import COMPONENT_SECTIONS, INJECTED, resolve_config
    from dgm_modules.registry import resolve_init_args

    preset = resolve_config(config["method"], config["data"]["class_path"], int(config.get("seed", 0)), {})
    swapped = []
    for section, registry in COMPONENT_SECTIONS.items():
        cls_name = (config.get(section) or {}).get("class_path")
        if cls_name and cls_name != preset[section]["class_path"]:
            cls = registry.get(cls_name, f"{section}.class_path")
            preset[section] = {"class_path": cls_name,
                               "init_args": resolve_init_args(cls, {}, section, INJECTED[section])}
            swapped.append(f"{section}={cls_name}")
    return preset, swapped


def config_differences(config: dict) -> list[str] | None:
    """``["objective.k=50"]``: how ``config`` differs from its method's preset (seed and paths
    excluded, types normalised); None where the preset cannot be resolved any more."""
    try:
        resolved, swapped = preset_config(config)
        preset = _flatten(identity(resolved))
    except Exception:  # noqa: BLE001 -- a method or option since removed: the label falls back to the fingerprint
        return None
    own = _flatten(identity(config))
    # an option the record lacks is newer than the record; one it holds unset is since removed:
    # neither says how the run was configured differently
    keys = [k for k in own if k in preset or own[k] is not None]
    return swapped + [_show(k, own[k]) for k in sorted(keys) if own[k] != preset.get(k)]


def label_rows(table: Table) -> None:
    diffs = {fp: config_differences(row.config) for fp, row in table.rows.items()}
    known = [set(d) for d in diffs.values() if d is not None]
    shared = set.intersection(*known) if len(known) == len(diffs) and known else set()
    table.shared = sorted(shared)
    for fp, row in table.rows.items():
        d = diffs[fp]
        if d is None:
            row.label = f"{row.method} [config {fp}]"
            continue
        own = [x for x in d if x not in shared]
        row.label = f"{row.method} ({', '.join(own)})" if own else row.method
    seen: dict[str, int] = {}
    for row in table.rows.values():
        seen[row.label] = seen.get(row.label, 0) + 1
    for row in table.rows.values():  # differences only in ignored options: tell them apart anyway
        if seen[row.label] > 1:
            row.label = f"{row.label} [config {row.fingerprint}]"


# ---------------------------------------------------------------- rendering


def fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}" if math.isfinite(value) else str(value)


def cell_text(values: list[float], column: str, n_row: int) -> str:
    s = summarise(values)
    d = metric_info(column).decimals
    text = fmt(s.mean, d) if s.n == 1 else f"{fmt(s.mean, d)} ± {fmt(s.half_width, d)}"
    return text if s.n == n_row else f"{text} (n={s.n})"


def header(column: str) -> str:
    info = metric_info(column)
    name = column.removeprefix("test/")
    return f"{name} {arrow(info.direction)}".strip() + (f" ({info.unit})" if info.unit else "")


def spread(values: list[float], decimals: int) -> str:
    if not values:
        return "—"
    lo, hi = min(values), max(values)
    return fmt(lo, decimals) if lo == hi else f"{fmt(lo, decimals)}–{fmt(hi, decimals)}"


def numbers(row: Row, key: str) -> list[float]:
    """A record field over the row's runs, where it is a number (older records may lack it)."""
    values = [r.record.get(key) for r in row.runs]
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def bests(table: Table, bold: bool = True) -> dict[str, str | None]:
    """Per column, the fingerprint of the row marked best (or None)."""
    return {c: pick_best({fp: r.values.get(c, []) for fp, r in table.rows.items() if r.values.get(c)},
                         metric_info(c).direction) if bold else None
            for c in table.columns()}


def _sorted_rows(table: Table) -> list[Row]:
    return sorted(table.rows.values(), key=lambda r: r.label)


def render_table(table: Table, heading: str, bold: bool = True) -> list[str]:
    md = [f"{heading} {table.name}\n"]
    if table.shared:
        md.append("Every row: " + ", ".join(f"`{x}`" for x in table.shared) + "\n")
    columns = table.columns()
    if table.rows:
        best = bests(table, bold)
        md.append("| configuration | n | " + " | ".join(header(c) for c in columns) + " | epochs | wall (s) |")
        md.append("|---|---|" + "---|" * (len(columns) + 2))
        for row in _sorted_rows(table):
            cells = []
            for c in columns:
                vals = row.values.get(c)
                text = cell_text(vals, c, len(row.runs)) if vals else "—"
                cells.append(f"**{text}**" if vals and best[c] == row.fingerprint else text)
            epochs, walls = spread(numbers(row, "epochs"), 0), numbers(row, "wall_time_s")
            wall = fmt(summarise(walls).mean, 1) if walls else "—"
            md.append(f"| {row.label} | {len(row.runs)} | " + " | ".join(cells) + f" | {epochs} | {wall} |")
        md.append("")
        md.append(CAPTION if bold else CAPTION.split(" **Bold**")[0] + " Nothing is marked best here.")
        md.append("")
    if table.failed:
        md.append("Not averaged in (failed or diverged):\n")
        for run in sorted(table.failed, key=lambda r: (r.record["method"], str(r.record["seed"]))):
            err = run.record.get("error") or {}
            msg = str(err.get("message") or "").splitlines()
            md.append(f"- {run.record['method']}, seed {run.record['seed']} ({run.path.parent.name}): "
                      f"**{run.record['status']}** at step {err.get('step')}: {msg[0] if msg else ''}")
        md.append("")
    return md


def render_markdown(board: Leaderboard) -> str:
    md: list[str] = []
    for name in sorted(board.tables):
        md += render_table(board.tables[name], "###")
    if board.outside:
        md.append("## Records outside the current spec (not averaged into the tables above)\n")
        for name in sorted(board.outside):
            md += render_table(board.outside[name], "###", bold=False)
    if board.problems:
        md.append(f"## Records not read ({len(board.problems)})\n")
        md += [f"- `{os.path.relpath(p.path, board.root)}`: {p.reason}" for p in board.problems]
        md.append("")
    return "\n".join(md).rstrip() + "\n"


def _sections(board: Leaderboard) -> Iterable[tuple[str, Table]]:
    for name in sorted(board.tables):
        yield "spec", board.tables[name]
    for name in sorted(board.outside):
        yield "outside-spec", board.outside[name]


def render_csv(board: Leaderboard) -> str:
    """The aggregate: one line per (table, row, metric)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "section", "configuration", "fingerprint", "metric", "direction", "unit", "n",
                     "mean", "std", "ci95_low", "ci95_high", "best", "test"])
    for section, table in _sections(board):
        best = bests(table, bold=section == "spec")
        for row in _sorted_rows(table):
            for c in table.columns():
                if c not in row.values:
                    continue
                s, info = summarise(row.values[c]), metric_info(c)
                writer.writerow([table.name, section, row.label, row.fingerprint, c, info.direction or "", info.unit,
                                 s.n, repr(s.mean), "" if s.n == 1 else repr(s.std),
                                 "" if s.n == 1 else repr(s.low), "" if s.n == 1 else repr(s.high),
                                 int(best[c] == row.fingerprint), TEST_NAME if section == "spec" else ""])
    return buf.getvalue()


def render_runs_csv(board: Leaderboard, root: Path) -> str:
    """One line per run (failed ones too): run id, seed, status, budget, git, and every metric."""
    entries = [(section, table, row.label, run) for section, table in _sections(board)
               for row in _sorted_rows(table) for run in row.runs]
    entries += [(section, table, run.record["method"], run) for section, table in _sections(board) for run in table.failed]
    metrics = sorted({column_name(run.record, m) for *_, run in entries for m in (run.record.get("metrics") or {})
                      if m.startswith("test/")}, key=sort_key)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "section", "configuration", "fingerprint", "run_id", "seed", "status", "epochs", "steps",
                     "wall_time_s", "git_commit", "git_dirty", "record", *metrics])
    for section, table, label, run in entries:
        rec = run.record
        values = {column_name(rec, m): v for m, v in (rec.get("metrics") or {}).items()}
        git = rec.get("git") or {}
        writer.writerow([table.name, section, label, run.fingerprint, rec.get("run_id", run.path.parent.name),
                         rec["seed"], rec["status"], rec.get("epochs", ""), rec.get("steps", ""),
                         rec.get("wall_time_s", ""), git.get("commit") or "", "" if git.get("dirty") is None
                         else int(git["dirty"]), os.path.relpath(run.path, root),
                         *[values.get(m, "") for m in metrics]])
    return buf.getvalue()


_TEX = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text).replace("±", "$\\pm$").replace("↓", "$\\downarrow$") \
        .replace("↑", "$\\uparrow$").replace("—", "--").replace("–", "--")


def render_latex(board: Leaderboard) -> str:
    """The spec's tables as booktabs ``table`` environments (needs ``\\usepackage{booktabs}``)."""
    out = []
    for name in sorted(board.tables):
        table = board.tables[name]
        if not table.rows:
            continue
        columns, best = table.columns(), bests(table)
        caption = f"{name}. " + CAPTION.replace("**Bold**", "Bold") + (
            " Every row: " + ", ".join(table.shared) + "." if table.shared else "")
        out += [r"\begin{table}", r"\centering", r"\begin{tabular}{l r " + "r " * len(columns) + "r r}", r"\toprule",
                " & ".join(tex(h) for h in ["configuration", "n", *map(header, columns), "epochs", "wall (s)"]) + r" \\",
                r"\midrule"]
        for row in _sorted_rows(table):
            cells = []
            for c in columns:
                vals = row.values.get(c)
                text = tex(cell_text(vals, c, len(row.runs))) if vals else "--"
                cells.append(f"\\textbf{{{text}}}" if vals and best[c] == row.fingerprint else text)
            epochs, walls = spread(numbers(row, "epochs"), 0), numbers(row, "wall_time_s")
            out.append(" & ".join([tex(row.label), str(len(row.runs)), *cells, tex(epochs),
                                   fmt(summarise(walls).mean, 1) if walls else "--"]) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", f"\\caption{{{tex(caption)}}}", r"\end{table}", ""]
    return "\n".join(out)


def build_leaderboard(root: str | Path, current: set[str] | None = None) -> Leaderboard:
    runs, problems = load_records(root)
    tables, outside = aggregate(runs, current)
    return Leaderboard(tables, outside, problems, Path(root))


def write_leaderboard(root: str | Path, out: str | Path | None = None, current: set[str] | None = None,
                      html: str | Path | None = None) -> str:
    """Write ``leaderboard.md``, ``leaderboard.csv`` (aggregate), ``runs.csv`` (one line per run) and
    ``leaderboard.tex`` (booktabs)
    for the records under ``root``; ``current``: the fingerprints of the spec being tabulated
    (others are shown apart); ``html``: also write the static site there. Return the Markdown."""
    root = Path(root)
    if not root.is_dir() or not any(root.rglob(RECORD)):
        raise FileNotFoundError(f"no {RECORD} files found under {root}")
    board = build_leaderboard(root, current)
    markdown = render_markdown(board)
    out = Path(out or root)
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text(markdown)
    (out / "leaderboard.csv").write_text(render_csv(board))
    (out / "runs.csv").write_text(render_runs_csv(board, root))
    (out / "leaderboard.tex").write_text(render_latex(board))
    if html is not None:
        from benchmarks.leaderboard_html import write_html

        write_html(board, root, Path(html))
    return markdown
