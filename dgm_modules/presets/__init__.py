"""Named methods as data: which module trains which model with which objective.

Every ``*.yaml`` file in this folder maps method names to presets (the fields of
:class:`MethodPreset`); importing this package registers them in ``METHODS``. A plugin
distribution ships its own YAML and calls :func:`load_presets` on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from dgm_modules.registry import METHODS, ConfigError


@dataclass(frozen=True)
class MethodPreset:
    """A named method: which module trains which model with which objective (all overridable)."""

    description: str
    model: Any
    objective: Any
    module: Any = "variational"
    optimizer: Any = field(default_factory=lambda: {"class_path": "adam", "init_args": {"lr": 1e-3}})
    citation: str = ""


def load_presets(path: str | Path) -> list[str]:
    """Register every preset of the YAML file ``path`` (keys starting with ``.`` are YAML anchors only)."""
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    known = {f.name for f in fields(MethodPreset)}
    names = []
    for name, spec in data.items():
        if name.startswith("."):
            continue
        unknown = sorted(set(spec) - known) if isinstance(spec, dict) else None
        if unknown is None or unknown:
            raise ConfigError(f"{path}: method {name!r}: expected a mapping with keys from {sorted(known)}, "
                              f"got {unknown or spec!r}")
        METHODS.register(name)(MethodPreset(**spec))
        names.append(name)
    return names


for _file in sorted(Path(__file__).parent.glob("*.yaml")):
    load_presets(_file)
