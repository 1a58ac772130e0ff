"""A run's configuration: resolved (every default filled in), validated, then built.

A config has the sections ``data``, ``model``, ``objective``, ``optimizer``, ``module`` (each
``{"class_path", "init_args"}``), plus ``trainer`` (Lightning ``Trainer`` options) and the
top-level ``method``, ``seed`` and ``setting``. Everything is checked before training starts.
"""
from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

import lightning as L
import yaml

from benchmarks.curves import resolve_curve, resolve_early_stopping
from benchmarks.resume import resolve_checkpoint
from datamodules import DATAMODULES
from dgm_modules.components import METHODS, MODELS, MODULES, OBJECTIVES, OPTIMIZERS
from dgm_modules.registry import ConfigError, Registry, normalise_spec, resolve_init_args

COMPONENT_SECTIONS: dict[str, Registry] = {
    "data": DATAMODULES, "model": MODELS, "objective": OBJECTIVES, "optimizer": OPTIMIZERS, "module": MODULES,
}
#: values a component receives from elsewhere, so config cannot set them
INJECTED = {"data": ("seed",), "model": ("input_shape",), "module": ("model", "objective", "optimizer"),
            "optimizer": ("params",), "objective": (), }
TRAINER_DEFAULTS: dict[str, Any] = {"max_epochs": 10, "accelerator": "auto", "devices": 1,
                                    "log_every_n_steps": 50, "gradient_clip_val": None}
#: Trainer options the runner owns (logging, checkpoints, output folder)
TRAINER_RESERVED = ("logger", "callbacks", "default_root_dir", "enable_checkpointing", "use_distributed_sampler")
#: gradvar, curve, early_stopping, ais and checkpoint are optional (benchmarks/callbacks.py, curves.py, ais.py,
#: resume.py)
TOP_LEVEL = ("method", "seed", "setting", "trainer", "gradvar", "curve", "early_stopping", "ais", "checkpoint",
             *COMPONENT_SECTIONS)


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_set(assignments: list[str]) -> dict:
    """``["objective.k=50", "trainer.max_epochs=3"]`` -> nested overrides (values parsed as YAML).

    For component sections ``section.key`` means ``section.init_args.key``; ``section=name``
    and ``section.class_path=name`` choose the class.
    """
    out: dict = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. objective.k=50")
        value = yaml.safe_load(raw) if raw else ""
        path = key.split(".")
        if path[0] in COMPONENT_SECTIONS and len(path) > 1 and path[1] not in ("class_path", "init_args"):
            path = [path[0], "init_args", *path[1:]]
        elif path[0] in COMPONENT_SECTIONS and len(path) == 1:
            path = [path[0], "class_path"]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def load_yaml(path: str) -> dict:
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def default_config(method: str, data: str | dict, seed: int = 0) -> dict:
    preset = METHODS.get(method, "method")
    return {
        "method": method, "seed": seed, "setting": "default",
        "data": normalise_spec(data, "data"), "model": normalise_spec(preset.model, "model"),
        "objective": normalise_spec(preset.objective, "objective"),
        "optimizer": normalise_spec(preset.optimizer, "optimizer"),
        "module": normalise_spec(preset.module, "module"), "trainer": dict(TRAINER_DEFAULTS),
    }


def resolve_config(method: str, data: str | dict, seed: int = 0, overrides: dict | None = None) -> dict:
    """The fully resolved, validated config of one run."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    config = deep_merge(default_config(method, data, seed), overrides or {})
    unknown = sorted(set(config) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid: {', '.join(TOP_LEVEL)}")
    for section, registry in COMPONENT_SECTIONS.items():
        spec = normalise_spec(config[section], section)
        cls = registry.get(spec["class_path"], f"{section}.class_path")
        init = resolve_init_args(cls, spec["init_args"], section, INJECTED[section])
        config[section] = {"class_path": spec["class_path"], "init_args": init}
    config["trainer"] = resolve_trainer(config["trainer"])
    if "gradvar" in config:  # gradient-estimator variance during training (benchmarks/callbacks.py)
        from benchmarks.callbacks import resolve_gradvar

        config["gradvar"] = resolve_gradvar(config["gradvar"], config["model"])
    if "curve" in config:
        config["curve"] = resolve_curve(config["curve"])
    if "early_stopping" in config:
        config["early_stopping"] = resolve_early_stopping(config["early_stopping"])
    if "checkpoint" in config:  # periodic mid-epoch checkpoints (benchmarks/resume.py)
        config["checkpoint"] = resolve_checkpoint(config["checkpoint"])
    if "ais" in config:  # AIS and BDMC at the test stage (benchmarks/ais.py)
        from benchmarks.ais import resolve_ais

        config["ais"] = resolve_ais(config["ais"], config["model"])
    return config


def resolve_trainer(options: dict) -> dict:
    if not isinstance(options, dict):
        raise ConfigError(f"trainer: expected a mapping of Trainer options, got {options!r}")
    valid = [n for n in inspect.signature(L.Trainer.__init__).parameters if n != "self"]
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ConfigError(f"trainer: unknown option(s) {bad}; see lightning.Trainer for valid options")
    reserved = sorted(set(options) & set(TRAINER_RESERVED))
    if reserved:
        raise ConfigError(f"trainer: option(s) {reserved} are set by dgm-bench itself")
    max_epochs = options.get("max_epochs")
    if max_epochs is not None and (not isinstance(max_epochs, int) or max_epochs < 1):
        raise ConfigError(f"trainer.max_epochs: expected an integer >= 1, got {max_epochs!r}")
    return options


def _construct(section: str, registry: Registry, config: dict, **injected: Any) -> Any:
    spec = config[section]
    cls = registry.get(spec["class_path"], f"{section}.class_path")
    try:
        return cls(**injected, **spec["init_args"])
    except (ValueError, TypeError) as err:
        msg = str(err)
        raise ConfigError(msg if section in msg else f"{section}: {msg}") from None


def build(config: dict) -> tuple[L.LightningDataModule, L.LightningModule]:
    """Instantiate the DataModule and LightningModule of a resolved config (seeded)."""
    L.seed_everything(config["seed"], verbose=False)
    datamodule = _construct("data", DATAMODULES, config, seed=config["seed"])
    model = _construct("model", MODELS, config, input_shape=tuple(datamodule.dims))
    objective = _construct("objective", OBJECTIVES, config)
    opt_cls = OPTIMIZERS.get(config["optimizer"]["class_path"], "optimizer.class_path")
    optimizer = functools.partial(opt_cls, **config["optimizer"]["init_args"])
    lr = config["optimizer"]["init_args"].get("lr")
    if isinstance(lr, (int, float)) and lr <= 0:
        raise ConfigError(f"optimizer.lr must be > 0, got {lr}")
    try:  # surface torch's own checks (a learning rate <= 0, ...) before training
        optimizer(model.parameters())
    except (ValueError, TypeError) as err:
        raise ConfigError(f"optimizer: {err}") from None
    module = _construct("module", MODULES, config, model=model, objective=objective, optimizer=optimizer)
    return datamodule, module
