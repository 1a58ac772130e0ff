"""Write the fixed records that tests/test_leaderboard.py tabulates (run once; the output is committed).

    PYTHONPATH=. python tests/data/leaderboard/make_records.py

Configs are resolved by the real code so fingerprints and labels are those of real runs; the
metrics are chosen by hand so the expected tables can be checked by hand.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.config import resolve_config
from benchmarks.fingerprint import config_fingerprint
from benchmarks.records import RECORD, write_json_atomic
from benchmarks.run import run_id

OUT = Path(__file__).parent / "records"
SPLIT = {"train": 50000, "val": 10000, "test": 10000}
GIT = {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False}


def record(method: str, seed: int, metrics: dict, over: dict | None = None, status: str = "completed",
           error: dict | None = None, binarization: str = "dynamic", epochs: int = 10, wall: float = 60.0,
           protocol: dict | None = None) -> None:
    config = resolve_config(method, "mnist", seed, over or {})
    rid = run_id(config)
    rec = {"run_id": rid, "method": method, "setting": config["setting"], "dataset": "mnist",
           "model": config["model"]["class_path"], "objective": config["objective"]["class_path"], "seed": seed,
           "config": config, "fingerprint": config_fingerprint(config), "git": GIT, "status": status,
           "error": error, "metrics": metrics, "epochs": epochs, "steps": epochs * 500, "wall_time_s": wall,
           "protocol": {"dataset": "mnist", "binarization": binarization, "split": SPLIT, "k": [1, 5000],
                        **(protocol or {})}}
    write_json_atomic(OUT / rid / RECORD, rec)


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    for seed, (nll, elbo) in enumerate([(90.0, 95.0), (92.0, 96.0), (91.0, 97.0)]):
        record("vae", seed, {"test/nll_k5000": nll, "test/neg_elbo": elbo, "test/knn_error_k5": 0.06 + seed / 1000},
               wall=60.0 + seed)
    record("iwae", 0, {"test/nll_k5000": 88.5, "test/neg_elbo": 98.0})
    record("iwae", 1, {"test/nll_k5000": 89.5, "test/neg_elbo": 99.0})
    record("iwae", 2, {}, status="diverged", error={"type": "DivergedError", "step": 123,
                                                    "message": "non-finite training loss nan at step 123"})
    # k=50: another configuration of the same method, so another row (never pooled with k=5)
    for seed, nll in enumerate([80.0, 81.0]):
        record("iwae", seed, {"test/nll_k5000": nll}, over={"objective": {"init_args": {"k": 50}}}, wall=300.0)
    # a leftover of an earlier spec version: 2 epochs instead of 10
    record("vae", 0, {"test/nll_k5000": 150.0}, over={"trainer": {"max_epochs": 2}}, epochs=2, wall=12.0)
    fid = {"feature_net": "classifier-mnist", "feature_net_sha256": "9f40b5711234"}
    for seed, value in enumerate([30.0, 34.0]):
        record("gan", seed, {"test/fid_n10000": value}, protocol=fid)
    fixed = {"data": {"init_args": {"binarization": "fixed"}}}
    record("vae", 0, {"test/nll_k5000": 88.71}, over=fixed, binarization="fixed")
    record("sbn-nvil", 0, {}, over=fixed, binarization="fixed", status="failed",
           error={"type": "RuntimeError", "step": 7, "message": "out of memory\nmore"})


if __name__ == "__main__":
    main()
