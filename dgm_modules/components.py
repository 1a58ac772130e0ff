"""The registries of short names for every model, objective, optimiser, module and method.

Kept as the import path the CLI and tests use; the registries live in ``dgm_modules.registry``
and fill themselves from the decorators in each component's own file, the method presets in
``dgm_modules/presets/*.yaml`` and installed ``dgm_bench.plugins`` entry points.
"""
from __future__ import annotations

from dgm_modules.presets import MethodPreset
from dgm_modules.registry import METHODS, MODELS, MODULES, OBJECTIVES, OPTIMIZERS

__all__ = ["METHODS", "MODELS", "MODULES", "OBJECTIVES", "OPTIMIZERS", "MethodPreset"]
