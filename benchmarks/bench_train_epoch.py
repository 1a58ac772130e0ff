"""Speed contract: the suite's training epoch vs a plain PyTorch loop, side by side in one run.

Same model (784-200-200-50 Gaussian VAE), same data tensor, batch size, objective and
optimiser; the plain loop does only shuffle, dynamic binarisation, forward, backward, step.

    .venv/bin/python -m benchmarks.bench_train_epoch [--data mnist] [--batch-size 100] [--batches 600]
"""
from __future__ import annotations

import argparse
import time

import lightning as L
import torch

from benchmarks.config import build, parse_set, resolve_config
from benchmarks.run import skip_per_step_cuda_probe


def plain_epoch(module, x: torch.Tensor, batch_size: int, n_batches: int) -> float:
    """The loop a researcher would write by hand."""
    opt = module.configure_optimizers()
    model, objective = module.model, module.objective
    model.train()
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    perm = torch.randperm(x.shape[0], generator=gen)
    for b in range(n_batches):
        xb = torch.bernoulli(x[perm[b * batch_size : (b + 1) * batch_size]], generator=gen)
        loss = objective(model, xb).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


class _Timer(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.elapsed = time.perf_counter() - self.t0


def suite_epoch(config: dict, n_batches: int) -> float:
    datamodule, module = build(config)
    timer = _Timer()
    trainer = L.Trainer(**{**config["trainer"], "max_epochs": 1, "limit_train_batches": n_batches,
                           "limit_val_batches": 0}, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                        use_distributed_sampler=False)
    trainer.fit(module, datamodule=datamodule)
    return timer.elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--method", default="vae")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--batches", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    skip_per_step_cuda_probe()  # as every dgm-bench run does; the plain loop gains from it too
    config = resolve_config(args.method, args.data, 0, parse_set([
        f"data.batch_size={args.batch_size}", f"data.data_dir={args.data_dir}", "trainer.accelerator=cpu"]))
    datamodule, module = build(config)
    datamodule.setup("fit")
    x = datamodule.train_x
    plain_epoch(module, x, args.batch_size, 20)  # warm-up
    plain, suite = [], []
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
        plain.append(plain_epoch(build(config)[1], x, args.batch_size, args.batches))
        suite.append(suite_epoch(config, args.batches))
    p_best, s_best = min(plain), min(suite)
    print(f"{args.method} on {args.data}, batch {args.batch_size}, {args.batches} batches, "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"plain PyTorch loop: {p_best:.3f}s ({p_best / args.batches * 1e3:.2f} ms/step)")
    print(f"dgm-bench (Lightning): {s_best:.3f}s ({s_best / args.batches * 1e3:.2f} ms/step)")
    print(f"ratio suite/plain: {s_best / p_best:.3f} (contract: <= 1.03)")


if __name__ == "__main__":
    main()
