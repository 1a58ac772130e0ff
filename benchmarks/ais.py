"""AIS and BDMC as an opt-in test-stage evaluation: the config section ``ais`` (matrix specs,
``--config`` files) or ``dgm-bench evaluate RUN --ais``.

``ais: {steps: 1000, chains: 16, images: 1000, sim_images: 100}`` adds to the test metrics
``test/nll_ais`` (forward AIS on the first ``images`` test images, nats) and, on ``sim_images``
images simulated from the model, ``test/bdmc_gap`` (reverse minus forward AIS) with the two
bounds; each with its wall time (``test/ais_seconds``, ``test/bdmc_seconds``). The options,
chains and steps included, stay in the record's resolved config. The noise is seeded by
``ais.seed`` in a forked RNG, so a run with AIS trains and tests exactly as one without.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from dgm_modules.evaluation.ais import SUPPORTED_KINDS, AISOptions, AISTarget, ais_log_likelihood, bdmc
from dgm_modules.registry import ConfigError

#: options of the section besides :class:`AISOptions`'s own
EXTRA_KEYS = {"images": 1_000, "sim_images": 100, "seed": 0}
AIS_KEYS = {**{f.name: f.default for f in dataclasses.fields(AISOptions)}, **EXTRA_KEYS}


def resolve_ais(options: Any, model_spec: dict | None = None) -> dict:
    """The section ``ais`` with every default filled in, validated (the model's latents too)."""
    if options is True or options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f"ais: expected a mapping with keys {sorted(AIS_KEYS)}, got {options!r}")
    unknown = sorted(set(options) - set(AIS_KEYS))
    if unknown:
        raise ConfigError(f"ais: unknown option(s) {unknown}; valid options: {', '.join(sorted(AIS_KEYS))}")
    out = {**AIS_KEYS, **options}
    try:
        options_of(out)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for name in ("images", "sim_images", "seed"):
        value, least = out[name], 1 if name == "images" else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"ais.{name} must be an integer >= {least}, got {value!r}")
    if model_spec is not None:
        from dgm_modules.components import MODELS

        cls = MODELS.get(model_spec["class_path"], "model.class_path")
        kind = getattr(cls, "latent_kind", None)
        if not isinstance(kind, str):  # a property: the sigmoid belief net's discrete or relaxed units
            kind = "option-dependent (discrete or relaxed)"
        if kind not in SUPPORTED_KINDS:
            raise ConfigError(f"ais: model {model_spec['class_path']!r} has {kind!r} latents; AIS needs "
                              f"continuous latents (latent kinds {list(SUPPORTED_KINDS)}): drop the ais section")
        if kind == "implicit" and out["obs_sigma"] is None:
            raise ConfigError(f"ais.obs_sigma is required for model {model_spec['class_path']!r} (no likelihood): "
                              f"set the Gaussian observation noise, e.g. ais.obs_sigma=0.05")
    return out


def options_of(section: dict) -> AISOptions:
    return AISOptions(**{k: v for k, v in section.items() if k not in EXTRA_KEYS})


class AISEvaluation(Callback):
    """At the end of the test stage: AIS on the test images and BDMC on simulated ones (rank 0)."""

    def __init__(self, section: dict, model: torch.nn.Module) -> None:
        self.section, self.options = section, options_of(section)
        try:
            self.target = AISTarget(model, self.options.obs_sigma)
            self.target.check_start(self.options.start)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _test_images(self, trainer: L.Trainer, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        xs, n = [], 0
        for batch in trainer.datamodule.test_dataloader():
            xs.append(batch.x)
            n += batch.x.shape[0]
            if n >= self.section["images"]:
                break
        return torch.cat(xs)[: self.section["images"]].to(device=device, dtype=dtype)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:  # every rank would compute the same numbers
            return
        metrics = self.evaluate(trainer, pl_module)
        for name, value in metrics.items():
            pl_module.log(name, value, rank_zero_only=True, sync_dist=False)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        param = next(pl_module.parameters())
        devices = [param.device] if param.device.type == "cuda" else []
        out: dict[str, float] = {}
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.section["seed"])
            t0 = time.perf_counter()
            x = self._test_images(trainer, param.device, param.dtype)
            out["test/nll_ais"] = -ais_log_likelihood(self.target, x, self.options).mean().item()
            out["test/ais_seconds"] = time.perf_counter() - t0
            if self.section["sim_images"] > 0:
                t0 = time.perf_counter()
                b = bdmc(self.target, self.section["sim_images"], self.options)
                out.update({"test/bdmc_gap": b["gap"].mean().item(),
                            "test/bdmc_nll_forward": -b["lower"].mean().item(),
                            "test/bdmc_nll_reverse": -b["upper"].mean().item(),
                            "test/bdmc_seconds": time.perf_counter() - t0})
        return out


def ais_callbacks(config: dict, module: L.LightningModule) -> list[Callback]:
    """The run's AIS evaluation when its config has an ``ais`` section (checked against the model)."""
    if "ais" not in config:
        return []
    return [AISEvaluation(resolve_ais(config["ais"], config.get("model")), module.model)]
