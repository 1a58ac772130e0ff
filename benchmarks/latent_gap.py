"""Where a Gaussian-latent model's samples go wrong: the prior, or the decoder?

FID of images decoded from three sources of ``z``, same network and sample count:

- ``prior``: ``z ~ p(z)``, the model's own samples (what the leaderboard's FID scores);
- ``aggregate``: ``z`` from a Gaussian moment-matched to the encoder's codes of training images
  (mean and covariance of ``q(z | x)`` mixed over ``x``: ex-post density estimation, Ghosh et al.
  2020), the region the decoder was trained on;
- ``posterior``: ``z ~ q(z | x)`` of test images (reconstructions: a floor, not samples).

A large ``prior`` - ``aggregate`` gap says the prior and the codes disagree; a large ``aggregate``
FID says the decoder itself is poor. Needs the run's checkpoint::

    python -m benchmarks.latent_gap RUN_DIR [--samples 10000] [--fit-images 10000]
"""
from __future__ import annotations

import argparse
import json

import torch
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, Normal


@torch.no_grad()
def aggregate_gaussian(model: torch.nn.Module, x: Tensor, batch_size: int = 500) -> MultivariateNormal:
    """The Gaussian with the mean and covariance of the mixture ``(1/N) sum_n q(z | x_n)``."""
    qs = [model.q(xb) for xb in x.split(batch_size)]
    if not all(isinstance(q, Independent) and isinstance(q.base_dist, Normal) for q in qs):
        raise ValueError(f"latent_gap needs a diagonal-Gaussian q(z | x); {type(model).__name__}'s q is "
                         f"{type(qs[0]).__name__}: use it on the Gaussian VAEs (vae, vae-perceptual, vae-gan, ...)")
    mu = torch.cat([q.base_dist.loc for q in qs]).double()
    var = torch.cat([q.base_dist.scale for q in qs]).double().pow(2)
    # law of total covariance: Cov(E[z|x]) + E[Var(z|x)]
    cov = torch.cov(mu.T, correction=0) + torch.diag(var.mean(0))
    return MultivariateNormal(mu.mean(0), covariance_matrix=cov)


@torch.no_grad()
def latent_gap(run_dir: str, samples: int = 10000, fit_images: int = 10000, seed: int = 0) -> dict[str, float]:
    """``{source: FID}`` for the three sources of ``z`` (module docstring), and the fitted mean's norm."""
    from benchmarks.evaluate import load_run
    from dgm_modules.evaluation.sample_quality import SampleQualityEvaluator

    _, datamodule, module = load_run(run_dir)
    model = module.model.eval()
    datamodule.setup("fit")
    datamodule.setup("test")
    shape = datamodule.dims
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fit = aggregate_gaussian(model, datamodule.train_x[:fit_images].view(-1, *shape).float())
        test_x = datamodule.test_x.view(-1, *shape).float()
    decode = lambda z: model.likelihood(z.float()).mean  # noqa: E731 -- the decoder's mean image
    sources = {
        "prior": model.sample,
        "aggregate": lambda n: decode(fit.sample((n,))),
        "posterior": lambda n: decode(model.q(test_x[torch.randint(len(test_x), (n,))]).sample()),
    }
    evaluator = SampleQualityEvaluator(samples, seed=seed)
    out = {f"fid_{name}": evaluator.evaluate(fn, datamodule)[f"fid_n{samples}"] for name, fn in sources.items()}
    out["aggregate_mean_norm"] = float(fit.loc.norm())
    out["aggregate_variance_mean"] = float(fit.covariance_matrix.diagonal().mean())
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--samples", type=int, default=10000, help="images per source (FID's n)")
    p.add_argument("--fit-images", type=int, default=10000, help="training images whose codes fit the Gaussian")
    args = p.parse_args(argv)
    print(json.dumps(latent_gap(args.run_dir, args.samples, args.fit_images), indent=1))


if __name__ == "__main__":
    main()
