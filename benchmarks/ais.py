"""AIS and BDMC as an opt-in test-stage evaluation: the config section ``ais`` (matrix specs,
``--config`` files) or ``dgm-bench evaluate RUN --ais``.

``ais: {steps: 1000, chains: 16, images: 1000, sim_images: 100}`` adds to the test metrics
``test/nll_ais`` (forward AIS on the first ``images`` test images, nats) and, on ``sim_images``
images simulated from the model, ``test/bdmc_gap`` (reverse minus forward AIS) with the two
bounds; each with its wall time (``test/ais_seconds``, ``test/bdmc_seconds``). Generators (GAN,
VAE-GAN decoder) are scored under ``N(x; G(z), sigma^2 I)`` with ``obs_sigma: 0.05``, or with
the candidate of highest AIS estimate on as many validation images (``obs_sigma: [0.02, 0.05,
0.1]``, logged as ``test/ais_obs_sigma``; its cost is inside ``test/ais_seconds``). The options,
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
from dgm_modules.registry import MODELS, ConfigError, section_options

#: options of the section besides :class:`AISOptions`'s own
EXTRA_KEYS = {"images": 1_000, "sim_images": 100, "seed": 0}
AIS_KEYS = {**{f.name: f.default for f in dataclasses.fields(AISOptions)}, **EXTRA_KEYS}


def resolve_ais(options: Any, model_spec: dict | None = None) -> dict:
    """The section ``ais`` with every default filled in, validated (the model's latents too)."""
    out = section_options("ais", {} if options is None else options, AIS_KEYS)
    sigmas = out["obs_sigma"]
    if isinstance(sigmas, list):  # candidates: the one of highest AIS estimate on validation is used
        if not sigmas:
            raise ConfigError("ais.obs_sigma: expected a number > 0 or a non-empty list of them, got []")
        sigmas = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in sigmas]
        out["obs_sigma"] = sigmas
    try:
        for sigma in sigmas if isinstance(sigmas, list) else [sigmas]:
            options_of(out, sigma)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None
    for name in ("images", "sim_images", "seed"):
        value, least = out[name], 1 if name == "images" else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"ais.{name} must be an integer >= {least}, got {value!r}")
    if model_spec is not None:
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


def options_of(section: dict, obs_sigma: float | None = None) -> AISOptions:
    return AISOptions(**{k: v for k, v in section.items() if k not in EXTRA_KEYS and k != "obs_sigma"},
                      obs_sigma=obs_sigma)


def sigma_candidates(section: dict) -> list[float | None]:
    sigma = section["obs_sigma"]
    return list(sigma) if isinstance(sigma, list) else [sigma]


class AISEvaluation(Callback):
    """At the end of the test stage: AIS on the test images and BDMC on simulated ones (rank 0)."""

    def __init__(self, section: dict, model: torch.nn.Module) -> None:
        self.section = section
        self.options = {s: options_of(section, s) for s in sigma_candidates(section)}
        try:
            self.targets = {s: AISTarget(model, s) for s in self.options}
            for s, target in self.targets.items():
                target.check_start(self.options[s].start)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _images(self, loader, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        xs, n = [], 0
        for batch in loader:
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
            sigma = next(iter(self.options))
            if len(self.options) > 1:  # Wu et al.: the observation noise of highest validation AIS estimate
                x_val = self._images(trainer.datamodule.val_dataloader(), param.device, param.dtype)
                scores = {s: ais_log_likelihood(self.targets[s], x_val, self.options[s]).mean().item()
                          for s in self.options}
                sigma = max(scores, key=scores.get)
                out["test/ais_obs_sigma"] = sigma
            x = self._images(trainer.datamodule.test_dataloader(), param.device, param.dtype)
            target, options = self.targets[sigma], self.options[sigma]
            out["test/nll_ais"] = -ais_log_likelihood(target, x, options).mean().item()
            out["test/ais_seconds"] = time.perf_counter() - t0
            if self.section["sim_images"] > 0:
                t0 = time.perf_counter()
                b = bdmc(target, self.section["sim_images"], options)
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
