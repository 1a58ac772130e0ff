"""``dgm-bench evaluator {show,train}`` and the check that a run's feature networks exist before it trains.

The classifiers of digits, MNIST and Fashion-MNIST ship with the package (float16, sha256 fixed
in ``feature_nets.PUBLISHED_SHA256``); ``show`` prints the ones this installation will use and
whether each is the published one. ``train`` rebuilds a classifier from the dataset's training
split only (at its default split, grey levels, half of each batch binarised). A retrain gives the
published checksum only where every floating-point operation rounds the same (same torch build,
same CPU kernels, one thread): nothing promises that across machines, so the networks are shipped.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable, Iterable

INCEPTION = "inception-v3"


def feature_nets_needed(datamodule: Any, module: Any) -> list[str]:
    """The feature networks a built run uses: dataset names of classifiers, or ``inception-v3``."""
    names = []
    if getattr(module, "sample_quality", None) is not None:  # FID/KID at test end
        names.append(INCEPTION if datamodule.dims[0] == 3 else datamodule.name)
    chosen = getattr(getattr(module, "objective", None), "feature_net", None)  # a perceptual loss
    if isinstance(chosen, str):
        names.append(datamodule.name if chosen == "auto" else chosen)
    return list(dict.fromkeys(names))


def prepare_run_feature_nets(datamodule: Any, module: Any, echo: Callable[[str], None] = print,
                             ready: dict[str, str] | None = None) -> dict[str, str]:
    """Make the feature networks of one built run loadable before it trains: a missing classifier
    is trained now (with a message); missing Inception weights and a file whose checksum does
    not match are errors now. Returns ``ready`` updated with ``{network: sha256}``."""
    from dgm_modules.networks.feature_nets import file_sha256, inception_path, prepare_classifier

    ready = {} if ready is None else ready
    for name in feature_nets_needed(datamodule, module):
        if name not in ready:
            ready[name] = (file_sha256(inception_path()) if name == INCEPTION
                           else prepare_classifier(name, datamodule.data_dir, echo)["sha256"])
    return ready


def prepare_feature_nets(configs: Iterable[dict], echo: Callable[[str], None] = print) -> dict[str, str]:
    """:func:`prepare_run_feature_nets` for every config of a matrix, before its first cell trains."""
    from benchmarks.config import build

    ready: dict[str, str] = {}
    for config in configs:
        prepare_run_feature_nets(*build(config), echo=echo, ready=ready)
    return ready


def cmd_evaluator_train(args: argparse.Namespace) -> int:
    import torch

    from dgm_modules.networks.feature_nets import (DEFAULT_EPOCHS, TRAIN_EPOCHS, WEIGHTS, grey_datamodule,
                                                     train_and_save, trained_dir)

    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = args.epochs or TRAIN_EPOCHS.get(args.data, DEFAULT_EPOCHS)
    datamodule = grey_datamodule(args.data, args.data_dir)
    folder = args.out or trained_dir(args.data)
    t0 = time.perf_counter()
    meta = train_and_save(datamodule, epochs, folder, seed=args.seed)
    meta["train_time_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({k: meta[k] for k in ("name", "epochs", "train_examples", "val_accuracy", "test_accuracy",
                                           "sha256", "size_bytes", "train_time_s")}, indent=2))
    print(f"weights: {folder}/{WEIGHTS}")
    return 0


def cmd_evaluator_show(args: argparse.Namespace) -> int:
    from dgm_modules.networks.feature_nets import (NETWORK_OF, PUBLISHED_SHA256, WEIGHTS, FeatureNetChecksumError,
                                                     FeatureNetNotFoundError, evaluator_dir, load_classifier,
                                                     network_name)

    names = [network_name(args.data)] if args.data else list(PUBLISHED_SHA256)
    ok = True
    for name in names:
        try:
            _, meta = load_classifier(name)
        except (FeatureNetNotFoundError, FeatureNetChecksumError) as err:
            print(f"classifier-{name}: {err}")
            ok = False
            continue
        published = PUBLISHED_SHA256.get(name)
        status = ("published" if meta["sha256"] == published else
                  "NOT the published network: its FIDs share no column with published ones" if published
                  else "made here (no published network)")
        size = (evaluator_dir(name) / WEIGHTS).stat().st_size
        also = [d for d, n in NETWORK_OF.items() if n == name]
        print(f"classifier-{name}{' (also ' + ', '.join(also) + ')' if also else ''}\n"
              f"  sha256 {meta['sha256']}\n  size {size / 1024:.1f} KiB ({meta.get('dtype', 'float32')}), "
              f"test accuracy {100 * meta['test_accuracy']:.2f}%, {status}\n  folder {evaluator_dir(name)}")
    return 0 if ok else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``evaluator show [--data NAME]`` and ``evaluator train --data NAME [--epochs N] [--out DIR]``."""
    evaluator = sub.add_parser("evaluator", help="the feature networks of FID/KID and the perceptual loss")
    actions = evaluator.add_subparsers(dest="evaluator_command", required=True)
    show = actions.add_parser("show", help="name, sha256, size and accuracy of the feature networks in use, "
                                           "and whether each is the published one")
    show.add_argument("--data", default=None, help="one dataset (default: every shipped network)")
    show.set_defaults(fn=cmd_evaluator_show)
    train = actions.add_parser("train", help="train a dataset's classifier (training split only) and save it")
    train.add_argument("--data", required=True, help="a registered grey-level dataset with labels, e.g. mnist")
    train.add_argument("--epochs", type=int, default=None,
                       help="training epochs (default 4; 10 for fashion-mnist, 30 for digits)")
    train.add_argument("--out", default=None, help="folder for the weights (default: $DGM_BENCH_FEATURE_NETS/<data>, "
                                                   "else $DGM_BENCH_CACHE/evaluators/<data>, else "
                                                   "~/.cache/dgm-bench/evaluators/<data>; never the shipped folder)")
    train.add_argument("--data-dir", default=None, help="data directory (default: $DGM_BENCH_DATA)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (the shipped ones: 1)")
    train.set_defaults(fn=cmd_evaluator_train)
