"""The shared exact-enumeration harness: a tiny sigmoid belief net whose every expectation over z
is a finite sum, exact bounds and gradients from autograd through those sums, the linear-Gaussian
model whose ELBO is closed-form, and the one check that a Monte Carlo mean agrees with an exact
value (coordinate-wise, within 4 standard errors of the draws' own spread)."""
from __future__ import annotations

import math

import torch
from torch.distributions import kl_divergence

from dgm_modules.models.linear_gaussian import LinearGaussian
from dgm_modules.models.sbn import SigmoidBeliefNet
from dgm_modules.networks.sbn_layers import DiscreteFamily

GROUPS = 60  # independent estimates per Monte Carlo mean; their spread gives the error bars
X = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
X_ALL = DiscreteFamily("bernoulli", 4).enumerate()  # [16, 4]: every visible configuration
X_REP = X.repeat(100, 1)  # each estimate averages 100 draws per example


def tiny_sbn(sizes=(3,), **kwargs) -> SigmoidBeliefNet:
    """4 binary visibles over Bernoulli layers ``sizes`` (bottom first), with larger weights than the
    default init so that the gradients are far from 0."""
    torch.manual_seed(0)
    model = SigmoidBeliefNet((4,), latent_sizes=sizes, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model


def exact_terms(model, x):
    """``log p(x, z)`` and ``log q(z | x)`` for every configuration z of every layer: ``[C, B]`` each."""
    grids = [DiscreteFamily("bernoulli", f.units).enumerate() for f in model.families]
    idx = torch.cartesian_prod(*[torch.arange(len(g)) for g in grids]).reshape(-1, len(grids))
    z = tuple(g[idx[:, i]][:, None, :].expand(-1, x.shape[0], -1) for i, g in enumerate(grids))
    return model.log_joint(x, z), model.log_q(x, z)


def exact_elbo(model, x):
    log_joint, log_q = exact_terms(model, x)
    return (log_q.exp() * (log_joint - log_q)).sum(0)


def exact_log_px(model, x):
    return torch.logsumexp(exact_terms(model, x)[0], 0)


def exact_iwae(model, x, k):
    """``E[L_k]`` by summing over all ``C**k`` tuples of samples."""
    log_joint, log_q = exact_terms(model, x)
    idx = torch.cartesian_prod(*[torch.arange(log_q.shape[0])] * k).reshape(-1, k)  # [C**k, k]
    lw, lq = (log_joint - log_q)[idx], log_q[idx]  # [C**k, k, B]
    return (lq.sum(1).exp() * (torch.logsumexp(lw, 1) - math.log(k))).sum(0)


def grads(model, loss):
    """``(grad theta, grad phi)`` of ``loss``, flattened (zeros where it does not reach)."""
    out = []
    for params in (list(model.theta_parameters()), list(model.phi_parameters())):
        g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        out.append(torch.cat([(gi if gi is not None else torch.zeros_like(p)).flatten() for gi, p in zip(g, params)]))
    return out


def draws(model, loss_of, x, n=GROUPS, seed=1):
    """``n`` independent gradient estimates ``([n, theta], [n, phi])``; ``loss_of(model, x)`` is an
    objective (its ``.loss`` is used) or a function returning the loss."""
    torch.manual_seed(seed)
    theta, phi = [], []
    for _ in range(n):
        out = loss_of(model, x)
        t, p = grads(model, getattr(out, "loss", out))
        theta.append(t)
        phi.append(p)
    return torch.stack(theta), torch.stack(phi)


def standard_error(d):
    """Of the mean of draws ``d`` ``[n, p]``."""
    return d.std(0) / math.sqrt(d.shape[0])


def within(d, exact, sigmas=4.0):
    """The mean of draws ``d`` ``[n, p]`` agrees with ``exact`` ``[p]`` coordinate-wise."""
    return bool(((d.mean(0) - exact).abs() <= sigmas * standard_error(d) + 1e-6).all())


def agree(d1, d2, sigmas=4.0):
    """Two independent sets of draws have the same mean coordinate-wise."""
    se = (d1.var(0) / d1.shape[0] + d2.var(0) / d2.shape[0]).sqrt()
    return bool(((d1.mean(0) - d2.mean(0)).abs() <= sigmas * se + 1e-6).all())


# -- the linear-Gaussian model: exact ELBO in closed form ------------------------------------------
def linear_gaussian(perturb=0.3, latent_dim=2, batch=8, seed=0):
    """The model, a batch drawn from it, and q moved ``perturb`` away from the exact posterior."""
    torch.manual_seed(seed)
    model = LinearGaussian((4,), latent_dim=latent_dim)
    with torch.no_grad():
        x, _ = model.sample_joint(batch)
        model.set_exact_posterior()
        for p in model.inference.parameters():
            p.add_(perturb * torch.randn_like(p))
    return model, x


def exact_linear_gaussian_elbo(model, x):
    q = model.q(x)
    m, s2 = q.base_dist.loc, q.base_dist.scale.square()
    w, b, sigma2 = model.generative.weight, model.generative.bias, model.obs_std**2
    sq_err = (x - m @ w.T - b).square().sum(-1) + (s2 @ w.square().T).sum(-1)  # E_q ||x - W z - b||^2
    expected_lik = -0.5 * x.shape[-1] * math.log(2 * math.pi * sigma2) - sq_err / (2 * sigma2)
    return expected_lik - kl_divergence(q, model.prior())
