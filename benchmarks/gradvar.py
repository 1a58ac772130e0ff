"""``dgm-bench gradvar RUN_DIR``: gradient-estimator variance of a saved checkpoint.

Rebuilds the run (:func:`benchmarks.evaluate.load_run`), draws the same fixed minibatch as the
run's callback would (:func:`~dgm_modules.evaluation.gradient_variance.fixed_minibatch`) and measures
every estimator at the checkpoint's parameters. The output has the callback's format (a history
with one entry), so the figures read both.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from benchmarks.callbacks import GRADVAR_FILE, measure
from benchmarks.records import read_record, write_json_atomic
from dgm_modules.evaluation.gradient_variance import GROUPS

#: the default comparison per model (else the run's own objective)
DEFAULT_BY_MODEL = {"gaussian-vae": "vae", "sbn": "sbn"}


def gradvar_checkpoint(run_dir: str | Path, estimators: list | None = None, samples: int = 100,
                       groups: tuple[str, ...] = GROUPS, batch_size: int = 0, seed: int = 0,
                       adapt_lr: float = 1e-3, device: str = "cpu") -> dict:
    """``{"protocol", "history": [{"step", "estimators": {label: {group: stats}}}], "run_dir"}``."""
    import torch

    from benchmarks.callbacks import GradientVarianceCallback
    from benchmarks.evaluate import load_run
    from benchmarks.run import skip_per_step_cuda_probe
    from dgm_modules.evaluation.gradient_variance import fixed_minibatch

    skip_per_step_cuda_probe()
    config, datamodule, module = load_run(run_dir)
    if not estimators:
        estimators = [DEFAULT_BY_MODEL.get(config["model"]["class_path"], "run")]
    # the callback's checks and resolution, so the two accept the same options
    spec = GradientVarianceCallback(1, samples, groups, estimators, batch_size, seed, adapt_lr, config["model"])
    module = module.to(torch.device(device))
    datamodule.setup("fit")
    batch_size = batch_size or datamodule.batch_size
    x = fixed_minibatch(datamodule, batch_size, seed)
    record = read_record(Path(run_dir)) or {}
    t0 = time.perf_counter()
    results = measure(module, datamodule, x, spec.estimators, model_spec=config["model"], groups=list(groups),
                      samples=samples, seed=seed, adapt_lr=adapt_lr)
    protocol = {**spec.protocol(), "batch_size": batch_size, "every_n_steps": None}
    return {"run_dir": str(run_dir), "protocol": protocol,
            "history": [{"step": record.get("steps"), "epoch": record.get("epochs"),
                         "wall_s": round(time.perf_counter() - t0, 3), "estimators": results}]}


def format_table(result: dict) -> str:
    lines = [f"{'estimator':<22} {'group':<6} {'trace_cov':>12} {'mean_sq_norm':>12} "
             f"{'snr_mean':>9} {'snr_median':>10}"]
    for entry in result["history"]:
        for label, groups in entry["estimators"].items():
            if "skipped" in groups:
                lines.append(f"{label:<22} skipped: {groups['skipped'].split(';')[0]}")
                continue
            for group, s in groups.items():
                lines.append(f"{label:<22} {group:<6} {s['trace_cov']:>12.4g} {s['mean_sq_norm']:>12.4g} "
                             f"{s['snr_mean']:>9.3g} {s['snr_median']:>10.3g}")
    return "\n".join(lines)


def cmd_gradvar(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = gradvar_checkpoint(args.run_dir, args.estimators, args.samples, tuple(args.group), args.batch_size,
                                args.seed, args.adapt_lr, args.device)
    out = Path(args.out) if args.out else Path(args.run_dir) / f"gradvar_step{result['history'][0]['step']}.json"
    write_json_atomic(out, result)
    print(format_table(result))
    print(f"gradvar: {out} ({result['history'][0]['wall_s']:.1f}s)")
    bad = [l for l, g in result["history"][0]["estimators"].items()
           if "skipped" not in g and not all(math.isfinite(s["trace_cov"]) for s in g.values())]
    return 1 if bad else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``gradvar RUN_DIR [--estimators ...] [--samples M] [--group phi theta] [--out FILE]``."""
    p = sub.add_parser("gradvar", help="gradient-estimator variance (trace, ||mean||^2, SNR) at a run's checkpoint")
    p.add_argument("run_dir", help="a run folder (record.json, checkpoints/last.ckpt)")
    p.add_argument("--estimators", nargs="+", default=None, metavar="NAME",
                   help="'vae' or 'sbn' (default lists), 'run' (the run's own objective), a default label "
                        "(nvil, iwae-k50, gumbel-softmax, ...), a registered objective, one in the config's form "
                        "('{class_path: iwae, init_args: {k: 100}}', labelled iwae:k=100; the old 'iwae:k=100' "
                        "is deprecated) or a mapping {label, objective, model_overrides, adapt_steps}; "
                        "default: the list for the run's model")
    p.add_argument("--samples", type=int, default=100, help="M, gradient estimates per estimator (default 100)")
    p.add_argument("--group", nargs="+", default=list(GROUPS), choices=list(GROUPS),
                   help="parameter groups (default: phi theta)")
    p.add_argument("--batch-size", type=int, default=0, help="fixed minibatch size (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the minibatch and the measurement (default 0)")
    p.add_argument("--adapt-lr", type=float, default=1e-3, help="learning rate fitting estimators' baselines")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", help=f"JSON file to write (default: RUN_DIR/gradvar_step<N>.json; the callback's "
                                 f"history is {GRADVAR_FILE})")
    p.set_defaults(fn=cmd_gradvar)
