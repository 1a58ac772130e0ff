"""Speed contract: the suite's training epoch vs a plain PyTorch loop, side by side in one run.

Same model (784-200-200-50 Gaussian VAE), same data tensor, batch size, objective and
optimiser; the plain loop does only shuffle, dynamic binarisation, forward, backward, step.
The suite runs as configured (one optimiser step per Lightning step) and with
``module.steps_per_call`` S (S steps per Lightning step, the same updates): the second row is the
contract's, Lightning's per-step cost paid once per S steps.

    .venv/bin/python -m benchmarks.bench_train_epoch [--data mnist] [--batch-size 100] [--batches 600] [--steps-per-call 8]
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


def suite_epoch(config: dict, n_batches: int, steps_per_call: int = 1) -> float:
    config = {**config, "module": {**config["module"], "init_args": {**config["module"]["init_args"],
                                                                        "steps_per_call": steps_per_call}}}
    datamodule, module = build(config)
    timer = _Timer()
    # Lightning's limit counts its own steps: groups of steps_per_call batches
    trainer = L.Trainer(**{**config["trainer"], "max_epochs": 1, "limit_train_batches": n_batches // steps_per_call,
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
    p.add_argument("--steps-per-call", type=int, default=8, help="module.steps_per_call of the second suite row")
    args = p.parse_args()
    if args.steps_per_call < 1 or args.batches % args.steps_per_call:
        p.error(f"--steps-per-call must be >= 1 and divide --batches ({args.batches}); got {args.steps_per_call}")
    torch.set_num_threads(args.threads)
    skip_per_step_cuda_probe()  # as every dgm-bench run does; the plain loop gains from it too
    config = resolve_config(args.method, args.data, 0, parse_set([
        f"data.batch_size={args.batch_size}", f"data.data_dir={args.data_dir}", "trainer.accelerator=cpu"]))
    datamodule, module = build(config)
    datamodule.setup("fit")
    x = datamodule.train_x
    plain_epoch(module, x, args.batch_size, 20)  # warm-up
    plain, suite, grouped = [], [], []
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all alike
        plain.append(plain_epoch(build(config)[1], x, args.batch_size, args.batches))
        suite.append(suite_epoch(config, args.batches))
        grouped.append(suite_epoch(config, args.batches, args.steps_per_call))
    p_best = min(plain)
    print(f"{args.method} on {args.data}, batch {args.batch_size}, {args.batches} batches, "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"plain PyTorch loop: {p_best:.3f}s ({p_best / args.batches * 1e3:.2f} ms/step)")
    for label, times in (("1 step a Lightning step", suite), (f"steps_per_call={args.steps_per_call}", grouped)):
        best = min(times)
        print(f"dgm-bench (Lightning, {label}): {best:.3f}s ({best / args.batches * 1e3:.2f} ms/step), "
              f"ratio suite/plain {best / p_best:.3f}")
    print("contract: suite/plain <= 1.03")


if __name__ == "__main__":
    main()
