"""The identity of a configuration: a canonical hash of the resolved config without the seed.

Two runs with the same fingerprint differ only in their seed (and in options that cannot change a
number, such as where the data lives), so they are seeds of one leaderboard row. Types are
normalised first: ``0`` and ``0.0``, ``(1, 2)`` and ``[1, 2]`` hash the same, so replaying a run's
saved config gives the same fingerprint.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

#: options that say where or how visibly a run happens, never what it computes
IGNORED: tuple[tuple[str, ...], ...] = (
    ("seed",), ("setting",),
    ("data", "init_args", "data_dir"), ("data", "init_args", "num_workers"),
    ("trainer", "enable_progress_bar"), ("trainer", "enable_model_summary"), ("trainer", "log_every_n_steps"),
    ("checkpoint",),  # how often a resume point is saved: a resumed run's numbers are the uninterrupted run's
    ("module", "init_args", "log_every_n_steps"),
    ("module", "init_args", "steps_per_call"),  # optimiser steps per Lightning step: the same updates
)

#: switches added after records were published, with the options that act only through them: at the
#: switch's default, all are dropped from the identity (they cannot change a number), so every
#: configuration that existed before them keeps its fingerprint and its run folder
ADDED_SWITCHES: tuple[tuple[tuple[str, ...], str, Any, tuple[str, ...]], ...] = (
    (("data", "init_args"), "dequantize", False, ("dequantize_seed",)),
    (("model", "init_args"), "likelihood", "bernoulli", ("obs_sigma",)),
)


def canonical(value: Any) -> Any:
    """Plain JSON data with one spelling per value: integral floats as ints, tuples as lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        f = float(value)
        if math.isfinite(f) and f == int(f) and abs(f) < 2 ** 53:
            return int(f)
        return repr(f) if not math.isfinite(f) else f
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return str(value)


def _without(config: dict, path: tuple[str, ...]) -> None:
    node: Any = config
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


def identity(config: dict) -> dict:
    """The part of a resolved config that the fingerprint hashes (canonical, seed removed)."""
    out = canonical(config)
    for path in IGNORED:
        _without(out, path)
    for where, switch, default, dependents in ADDED_SWITCHES:
        node: Any = out
        for key in where:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(switch, default) == canonical(default):
            for key in (switch, *dependents):
                node.pop(key, None)
    return out


def config_fingerprint(config: dict, length: int = 12) -> str:
    """Hex digest of :func:`identity`: equal for the seeds of one configuration, and only for them."""
    text = json.dumps(identity(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]
