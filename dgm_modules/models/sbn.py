"""Sigmoid belief nets (Neal 1992) with a mirrored recognition network, and their relaxations."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Literal, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli

from dgm_modules.models.base import LatentKind, Latents, LatentVariableModel
from dgm_modules.models.likelihoods import bernoulli_log_likelihood
from dgm_modules.networks.mlp import MLP
from dgm_modules.networks.sbn_layers import DiscreteFamily, DiscreteLayer, PriorLayer
from dgm_modules.registry import MODELS

Relaxation = Literal["none", "concrete", "straight-through", "straight-through-mean"]
RELAXATIONS = ("none", "concrete", "straight-through", "straight-through-mean")


def _hidden_widths(hidden: int | Sequence[int]) -> list[int]:
    widths = ([hidden] if hidden else []) if isinstance(hidden, int) else list(hidden)
    if any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"model.hidden must be an integer >= 0 or a list of integers >= 1, got {hidden!r}")
    return widths


@MODELS.register("sbn")
class SigmoidBeliefNet(LatentVariableModel):
    """A deep belief net of discrete stochastic layers ``x <- z_1 <- ... <- z_L`` and ``q(z | x)``.

    ``p(z_L) p(z_{L-1} | z_L) ... p(x | z_1)``, each conditional a layer of independent Bernoulli
    units (or one-hot categoricals) whose logits are a linear function of the layer above, or an
    MLP of it (``hidden``: the "nonlinear" SBN of Mnih & Gregor 2014; 512-256 for Jang et al. 2017).
    ``q(z_1 | x) q(z_2 | z_1) ...`` mirrors it bottom-up. The latents ``z`` are a tuple
    ``(z_1, ..., z_L)`` of ``[k, B, units]`` (Bernoulli) or ``[k, B, units, categories]`` tensors.

    **Relaxation** (Jang et al. 2017; Maddison et al. 2017). With ``relaxation="concrete"``, q
    draws from ``RelaxedBernoulli`` / ``RelaxedOneHotCategorical`` at the current temperature
    (reparameterised), and the densities are the discrete log-masses extended to relaxed points
    (``sum z log pi``), so the relaxed objective tends to the discrete ELBO as the temperature falls.
    (The Concrete *density* ratio of q and prior at one temperature does not depend on the
    temperature, so it would not tend to the discrete KL.) ``"straight-through"`` passes the hard
    sample forward (an exact draw from q) and the relaxed sample's gradient backward (ST Gumbel);
    ``"straight-through-mean"`` is the plain straight-through estimator of Bengio et al. (2013),
    the "ST" of Jang et al. 2017: the exact draw forward, the gradient of its mean backward. Either way
    the latent kind is ``"relaxed"``, which the reparameterised objectives (``elbo``, ``iwae``)
    train. The relaxation applies in training mode only: in eval mode (validation, test) q and all
    densities are the exact discrete ones, so ``L_k`` is a bound on the discrete model's ``log p(x)``.
    The temperature is ``max(temperature_min, temperature * exp(-anneal_rate * step))``, with
    ``step`` the number of training draws so far (a buffer, saved in checkpoints).

    Args:
        input_shape: shape of one example; injected from the data.
        latent_sizes: units (Bernoulli) or variables (categorical) per stochastic layer, bottom
            first, e.g. ``(200, 200)``.
        hidden: widths of the deterministic layers inside every conditional, listed bottom-up: the
            recognition nets use them in this order, the generative ones mirrored (``[512, 256]``:
            ``x -> 512 -> 256 -> z`` and ``z -> 256 -> 512 -> x``). An integer ``h`` is ``[h]``;
            0 or ``[]`` for the linear SBN.
        activation: nonlinearity of those deterministic layers.
        latent: ``"bernoulli"`` or ``"categorical"``.
        categories: classes per categorical variable (ignored for Bernoulli latents).
        relaxation: ``"none"`` (discrete, for score-function and wake-sleep objectives),
            ``"concrete"``, ``"straight-through"`` (Gumbel) or ``"straight-through-mean"``.
        temperature: initial temperature of the relaxation.
        temperature_min: floor of the annealed temperature.
        anneal_rate: exponential annealing rate per training step (0: constant temperature).
    """

    def __init__(self, input_shape: tuple[int, ...], latent_sizes: Sequence[int] = (200, 200),
                 hidden: int | Sequence[int] = 0,
                 activation: str = "tanh", latent: Literal["bernoulli", "categorical"] = "bernoulli",
                 categories: int = 10, relaxation: Relaxation = "none", temperature: float = 1.0,
                 temperature_min: float = 0.5, anneal_rate: float = 0.0) -> None:
        super().__init__(input_shape)
        if not latent_sizes or any(n < 1 for n in latent_sizes):
            raise ValueError(f"model.latent_sizes must be a non-empty list of integers >= 1, got {list(latent_sizes)}")
        up = _hidden_widths(hidden)
        if latent == "categorical" and categories < 2:
            raise ValueError(f"model.categories must be >= 2, got {categories}")
        if relaxation not in RELAXATIONS:
            raise ValueError(f"model.relaxation={relaxation!r} is not valid; choose one of {list(RELAXATIONS)}")
        for name, value in (("temperature", temperature), ("temperature_min", temperature_min)):
            if value <= 0:
                raise ValueError(f"model.{name} must be > 0, got {value}")
        if anneal_rate < 0:
            raise ValueError(f"model.anneal_rate must be >= 0, got {anneal_rate}")
        self.families = [DiscreteFamily(latent, n, categories) for n in latent_sizes]
        self.latent, self.relaxation = latent, relaxation
        self.temperature0, self.temperature_min, self.anneal_rate = temperature, temperature_min, anneal_rate
        d = math.prod(self.input_shape)
        widths = [d] + [f.n_features for f in self.families]
        down = up[::-1]
        self.inference = nn.ModuleList(DiscreteLayer(widths[i], f, up, activation)
                                       for i, f in enumerate(self.families))
        self.generative = nn.ModuleDict({
            "prior": PriorLayer(self.families[-1]),
            # layers[l] maps z_{l+1} to the logits of z_l
            "layers": nn.ModuleList(DiscreteLayer(widths[l + 2], self.families[l], down, activation)
                                    for l in range(len(self.families) - 1)),
            "likelihood": MLP(widths[1], down, d, activation),
        })
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))

    @property
    def latent_kind(self) -> LatentKind:  # type: ignore[override]
        return LatentKind(self.latent) if self.relaxation == "none" else LatentKind.RELAXED

    @property
    def temperature(self) -> float:
        return max(self.temperature_min, self.temperature0 * math.exp(-self.anneal_rate * int(self.anneal_step)))

    @contextmanager
    def relaxed_at(self, temperature: float) -> Iterator[None]:
        """Sample and score as in training (the relaxation) at a fixed ``temperature``, then restore the
        module's mode, temperature settings and annealing step: to measure the relaxed objective."""
        if self.relaxation == "none":
            raise ValueError(f"{type(self).__name__} has relaxation='none': there is no relaxed objective")
        saved = (self.training, self.temperature0, self.temperature_min, self.anneal_rate, self.anneal_step.clone())
        self.train()
        self.temperature0 = self.temperature_min = float(temperature)
        self.anneal_rate = 0.0
        try:
            yield
        finally:
            self.train(saved[0])
            self.temperature0, self.temperature_min, self.anneal_rate = saved[1:4]
            self.anneal_step.copy_(saved[4])

    def _relaxing(self) -> bool:
        return self.training and self.relaxation != "none"

    def _log_mass(self, family: DiscreteFamily, logits: Tensor, z: Tensor) -> Tensor:
        if self._relaxing():
            return family.relaxed_log_mass(logits, z)
        return family.exact(logits).log_prob(z)

    def sample_q(self, x: Tensor, k: int = 1, reparam: bool = True) -> tuple[Latents, Tensor]:
        # Discrete samples never carry a gradient, whatever `reparam` says; only a relaxed q can.
        relax = self._relaxing()
        if relax:
            tau = torch.tensor(self.temperature, device=x.device, dtype=x.dtype)
            self.anneal_step += 1
        h, zs, log_q = x.flatten(1), [], 0.0
        for i, (family, layer) in enumerate(zip(self.families, self.inference)):
            logits = layer(h)
            n = (k,) if i == 0 else ()  # later layers inherit the sample dimension from h
            if relax and self.relaxation == "straight-through-mean":
                mean = family.mean(logits)
                z = family.exact(logits).sample(n) + (mean - mean.detach())  # exactly the hard draw forward
                log_q = log_q + family.relaxed_log_mass(logits, z)
            elif relax:
                rel = family.relaxed(logits, tau)
                soft = rel.rsample(n) if reparam else rel.sample(n)
                z = soft if self.relaxation == "concrete" else family.harden(soft) + (soft - soft.detach())
                log_q = log_q + family.relaxed_log_mass(logits, z)
            else:
                q = family.exact(logits)
                z = q.sample(n)
                log_q = log_q + q.log_prob(z)
            zs.append(z)
            h = family.flatten(z)
        return tuple(zs), log_q

    @property
    def n_layers(self) -> int:
        """Number of stochastic layers."""
        return len(self.families)

    def q_logits(self, x: Tensor, z: Latents, layer: int) -> Tensor:
        """Logits of ``q(z_layer | z_{layer-1})`` (``z_0 = x``) given the latents below.

        The per-layer access of the estimators that perturb one layer at a time (ARM, DisARM,
        RELAX): ``[B, units]`` for the bottom layer (it sees only ``x``), ``[k, B, units]`` above.
        """
        h = x.flatten(1) if layer == 0 else self.families[layer - 1].flatten(z[layer - 1])
        return self.inference[layer](h)

    def log_q(self, x: Tensor, z: Latents) -> Tensor:
        """``log q(z | x)`` of given latents ``[k, B, ...]``: ``[k, B]``."""
        h, total = x.flatten(1), 0.0
        for family, layer, zl in zip(self.families, self.inference, z):
            total = total + self._log_mass(family, layer(h), zl)
            h = family.flatten(zl)
        return total

    def log_joint(self, x: Tensor, z: Latents) -> Tensor:
        gen = self.generative
        total = self._log_mass(self.families[-1], gen["prior"](), z[-1])
        for l in range(len(self.families) - 2, -1, -1):
            logits = gen["layers"][l](self.families[l + 1].flatten(z[l + 1]))
            total = total + self._log_mass(self.families[l], logits, z[l])
        x_logits = gen["likelihood"](self.families[0].flatten(z[0]))
        return total + bernoulli_log_likelihood(x_logits, x.flatten(1))  # the pixels: the hot path of L_k

    def sample_joint(self, n: int, mean: bool = False) -> tuple[Tensor, Latents]:
        gen = self.generative
        z = [self.families[-1].exact(gen["prior"]()).sample((n,))]
        for l in range(len(self.families) - 2, -1, -1):
            logits = gen["layers"][l](self.families[l + 1].flatten(z[0]))
            z.insert(0, self.families[l].exact(logits).sample())
        x_logits = gen["likelihood"](self.families[0].flatten(z[0]))
        px = Bernoulli(logits=x_logits, validate_args=False)
        return (px.mean if mean else px.sample()).view(n, *self.input_shape), tuple(z)
