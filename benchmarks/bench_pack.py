"""Speed of packed training: cell-steps per second of N packed cells against N single cells.

Side by side in one run, through Lightning as the suite trains them: the IWAE setup
(784-200-200-50 Gaussian VAE, ``iwae`` objective with k samples) on MNIST, N seeds. "single" trains
the N cells one after another (one Trainer each); "packed" trains them as one
:class:`~dgm_modules.methods.packed.PackedMethod`. Both time the same steps after a warm-up.
Beside them, "bare": the N cells' arithmetic alone, one after another in a plain PyTorch loop (no
Lightning, no logging): bare/single is what removing every per-step overhead could give; above
it, packing must win on the arithmetic itself (batched matmuls), which one CPU thread barely does.

    .venv/bin/python -m benchmarks.bench_pack [--quick] [--steps 60] [--data mnist]
"""
from __future__ import annotations

import argparse
import gc
import itertools
import time

import lightning as L
import torch

from benchmarks.bench_train_epoch import plain_epoch
from benchmarks.config import build, parse_set, resolve_config
from benchmarks.run import skip_per_step_cuda_probe
from dgm_modules.methods.packed import PackedDataModule, PackedMethod


class _StepTimer(L.Callback):
    """Seconds from the start of batch ``warmup`` to the end of training."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0 = warmup, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.elapsed = time.perf_counter() - self.t0


def _fit(module, datamodule, config: dict, steps: int, warmup: int) -> float:
    timer = _StepTimer(warmup)
    trainer = L.Trainer(**{**config["trainer"], "max_steps": warmup + steps, "max_epochs": -1,
                           "limit_val_batches": 0, "num_sanity_val_steps": 0}, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], use_distributed_sampler=False)
    trainer.fit(module, datamodule=datamodule)
    return timer.elapsed


def configs(args, n: int, batch: int, k: int) -> list[dict]:
    return [resolve_config("iwae", args.data, seed, parse_set([
        f"data.batch_size={batch}", f"data.data_dir={args.data_dir}", f"objective.k={k}",
        "trainer.accelerator=cpu", "model.hidden=[200, 200]", "model.latent_dim=50"])) for seed in range(n)]


def single_seconds(cfgs: list[dict], steps: int, warmup: int) -> float:
    total = 0.0
    for config in cfgs:
        datamodule, module = build(config)
        total += _fit(module, datamodule, config, steps, warmup)
    return total


def bare_seconds(cfgs: list[dict], steps: int) -> float:
    total = 0.0
    for config in cfgs:
        datamodule, module = build(config)
        datamodule.setup("fit")
        plain_epoch(module, datamodule.train_x, config["data"]["init_args"]["batch_size"], 5)  # warm-up
        total += plain_epoch(module, datamodule.train_x, config["data"]["init_args"]["batch_size"], steps)
    return total


def packed_seconds(cfgs: list[dict], steps: int, warmup: int) -> float:
    replicas, datamodules, states = [], [], []
    for config in cfgs:
        datamodule, module = build(config)
        replicas.append(module)
        datamodules.append(datamodule)
        states.append(torch.get_rng_state())
    return _fit(PackedMethod(replicas, states), PackedDataModule(datamodules), cfgs[0], steps, warmup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--steps", type=int, default=60, help="timed steps per cell (after --warmup)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="N in {1, 3}, batch 20, k in {1, 5}")
    p.add_argument("--n", type=int, nargs="+", default=None)
    p.add_argument("--batch", type=int, nargs="+", default=None)
    p.add_argument("--k", type=int, nargs="+", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    skip_per_step_cuda_probe()
    ns = args.n or ([1, 3] if args.quick else [1, 3, 12])
    batches = args.batch or ([20] if args.quick else [20, 100])
    ks = args.k or ([1, 5] if args.quick else [1, 5, 50])
    print(f"iwae 784-200-200-50 on {args.data}, {args.steps} timed steps a cell after {args.warmup}, "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"{'N':>3} {'batch':>5} {'k':>3} | {'single cell-steps/s':>19} {'packed cell-steps/s':>19} "
          f"{'bare cell-steps/s':>17} | {'packed/single':>13} {'bare/single':>11}")
    t_start = time.perf_counter()
    for batch, k, n in itertools.product(batches, ks, ns):
        cfgs = configs(args, n, batch, k)
        single, packed, bare = [], [], []
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all alike
            single.append(single_seconds(cfgs, args.steps, args.warmup))
            packed.append(packed_seconds(cfgs, args.steps, args.warmup))
            bare.append(bare_seconds(cfgs, args.steps))
            gc.collect()  # N copies of the models and optimiser states, freed before the next
        s_rate, p_rate, b_rate = (n * args.steps / min(t) for t in (single, packed, bare))
        print(f"{n:>3} {batch:>5} {k:>3} | {s_rate:>19.1f} {p_rate:>19.1f} {b_rate:>17.1f} | "
              f"{p_rate / s_rate:>13.2f} {b_rate / s_rate:>11.2f}", flush=True)
    print(f"wall {time.perf_counter() - t_start:.0f}s; target: packed/single >= 1.5 at N=3, batch 20 (CPU)")


if __name__ == "__main__":
    main()
