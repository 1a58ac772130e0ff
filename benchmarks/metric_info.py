"""What each reported metric means: its direction, unit and the precision it is shown with.

One declared table, read by the leaderboard (bold, arrows, column order) and by the wandb logger
(``define_metric``). A metric name is matched by its stem: ``test/nll_k5000`` by ``nll``,
``test/fid_n10000`` by ``fid``. The order of the table is the order of the columns: the headline
metric of a protocol comes first (the likelihood bound with the largest k, then FID).
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    stem: str
    direction: str | None  # "lower" or "higher"; None for what is not a score (a spread, a count)
    unit: str
    decimals: int
    description: str


METRICS: tuple[Metric, ...] = (
    Metric("nll_ais", "lower", "nats", 2, "-log p(x) by forward AIS (steps and chains in the run's ais config)"),
    Metric("nll", "lower", "nats", 2, "-L_k on the test split (k in the name)"),
    Metric("bpd", "lower", "bits/dim", 3, "-L_k in bits per dimension"),
    Metric("fid", "lower", "", 2, "Frechet distance in the named feature network's space"),
    Metric("kid", "lower", "", 2, "kernel inception distance, same features as FID"),
    Metric("neg_elbo", "lower", "nats", 2, "negative analytic-KL ELBO"),
    Metric("knn_error", "lower", "error rate", 3, "kNN classification error on latent means (k in the name)"),
    Metric("accuracy", "higher", "fraction", 3, "classification accuracy"),
    Metric("recon_accuracy", "higher", "fraction", 3,
           "test images whose reconstruction the FID columns' classifier labels correctly"),
    Metric("active_units", "higher", "units", 1, "latent dimensions with Cov_x(E_q[z|x]) > 0.01"),
    Metric("snr", "higher", "", 3, "gradient signal-to-noise ratio"),
    Metric("kid_std", None, "", 2, "spread of the KID subsets (not a score)"),
    Metric("bdmc_gap", None, "nats", 2, "reverse minus forward AIS on simulated data: AIS's own error (not a score)"),
    Metric("ais_seconds", None, "s", 1, "wall time of the AIS estimate (its cost)"),
    Metric("bdmc_seconds", None, "s", 1, "wall time of the BDMC check (its cost)"),
    Metric("components_used", None, "components", 1, "components with weight above the threshold (not a score)"),
)
UNKNOWN = Metric("", None, "", 3, "not declared in benchmarks/metric_info.METRICS: no direction")

_STEM = re.compile(r"^(?:\w+/)?(?P<stem>[a-z_]+?)(?:_[knh]\d+)?(?:\s.*)?$")  # k samples, n images, h layer


def stem(name: str) -> str:
    """``test/nll_k5000`` -> ``nll``; ``test/kid_std_n100 [net:sha]`` -> ``kid_std``; ``active_units_h1`` -> ``active_units``."""
    m = _STEM.match(name)
    return m.group("stem") if m else name


def metric_info(name: str) -> Metric:
    s = stem(name)
    return next((m for m in METRICS if m.stem == s), UNKNOWN)


def sort_key(name: str) -> tuple:
    """Declared order first; within a stem the largest k (the tightest bound) first."""
    info = metric_info(name)
    order = METRICS.index(info) if info in METRICS else len(METRICS)
    k = re.search(r"_[kn](\d+)", name)
    return order, -(int(k.group(1)) if k else 0), name


def arrow(direction: str | None) -> str:
    return {"lower": "↓", "higher": "↑"}.get(direction or "", "")
