"""Test bound against passes on a log axis, one curve per row, the published value as a line.

Reads only ``<run>/logs/metrics.csv`` (the ``curve/test_nll_k*`` column that ``curve: {k: ...}``
logs), so it draws runs that are still training as well as finished ones.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from benchmarks.figures import pyplot, save


def read_curve(run_dir: str | Path) -> tuple[str, list[tuple[int, float]]]:
    """``(column, [(passes, -L_k)])`` of a run's test curve; an empty list when it has none yet."""
    path = Path(run_dir) / "logs" / "metrics.csv"
    if not path.exists():
        return "", []
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for c in (rows[0].keys() if rows else []) if c.startswith("curve/test_nll_k")]
    if not columns:
        return "", []
    column = columns[0]
    points = {int(r["epoch"]) + 1: float(r[column]) for r in rows if r.get(column) not in (None, "")}
    return column, sorted((p, v) for p, v in points.items() if math.isfinite(v))


def convergence_figure(curves: list[dict], out: str | Path, title: str = "") -> Path | None:
    """``curves``: ``{label, run_dir, published (or None), final (or None)}``; None when no run has a curve."""
    fig, ax = pyplot().subplots(figsize=(7.5, 4.8))
    drawn = 0
    for i, c in enumerate(curves):
        column, points = read_curve(c["run_dir"])
        if not points:
            continue
        color = f"C{i % 10}"
        ax.plot([p for p, _ in points], [v for _, v in points], "o-", ms=3, color=color,
                label=f"{c['label']} ({column.split('/')[-1].replace('nll_', '-L_')})")
        if c.get("final") is not None:
            ax.plot([points[-1][0]], [c["final"]], "*", ms=10, color=color)
        if c.get("published") is not None:
            ax.axhline(c["published"], color=color, ls="--", lw=0.9)
        drawn += 1
    if not drawn:
        pyplot().close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("passes over the training data (log scale)")
    ax.set_ylabel("test negative bound (nats), lower is better")
    ax.set_title(title or "convergence", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.text(0.01, 0.01, "dashed: published value of the row; star: the row's final test metric", fontsize=7)
    return save(fig, out)
