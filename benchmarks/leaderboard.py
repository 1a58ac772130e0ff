"""Aggregate run records into one table per (dataset, protocol): mean +- std over seeds.

Numbers made under different protocols never share a column or a table: the table key holds
the dataset, binarisation and split sizes; the metric name holds ``k`` (``nll_k5000``) and an
FID's column holds its feature network's checksum.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from benchmarks.records import RECORD

#: metric-name prefixes where larger is better; everything else (nll, neg_elbo, fid, kid) is lower-better
HIGHER_IS_BETTER = ("accuracy", "acc", "snr", "active_units")


def load_records(root: str | Path) -> list[dict]:
    records = []
    for path in sorted(Path(root).rglob(RECORD)):
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue  # a torn file cannot be a completed record (records are written atomically)
    return records


def table_key(record: dict) -> str:
    p = record.get("protocol", {})
    split = p.get("split", {})
    sizes = "/".join(str(split.get(s)) for s in ("train", "val", "test"))
    return f"{record['dataset']} (binarization={p.get('binarization')}, train/val/test={sizes})"


def column_name(record: dict, metric: str) -> str:
    p = record.get("protocol", {})
    if "fid" in metric or "kid" in metric:
        sha = (p.get("feature_net_sha256") or "?")[:8]
        return f"{metric} [{p.get('feature_net', '?')}:{sha}]"
    return metric


def _row_label(record: dict) -> str:
    setting = record.get("setting", "default")
    return record["method"] if setting == "default" else f"{record['method']} ({setting})"


def higher_is_better(column: str) -> bool:
    name = column.split("/")[-1]
    return name.startswith(HIGHER_IS_BETTER)


def aggregate(records: Iterable[dict]) -> dict[str, dict]:
    """``{table: {"rows": {label: {column: [values]}}, "failed": [...]}}``, completed runs only."""
    tables: dict[str, dict] = defaultdict(lambda: {"rows": defaultdict(lambda: defaultdict(list)), "failed": []})
    for rec in records:
        table = tables[table_key(rec)]
        if rec.get("status") != "completed":
            err = rec.get("error") or {}
            table["failed"].append((_row_label(rec), rec.get("seed"), rec.get("status"), err.get("step"),
                                    err.get("message", "")))
            continue
        for metric, value in sorted(rec.get("metrics", {}).items()):
            if metric.startswith("test/") and isinstance(value, (int, float)):
                table["rows"][_row_label(rec)][column_name(rec, metric)].append(float(value))
    return tables


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def render(tables: dict[str, dict]) -> tuple[str, str]:
    """Markdown and CSV of the aggregated tables; the best mean per column is marked in bold."""
    md, buf = [], io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "method", "metric", "mean", "std", "n_seeds", "best"])
    for name in sorted(tables):
        rows, failed = tables[name]["rows"], tables[name]["failed"]
        columns = sorted({c for cols in rows.values() for c in cols})
        md.append(f"### {name}\n")
        if columns:
            best = {}
            for c in columns:
                means = {r: _mean_std(cols[c])[0] for r, cols in rows.items() if cols.get(c)}
                pick = max if higher_is_better(c) else min
                # a spread (kid_std) or a count is not a score: nothing to mark
                best[c] = None if "_std" in c or "components_used" in c else pick(means, key=means.get)
            md.append("| method | " + " | ".join(f"{c.removeprefix('test/')} (n)" for c in columns) + " |")
            md.append("|---|" + "---|" * len(columns))
            for r in sorted(rows):
                cells = []
                for c in columns:
                    vals = rows[r].get(c)
                    if not vals:
                        cells.append("—")
                        continue
                    mean, std = _mean_std(vals)
                    text = f"{mean:.2f} ± {std:.2f} ({len(vals)})"
                    cells.append(f"**{text}**" if best[c] == r else text)
                    writer.writerow([name, r, c, f"{mean:.6f}", f"{std:.6f}", len(vals), int(best[c] == r)])
                md.append(f"| {r} | " + " | ".join(cells) + " |")
            md.append("")
        if failed:
            md.append("Not averaged in (failed or diverged):\n")
            for label, seed, status, step, msg in sorted(failed, key=str):
                md.append(f"- {label}, seed {seed}: **{status}** at step {step}: {msg.splitlines()[0] if msg else ''}")
            md.append("")
    return "\n".join(md).rstrip() + "\n", buf.getvalue()


def write_leaderboard(root: str | Path, out: str | Path | None = None) -> str:
    """Write ``leaderboard.md`` and ``leaderboard.csv`` for the records under ``root``; return the Markdown."""
    records = load_records(root)
    if not records:
        raise FileNotFoundError(f"no {RECORD} files found under {root}")
    markdown, csv_text = render(aggregate(records))
    out = Path(out or root)
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text(markdown)
    (out / "leaderboard.csv").write_text(csv_text)
    return markdown
