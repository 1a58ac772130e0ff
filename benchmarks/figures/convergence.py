"""Test bound against passes on a log axis, one curve per row, the published value as a line.

Reads only ``<run>/logs/metrics.csv`` (the ``curve/test_nll_k*`` column that ``curve: {k: ...}``
logs), so it draws runs that are still training as well as finished ones.
"""
from __future__ import annotations

import csv
import math
import textwrap
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


def plot_lines(curves: list[dict]) -> list[dict]:
    """What the figure draws, per row with a curve: ``{label, xs, ys, style, color, published}``.

    ``curves``: ``{label, run_dir, metric, published (or None), final (or None), final_pass (optional)}``.
    Each run's logged curve is drawn once (``style "o-"``), named by the bound it is: a row whose metric is that bound
    names it after itself; a row of another bound (a -L_100 row beside a -L_1 curve) says
    "test -L_1 during training", never passing the curve off as its own bound. Each row's final
    value is a star (``"*"``) at ``final_pass``, the pass of the checkpoint tested (early stopping tests
    its best epoch, not the last), else at the curve's last pass.
    """
    lines, drawn = [], set()
    for i, c in enumerate(curves):
        column, points = read_curve(c["run_dir"])
        if not points:
            continue
        color, bound = f"C{i % 10}", column.split("/")[-1].removeprefix("test_")  # nll_k1
        name = bound.replace("nll_k", "-L_")
        own = c.get("metric", f"test/{bound}") == f"test/{bound}"
        final = c.get("final")
        if not own and final is None:
            continue  # another bound's row without its result yet: nothing of its own to draw
        if str(c["run_dir"]) not in drawn:
            drawn.add(str(c["run_dir"]))
            label = f"{c['label']} ({name})" if own else f"{c['label']}: test {name} during training"
            lines.append({"label": label, "xs": [p for p, _ in points], "ys": [v for _, v in points],
                          "style": "o-", "color": color, "published": None})
        if final is not None:
            label = None if own else f"{c['label']} (final {c['metric'].split('/')[-1].replace('nll_k', '-L_')})"
            lines.append({"label": label, "xs": [c.get("final_pass") or points[-1][0]], "ys": [final],
                          "style": "*", "color": color, "published": None})
        lines[-1]["published"] = c.get("published")  # one dashed line per row, on its last entry
    return lines


def convergence_figure(curves: list[dict], out: str | Path, title: str = "") -> Path | None:
    """The figure of :func:`plot_lines`; None when no run has a curve."""
    fig, ax = pyplot().subplots(figsize=(7.5, 4.8))
    lines = plot_lines(curves)
    drawn = len(lines)
    for line in lines:
        ax.plot(line["xs"], line["ys"], line["style"], ms=3 if line["style"] == "o-" else 10, color=line["color"],
                label=line["label"])
        if line["published"] is not None:
            ax.axhline(line["published"], color=line["color"], ls="--", lw=0.9)
    if not drawn:
        pyplot().close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("passes over the training data (log scale)")
    ax.set_ylabel("test negative bound (nats), lower is better")
    ax.set_title(textwrap.fill(title or "convergence", 110), fontsize=8)  # long titles wrap, not cut
    ax.legend(fontsize=7, frameon=False)
    fig.text(0.01, 0.01, "dashed: published value of the row; star: the row's final test metric", fontsize=7)
    return save(fig, out)
