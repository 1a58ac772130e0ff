"""The stick-breaking VAE of Nalisnick & Smyth (2017), "Stick-Breaking Variational Autoencoders"."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Beta, Independent
from torch.nn import functional as F

from dgm_modules.models.base import ExplicitLatentModel, LatentKind
from dgm_modules.models.kl_kumaraswamy_beta import kl_kumaraswamy_beta
from dgm_modules.models.kumaraswamy import StableKumaraswamy
from dgm_modules.models.stick_breaking import check_nonparametric_options, truncated_weights
from dgm_modules.networks.mlp import MLP
from dgm_modules.registry import MODELS

#: samples are kept in [EPS, 1 - EPS]: float32 draws can round to exactly 0 or 1, where the densities are
#: infinite; the probability q puts outside is negligible unless its concentrations are extreme
EPS = 1e-6


@MODELS.register("stick-breaking-vae")
class StickBreakingVAE(ExplicitLatentModel):
    """Latent stick-breaking weights with a Kumaraswamy posterior and a GEM(alpha0) prior.

    The latents are ``T - 1`` stick fractions ``v_k``: prior ``Beta(1, alpha0)`` (the Dirichlet
    process's weights, truncated at ``T``), posterior ``Kumaraswamy(a_k(x), b_k(x))``, which is
    reparameterisable (sampled and scored in log space: ``StableKumaraswamy``). The decoder reads
    the ``T`` weights ``pi = (pi_1..pi_{T-1}, remainder)``: the
    last weight is the stick left over, so the weights sum to 1 (the paper fixes ``v_T = 1``, the same
    thing). Importance weights use the exact Beta and Kumaraswamy densities of the fractions;
    :meth:`analytic_elbo` computes the KL exactly by quadrature (``kl_terms=None``), or by the paper's
    series truncated at ``kl_terms`` terms. The paper's MNIST model is ``hidden=(500,), truncation=50, alpha0=5``.

    Args:
        input_shape: shape of one example; injected from the data.
        truncation: number of stick weights ``T`` (>= 2); ``T - 1`` fractions are latent.
        alpha0: concentration of the Beta(1, alpha0) prior on each fraction (> 0).
        hidden: widths of the encoder's hidden layers (the decoder mirrors them).
        activation: nonlinearity between layers.
        kl_terms: ``None`` (default): the KL's ``E_q[log(1 - v)]`` by quadrature, exact to ~1e-5 nats
            per stick; an integer ``M``: the paper's series truncated at ``M`` terms (10 in the paper),
            which underestimates the KL by up to tens of nats per stick when a posterior's ``b < 1``,
            so that the analytic ELBO is then no bound (see ``kl_kumaraswamy_beta``).
    """

    latent_kind = LatentKind.CONTINUOUS

    def __init__(self, input_shape: tuple[int, ...], truncation: int = 50, alpha0: float = 5.0,
                 hidden: Sequence[int] = (200, 200), activation: str = "tanh", kl_terms: int | None = None) -> None:
        super().__init__(input_shape)
        check_nonparametric_options(alpha0, truncation)
        if any(h < 1 for h in hidden):
            raise ValueError(f"model.hidden widths must be >= 1, got {list(hidden)}")
        if kl_terms is not None and kl_terms < 1:
            raise ValueError(f"model.kl_terms must be >= 1, got {kl_terms} (or null: the exact KL by quadrature)")
        d = math.prod(self.input_shape)
        self.truncation, self.alpha0, self.kl_terms = truncation, float(alpha0), kl_terms
        self.inference = MLP(d, hidden, 2 * (truncation - 1), activation)
        self.generative = MLP(truncation, list(reversed(hidden)), d, activation)
        self.register_buffer("_one", torch.ones(()), persistent=False)

    def q(self, x: Tensor) -> Independent:
        # softplus keeps both concentrations positive; the small floor avoids a = 0 or b = 0
        a, b = (F.softplus(h) + 1e-4 for h in self.inference(x.flatten(1)).chunk(2, dim=-1))
        return Independent(StableKumaraswamy(a, b, validate_args=False), 1)

    def prior(self) -> Independent:
        one = self._one.expand(self.truncation - 1)
        return Independent(Beta(one, one * self.alpha0, validate_args=False), 1)

    def likelihood(self, v: Tensor) -> Independent:
        return Independent(Bernoulli(logits=self.generative(truncated_weights(v)), validate_args=False), 1)

    def clamp_latent(self, v: Tensor) -> Tensor:
        return v.clamp(EPS, 1 - EPS)  # Kumaraswamy and Beta densities are infinite at 0 and 1

    def kl(self, q: Independent) -> Tensor:
        """``KL(q(v | x) || p(v))`` summed over the sticks: ``[B]``."""
        kuma = q.base_dist
        return kl_kumaraswamy_beta(kuma.concentration1, kuma.concentration0, 1.0, self.alpha0, self.kl_terms).sum(-1)

    def analytic_elbo(self, x: Tensor) -> Tensor:
        q = self.q(x)
        v = q.rsample().clamp(EPS, 1 - EPS)
        return self.likelihood(v).log_prob(x.flatten(1)) - self.kl(q)

    def component_weights(self, x: Tensor) -> Tensor:
        """``E_q[pi | x]`` (``[B, T]``): exact, because the fractions are independent under q."""
        return truncated_weights(self.q(x).base_dist.mean)

    def latent_means(self, x: Tensor) -> Tensor:
        """The representation scored by kNN: the posterior mean of the stick weights (``[B, T]``)."""
        return self.component_weights(x)
