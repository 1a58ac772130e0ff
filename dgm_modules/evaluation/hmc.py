"""Hamiltonian Monte Carlo transitions for many independent chains at once (Neal 2011).

Every chain is one row of a ``[chains, batch, d]`` tensor with its own step size; the target is
``log f(z) = log p0(z) + beta * log r(z)``, the geometric path of annealed importance sampling,
so one gradient evaluation of the two terms serves every ``beta`` at the same point.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

#: ``z [C, B, d] -> (log p0(z), log r(z))``, each ``[C, B]``
PathTerms = Callable[[Tensor], tuple[Tensor, Tensor]]

TARGET_ACCEPTANCE = 0.65  # Neal (2011) and Wu et al. (2017): HMC's efficiency peaks near 0.65
STEP_GROWTH = 1.02  # multiplicative step-size change per transition (as in Wu et al.'s code)
STEP_RANGE = (1e-4, 1.0)
ACCEPTANCE_DECAY = 0.9  # moving average of each chain's acceptance probability


@dataclass
class ChainState:
    """The chains' positions with the path terms and their gradients there (reused across betas)."""

    z: Tensor
    log_p0: Tensor
    log_r: Tensor
    grad_p0: Tensor
    grad_r: Tensor

    def log_f(self, beta: float) -> Tensor:
        return self.log_p0 + beta * self.log_r

    def grad_f(self, beta: float) -> Tensor:
        return self.grad_p0 + beta * self.grad_r

    def where(self, keep_new: Tensor, new: "ChainState") -> "ChainState":
        k = keep_new.unsqueeze(-1)
        return ChainState(torch.where(k, new.z, self.z), torch.where(keep_new, new.log_p0, self.log_p0),
                          torch.where(keep_new, new.log_r, self.log_r), torch.where(k, new.grad_p0, self.grad_p0),
                          torch.where(k, new.grad_r, self.grad_r))


def evaluate_terms(terms: PathTerms, z: Tensor) -> ChainState:
    """The path terms at ``z`` and their gradients with respect to ``z`` (never to the parameters)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        log_p0, log_r = terms(z)
        (grad_p0,) = torch.autograd.grad(log_p0.sum(), z, retain_graph=True)
        (grad_r,) = torch.autograd.grad(log_r.sum(), z)
    return ChainState(z.detach(), log_p0.detach(), log_r.detach(), grad_p0, grad_r)


def hmc_transition(terms: PathTerms, state: ChainState, beta: float, step_size: Tensor,
                   leapfrog_steps: int) -> tuple[ChainState, Tensor]:
    """One HMC transition per chain leaving ``f_beta`` invariant: a fresh N(0, I) momentum,
    ``leapfrog_steps`` leapfrog steps of size ``step_size [C, B]``, a Metropolis accept/reject.

    Returns the new state and each chain's acceptance probability ``[C, B]``.
    """
    eps = step_size.unsqueeze(-1)
    p0 = torch.randn_like(state.z)
    p = p0 + 0.5 * eps * state.grad_f(beta)
    new = state
    for i in range(leapfrog_steps):
        new = evaluate_terms(terms, new.z + eps * p)
        if i < leapfrog_steps - 1:
            p = p + eps * new.grad_f(beta)
    p = p + 0.5 * eps * new.grad_f(beta)
    log_accept = (new.log_f(beta) - 0.5 * p.pow(2).sum(-1)) - (state.log_f(beta) - 0.5 * p0.pow(2).sum(-1))
    log_accept = torch.nan_to_num(log_accept, nan=-torch.inf)  # a diverged trajectory is rejected
    accept = torch.rand_like(log_accept).log() < log_accept
    return state.where(accept, new), log_accept.clamp(max=0.0).exp()


def adapt_step_size(step_size: Tensor, mean_acceptance: Tensor, acceptance: Tensor) -> tuple[Tensor, Tensor]:
    """Grow each chain's step where its running acceptance exceeds the target, shrink it elsewhere.

    Each transition's step size depends on the chain's past only, so each transition still leaves
    its own intermediate distribution invariant and the AIS weights stay valid.
    """
    mean_acceptance = ACCEPTANCE_DECAY * mean_acceptance + (1 - ACCEPTANCE_DECAY) * acceptance
    factor = torch.where(mean_acceptance > TARGET_ACCEPTANCE, STEP_GROWTH, 1 / STEP_GROWTH)
    return (step_size * factor).clamp(*STEP_RANGE), mean_acceptance
