"""The Kumaraswamy-to-Beta KL of the stick-breaking VAE: exact by default, the paper's series on request.

Known answers: closed forms where a Kumaraswamy is a Beta (``a = 1`` or ``b = 1``), Monte Carlo
with 1e6 draws sampled through Gamma variates (an independent path from the quadrature's inverse
CDF), and reparameterised Monte Carlo gradients.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Beta, kl_divergence

from dgm_modules.models.kl_kumaraswamy_beta import expected_log1m_kumaraswamy, kl_kumaraswamy_beta
from dgm_modules.models.stick_breaking_vae import StickBreakingVAE

f64 = torch.float64
# (a, b, alpha, beta): a, b < 1 (a fresh encoder's softplus(0) = 0.69), a = 1 with b = 0.1, and the prior
# Beta(1, alpha0) of the model with alpha0 = 5 as in the paper, plus a generic Beta
GRID = [(0.69, 0.69, 1.0, 5.0), (1.0, 0.1, 1.0, 5.0), (0.5, 0.3, 1.0, 5.0), (0.3, 2.0, 1.0, 3.0),
        (2.0, 0.5, 1.0, 5.0), (4.0, 3.0, 1.0, 5.0), (0.8, 0.2, 2.0, 0.5)]


def _log1mexp(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > -math.log(2), torch.log(-torch.expm1(t)), torch.log1p(-torch.exp(t)))


def _kumaraswamy_via_gamma(a: float, b: float, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """``log v, log(1 - v), log v^a, log(1 - v^a)`` for ``v ~ Kuma(a, b)``: ``v^a ~ Beta(1, b) = G1 / (G1 + G2)``.

    Logs straight from the Gamma variates: at ``b = 0.1`` a float64 ``v`` rounds to 1 in ~2% of draws.
    """
    g1 = torch._standard_gamma(torch.ones(n, dtype=f64), generator=gen)
    g2 = torch._standard_gamma(torch.full((n,), b, dtype=f64), generator=gen).clamp_min(1e-300)
    log_beta, log1m_beta = -torch.log1p(g2 / g1), torch.log(g2) - torch.log(g1 + g2)
    log_v = log_beta / a
    return log_v, _log1mexp(log_v), log_beta, log1m_beta


def _kl_monte_carlo(a: float, b: float, alpha: float, beta: float, n: int, seed: int) -> tuple[float, float]:
    """KL by Monte Carlo with the exact control variates ``log B``, ``log(1 - B)`` (``B = v^a ~ Beta(1, b)``).

    Their means ``psi(1) - psi(1 + b)`` and ``psi(b) - psi(1 + b)`` are textbook Beta facts; the
    coefficients are fitted on an independent pilot sample, so the estimate is unbiased.
    """
    gen = torch.Generator().manual_seed(seed)
    mean_cv = torch.stack([torch.digamma(torch.tensor(1.0, dtype=f64)) - torch.digamma(torch.tensor(1 + b, dtype=f64)),
                           torch.digamma(torch.tensor(b, dtype=f64)) - torch.digamma(torch.tensor(1 + b, dtype=f64))])
    log_norm = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)

    def draws(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        log_v, log1m_v, log_beta, log1m_beta = _kumaraswamy_via_gamma(a, b, m, gen)
        log_q = math.log(a * b) + (a - 1) * log_v + (b - 1) * log1m_beta
        log_p = (alpha - 1) * log_v + (beta - 1) * log1m_v - log_norm
        return log_q - log_p, torch.stack([log_beta, log1m_beta], -1) - mean_cv

    diff, cv = draws(100_000)  # pilot: regression coefficients of diff on the control variates
    coef = torch.linalg.lstsq(torch.cat([cv, torch.ones(len(cv), 1, dtype=f64)], -1), diff[:, None]).solution[:2, 0]
    diff, cv = draws(n)
    corrected = diff - cv @ coef
    return corrected.mean().item(), corrected.std().item() / math.sqrt(n)


@pytest.fixture(scope="module")
def monte_carlo():
    return {point: _kl_monte_carlo(*point, n=1_000_000, seed=i) for i, point in enumerate(GRID)}


@pytest.mark.parametrize("point", GRID)
def test_kl_matches_monte_carlo_where_the_paper_series_does_not(monte_carlo, point):
    mc, se = monte_carlo[point]
    assert 4 * se < 0.01, se  # the Monte Carlo answer is sharp enough to judge 0.05 nats
    a, b = (torch.tensor(p, dtype=f64) for p in point[:2])
    exact = kl_kumaraswamy_beta(a, b, *point[2:]).item()
    assert abs(exact - mc) < 4 * se + 1e-3, (exact, mc, se)
    # float32, as the model computes it: the same to ~1e-5 relative
    kl32 = kl_kumaraswamy_beta(a.float(), b.float(), *point[2:]).item()
    assert kl32 == pytest.approx(exact, rel=1e-4, abs=1e-4)


def test_the_paper_10_term_series_fails_the_same_test(monte_carlo):
    misses = {}
    for point, (mc, se) in monte_carlo.items():
        a, b = (torch.tensor(p, dtype=f64) for p in point[:2])
        misses[point] = mc - kl_kumaraswamy_beta(a, b, *point[2:], terms=10).item()
    assert misses[(0.69, 0.69, 1.0, 5.0)] > 0.7  # a fresh encoder's a = b = softplus(0): 0.8 nats per stick
    assert misses[(1.0, 0.1, 1.0, 5.0)] > 20     # 30 nats short: -ELBO is then no bound
    assert sum(abs(m) > 0.05 for m in misses.values()) >= 4, misses


@pytest.mark.parametrize("b, alpha0", [(0.1, 5.0), (0.5, 5.0), (1.0, 5.0), (3.0, 2.0), (1e-3, 5.0)])
def test_kl_is_exact_where_kumaraswamy_is_beta(b, alpha0):
    # Kuma(1, b) = Beta(1, b) and Kuma(b, 1) = Beta(b, 1): torch's closed-form Beta-Beta KL
    b_, one = torch.tensor(b, dtype=f64), torch.tensor(1.0, dtype=f64)
    prior = Beta(one, torch.tensor(alpha0, dtype=f64))
    assert kl_kumaraswamy_beta(one, b_, 1.0, alpha0).item() == pytest.approx(
        kl_divergence(Beta(one, b_), prior).item(), abs=1e-3 if b < 0.01 else 1e-6)
    assert kl_kumaraswamy_beta(b_, one, 1.0, alpha0).item() == pytest.approx(
        kl_divergence(Beta(b_, one), prior).item(), abs=1e-6)
    # and the expectation itself: E[log(1 - v)] = psi(b) - psi(1 + b) = -1/b under Beta(1, b)
    assert expected_log1m_kumaraswamy(one, b_).item() == pytest.approx(-1 / b, rel=1e-6)


def test_gradients_match_closed_forms_and_finite_differences():
    # a = 1: E[log(1 - v)] = -1/b, d/db = 1/b^2; b = 1: E = -(psi(1 + a) + gamma), d/da = -psi'(1 + a)
    b = torch.tensor([0.1, 0.7, 4.0], dtype=f64, requires_grad=True)
    expected_log1m_kumaraswamy(torch.ones(3, dtype=f64), b).sum().backward()
    torch.testing.assert_close(b.grad, 1 / b.detach() ** 2, rtol=1e-6, atol=0)
    a = torch.tensor([0.2, 1.5, 9.0], dtype=f64, requires_grad=True)
    expected_log1m_kumaraswamy(a, torch.ones(3, dtype=f64)).sum().backward()
    torch.testing.assert_close(a.grad, -torch.polygamma(1, 1 + a.detach()), rtol=1e-6, atol=0)
    # everywhere else, against central differences of the same function (float64)
    a = torch.tensor([0.69, 1.0, 0.05, 3.0, 0.4], dtype=f64, requires_grad=True)
    b = torch.tensor([0.69, 0.1, 0.5, 0.2, 30.0], dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: kl_kumaraswamy_beta(a, b, 1.0, 5.0), (a, b), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("a, b", [(0.69, 0.69), (0.5, 2.0), (3.0, 0.4)])
def test_gradients_match_reparameterised_monte_carlo(a, b):
    """d/da, d/db of E[log(1 - v)] by Beta's own reparameterised (implicit) gradients, v = B^(1/a)."""
    n = 1_000_000
    torch.manual_seed(11)
    a_ = torch.full((n,), a, dtype=f64, requires_grad=True)
    b_ = torch.full((n,), b, dtype=f64, requires_grad=True)
    beta_draws = Beta(torch.ones(n, dtype=f64), b_).rsample().clamp(1e-300, 1 - 1e-16)
    _log1mexp(beta_draws.log() / a_).sum().backward()  # per-draw gradients land in a_.grad, b_.grad
    a0, b0 = (torch.tensor(p, dtype=f64, requires_grad=True) for p in (a, b))
    expected_log1m_kumaraswamy(a0, b0).backward()
    for exact, draws in ((a0.grad, a_.grad), (b0.grad, b_.grad)):
        mc, se = draws.mean().item(), draws.std().item() / math.sqrt(n)
        assert abs(exact.item() - mc) < 4 * se + 1e-4, (exact.item(), mc, se)


def test_sbvae_uses_the_exact_kl_by_default_and_the_series_on_request():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    exact = StickBreakingVAE((6,), truncation=5, hidden=(7,), link="softplus")
    series = StickBreakingVAE((6,), truncation=5, hidden=(7,), kl_terms=10, link="softplus")
    series.load_state_dict(exact.state_dict())
    q = exact.q(x)
    kuma = q.base_dist
    torch.testing.assert_close(exact.kl(q), kl_kumaraswamy_beta(kuma.concentration1, kuma.concentration0, 1.0, 5.0).sum(-1))
    assert (exact.kl(q) - series.kl(q) > 0.5).all()  # fresh encoder, a = b ~ 0.69: ~0.8 nats per stick short
