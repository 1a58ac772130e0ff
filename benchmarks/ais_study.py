"""AIS against L_k on a trained run, with wall times (Wu et al. 2017, Fig. 2c), and BDMC.

``python -m benchmarks.ais_study RUN_DIR --out results/ais-1000`` scores the first ``--images`` test
images by ``L_k`` for each ``--ks`` and by forward AIS from the prior for each ``--ais-steps``
(same images, same chains), times each, runs BDMC on ``--sim-images`` images simulated from the
model for each ``--bdmc-steps``, and writes ``study.json`` (one row per estimate: estimator,
settings, images, mean log p(x) in nats, wall seconds, threads), ``study.md`` and
``estimate_vs_time.png``. Every estimate runs in one process with the same thread count.

Generators (the GAN, the VAE-GAN's decoder) are scored under ``N(x; G(z), sigma^2 I)``:
``--obs-sigma 0.05`` fixes sigma; several values are a grid from which the sigma of highest AIS
estimate (``--sigma-steps`` steps) on the first ``--sigma-images`` validation images is chosen,
as Wu et al. (2017) did; the choice and every candidate's score go into ``study.json``. ``L_k``
needs an inference network, so it is skipped for a GAN.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from benchmarks.evaluate import load_run
from benchmarks.figures import pyplot, save
from benchmarks.records import command_line, versions, write_json_atomic
from dgm_modules.evaluation.ais import AISOptions, AISTarget, ais_log_likelihood, bdmc, select_obs_sigma
from dgm_modules.evaluation.bounds import importance_weighted_bounds


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def study(args: argparse.Namespace) -> dict:
    config, datamodule, module = load_run(args.run)
    model = module.model.eval()
    datamodule.setup("test")
    x = datamodule.test_x[: args.images]
    selection, sigma = None, None
    if args.obs_sigma:
        sigma = args.obs_sigma[0]
        if len(args.obs_sigma) > 1:
            options = AISOptions(steps=args.sigma_steps, chains=args.chains, leapfrog=args.leapfrog,
                                 max_pairs=args.chunk_pairs)
            torch.manual_seed(args.seed)
            selection, seconds = _timed(lambda: select_obs_sigma(model, datamodule.val_x[: args.sigma_images],
                                                                 args.obs_sigma, options))
            selection.update(split="val", seconds=seconds)
            sigma = selection["obs_sigma"]
            print(json.dumps({"sigma_selection": selection}), flush=True)
    target = AISTarget(model, sigma)
    rows = []
    for k in args.ks if sigma is None else []:  # L_k scores the model's own likelihood only
        torch.manual_seed(args.seed)
        values, seconds = _timed(lambda: importance_weighted_bounds(model, x, [k], args.chunk_pairs)[k])
        rows.append({"estimator": "L_k", "k": k, "images": len(x), "log_px": values.mean().item(),
                     "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
    runs = [("prior", s) for s in args.ais_steps] + [("encoder", s) for s in args.encoder_steps]
    for start, steps in runs:  # "encoder": AIS+encoder of Wu et al. (chains start from q(z | x))
        options = AISOptions(steps=steps, chains=args.chains, leapfrog=args.leapfrog, max_pairs=args.chunk_pairs,
                             start=start)
        torch.manual_seed(args.seed)
        values, seconds = _timed(lambda: ais_log_likelihood(target, x, options))
        rows.append({"estimator": "AIS", "steps": steps, "chains": args.chains, "leapfrog": args.leapfrog,
                     "start": start, "images": len(x), "log_px": values.mean().item(), "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
    for steps in args.bdmc_steps:
        options = AISOptions(steps=steps, chains=args.chains, leapfrog=args.leapfrog, max_pairs=args.chunk_pairs)
        torch.manual_seed(args.seed)  # the same simulated images at every number of steps
        out, seconds = _timed(lambda: bdmc(target, args.sim_images, options))
        rows.append({"estimator": "BDMC", "steps": steps, "chains": args.chains, "leapfrog": args.leapfrog,
                     "images": args.sim_images, "lower": out["lower"].mean().item(),
                     "upper": out["upper"].mean().item(), "gap": out["gap"].mean().item(), "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
    return {"run": str(args.run), "run_config": config, "rows": rows, "obs_sigma": sigma,
            "sigma_selection": selection, "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "versions": versions(),
            "command": command_line()}


def write_report(result: dict, out: Path) -> None:
    rows = result["rows"]
    md = [f"# AIS against L_k: {Path(result['run']).name}", "",
          f"{result['threads']} thread(s) on {result['machine']}; nats per image (log p(x), higher is tighter).", ""]
    sel = result.get("sigma_selection")
    if result.get("obs_sigma") is not None:
        md += [f"Scored under N(x; G(z), sigma^2 I) with sigma = {result['obs_sigma']:g}" +
               (f", chosen on {sel['images']} validation images by AIS ({sel['steps']} steps x {sel['chains']} "
                f"chains, {sel['seconds']:.0f} s): " + ", ".join(f"sigma={k:g}: {v:.1f}" for k, v in sel["scores"].items())
                if sel else "") + ".", ""]
    md += ["| estimator | setting | images | log p(x) | seconds |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["estimator"] == "L_k":
            md.append(f"| L_k | k={r['k']} | {r['images']} | {r['log_px']:.2f} | {r['seconds']:.1f} |")
        elif r["estimator"] == "AIS":
            md.append(f"| AIS ({r.get('start', 'prior')}) | {r['steps']} steps x {r['chains']} chains x {r['leapfrog']} leapfrog "
                      f"| {r['images']} | {r['log_px']:.2f} | {r['seconds']:.1f} |")
    bd = [r for r in rows if r["estimator"] == "BDMC"]
    if bd:
        md += ["", "BDMC on images simulated from the model (forward AIS lower, reverse AIS upper):", "",
               "| steps x chains x leapfrog | images | lower | upper | gap | seconds |",
               "| --- | --- | --- | --- | --- | --- |"]
        md += [f"| {r['steps']} x {r['chains']} x {r['leapfrog']} | {r['images']} | {r['lower']:.2f} | "
               f"{r['upper']:.2f} | {r['gap']:.2f} | {r['seconds']:.1f} |" for r in bd]
    (out / "study.md").write_text("\n".join(md) + "\n")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 if bd else 1, figsize=(10 if bd else 5, 4), squeeze=False)
    ax = axes[0][0]
    for name, label, key, start in (("L_k", "IWAE bound L_k", "k", None), ("AIS", "AIS (prior start)", "steps", "prior"),
                                    ("AIS", "AIS+encoder", "steps", "encoder")):
        pts = [r for r in rows if r["estimator"] == name and r.get("start", "prior" if start else None) == start]
        if pts:
            ax.plot([r["seconds"] for r in pts], [r["log_px"] for r in pts], "o-", label=label)
            for r in pts:
                ax.annotate(str(r[key]), (r["seconds"], r["log_px"]), fontsize=7, textcoords="offset points",
                            xytext=(3, -8))
    ax.set_xscale("log")
    ax.set_xlabel("evaluation time (s)")
    ax.set_ylabel("mean log p(x) estimate (nats)")
    ax.set_title(f"test images ({rows[0]['images']})")
    ax.legend()
    if bd:
        ax = axes[0][1]
        ax.plot([r["seconds"] for r in bd], [r["lower"] for r in bd], "o-", label="forward AIS (lower)")
        ax.plot([r["seconds"] for r in bd], [r["upper"] for r in bd], "s-", label="reverse AIS (upper)")
        ax.set_xscale("log")
        ax.set_xlabel("evaluation time (s)")
        ax.set_title(f"BDMC on {bd[0]['images']} simulated images")
        ax.legend()
    save(fig, out / "estimate_vs_time.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run folder (record.json, checkpoints/last.ckpt)")
    p.add_argument("--out", default="results/ais-1000")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 10, 100, 1000, 5000])
    p.add_argument("--ais-steps", type=int, nargs="+", default=[10, 30, 100])
    p.add_argument("--encoder-steps", type=int, nargs="*", default=[],
                   help="AIS+encoder (chains start from q(z | x)) at these numbers of steps")
    p.add_argument("--bdmc-steps", type=int, nargs="*", default=[10, 100])
    p.add_argument("--sim-images", type=int, default=100)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--leapfrog", type=int, default=5)
    p.add_argument("--chunk-pairs", type=int, default=16_384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--obs-sigma", type=float, nargs="*", default=[],
                   help="score the generator under N(G(z), sigma^2 I); several: chosen on validation")
    p.add_argument("--sigma-images", type=int, default=300)
    p.add_argument("--sigma-steps", type=int, default=100)
    args = p.parse_args(argv)
    if any(not v > 0 for v in args.obs_sigma):
        p.error(f"--obs-sigma values must be > 0, got {args.obs_sigma}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = study(args)
    write_json_atomic(out / "study.json", result)
    write_report(result, out)
    print(f"wrote {out / 'study.json'}, {out / 'study.md'}, {out / 'estimate_vs_time.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
