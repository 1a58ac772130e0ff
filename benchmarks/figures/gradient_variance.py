"""Figures of gradient-estimator variance (the files ``gradvar.json`` / ``dgm-bench gradvar`` write).

- :func:`variance_curves_figure`: log ``trace_cov`` (top row) and the median per-coordinate SNR
  (bottom row) against the training step, one line per estimator, one column per parameter group.
- :func:`snr_vs_k_figure`: the SNR of the IWAE gradient against ``k``, per group (Rainforth et al.
  2018: the inference network's SNR falls as ``k`` grows, the generative network's rises).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from benchmarks.callbacks import GRADVAR_FILE
from benchmarks.figures import pyplot, save


def load_history(sources: Iterable[str | Path]) -> tuple[list[dict], dict]:
    """Measurements (sorted by step) from run folders (their ``gradvar.json``) or JSON files; the
    estimators measured at the same step in several files are merged into one entry."""
    by_step: dict = {}
    protocol: dict = {}
    for src in sources:
        path = Path(src)
        path = path / GRADVAR_FILE if path.is_dir() else path
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: expected a gradvar JSON file or a run folder "
                                    f"with {GRADVAR_FILE}")
        data = json.loads(path.read_text())
        protocol = protocol or data.get("protocol", {})
        for entry in data.get("history", []):
            merged = by_step.setdefault(entry.get("step"), {**entry, "estimators": {}})
            merged["estimators"].update(entry["estimators"])
    history = list(by_step.values())
    if not history:
        raise ValueError("no gradient-variance measurements in " + ", ".join(map(str, sources)))
    return sorted(history, key=lambda e: e.get("step") or 0), protocol


def _series(history: list[dict], group: str, stat: str) -> dict[str, tuple[list, list]]:
    out: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for entry in history:
        for label, groups in entry["estimators"].items():
            stats = groups.get(group)
            if isinstance(stats, dict) and stats.get(stat) is not None:
                out[label][0].append(entry.get("step") or 0)
                out[label][1].append(stats[stat])
    return out


def snr_floor(samples: int | None, summary: str = "median") -> float | None:
    """The SNR summary of coordinates with no signal (zero mean) from ``M`` draws: ``|mean| / std``
    is then about ``|N(0, 1)| / sqrt(M)``, whose mean is ``sqrt(2 / pi) / sqrt(M)`` and median
    ``0.674 / sqrt(M)``. An SNR near this level cannot be told from no signal at this ``M``."""
    if not samples:
        return None
    return (math.sqrt(2 / math.pi) if summary == "mean" else 0.6745) / math.sqrt(samples)


def variance_curves_figure(sources: Iterable[str | Path], out: str | Path,
                           groups: Iterable[str] = ("phi", "theta"), title: str | None = None) -> Path:
    """Log gradient variance and median SNR against training step, one line per estimator."""
    sources = list(sources)
    history, protocol = load_history(sources)
    groups = [g for g in groups if any(g in v for e in history for v in e["estimators"].values())]
    plt = pyplot()
    fig, axes = plt.subplots(2, len(groups), figsize=(5.5 * len(groups), 7), squeeze=False, sharex=True)
    for col, group in enumerate(groups):
        panels = (("trace_cov", "tr Cov[g] (log scale)"), ("snr_median", "median |E g| / std g"))
        for row, (stat, ylabel) in enumerate(panels):
            ax = axes[row][col]
            for label, (steps, values) in sorted(_series(history, group, stat).items()):
                ax.plot(steps, values, marker="o", ms=3, label=label)
            ax.set_yscale("log")
            if stat == "snr_median" and snr_floor(protocol.get("samples")):
                ax.axhline(snr_floor(protocol["samples"]), color="grey", ls=":", lw=1)
                ax.annotate("no-signal level", (0.01, snr_floor(protocol["samples"])),
                            xycoords=("axes fraction", "data"), fontsize=7, color="grey", va="bottom")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both")
            if row == 0:
                ax.set_title(f"{group} ({'inference network' if group == 'phi' else 'generative model'})")
            else:
                ax.set_xlabel("training step")
    axes[0][-1].legend(fontsize=8, loc="best")
    m, b = protocol.get("samples"), protocol.get("batch_size")
    fig.suptitle(title or f"gradient-estimator variance (M={m}, batch={b}) - {', '.join(map(str, sources))}"[:150],
                 fontsize=9)
    return save(fig, out)


#: multi-sample gradient estimators plotted against k: the IWAE gradient and its DReG variant
K_FAMILIES = ("iwae", "dreg")


def iwae_k(estimator: dict) -> tuple[str, int] | None:
    """``(family, k)`` of an IWAE or DReG estimator spec (``{"objective": {"class_path", "init_args": {"k"}}}``)."""
    spec = estimator.get("objective")
    if isinstance(spec, str):
        spec = {"class_path": spec, "init_args": {}}
    if not isinstance(spec, dict) or spec.get("class_path") not in K_FAMILIES or estimator.get("model_overrides"):
        return None
    return spec["class_path"], int((spec.get("init_args") or {}).get("k", 5))


def snr_vs_k_figure(sources: Iterable[str | Path], out: str | Path, groups: Iterable[str] = ("phi", "theta"),
                    steps: Iterable[int] | None = None) -> Path:
    """SNR (mean and median over coordinates) of the IWAE (and DReG) gradient against ``k``: a line
    per step and estimator family."""
    sources = list(sources)
    history, protocol = load_history(sources)
    ks: dict[str, tuple[str, int]] = {}
    for src in sources:  # labels -> (family, k) from each file's estimator list
        path = Path(src) / GRADVAR_FILE if Path(src).is_dir() else Path(src)
        for est in json.loads(path.read_text()).get("protocol", {}).get("estimators", []):
            fk = iwae_k(est)
            if fk is not None:
                ks[est["label"]] = fk
    if not ks:
        raise ValueError("no IWAE or DReG estimators (objective class_path 'iwae'/'dreg') in "
                         + ", ".join(map(str, sources)))
    wanted = None if steps is None else set(steps)
    groups = list(groups)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    cmap = plt.get_cmap("viridis")
    entries = [e for e in history if wanted is None or e.get("step") in wanted]
    for col, group in enumerate(groups):
        ax = axes[0][col]
        for i, entry in enumerate(entries):
            colour = cmap(i / max(1, len(entries) - 1))
            for family, marker in zip(K_FAMILIES, ("o", "^")):
                points = sorted((ks[l][1], g[group]) for l, g in entry["estimators"].items()
                                if l in ks and ks[l][0] == family and isinstance(g.get(group), dict))
                if not points:
                    continue
                x = [k for k, _ in points]
                label = f"{family}, step {entry.get('step')}"
                ax.plot(x, [s["snr_mean"] for _, s in points], marker=marker, color=colour, label=label)
                ax.plot(x, [s["snr_median"] for _, s in points], marker=marker, ls="--", color=colour)
        if protocol.get("samples"):
            m = protocol["samples"]
            ax.axhline(snr_floor(m, "mean"), color="grey", ls="-", lw=1, label="no-signal level (mean)")
            ax.axhline(snr_floor(m), color="grey", ls="--", lw=1, label="no-signal level (median)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("k (importance samples)")
        ax.set_ylabel("per-coordinate SNR |E g| / std g")
        ax.set_title(f"IWAE / DReG gradient SNR, {group}")
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"solid: mean, dashed: median over coordinates; M={protocol.get('samples')}, "
                 f"batch={protocol.get('batch_size')} (cf. Rainforth et al. 2018)", fontsize=9)
    return save(fig, out)


def cmd_figure_gradvar(args) -> int:
    print(f"figure: {variance_curves_figure(args.sources, args.out, args.group)}")
    return 0


def cmd_figure_gradvar_snr(args) -> int:
    print(f"figure: {snr_vs_k_figure(args.sources, args.out, args.group)}")
    return 0


SOURCES_HELP = "run folders (their gradvar.json) or JSON files of `dgm-bench gradvar`"


def add_figure_parsers(figure) -> None:
    """``figure gradvar SOURCES... [--out]`` and ``figure gradvar-snr SOURCES... [--out]``."""
    curves = figure.add_parser("gradvar", help="gradient variance and SNR against training step, per estimator")
    curves.add_argument("sources", nargs="+", help=SOURCES_HELP)
    curves.add_argument("--group", nargs="+", default=["phi", "theta"], choices=["phi", "theta"])
    curves.add_argument("--out", default="gradvar.png", help="image file to write (default: gradvar.png)")
    curves.set_defaults(fn=cmd_figure_gradvar)
    snr = figure.add_parser("gradvar-snr", help="SNR of the IWAE gradient against k (Rainforth et al. 2018)")
    snr.add_argument("sources", nargs="+", help=SOURCES_HELP)
    snr.add_argument("--group", nargs="+", default=["phi", "theta"], choices=["phi", "theta"])
    snr.add_argument("--out", default="gradvar_snr.png", help="image file to write (default: gradvar_snr.png)")
    snr.set_defaults(fn=cmd_figure_gradvar_snr)
