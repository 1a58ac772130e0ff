"""The ``dgm-bench`` command line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

from dgm_modules.registry import ConfigError


def quiet_lightning() -> None:
    """Keep the terminal for the benchmark's own output: Lightning's tips and info go."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")  # small data: epoch-level logs
    warnings.filterwarnings("ignore", ".*will save all extracted features in buffer.*")  # KID, by design
    # the methods move their Batch themselves (cheaper than Lightning's generic walk), by design
    warnings.filterwarnings("ignore", ".*overridden `transfer_batch_to_device`.*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                 "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cmd_list(args: argparse.Namespace) -> int:
    from datamodules import DATAMODULES
    from dgm_modules.components import METHODS, MODELS, OBJECTIVES

    print("methods:")
    for name, preset in METHODS.items():
        print(f"  {name:<16} {preset.description} [{preset.citation}]")
    print("datasets:")
    for name, cls in DATAMODULES.items():
        print(f"  {name:<16} {(cls.__doc__ or '').strip().splitlines()[0]}")
    print("models:     " + ", ".join(MODELS.names()))
    print("objectives: " + ", ".join(OBJECTIVES.names()))
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    from benchmarks import signals
    from benchmarks.fingerprint import config_fingerprint
    from benchmarks.launchers import make_launcher
    from benchmarks.leaderboard import write_leaderboard
    from benchmarks.matrix import load_spec, run_matrix
    from benchmarks.packing import parse_pack
    from benchmarks.slurm import merge_slurm_options, parse_slurm_options
    from benchmarks.validate import check_cells, check_out_dir

    signals.install()  # SIGTERM/SIGINT: no new cells, running ones stop at a batch end, exit 143/130
    spec, cells = load_spec(args.spec)
    name = spec.get("name", Path(args.spec).stem)
    out = Path(args.out or Path("runs") / name)
    check_out_dir(out)
    # every cell built (and for a local launcher its Trainer made) before the first trains
    check_cells(cells, args.spec, trainer=args.launcher == "local")
    launcher = make_launcher(args.launcher, jobs=args.jobs, wandb=args.wandb, group=name, partition=args.partition,
                             time_min=args.time_min, gpus_per_cell=args.gpus_per_cell,
                             cpus_per_cell=args.cpus_per_cell, cluster=args.cluster,
                             array_parallelism=args.array_parallelism, mem_gb=args.mem_gb, wait=not args.no_wait,
                             slurm=merge_slurm_options(spec.get("slurm"), parse_slurm_options(args.slurm_option)))
    print(f"matrix {name}: {len(cells)} cells -> {out} ({args.launcher} launcher)")
    t0 = time.perf_counter()
    records = run_matrix(cells, out, launcher, pack=parse_pack(args.pack), extend_from=args.extend_from)
    if args.no_wait and not signals.requested():
        return 0  # submitted; the launcher said how to collect the results
    if signals.requested():
        print(signals.summary([c.label for c in cells], records, getattr(launcher, "left", None)), file=sys.stderr)
        return signals.exit_code(signals.requested())
    print(f"matrix finished in {time.perf_counter() - t0:.1f}s")
    # records another version of the spec left in the folder are shown apart, never averaged in
    print(write_leaderboard(out, current={config_fingerprint(c.config) for c in cells}))
    print(f"leaderboard: {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}, {out / 'runs.csv'}")
    if args.wandb != "disabled":
        from benchmarks.wandb_log import log_leaderboard

        log_leaderboard(out, args.wandb, group=name, current={config_fingerprint(c.config) for c in cells})
    return 0 if all(r and r["status"] in ("completed", "diverged") for r in records) else 1


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmarks.fingerprint import config_fingerprint
    from benchmarks.leaderboard import write_leaderboard

    current = None
    if args.spec:
        from benchmarks.matrix import load_spec

        current = {config_fingerprint(c.config) for c in load_spec(args.spec)[1]}
    print(write_leaderboard(args.dir, args.out, current=current, html=args.html))
    if args.wandb != "disabled":
        from benchmarks.wandb_log import log_leaderboard

        log_leaderboard(args.dir, args.wandb, group=Path(args.dir).resolve().name, current=current, out=args.out)
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from benchmarks.figures.latent_usage import latent_usage_figure

    print(f"figure: {latent_usage_figure(args.run_a, args.run_b, args.out)}")
    return 0


def cmd_figure_samples(args: argparse.Namespace) -> int:
    from benchmarks.figures.samples import samples_figure

    print(f"figure: {samples_figure(args.run, args.out, args.n)}")
    return 0


def cmd_figure_recon(args: argparse.Namespace) -> int:
    from benchmarks.figures.samples import recon_figure

    print(f"figure: {recon_figure(args.runs, args.out, args.n)}")
    return 0


#: every command: its one-line help and where its parser is made. `dgm-bench --help` shows these
#: without importing a command's module (most import torch and Lightning: seconds).
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("registered methods, datasets, models and objectives", "benchmarks.cli:add_list_parser"),
    "run": ("train and score one (method, dataset, seed) cell (`dgm-bench run --help`: every option)", ""),
    "matrix": ("run a matrix spec (resumable), then print the leaderboard", "benchmarks.cli:add_matrix_parser"),
    "leaderboard": ("aggregate the records under DIR into leaderboard.md/.csv and runs.csv",
                    "benchmarks.cli:add_leaderboard_parser"),
    "figure": ("figures made from run folders", "benchmarks.cli:add_figure_parser"),
    "evaluator": ("the feature networks of FID/KID and the perceptual loss", "benchmarks.evaluator:add_parser"),
    "gradvar": ("gradient-estimator variance (trace, ||mean||^2, SNR) at a run's checkpoint",
                "benchmarks.gradvar:add_parser"),
    "evaluate": ("re-score a saved run (test ELBO, L_k, FID/KID) without training", "benchmarks.evaluate:add_parser"),
    "reproduce": ("run a paper reproduction; write our numbers beside the published ones",
                  "benchmarks.reproduce:add_parser"),
}


EXTEND_HELP = ("a folder of earlier runs: a cell not yet started here carries on the run there of its config and "
               "seed with a smaller trainer.max_epochs / early_stopping.patience, from its last checkpoint")


def add_list_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("list", help=COMMANDS["list"][0]).set_defaults(fn=cmd_list)


def add_matrix_parser(sub: argparse._SubParsersAction) -> None:
    from benchmarks.wandb_log import add_wandb_argument

    matrix = sub.add_parser("matrix", help=COMMANDS["matrix"][0])
    matrix.add_argument("spec", help="a YAML spec, e.g. benchmarks/specs/digits.yaml")
    matrix.add_argument("--out", help="output folder (default: runs/<spec name>)")
    matrix.add_argument("--launcher", choices=["local", "slurm"], default="local")
    matrix.add_argument("--jobs", type=int, default=1, help="local launcher: cells run at once (default 1)")
    matrix.add_argument("--pack", default="off", help="auto|N|off: train cells that differ only in their seed side "
                        "by side in one process (at most N a group); default off")
    add_wandb_argument(matrix, "grouped by matrix")
    matrix.add_argument("--extend-from", metavar="DIR", help=EXTEND_HELP)
    slurm = matrix.add_argument_group("slurm launcher (submitit)")
    slurm.add_argument("--partition")
    slurm.add_argument("--time-min", type=int, default=240, help="time limit per cell, minutes")
    slurm.add_argument("--gpus-per-cell", type=int, default=0)
    slurm.add_argument("--cpus-per-cell", type=int, default=2)
    slurm.add_argument("--array-parallelism", type=int, default=None, metavar="N",
                       help="at most N cells running at once (the job array's %%N; default: Slurm's limit)")
    slurm.add_argument("--mem-gb", type=int, default=16, help="memory per cell, GB (a spec's resources override)")
    slurm.add_argument("--slurm-option", action="append", metavar="KEY=VALUE",
                       help="any sbatch option, repeatable (account=..., qos=..., constraint=..., setup=LINE)")
    slurm.add_argument("--no-wait", action="store_true",
                       help="submit and return; re-run the same command to collect (nothing is submitted twice)")
    slurm.add_argument("--cluster", default=None, help=argparse.SUPPRESS)  # "local": submitit's local executor
    matrix.set_defaults(fn=cmd_matrix)


def add_leaderboard_parser(sub: argparse._SubParsersAction) -> None:
    from benchmarks.wandb_log import add_wandb_argument

    board = sub.add_parser("leaderboard", help=COMMANDS["leaderboard"][0])
    board.add_argument("dir")
    board.add_argument("--out", help="where to write the tables (default: DIR)")
    board.add_argument("--spec", help="the matrix spec being tabulated: records of other configurations are shown "
                                      "apart (default: every configuration found is tabulated)")
    board.add_argument("--html", metavar="DIR", help="also write a static HTML page of the leaderboard there")
    add_wandb_argument(board, "job_type 'leaderboard', grouped by DIR's name",
                       what="also log the leaderboard's rows as a Weights & Biases Table in a run of its own")
    board.set_defaults(fn=cmd_leaderboard)


def add_figure_parser(sub: argparse._SubParsersAction) -> None:
    figure = sub.add_parser("figure", help=COMMANDS["figure"][0]).add_subparsers(dest="figure", required=True)
    usage = figure.add_parser("latent-usage", help="mean stick/component weights vs per-dimension KL of two runs")
    usage.add_argument("run_a", help="a run folder (record.json, checkpoints/last.ckpt)")
    usage.add_argument("run_b", help="a second run folder")
    usage.add_argument("--out", default="latent_usage.png", help="image file to write (default: latent_usage.png)")
    usage.set_defaults(fn=cmd_figure)
    samples = figure.add_parser("samples", help="a grid of samples of a trained run")
    samples.add_argument("run", help="a run folder (record.json, checkpoints/last.ckpt)")
    samples.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    samples.add_argument("--out", default="samples.png", help="image file to write (default: samples.png)")
    samples.set_defaults(fn=cmd_figure_samples)
    recon = figure.add_parser("recon", help="reconstructions of the same test images by several runs, one row each")
    recon.add_argument("runs", nargs="+", help="run folders, e.g. a VAE, a perceptual VAE and a VAE-GAN")
    recon.add_argument("--n", type=int, default=10, help="number of test images (default 10)")
    recon.add_argument("--out", default="recon.png", help="image file to write (default: recon.png)")
    recon.set_defaults(fn=cmd_figure_recon)
    from benchmarks.figures.gradient_variance import add_figure_parsers as add_gradvar_figures

    add_gradvar_figures(figure)


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The argparse parser of every command but ``run`` (benchmarks/run_cli.py, on jsonargparse).

    Only ``command``'s own parser is built in full (``"*"``: all of them); the others are listed by
    name and help, so that ``dgm-bench --help`` imports neither torch nor Lightning."""
    import importlib

    parser = argparse.ArgumentParser(prog="dgm-bench", description=__doc__)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, (help_text, where) in COMMANDS.items():
        if where and command in ("*", name):
            module, _, fn = where.partition(":")
            getattr(importlib.import_module(module), fn)(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    for name in ([command] if command in sub.choices else list(sub.choices)):
        if name != "run":  # also after the command: `dgm-bench matrix spec.yaml --debug`
            sub.choices[name].add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def command_of(argv: list[str]) -> tuple[str | None, int]:
    """The command named in ``argv`` and its index (options before it are the global ones)."""
    for i, token in enumerate(argv):
        if not token.startswith("-"):
            return token, i
    return None, len(argv)


DEBUG_HELP = "on an error, print the full traceback (without it, errors are one line)"


def report(err: BaseException, message: str, code: int, debug: bool) -> int:
    """One line on stderr; with ``--debug`` the traceback first."""
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    print(f"dgm-bench: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, at = command_of(argv)
    if command == "run":  # jsonargparse's parser (benchmarks/run_cli.py); its errors are ConfigErrors
        debug = "--debug" in argv
        rest = argv[at + 1:]

        def fn(_args: object) -> int:
            from benchmarks.run_cli import cmd_run

            return cmd_run(rest)

        args = argparse.Namespace(fn=fn)
    else:
        args = build_parser(command).parse_args(argv)
        debug = args.debug
    quiet_lightning()
    os.environ.setdefault("WANDB_MODE", "offline")
    from benchmarks import signals

    saved = signals.current_handlers()  # run and matrix install their own; a caller (a test) gets its back
    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError) as err:
        return report(err, str(err), 2, debug)
    except OSError as err:  # a full or read-only disk while writing tables, a lost mount: one line
        where = f"{err.filename}: " if err.filename else ""
        return report(err, f"{where}{err.strerror or err}", 1, debug)
    except Exception as err:  # noqa: BLE001 -- not foreseen: still one line unless --debug asks for more
        hint = "" if debug else " (an unexpected error; run again with --debug for the traceback)"
        return report(err, f"{type(err).__name__}: {' '.join(str(err).split())}{hint}", 1, debug)
    finally:
        signals.restore(saved)


if __name__ == "__main__":
    sys.exit(main())
