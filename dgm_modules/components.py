"""The registries: short names for every model, objective, optimiser, module and method.

Adding a component is one ``register`` line here; adding a method is one ``MethodPreset``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dgm_modules.methods.variational import VariationalMethod
from dgm_modules.models.gaussian_vae import GaussianVAE
from dgm_modules.models.linear_gaussian import LinearGaussian
from dgm_modules.objectives.elbo import ELBO
from dgm_modules.objectives.iwae import IWAEBound
from dgm_modules.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("gaussian-vae")(GaussianVAE)
MODELS.register("linear-gaussian")(LinearGaussian)

OBJECTIVES: Registry = Registry("objective")
OBJECTIVES.register("elbo")(ELBO)
OBJECTIVES.register("iwae")(IWAEBound)

OPTIMIZERS: Registry = Registry("optimizer")
for _name, _cls in {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
                    "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}.items():
    OPTIMIZERS.register(_name)(_cls)

MODULES: Registry = Registry("module")
MODULES.register("variational")(VariationalMethod)


@dataclass(frozen=True)
class MethodPreset:
    """A named method: which module trains which model with which objective (all overridable)."""

    description: str
    model: Any
    objective: Any
    module: Any = "variational"
    optimizer: Any = field(default_factory=lambda: {"class_path": "adam", "init_args": {"lr": 1e-3}})
    citation: str = ""


METHODS: Registry = Registry("method")
METHODS.register("vae")(MethodPreset(  # type: ignore[arg-type]
    "Gaussian VAE trained by the reparameterised ELBO (analytic KL)", "gaussian-vae", "elbo",
    citation="Kingma & Welling 2014"))
METHODS.register("iwae")(MethodPreset(  # type: ignore[arg-type]
    "Gaussian VAE trained by the importance-weighted bound L_5", "gaussian-vae",
    {"class_path": "iwae", "init_args": {"k": 5}}, citation="Burda, Grosse & Salakhutdinov 2016"))
