"""REBAR and RELAX: learned control variates for Bernoulli latents (Tucker et al. 2017;
Grathwohl, Choi, Wu, Roeder & Duvenaud 2018)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.networks.mlp import MLP
from dgm_modules.objectives.arm import check_layered_bernoulli
from dgm_modules.objectives.base import Objective, ObjectiveOutput
from dgm_modules.objectives.stop_gradient import log_joint_path, log_q_path
from dgm_modules.registry import OBJECTIVES, check_k

EPS = 1e-6  # uniforms are kept in [EPS, 1 - EPS] so that their logits stay finite


@OBJECTIVES.register("relax")
class RELAX(Objective):
    """The ELBO of a one-layer SBN; phi's gradient by RELAX with a learned control variate ``c``.

    With logits ``a``, ``z = a + logit(u)`` (a logistic draw, ``b = 1[z > 0] ~ q``) and
    ``z~ = a + logit(u~)`` drawn from ``p(z | b)`` (``u~`` uniform on the part of [0, 1] that gives
    ``b``), the estimate of ``d E[f(b)] / d a`` is
    ``(f(b) - c(z~)) d log q(b) / d a + d c(z) / d a - d c(z~) / d a`` (both derivatives through
    the reparameterised draws), unbiased for any ``c``; it enters phi through ``a``. Here
    ``f = log p(x, b) - log q(b | x)``, and
    ``c(z) = eta * f(sigmoid(z / lambda)) + r([sigmoid(z), x])``: REBAR's relaxed ``f`` (the model's
    densities at the relaxed point, with theta and phi held fixed) plus RELAX's network ``r``.

    ``eta``, ``log lambda`` and ``r`` are this objective's parameters; the module's one optimiser
    trains them. Their gradient is set to that of the estimator's variance, ``d ||g||^2 / d psi``
    (the mean of ``g`` does not depend on them): in ``forward`` the phi-gradient estimate ``g`` is
    computed with ``torch.autograd.grad(..., create_graph=True)``, then ``d ||g||^2 / d psi`` by a
    second ``autograd.grad``, and the loss carries it as ``sum(G * (psi - psi.detach()))`` (zero in
    value). phi's estimate is carried the same way through ``a``, so phi receives no second-order
    term and psi nothing else. theta gets ``grad_theta log p(x, b)``. ``bound`` is the ELBO
    estimate; ``loss`` equals ``-bound`` in value. Without gradients enabled (evaluation) only
    the bound is computed.

    Multi-layer nets are refused: their control variates need a relaxed pass through every layer
    above; ``arm`` and ``disarm`` train them.

    Args:
        k: samples per example, each its own estimate (averaged).
        rebar: include REBAR's term ``eta * f(sigmoid(z / lambda))`` in ``c``.
        hidden: width of the hidden layer of RELAX's network ``r``; 0 for none (REBAR alone).
        temperature: initial ``lambda``.
        eta: initial ``eta``.
    """

    supported_latents = frozenset({LatentKind.BERNOULLI})

    def __init__(self, k: int = 1, rebar: bool = True, hidden: int = 100, temperature: float = 0.5,
                 eta: float = 1.0) -> None:
        super().__init__()
        check_k(k, "objective.k")
        if hidden < 0:
            raise ValueError(f"objective.hidden must be >= 0, got {hidden}")
        if temperature <= 0:
            raise ValueError(f"objective.temperature must be > 0, got {temperature}")
        if not rebar and hidden == 0:
            raise ValueError("objective.hidden must be >= 1 when objective.rebar is false (no control variate left)")
        self.k, self.rebar, self.hidden = k, rebar, hidden
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)), requires_grad=rebar)
        self.eta = nn.Parameter(torch.tensor(float(eta)), requires_grad=rebar)
        self.net: nn.Module | None = None

    def check_model(self, model: LatentVariableModel) -> None:
        """Refuse an incompatible model; build ``r`` for its sizes (before the optimiser exists)."""
        super().check_model(model)
        check_layered_bernoulli(model, "objective relax")
        if model.n_layers != 1:
            raise ValueError(f"objective relax trains sigmoid belief nets with one stochastic layer, got "
                             f"{model.n_layers} (model.latent_sizes); use objective arm or disarm for deeper nets")
        if self.hidden and self.net is None:
            with torch.no_grad():
                units = model.q_logits(torch.zeros(1, *model.input_shape), (), 0).shape[-1]
            self.net = MLP(units + math.prod(model.input_shape), [self.hidden], 1, "tanh")

    def control(self, model: LatentVariableModel, x: Tensor, z: Tensor) -> Tensor:
        """``c(z)`` for logistic draws ``z`` ``[k, B, units]``: ``[k, B]``."""
        c = torch.zeros(z.shape[:-1], device=z.device, dtype=z.dtype)
        if self.rebar:
            s = (torch.sigmoid(z / self.log_temperature.exp()),)
            c = c + self.eta * (log_joint_path(model, x, s) - log_q_path(model, x, s))
        if self.hidden:
            if self.net is None:
                raise RuntimeError("RELAX.check_model(model) must be called before training (it builds r)")
            inputs = torch.cat([torch.sigmoid(z), x.flatten(1).expand(z.shape[0], -1, -1)], -1)
            c = c + self.net(inputs).squeeze(-1)
        return c

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        logits = model.q_logits(x, (), 0)  # [B, units], with phi's graph
        a = logits.detach().requires_grad_(torch.is_grad_enabled())  # derivatives in a, then into phi
        u = torch.rand(self.k, *a.shape, device=a.device, dtype=a.dtype).clamp(EPS, 1 - EPS)
        v = torch.rand_like(u).clamp(EPS, 1 - EPS)
        p = torch.sigmoid(a)
        z = a + torch.logit(u)
        b = (z > 0).to(a.dtype).detach()
        z_cond = a + torch.logit((b * (1 - p + v * p) + (1 - b) * v * (1 - p)).clamp(EPS, 1 - EPS))  # ~ p(z | b)
        log_joint = model.log_joint(x, (b,))
        with torch.no_grad():
            f = log_joint - model.log_q(x, (b,))  # [k, B]
        bound = f.mean(0)
        theta_part = log_joint.mean(0)
        surrogate = bound + (theta_part - theta_part.detach())
        if not torch.is_grad_enabled():
            return ObjectiveOutput(loss=-surrogate.mean(), bound=bound, log_weights=f)
        c, c_cond = self.control(model, x, z), self.control(model, x, z_cond)
        (d_c,) = torch.autograd.grad((c - c_cond).sum(), a, create_graph=True)
        g_a = ((f - c_cond).unsqueeze(-1) * (b - p)).mean(0) + d_c / self.k  # [B, units]
        surrogate = surrogate + (g_a.detach() * (logits - logits.detach())).sum(-1)
        loss = -surrogate.mean() + self._variance_carrier(model, logits, g_a)
        return ObjectiveOutput(loss=loss, bound=bound, log_weights=f)

    def _variance_carrier(self, model: LatentVariableModel, logits: Tensor, g_a: Tensor) -> Tensor:
        """Zero in value; its gradient in the control variate's parameters is ``d ||g_phi||^2 / d psi``."""
        psi = [q for q in self.parameters() if q.requires_grad]
        phi = [q for q in model.phi_parameters() if q.requires_grad]
        g_phi = torch.autograd.grad((g_a * logits).sum() / logits.shape[0], phi, create_graph=True)
        variance = sum(g.square().sum() for g in g_phi)
        grads = torch.autograd.grad(variance, psi, allow_unused=True)
        return sum(((g.detach() * (q - q.detach())).sum() for q, g in zip(psi, grads) if g is not None),
                   torch.zeros((), device=logits.device))
