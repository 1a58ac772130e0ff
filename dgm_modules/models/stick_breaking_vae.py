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
#: the exp link's log-concentrations are clamped here: a, b in [1.2e-4, 3.3e6]. The floor is the softplus
#: link's; the ceiling is high because a precise fraction near m needs b ~ m^(-a) (v^a ~ Beta(1, b)): on
#: MNIST, b reaches 1e5-1e6 at a ~ 6 (under a ceiling of 8.1e3 the first sticks' median b sat on it).
#: There the KL's quadrature agrees with 2e6-draw Monte Carlo within 1e-3 nats (a in [0.5, 20]).
LOG_CONCENTRATION_RANGE = (-9.0, 15.0)
LINKS = ("exp", "softplus")


@MODELS.register("stick-breaking-vae")
class StickBreakingVAE(ExplicitLatentModel):
    """Latent stick-breaking weights with a Kumaraswamy posterior and a GEM(alpha0) prior.

    The latents are ``T - 1`` stick fractions ``v_k``: prior ``Beta(1, alpha0)`` (the Dirichlet
    process's weights, truncated at ``T``), posterior ``Kumaraswamy(a_k(x), b_k(x))``, which is
    reparameterisable (sampled and scored in log space: ``StableKumaraswamy``). The decoder reads
    the ``T`` weights ``pi = (pi_1..pi_{T-1}, remainder)``: the
    last weight is the stick left over, so the weights sum to 1 (the paper fixes ``v_T = 1``, the same
    thing), scaled by ``pi_scale`` (``T`` by default: see below). Importance weights use the exact Beta and Kumaraswamy densities of the fractions;
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
        pi_scale: the decoder reads ``pi_scale * pi``. ``None`` (default): ``T``, so its inputs average 1
            like a unit-variance Gaussian code; ``1.0``: the raw weights, as the paper. The two are the same
            model (the first decoder layer absorbs the constant) but not the same optimisation: the weights
            lie on the simplex (entries ~1/T, norm <= 1), so with raw weights the first layer's pre-activations
            start ~T times smaller and Adam, whose steps are ~lr per weight whatever the input's scale, needs
            ~T times more steps to make the decoder use the code: the encoder meanwhile sits at the prior.
            On grey-level MNIST (500 tanh units, T = 50, lr 3e-4, 2,000 steps) -L_100 is 173.0 raw, 134.7 scaled.
        link: how the encoder's outputs become the concentrations ``a, b``. ``"exp"`` (default): they are
            ``log a, log b``, as a Gaussian VAE's are ``log sigma``; ``"softplus"``: ``softplus(h) + 1e-4``, as
            the paper. An informative Kumaraswamy needs ``a`` in the tens and ``b ~ m^(-a)`` far larger, which a softplus head
            (linear there) reaches only at Adam's ~lr per step, an exp head in relative steps: with ``pi_scale``
            at ``T``, -L_100 at 2,000 steps is 134.7 (softplus) and 124.3 (exp); the Gaussian VAE's is 122.5.
    """

    latent_kind = LatentKind.CONTINUOUS

    def __init__(self, input_shape: tuple[int, ...], truncation: int = 50, alpha0: float = 5.0,
                 hidden: Sequence[int] = (200, 200), activation: str = "tanh", kl_terms: int | None = None,
                 pi_scale: float | None = None, link: str = "exp") -> None:
        super().__init__(input_shape)
        check_nonparametric_options(alpha0, truncation)
        if any(h < 1 for h in hidden):
            raise ValueError(f"model.hidden widths must be >= 1, got {list(hidden)}")
        if kl_terms is not None and kl_terms < 1:
            raise ValueError(f"model.kl_terms must be >= 1, got {kl_terms} (or null: the exact KL by quadrature)")
        if pi_scale is not None and not pi_scale > 0:  # also refuses NaN
            raise ValueError(f"model.pi_scale must be > 0, got {pi_scale} (or null: the truncation)")
        if link not in LINKS:
            raise ValueError(f"model.link={link!r} is not valid; choose one of {list(LINKS)}")
        d = math.prod(self.input_shape)
        self.link = link
        self.truncation, self.alpha0, self.kl_terms = truncation, float(alpha0), kl_terms
        self.pi_scale = float(truncation if pi_scale is None else pi_scale)
        self.inference = MLP(d, hidden, 2 * (truncation - 1), activation)
        self.generative = MLP(truncation, list(reversed(hidden)), d, activation)
        self.register_buffer("_one", torch.ones(()), persistent=False)

    def q(self, x: Tensor) -> Independent:
        h = self.inference(x.flatten(1))
        if self.link == "exp":
            a, b = h.clamp(*LOG_CONCENTRATION_RANGE).exp().chunk(2, dim=-1)
        else:  # softplus keeps both concentrations positive; the small floor avoids a = 0 or b = 0
            a, b = (F.softplus(h) + 1e-4).chunk(2, dim=-1)
        return Independent(StableKumaraswamy(a, b, validate_args=False), 1)

    def prior(self) -> Independent:
        one = self._one.expand(self.truncation - 1)
        return Independent(Beta(one, one * self.alpha0, validate_args=False), 1)

    def likelihood(self, v: Tensor) -> Independent:
        decoder_input = self.pi_scale * truncated_weights(v)
        return Independent(Bernoulli(logits=self.generative(decoder_input), validate_args=False), 1)

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
