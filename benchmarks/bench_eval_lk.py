"""Speed contract: L_5000 evaluation throughput vs a bare matmul of the decoder's shapes.

Measured side by side in one run, on the 784-200-200-50 Gaussian VAE over MNIST test images:
(image, sample) pairs per second of the suite's chunked ``importance_weighted_bounds`` against the
same figure for the decoder's three matrix multiplies alone (no sampling, no nonlinearity, no
likelihood), and the process's peak resident memory for each ``chunk_pairs`` value.

    .venv/bin/python -m benchmarks.bench_eval_lk [--images 10000] [--k 5000] [--chunks 4096,16384,65536]
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from benchmarks.config import build, parse_set, resolve_config
from benchmarks.run import skip_per_step_cuda_probe
from dgm_modules.evaluation.bounds import importance_weighted_bounds


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_bound(decoder: torch.nn.Sequential, pairs: int, repeats: int) -> float:
    """Pairs per second of the decoder's matmuls alone on a [pairs, latent] input."""
    weights = [m.weight.detach().T.contiguous() for m in decoder if isinstance(m, torch.nn.Linear)]
    h0 = torch.randn(pairs, weights[0].shape[0])
    outs = [torch.empty(pairs, w.shape[1]) for w in weights]
    with torch.inference_mode():
        for _ in range(2):
            h = h0
            for w, o in zip(weights, outs):
                h = torch.mm(h, w, out=o)
        t0 = time.perf_counter()
        for _ in range(repeats):
            h = h0
            for w, o in zip(weights, outs):
                h = torch.mm(h, w, out=o)
        return pairs * repeats / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=100, help="test images per evaluation batch")
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--chunks", default="4096,16384,65536", help="chunk_pairs values, ascending")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    skip_per_step_cuda_probe()
    config = resolve_config("vae", "mnist", 0, parse_set([f"data.data_dir={args.data_dir}"]))
    datamodule, module = build(config)
    datamodule.setup("test")
    model = module.model.eval()
    x = datamodule.test_x[: args.images]
    total = x.shape[0] * args.k
    print(f"L_{args.k} over {x.shape[0]} MNIST test images, 784-200-200-50 VAE, {args.threads} thread(s)")
    rss0 = peak_rss_mib()
    for chunk in sorted(int(c) for c in args.chunks.split(",")):
        bound = matmul_bound(model.generative, chunk, repeats=max(3, 2_000_000 // chunk))
        t0 = time.perf_counter()
        with torch.inference_mode():
            for xb in x.split(args.batch):
                importance_weighted_bounds(model, xb, [args.k], max_pairs=chunk)
        rate = total / (time.perf_counter() - t0)
        print(f"chunk_pairs={chunk:>6}: suite {rate:,.0f} pairs/s | bare decoder matmul {bound:,.0f} pairs/s"
              f" | ratio {rate / bound:.2f} (contract >= 0.80) | peak RSS {peak_rss_mib():,.0f} MiB"
              f" (+{peak_rss_mib() - rss0:,.0f} over the data)")


if __name__ == "__main__":
    main()
