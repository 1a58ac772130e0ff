"""Annealed importance sampling (Neal 2001) of ``log p(x)`` and its bidirectional check (BDMC).

AIS moves chains along the geometric path ``f_t(z) = p0(z)^(1 - beta_t) p(x, z)^beta_t`` from a
normalised start ``p0`` (the prior, or ``q(z | x)``: "AIS+encoder") to the unnormalised posterior,
with HMC transitions (:mod:`dgm_modules.evaluation.hmc`), and accumulates the log weights
``sum_t (beta_t - beta_{t-1}) log r(z_{t-1})``, ``r = p(x, z) / p0(z)``. ``log mean exp`` of the
weights over chains is a stochastic lower bound of ``log p(x)``. Reverse AIS along the same path,
started from an exact posterior sample (available for data simulated from the model), is an
unbiased estimator of ``1 / p(x)``, hence a stochastic upper bound; the gap between the two on
simulated data bounds how far either is from the truth (Grosse et al. 2015; Wu et al. 2017).

Models: any :class:`LatentVariableModel` with one real-valued latent layer and a ``prior()``;
generators (the GAN, and the VAE-GAN's decoder) under ``p(x | z) = N(x; G(z), sigma^2 I)``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from dgm_modules.evaluation.hmc import ChainState, PathTerms, adapt_step_size, evaluate_terms, hmc_transition
from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.objectives.functional import log_mean_exp

SCHEDULES = ("sigmoid", "geometric")
STARTS = ("prior", "encoder")
#: latent kinds AIS can anneal over (HMC needs real-valued latents)
SUPPORTED_KINDS = (LatentKind.CONTINUOUS, LatentKind.IMPLICIT)


@dataclass(frozen=True)
class AISOptions:
    """What one AIS evaluation does and costs.

    Args:
        steps: intermediate distributions ``T`` (``T - 1`` HMC transitions); ``steps=1`` with
            ``start="encoder"`` is plain importance sampling, i.e. ``L_chains``.
        chains: independent chains per image; the estimate is the log-mean-exp over them.
        leapfrog: leapfrog steps per HMC transition.
        schedule: ``sigmoid`` (Grosse et al. 2015, dense at both ends) or ``geometric`` betas.
        start: ``prior`` or ``encoder`` (``q(z | x)``, needs a model with an inference network).
        step_size: initial HMC step size, adapted per chain towards 0.65 acceptance.
        max_pairs: at most this many (chain, image) pairs are annealed at once; bounds memory.
        obs_sigma: for generators (GAN, VAE-GAN decoder): the observation noise of
            ``N(x; G(z), sigma^2 I)``; ``None`` uses the model's own likelihood.
    """

    steps: int = 1000
    chains: int = 16
    leapfrog: int = 10
    schedule: str = "sigmoid"
    start: str = "prior"
    step_size: float = 0.1
    max_pairs: int = 4_096
    obs_sigma: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "chains", "leapfrog", "max_pairs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ais.{name} must be an integer >= 1, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"ais.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.start not in STARTS:
            raise ValueError(f"ais.start must be one of {list(STARTS)}, got {self.start!r}")
        if not self.step_size > 0:
            raise ValueError(f"ais.step_size must be > 0, got {self.step_size!r}")
        if self.obs_sigma is not None and not self.obs_sigma > 0:
            raise ValueError(f"ais.obs_sigma must be > 0 (or null: the model's own likelihood), got {self.obs_sigma!r}")


def betas(steps: int, schedule: str = "sigmoid", delta: float = 4.0, smallest: float = 1e-4) -> Tensor:
    """``steps + 1`` inverse temperatures from exactly 0 to exactly 1 (float64)."""
    if schedule == "sigmoid":  # Grosse et al. (2015): sigmoid(delta (2t/T - 1)) rescaled to [0, 1]
        s = torch.sigmoid(torch.linspace(-delta, delta, steps + 1, dtype=torch.float64))
        out = (s - s[0]) / (s[-1] - s[0])
    elif schedule == "geometric":
        out = torch.cat([torch.zeros(1, dtype=torch.float64),
                         torch.logspace(math.log10(smallest), 0, steps, dtype=torch.float64)])
    else:
        raise ValueError(f"ais.schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    out[0], out[-1] = 0.0, 1.0
    return out


class AISTarget:
    """The densities AIS needs from a model: ``log p(z)``, ``log p(x, z)``, optionally ``q(z | x)``,
    and ancestral samples ``(x, z)`` for BDMC. Latents are ``[C, B, d]``.

    Args:
        model: a :class:`LatentVariableModel` with one real-valued latent layer and a ``prior()``,
            or a model with a ``generator`` (the GAN).
        obs_sigma: score the model's generator (``generator`` or ``decode``) under
            ``N(x; G(z), sigma^2 I)`` instead of its own likelihood; required for a GAN.
    """

    def __init__(self, model: nn.Module, obs_sigma: float | None = None) -> None:
        kind = getattr(model, "latent_kind", None)
        name = type(model).__name__
        if kind not in SUPPORTED_KINDS:
            raise ValueError(f"ais: {name} has {kind!r} latents; AIS needs continuous latents "
                             f"(latent kinds {list(SUPPORTED_KINDS)})")
        prior = getattr(model, "prior", None)
        if prior is None:
            raise ValueError(f"ais: {name} has no prior() to anneal from")
        support = prior().support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        if support is not constraints.real:
            raise ValueError(f"ais: {name}'s prior has support {support}, not the real line; HMC needs "
                             f"unconstrained latents")
        self.model, self.obs_sigma = model, obs_sigma
        self.generator: Callable[[Tensor], Tensor] | None = None
        if obs_sigma is not None:
            # the GAN's generator network, else the VAE-GAN's decoder mean (modules are not truth-tested)
            self.generator = getattr(model, "generator", None)
            if self.generator is None:
                self.generator = getattr(model, "decode", None)
            if self.generator is None:
                raise ValueError(f"ais.obs_sigma applies to models with a generator (GAN, VAE-GAN); "
                                 f"{name} has its own likelihood: leave ais.obs_sigma null")
        elif not isinstance(model, LatentVariableModel):
            raise ValueError(f"ais.obs_sigma is required for {name}: an implicit model has no likelihood; "
                             f"set a Gaussian observation noise, e.g. ais.obs_sigma=0.05")
        self.has_encoder = isinstance(model, LatentVariableModel)

    def log_prior(self, z: Tensor) -> Tensor:
        return self.model.prior().log_prob(z)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        if self.generator is None:
            return self.model.log_joint(x, (z,))
        mean = self.generator(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:-1], -1)
        sq = (x.flatten(1) - mean).pow(2).sum(-1)
        d = mean.shape[-1]
        log_lik = -0.5 * sq / self.obs_sigma**2 - d * (math.log(self.obs_sigma) + 0.5 * math.log(2 * math.pi))
        return self.log_prior(z) + log_lik

    def check_start(self, start: str) -> None:
        if start not in STARTS:
            raise ValueError(f"ais.start must be one of {list(STARTS)}, got {start!r}")
        if start == "encoder" and not self.has_encoder:
            raise ValueError(f"ais.start='encoder' needs an inference network; {type(self.model).__name__} "
                             f"has none: use ais.start='prior'")

    def path(self, x: Tensor, start: str) -> tuple[Callable[[int], Tensor], PathTerms]:
        """``(sample p0 of [chains, B, d], terms z -> (log p0(z), log p(x, z) - log p0(z)))``."""
        self.check_start(start)
        if start == "prior":
            def sample(chains: int) -> Tensor:
                return self.model.prior().sample((chains, x.shape[0])).to(x.dtype)

            def log_p0(z: Tensor) -> Tensor:
                return self.log_prior(z)
        else:
            def sample(chains: int) -> Tensor:
                return self.model.sample_q(x, chains, reparam=False)[0][0].detach()

            def log_p0(z: Tensor) -> Tensor:
                return self.model.log_q(x, (z,))

        def terms(z: Tensor) -> tuple[Tensor, Tensor]:
            lp0 = log_p0(z)
            return lp0, self.log_joint(x, z) - lp0
        return sample, terms

    def simulate(self, n: int) -> tuple[Tensor, Tensor]:
        """``(x [n, ...], z [n, d])`` drawn from the model (exact posterior samples of their x)."""
        if self.generator is None:
            x, (z,) = self.model.sample_joint(n)
            return x, z
        z = self.model.prior().sample((n,))
        mean = self.generator(z)
        return (mean + self.obs_sigma * torch.randn_like(mean)).reshape(n, -1), z


def anneal(terms: PathTerms, z: Tensor, schedule: Tensor, options: AISOptions) -> Tensor:
    """Run AIS from ``z [C, B, d]`` (a draw from ``f`` at ``schedule[0]``) along ``schedule``;
    return the log weights ``[C, B]`` (float64). A decreasing schedule is reverse AIS."""
    state: ChainState = evaluate_terms(terms, z)
    log_w = torch.zeros(z.shape[:-1], dtype=torch.float64, device=z.device)
    step = torch.full(z.shape[:-1], options.step_size, dtype=z.dtype, device=z.device)
    mean_acc = torch.full_like(step, 0.65)
    last = len(schedule) - 1
    for t in range(1, last + 1):
        log_w += (schedule[t] - schedule[t - 1]).item() * state.log_r.double()
        if t < last:  # the transition at the final distribution would not change the weights
            state, acc = hmc_transition(terms, state, schedule[t].item(), step, options.leapfrog)
            step, mean_acc = adapt_step_size(step, mean_acc, acc)
    return log_w


def _outside_inference_mode(fn: Callable) -> Callable:
    """HMC needs gradients in z, also when called from Lightning's test loop (inference mode):
    leave it, and copy inference tensors that would otherwise be saved for backward."""
    @functools.wraps(fn)
    def wrapper(target: "AISTarget", *tensors_and_options: Any) -> Any:
        with torch.inference_mode(False), torch.no_grad():
            args = [a.clone() if isinstance(a, Tensor) and a.is_inference() else a for a in tensors_and_options]
            return fn(target, *args)
    return wrapper


def _chunks(n: int, options: AISOptions) -> list[slice]:
    per = max(1, options.max_pairs // options.chains)
    return [slice(i, min(i + per, n)) for i in range(0, n, per)]


@_outside_inference_mode
def ais_log_likelihood(target: AISTarget, x: Tensor, options: AISOptions) -> Tensor:
    """Forward AIS estimates of ``log p(x)``: ``[B]`` (stochastic lower bounds)."""
    sched = betas(options.steps, options.schedule)
    out = []
    for part in _chunks(x.shape[0], options):
        xs = x[part]
        sample, terms = target.path(xs, options.start)
        out.append(log_mean_exp(anneal(terms, sample(options.chains), sched, options), 0))
    return torch.cat(out)


@_outside_inference_mode
def reverse_ais_log_likelihood(target: AISTarget, x: Tensor, z: Tensor, options: AISOptions) -> Tensor:
    """Reverse AIS from exact posterior samples ``z [B, d]`` of ``x``: ``[B]`` stochastic upper
    bounds of ``log p(x)`` (each chain's weight is unbiased for ``1 / p(x)``)."""
    sched = betas(options.steps, options.schedule).flip(0)
    out = []
    for part in _chunks(x.shape[0], options):
        _, terms = target.path(x[part], options.start)
        z0 = z[part].unsqueeze(0).expand(options.chains, *z[part].shape).contiguous()
        out.append(-log_mean_exp(anneal(terms, z0, sched, options), 0))
    return torch.cat(out)


@_outside_inference_mode
def bdmc(target: AISTarget, n: int, options: AISOptions) -> dict[str, Tensor]:
    """Bidirectional Monte Carlo on ``n`` images simulated from the model: forward (lower) and
    reverse (upper) AIS of each, and their gap ``upper - lower`` ``[n]``."""
    if n < 1:
        raise ValueError(f"ais.sim_images must be >= 1 for BDMC, got {n}")
    x, z = target.simulate(n)
    lower = ais_log_likelihood(target, x, options)
    upper = reverse_ais_log_likelihood(target, x, z, options)
    return {"lower": lower, "upper": upper, "gap": upper - lower}
