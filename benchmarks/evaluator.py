"""``dgm-bench evaluator train``: train, score and cache a dataset's feature network.

The classifier sees the dataset's training split only (at its default split, grey levels, half
of each batch binarised); its validation and test accuracies go into its record beside the
weights' sha256. FID/KID and the perceptual loss of that dataset then use it.
"""
from __future__ import annotations

import argparse
import json
import time

DEFAULT_EPOCHS = 4  # 99.10% test accuracy on MNIST
#: measured: Fashion-MNIST 88.91% after 4 epochs, 90.63% after 10 (the issue's target is 90%)
EPOCHS_BY_DATASET = {"fashion-mnist": 10}


def cmd_evaluator_train(args: argparse.Namespace) -> int:
    import torch

    from dgm_modules.evaluation.feature_nets import (AUTO_TRAIN, WEIGHTS, evaluator_dir, grey_datamodule,
                                                     train_and_save)

    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = args.epochs or AUTO_TRAIN.get(args.data) or EPOCHS_BY_DATASET.get(args.data, DEFAULT_EPOCHS)
    datamodule = grey_datamodule(args.data, args.data_dir)
    t0 = time.perf_counter()
    meta = train_and_save(datamodule, epochs, args.out, seed=args.seed)
    meta["train_time_s"] = round(time.perf_counter() - t0, 1)
    folder = evaluator_dir(args.data, args.out)
    print(json.dumps({k: meta[k] for k in ("dataset", "epochs", "train_examples", "val_accuracy",
                                           "test_accuracy", "sha256", "train_time_s")}, indent=2))
    print(f"weights: {folder / WEIGHTS}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``evaluator train --data NAME [--epochs N] [--out DIR]``."""
    evaluator = sub.add_parser("evaluator", help="the feature networks of FID/KID and the perceptual loss")
    actions = evaluator.add_subparsers(dest="evaluator_command", required=True)
    train = actions.add_parser("train", help="train and cache a dataset's classifier (training split only)")
    train.add_argument("--data", required=True, help="a registered grey-level dataset, e.g. mnist")
    train.add_argument("--epochs", type=int, default=None,
                       help=f"training epochs (default {DEFAULT_EPOCHS}; 10 for fashion-mnist, 30 for digits)")
    train.add_argument("--out", default=None, help="folder for the weights (default: $DGM_BENCH_CACHE/evaluators/"
                                                   "<data>, else ~/.cache/dgm-bench/evaluators/<data>)")
    train.add_argument("--data-dir", default=None, help="data directory (default: $DGM_BENCH_DATA)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.set_defaults(fn=cmd_evaluator_train)
