"""Nonparametric priors: the stick-breaking VAE, the DP-mixture prior and the latent-structure metrics.

Known answers: Monte Carlo KL, exact stick-breaking sums, a log-likelihood by quadrature, a mixture
density summed by hand, and kNN errors of 0 and of chance (binomial tolerance).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Beta, Kumaraswamy

from benchmarks.config import build, resolve_config
from benchmarks.run import run_cell
from dgm_modules.evaluation.bounds import importance_weighted_bounds
from dgm_modules.evaluation.latent_structure import components_used, knn_errors
from dgm_modules.models.dp_mixture_vae import DPMixturePrior, DPMixtureVAE
from dgm_modules.models.kl_kumaraswamy_beta import kl_kumaraswamy_beta
from dgm_modules.models.kumaraswamy import StableKumaraswamy
from dgm_modules.models.stick_breaking import stick_breaking_weights, truncated_weights
from dgm_modules.models.stick_breaking_vae import StickBreakingVAE
from dgm_modules.registry import ConfigError

f64 = torch.float64


# -- the Kumaraswamy-to-Beta KL ------------------------------------------------------------------
@pytest.mark.parametrize("a, b, alpha, beta", [
    (1.0, 1.5, 1.0, 5.0), (0.7, 2.0, 1.0, 5.0), (3.0, 1.5, 1.0, 3.0), (2.0, 3.0, 2.0, 0.5),
    (0.5, 0.5, 1.0, 1.0), (5.0, 0.7, 2.5, 1.0),
])
def test_kl_series_matches_monte_carlo(a, b, alpha, beta):
    torch.manual_seed(0)
    q = Kumaraswamy(torch.tensor(a, dtype=f64), torch.tensor(b, dtype=f64))
    p = Beta(torch.tensor(alpha, dtype=f64), torch.tensor(beta, dtype=f64))
    n = 400_000
    v = q.sample((n,)).clamp(1e-12, 1 - 1e-12)
    diff = q.log_prob(v) - p.log_prob(v)
    mc, se = diff.mean().item(), diff.std().item() / math.sqrt(n)
    # 2000 terms: the series' remainder is O(2000^-b) <= 1e-4 for these b >= 1.5 (none when beta == 1)
    kl = kl_kumaraswamy_beta(q.concentration1, q.concentration0, alpha, beta, terms=2000).item()
    assert abs(kl - mc) < 4 * se + 1e-4, (kl, mc, se)


def test_kl_truncation_underestimates_and_converges_when_beta_above_one():
    a, b = torch.tensor([1.0, 3.0], dtype=f64), torch.tensor([1.0, 0.8], dtype=f64)
    kls = torch.stack([kl_kumaraswamy_beta(a, b, 1.0, 5.0, terms=t) for t in (1, 10, 100, 10_000)])
    assert (kls.diff(dim=0) > 0).all()  # every term is positive: more terms, larger KL
    # KL(Uniform || Beta(1, 5)) = -log 5 - 4 E[log(1 - v)] = 4 - log 5, exactly
    assert kls[-1, 0].item() == pytest.approx(4 - math.log(5), abs=2e-3)
    assert kls[1, 0].item() < 4 - math.log(5) - 0.3  # the paper's 10 terms: a real bias at b = 1


# -- the log-space Kumaraswamy -------------------------------------------------------------------
def test_stable_kumaraswamy_is_torchs_distribution():
    torch.manual_seed(8)
    a = torch.tensor([0.3, 1.0, 4.0, 0.05], dtype=f64)
    b = torch.tensor([2.0, 0.7, 1.0, 30.0], dtype=f64)
    v = torch.rand(1000, 4, dtype=f64)
    ours, torchs = StableKumaraswamy(a, b).log_prob(v), Kumaraswamy(a, b).log_prob(v)
    finite = torch.isfinite(torchs)  # torch's transform chain gives inf at a few points even in float64
    assert torch.isfinite(ours).all() and finite.float().mean() > 0.99
    torch.testing.assert_close(ours[finite], torchs[finite])
    s = StableKumaraswamy(a, b).rsample((200_000,))
    assert ((s.mean(0) - Kumaraswamy(a, b).mean).abs() < 4 * s.std(0) / math.sqrt(200_000)).all()


def test_stable_kumaraswamy_gradients_stay_finite_at_extreme_concentrations():
    """The regression behind the move off torch's Kumaraswamy: NaN at step 775 on MNIST."""
    torch.manual_seed(9)
    log_ab = torch.tensor([[-9.2, 9.2], [9.2, -9.2], [0.0, 0.0], [-9.2, -9.2], [12.0, 12.0]], requires_grad=True)
    q = StableKumaraswamy(log_ab[:, 0].exp(), log_ab[:, 1].exp())
    v = q.rsample((20_000,)).clamp(1e-6, 1 - 1e-6)
    log_w = Beta(torch.ones(5), torch.full((5,), 5.0)).log_prob(v) - q.log_prob(v)
    log_w.sum().backward()
    assert torch.isfinite(log_w).all() and torch.isfinite(log_ab.grad).all()


def test_stable_kumaraswamy_moments_hold_in_float32_at_the_encoders_extreme_concentrations():
    """The SB-VAE's exp link reaches b ~ 1e6; torch's float32 moments then left [0, 1] (a = 20,
    b = 3e6: mean 18.4), which corrupted E[pi], kNN error, components used and reconstructions."""
    torch.manual_seed(10)
    a = torch.tensor([0.5, 2.0, 20.0, 20.0, 1e-4, 3e6])
    b = torch.tensor([3e6, 1e5, 3e6, 1.0, 1e-4, 3e6])
    q = StableKumaraswamy(a, b)
    s = q.rsample((200_000,)).double()
    se = s.std(0) / math.sqrt(200_000)
    assert ((q.mean.double() - s.mean(0)).abs() <= 4 * se + 1e-6 * s.mean(0)).all(), (q.mean, s.mean(0))
    # the variance where float32 samples resolve it (not at a, b = 1e-4: mass on the ends)
    assert torch.allclose(q.variance.double()[:4], s.var(0)[:4], rtol=0.03)
    assert q.mean.dtype == torch.float32 and ((q.mean >= 0) & (q.mean <= 1)).all()


# -- stick-breaking weights -------------------------------------------------------------------
def test_stick_breaking_weights_are_a_partition_of_the_stick():
    torch.manual_seed(1)
    v = torch.rand(200, 7, dtype=f64)
    v[0] = 0.0
    v[1] = 1.0
    v[2, 3] = 1.0
    pi, rest = stick_breaking_weights(v)
    assert (pi >= 0).all() and (rest >= 0).all()
    assert (pi.sum(-1) <= 1 + 1e-12).all()
    torch.testing.assert_close(pi.sum(-1) + rest, torch.ones(200, dtype=f64), rtol=0, atol=1e-12)
    # by hand for one row: pi_k = v_k prod_{j<k} (1 - v_j)
    row, left = v[5].tolist(), 1.0
    for k, vk in enumerate(row):
        assert pi[5, k].item() == pytest.approx(vk * left, rel=1e-12)
        left *= 1 - vk
    assert rest[5].item() == pytest.approx(left, rel=1e-12)
    assert pi[1, 0] == 1 and (pi[1, 1:] == 0).all() and rest[1] == 0  # the first break takes all
    assert truncated_weights(v).shape == (200, 8)


def test_sbvae_component_weights_are_the_exact_posterior_mean_of_pi():
    torch.manual_seed(2)
    model = StickBreakingVAE((6,), truncation=4, alpha0=2.0, hidden=(5,)).double()
    x = torch.bernoulli(torch.full((3, 6), 0.5, dtype=f64))
    w = model.component_weights(x)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, dtype=f64))
    (v,), _ = model.sample_q(x, 200_000)
    pis = truncated_weights(v)
    se = pis.std(0) / math.sqrt(v.shape[0])
    assert ((pis.mean(0) - w).abs() < 4 * se + 1e-9).all()


# -- the importance-weighted bound of the stick-breaking VAE against quadrature --------------------
def _exact_log_likelihood_by_quadrature(model: StickBreakingVAE, x: torch.Tensor, nodes: int = 300) -> torch.Tensor:
    """``log p(x) = log int p(v) p(x | v) dv`` over the two fractions, Gauss-Legendre on [0, 1]^2."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    t, w = torch.tensor((t + 1) / 2, dtype=f64), torch.tensor(w / 2, dtype=f64)
    v = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 1, 2)  # [nodes^2, 1, 2]
    log_w = (w[:, None].log() + w[None, :].log()).reshape(-1, 1)
    with torch.no_grad():
        log_joint = model.log_joint(x, (v.expand(-1, x.shape[0], -1),))  # [nodes^2, B]
    return torch.logsumexp(log_joint + log_w, 0)


def test_sbvae_importance_weighted_bound_converges_to_exact_log_likelihood():
    torch.manual_seed(3)
    model = StickBreakingVAE((4,), truncation=3, alpha0=3.0, hidden=(6,), kl_terms=1000).double().eval()
    with torch.no_grad():  # a decoder that depends strongly on the weights
        for p in model.generative.parameters():
            p.mul_(3.0)
        model.inference[-1].bias[2:] += 2.0  # posterior b > 1: the KL series' remainder is < 1e-5
    x = torch.tensor([[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1], [1, 1, 1, 1]], dtype=f64)
    exact = _exact_log_likelihood_by_quadrature(model, x)
    assert exact.exp().sum() < 1  # four of the sixteen patterns

    torch.manual_seed(4)
    bounds = importance_weighted_bounds(model, x, [1, 10, 20_000])
    log_w = model.log_weights(x, 20_000)  # fresh draws to estimate the Monte Carlo error
    elbo, elbo_se = log_w.mean(0), log_w.std(0) / math.sqrt(log_w.shape[0])
    w = (log_w - exact).exp()  # w / p(x): mean 1 when the densities are exact
    rel_se = w.std(0) / math.sqrt(w.shape[0])
    assert (elbo < exact + 4 * elbo_se).all()
    assert (exact - elbo > 4 * elbo_se).all()  # q is not the posterior: the ELBO is strictly below
    assert ((bounds[20_000] - exact).abs() < 4 * rel_se + 1e-3).all(), (bounds[20_000], exact, rel_se)
    assert (w.mean(0) - 1).abs().max() < 4 * rel_se.max() + 1e-3
    # the analytic-KL ELBO (series, many terms) has the same mean as the Monte Carlo ELBO
    torch.manual_seed(5)
    analytic = model.analytic_elbo(x.repeat(2000, 1)).detach().view(2000, 4)
    a_se = analytic.std(0) / math.sqrt(2000)
    assert ((analytic.mean(0) - elbo).abs() < 4 * (a_se + elbo_se) + 1e-3).all()
    assert bounds[10].mean() > elbo.mean()


# -- the DP-mixture prior ----------------------------------------------------------------------
def test_dp_mixture_log_density_equals_hand_sum_over_components():
    torch.manual_seed(6)
    prior = DPMixturePrior(latent_dim=3, truncation=4, alpha0=2.0).double()
    with torch.no_grad():
        prior.stick_logits.copy_(torch.tensor([0.3, -1.0, 2.0]))
        prior.log_scales.normal_(0, 0.3)
    z = torch.randn(5, 3, dtype=f64)
    v, left, pis = torch.sigmoid(prior.stick_logits).tolist(), 1.0, []
    for vk in v:
        pis.append(vk * left)
        left *= 1 - vk
    pis.append(left)
    assert all(p >= 0 for p in pis) and sum(pis[:-1]) <= 1 and sum(pis) == pytest.approx(1, abs=1e-12)
    torch.testing.assert_close(prior.log_weights().exp(), torch.tensor(pis, dtype=f64))
    mu, sd = prior.means.tolist(), prior.log_scales.exp().tolist()
    for n in range(5):
        density = sum(pis[c] * math.prod(
            math.exp(-(z[n, d].item() - mu[c][d]) ** 2 / (2 * sd[c][d] ** 2)) / (math.sqrt(2 * math.pi) * sd[c][d])
            for d in range(3)) for c in range(4))
        assert prior.distribution().log_prob(z[n]).item() == pytest.approx(math.log(density), rel=1e-10)


def test_dp_vae_map_term_only_in_training():
    torch.manual_seed(7)
    model = DPMixtureVAE((5,), latent_dim=2, truncation=3, alpha0=4.0, hidden=(4,), n_train=10).double()
    x = torch.bernoulli(torch.full((2, 5), 0.5, dtype=f64))
    z = (torch.randn(3, 2, 2, dtype=f64),)
    exact = (model.prior().log_prob(z[0]) + model.likelihood(z[0]).log_prob(x)).detach()
    torch.testing.assert_close(model.eval().log_joint(x, z).detach(), exact)
    v = torch.sigmoid(model.dp_prior.stick_logits).detach()
    # Beta(1, 4) density by hand, times the Jacobian v (1 - v) of v = sigmoid(logit)
    log_beta = (math.log(4.0) + 3.0 * torch.log1p(-v) + torch.log(v) + torch.log1p(-v)).sum()
    torch.testing.assert_close(model.train().log_joint(x, z).detach(), exact + log_beta / 10)


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [StickBreakingVAE, DPMixtureVAE])
@pytest.mark.parametrize("kwargs, message", [
    ({"alpha0": 0.0}, r"model\.alpha0 must be > 0, got 0"),
    ({"alpha0": -1.0}, r"model\.alpha0 must be > 0, got -1"),
    ({"truncation": 1}, r"model\.truncation must be >= 2, got 1"),
])
def test_bad_alpha0_or_truncation_is_refused(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls((1, 8, 8), **kwargs)


@pytest.mark.parametrize("method, option, value, message", [
    ("sb-vae", "alpha0", 0, r"model\.alpha0 must be > 0, got 0"),
    ("dp-vae", "truncation", 1, r"model\.truncation must be >= 2, got 1"),
    ("sb-vae", "kl_terms", 0, r"model\.kl_terms must be >= 1, got 0"),
    ("sb-vae", "pi_scale", 0, r"model\.pi_scale must be > 0, got 0"),
    ("sb-vae", "link", "relu", r"model\.link='relu' is not valid; choose one of \['exp', 'softplus'\]"),
])
def test_bad_options_are_refused_before_training(method, option, value, message):
    config = resolve_config(method, "digits", 0, {"model": {"init_args": {option: value}}})
    with pytest.raises(ConfigError, match=message):
        build(config)


# -- structure metrics ----------------------------------------------------------------------------
def _clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    centres = torch.stack([torch.arange(10.0) * 10, torch.zeros(10)], -1)
    return centres[y] + torch.randn(n, 2, generator=gen), y


def test_knn_error_is_zero_on_separated_clusters_and_chance_on_random_labels():
    train_z, train_y = _clusters(1000, 0)
    test_z, test_y = _clusters(3000, 1)
    assert knn_errors(train_z, train_y, test_z, test_y) == {3: 0.0, 5: 0.0, 10: 0.0}
    # labels drawn independently of everything: each test point is right with probability 1/10
    random_y = torch.randint(0, 10, (3000,), generator=torch.Generator().manual_seed(2))
    se = math.sqrt(0.9 * 0.1 / 3000)
    for k, err in knn_errors(train_z, train_y, test_z, random_y).items():
        assert abs(err - 0.9) < 4 * se, (k, err)
    with pytest.raises(ValueError, match="knn k"):
        knn_errors(train_z[:2], train_y[:2], test_z, test_y, ks=(3,))


def test_components_used_counts_weights_above_threshold():
    assert components_used(torch.tensor([0.5, 0.3, 0.011, 0.0099, 0.1801, 0.0])) == 4
    assert components_used(torch.tensor([0.5, 0.3, 0.2]), threshold=0.25) == 2


# -- end to end on digits -------------------------------------------------------------------------
TINY = {"sb-vae": {"truncation": 6, "hidden": [32]}, "dp-vae": {"latent_dim": 4, "truncation": 6, "hidden": [32]},
        "vae": {"latent_dim": 4, "hidden": [32]}}


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    records = {}
    for method, model in TINY.items():
        config = resolve_config(method, "digits", 0, {
            "model": {"init_args": model}, "trainer": {"max_epochs": 1},
            "module": {"init_args": {"eval_k": [1, 10]}}})
        records[method] = run_cell(config, out, enable_progress_bar=False)
    return out, records


@pytest.mark.parametrize("method", ["sb-vae", "dp-vae", "vae"])
def test_methods_train_on_digits_and_report_structure_metrics(digits_runs, method):
    _, records = digits_runs
    record = records[method]
    assert record["status"] == "completed", record["error"]
    m = record["metrics"]
    assert all(math.isfinite(v) for v in m.values())
    assert 0 < m["test/nll_k10"] <= m["test/nll_k1"] + 0.5
    for k in (3, 5, 10):  # digits cluster even in an untrained encoder's means: far below chance 0.9
        assert 0 <= m[f"test/knn_error_k{k}"] < 0.85, m
    if method == "vae":
        assert "test/components_used" not in m
    else:
        assert 1 <= m["test/components_used"] <= 6 and m["test/components_used"] == int(m["test/components_used"])


def test_latent_usage_figure_from_two_runs(digits_runs, capsys):
    from benchmarks.cli import main

    out, records = digits_runs
    png = out / "usage.png"
    code = main(["figure", "latent-usage", str(out / records["sb-vae"]["run_id"]),
                 str(out / records["vae"]["run_id"]), "--out", str(png)])
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["figure", "latent-usage", str(out / "missing"), str(out / "missing"), "--out", str(png)]) == 2
