"""Wall time of ``dgm-bench --help`` (a fresh interpreter each time), this checkout against another.

    python -m benchmarks.bench_cli_help --baseline /path/to/other/checkout --repeats 5

Runs alternate between the two checkouts so that both see the same machine load; prints each
median and their ratio. The contract: under 1 s here (building the parser imports no torch).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def once(repo: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmarks.cli", "--help"], cwd=repo, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with (e.g. main's)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    repos = {"this": HERE, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    times: dict[str, list[float]] = {name: [] for name in repos}
    for _ in range(args.repeats):
        for name, repo in repos.items():
            times[name].append(once(repo))
    for name, ts in times.items():
        print(f"{name:<9} median {statistics.median(ts):6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in ts)})")
    if args.baseline:
        print(f"ratio baseline/this: {statistics.median(times['baseline']) / statistics.median(times['this']):.1f}x")


if __name__ == "__main__":
    main()
