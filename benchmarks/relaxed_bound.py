"""The relaxed objective of a Gumbel-Softmax / Concrete SBN, scored on the test split beside the discrete one.

The suite scores every SBN as the discrete model it defines: ``test/nll_k1`` is the -ELBO with hard
samples and exact masses. A model trained by the Gumbel-Softmax (Concrete) relaxation optimised
another quantity: q's relaxed samples at temperature tau fed to the decoder, with the masses extended
to the simplex. That quantity is not a bound on the discrete model's -log p(x); this module measures
it on the same test images as a diagnostic of how much of a relaxed method's discrete score is the
relaxation (Jang et al. 2017's Table 1 does not say which of the two it reports).

    python -m benchmarks.relaxed_bound RUN_DIR [--ckpt best|last] [--temperature 0.5] [--out FILE]

For a straight-through model the forward samples are hard, so both numbers estimate the same thing.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.records import command_line, write_json_atomic
from benchmarks.run import CHECKPOINTS


@torch.no_grad()
def neg_elbos(model: torch.nn.Module, x: Tensor, temperature: float | None, batch_size: int = 500,
              generator_seed: int = 0) -> Tensor:
    """One-sample -ELBO per image: discrete (``temperature=None``, eval mode) or relaxed at a fixed
    ``temperature`` (the model's ``relaxed_at``); the model's mode is restored afterwards."""
    torch.manual_seed(generator_seed)
    was_training = model.training
    relaxed = model.relaxed_at(temperature) if temperature is not None else nullcontext()
    if temperature is None:
        model.eval()
    try:
        with relaxed:
            return torch.cat([-(model.log_joint(xb, z) - log_q)[0].double()
                              for xb in x.split(batch_size) for z, log_q in [model.sample_q(xb, k=1)]])
    finally:
        model.train(was_training)


def _summary(values: Tensor) -> dict:
    return {"mean": float(values.mean()), "stderr": float(values.std() / math.sqrt(len(values))), "n": len(values)}


def relaxed_report(run_dir: str | Path, ckpt: str | None = None, temperature: float = 0.5) -> dict:
    """Discrete and relaxed test -ELBO of a run's checkpoint: ``best``, ``last`` or (None) the one its
    record tested (``best`` where early stopping kept one)."""
    from benchmarks.evaluate import load_run

    if ckpt is None:
        ckpt = "best" if (Path(run_dir) / CHECKPOINTS / "best.ckpt").exists() else "last"
    path = Path(run_dir) / CHECKPOINTS / f"{ckpt}.ckpt"
    config, datamodule, module = load_run(run_dir, ckpt=path)
    datamodule.setup("test")
    x, model = datamodule.test_x.float(), module.model
    discrete, relaxed = neg_elbos(model, x, None), neg_elbos(model, x, temperature)
    return {"run_id": Path(run_dir).name, "checkpoint": str(path), "temperature": temperature,
            "relaxation": model.relaxation, "test/neg_elbo_discrete": _summary(discrete),
            "test/neg_elbo_relaxed": _summary(relaxed),
            "command": ["python", "-m", "benchmarks.relaxed_bound", *command_line()[1:]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.relaxed_bound", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a run folder of a relaxed SBN (sbn-gumbel, sbn-gumbel-st) with its checkpoints")
    p.add_argument("--ckpt", choices=["best", "last"], default=None,
                   help="checkpoint scored (default: best.ckpt where the run kept one, else last.ckpt)")
    p.add_argument("--temperature", type=float, default=0.5,
                   help="relaxation temperature (default 0.5, the annealing floor of the Gumbel-Softmax methods)")
    p.add_argument("--out", help="JSON file to write")
    args = p.parse_args(argv)
    if args.temperature <= 0:
        p.error(f"--temperature must be > 0, got {args.temperature}")
    try:
        report = relaxed_report(args.run_dir, args.ckpt, args.temperature)
    except (FileNotFoundError, ValueError) as err:
        print(f"relaxed_bound: error: {err}", file=sys.stderr)
        return 2
    if args.out:
        write_json_atomic(Path(args.out), report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
