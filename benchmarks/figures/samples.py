"""Sample grids of trained runs, and reconstructions of the same test images by several runs.

``dgm-bench figure samples RUN --out x.png``: a grid of ``model.sample(n)``.
``dgm-bench figure recon RUN_A RUN_B ... --out y.png``: the first test images in the top row,
then each run's reconstruction (decoder mean at the posterior mean) in a row of its own: the
pixel-loss VAE, the perceptual VAE and the VAE-GAN side by side (Larsen et al. 2016, fig. 4).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from benchmarks.figures import pyplot, save
from benchmarks.figures.latent_usage import load_run
from dgm_modules.models.capabilities import ExplicitLatent


def _grid(images: Tensor, nrow: int) -> Tensor:
    """``[N, C, H, W]`` in [0, 1] -> one ``[H', W', C]`` array (grey images as one channel)."""
    from torchvision.utils import make_grid

    grid = make_grid(images.clamp(0, 1).float(), nrow=nrow, padding=1, pad_value=1.0)
    return grid.permute(1, 2, 0)[..., :1] if images.shape[1] == 1 else grid.permute(1, 2, 0)


@torch.no_grad()
def samples_figure(run_dir: str | Path, out: str | Path, n: int = 64, seed: int = 0) -> Path:
    """A grid of ``n`` samples of a trained run, written to ``out``."""
    record, module, _ = load_run(run_dir)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x = module.model.sample(n).view(n, *module.model.input_shape)
    plt = pyplot()
    nrow = int(n ** 0.5) or 1
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(_grid(x, nrow).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"{record['method']} on {record['dataset']} (seed {record['seed']}): {n} samples")
    return save(fig, out)


@torch.no_grad()
def reconstruct(model: torch.nn.Module, x: Tensor) -> Tensor:
    """The decoder's mean image at the posterior mean, ``[B, *input_shape]``."""
    if not isinstance(model, ExplicitLatent):
        raise ValueError(f"{type(model).__name__} has no encoder q(x) and decoder likelihood(z) to reconstruct with")
    return model.likelihood(model.q(x).mean).mean.view_as(x)


def recon_figure(run_dirs: Sequence[str | Path], out: str | Path, n: int = 10) -> Path:
    """Top row: the first ``n`` test images; below, each run's reconstructions of them."""
    runs = [load_run(r) for r in run_dirs]
    datasets = {rec["dataset"] for rec, _, _ in runs}
    if len(datasets) != 1:
        raise ValueError(f"recon: all runs must be on one dataset, got {sorted(datasets)}")
    x = runs[0][2][:n]
    rows = [("test images", x)] + [(f"{rec['method']} (seed {rec['seed']})", reconstruct(m.model, x)) for rec, m, _ in runs]
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.7, 0.9 * len(rows)), squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows):
        ax.imshow(_grid(images, n).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(label, fontsize=8, loc="left")
    return save(fig, out)
