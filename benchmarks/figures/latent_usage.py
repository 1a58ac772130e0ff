"""How much of its latent space a model uses (Nalisnick & Smyth 2017, figure 4 in spirit).

For a stick-breaking or mixture-prior model: the mean weight of each stick / component over the
test set. For a Gaussian VAE: the KL of each latent dimension, ``E_x KL(q(z_d | x) || p(z_d))``,
sorted from largest to smallest. Two runs side by side.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor
from torch.distributions import Independent, kl_divergence

from benchmarks.config import build
from benchmarks.figures import pyplot, save
from benchmarks.records import RECORD
from benchmarks.run import CHECKPOINTS
from dgm_modules.evaluation.latent_structure import component_weights, encode
from dgm_modules.models.capabilities import ExplicitLatent


def load_run(run_dir: str | Path) -> tuple[dict, torch.nn.Module, Tensor]:
    """``(record, trained LightningModule in eval mode, test images)`` of a run folder."""
    run_dir = Path(run_dir)
    record_path, ckpt = run_dir / RECORD, run_dir / CHECKPOINTS / "last.ckpt"
    for path in (record_path, ckpt):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: expected a dgm-bench run folder with a checkpoint")
    record = json.loads(record_path.read_text())
    datamodule, module = build(record["config"])
    module.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    datamodule.setup("test")
    return record, module.eval(), datamodule.test_x


@torch.no_grad()
def latent_usage(model: torch.nn.Module, x: Tensor) -> tuple[Tensor, str]:
    """Per-component mean weight, else per-dimension KL (sorted); with the axis label."""
    weights = component_weights(model, x[:1])
    if weights is not None:
        return encode(lambda xs: component_weights(model, xs), x).double().mean(0), "mean weight E[pi_k] over test set"
    if not isinstance(model, ExplicitLatent):
        raise ValueError(f"{type(model).__name__} has neither component_weights nor q/prior to measure")

    def per_dim_kl(xs: Tensor) -> Tensor:
        qd, pd = model.q(xs), model.prior()
        qd, pd = (d.base_dist if isinstance(d, Independent) else d for d in (qd, pd))
        return kl_divergence(qd, pd)

    kl = encode(per_dim_kl, x).double().mean(0)
    return kl.sort(descending=True).values, "KL per latent dimension (nats), sorted"


def latent_usage_figure(run_a: str | Path, run_b: str | Path, out: str | Path, threshold: float = 0.01) -> Path:
    """Bar charts of the latent usage of two runs side by side, written to ``out``."""
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 3.8))
    for ax, run in zip(axes, (run_a, run_b)):
        record, module, x = load_run(run)
        values, label = latent_usage(module.model, x)
        ax.bar(range(1, len(values) + 1), values.numpy(), color="tab:blue")
        if label.startswith("mean weight"):
            ax.axhline(threshold, color="tab:red", lw=0.8, ls="--", label=f"threshold {threshold:g}")
            ax.legend(frameon=False)
        ax.set_xlabel("component (stick order)" if label.startswith("mean weight") else "latent dimension (sorted)")
        ax.set_ylabel(label)
        ax.set_title(f"{record['method']} on {record['dataset']} (seed {record['seed']})")
    return save(fig, out)
