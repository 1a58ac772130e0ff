"""The shared bound code against a model whose log p(x) is exact."""
import math

import pytest
import torch

from datamodules.base import Batch
from dgm_modules.evaluation.bounds import importance_weighted_bounds
from dgm_modules.evaluation.log_likelihood import LogLikelihoodEvaluator
from dgm_modules.models.linear_gaussian import LinearGaussian
from dgm_modules.objectives import functional as F


def make_model(seed=0, d_x=5, d_z=2, obs_std=0.7):
    torch.manual_seed(seed)
    model = LinearGaussian((d_x,), d_z, obs_std)
    x = model.sample_joint(64)[0]
    return model, x


def test_log_mean_exp_is_stable_and_exact():
    x = torch.tensor([[1000.0, -1000.0], [1000.0, -1001.0]])
    out = F.log_mean_exp(x, 0)
    assert torch.allclose(out, torch.tensor([1000.0, -1000.0 + math.log((1 + math.exp(-1)) / 2)]))
    y = torch.randn(7, 3)
    assert torch.allclose(F.log_mean_exp(y, 0), y.exp().mean(0).log(), atol=1e-6)


def test_exact_posterior_makes_every_bound_equal_log_likelihood():
    model, x = make_model()
    # a diagonal exact posterior needs orthogonal columns of W
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(5, 2))
        model.generative.weight.copy_(q * torch.tensor([1.5, 0.5]))
    model.set_exact_posterior()
    exact = model.exact_log_likelihood(x)
    bounds = importance_weighted_bounds(model, x, [1, 10, 100], max_pairs=256)
    for k, b in bounds.items():
        assert torch.allclose(b.float(), exact, atol=1e-4), k


def test_bounds_are_ordered_and_converge_to_log_likelihood():
    model, x = make_model(seed=1)
    model.set_exact_posterior()  # W is not orthogonal: q is close to, but not, the posterior
    with torch.no_grad():
        model.inference["mean"].bias.add_(0.3)
    exact = model.exact_log_likelihood(x).mean().item()
    torch.manual_seed(2)
    # average over repeated draws so that orderings of expectations are tested, not of noise
    means = {k: 0.0 for k in (1, 10, 100, 5000)}
    reps = 4
    for _ in range(reps):
        for k, b in importance_weighted_bounds(model, x, list(means), max_pairs=4096).items():
            means[k] += b.mean().item() / reps
    elbo = means[1]
    assert elbo < means[10] < means[100] <= means[5000] <= exact + 1e-3
    assert exact - elbo > 0.05  # the test is not vacuous: q is not the posterior
    assert abs(means[5000] - exact) < 0.02 * (exact - elbo) + 1e-3


def test_chunking_does_not_change_the_result():
    model, x = make_model(seed=3)
    torch.manual_seed(0)
    big = importance_weighted_bounds(model, x, [7, 50], max_pairs=10_000)
    torch.manual_seed(0)
    # max_pairs=64 < batch size 64*? forces both sample chunks and image slices
    small = importance_weighted_bounds(model, x[:8], [7, 50], max_pairs=24)
    torch.manual_seed(0)
    again = importance_weighted_bounds(model, x[:8], [7, 50], max_pairs=24)
    assert torch.equal(small[50], again[50])
    for k in (7, 50):
        assert small[k].shape == (8,) and big[k].shape == (64,)
        assert torch.isfinite(small[k]).all()
    # L_k uses the first k samples: with one chunk per request the prefix property is exact
    torch.manual_seed(5)
    lw = model.log_weights(x[:4], 50)
    torch.manual_seed(5)
    b = importance_weighted_bounds(model, x[:4], [50], max_pairs=10_000)[50]
    assert torch.allclose(b.float(), F.iwae_bound(lw), atol=1e-5)


def test_evaluator_is_independent_of_how_batches_are_dealt():
    model, x = make_model(seed=4)
    a, b = LogLikelihoodEvaluator([1, 20]), LogLikelihoodEvaluator([1, 20])
    batches = list(enumerate(x.split(10)))
    for i, xb in batches:
        a.update(model, Batch(xb, None, i))
    for i, xb in reversed(batches):  # another order, as another process layout would give
        b.update(model, Batch(xb, None, i))
    ra, rb = a.compute(), b.compute()
    assert set(ra) == {"nll_k1", "nll_k20"}  # linear-Gaussian has no analytic ELBO here
    for name in ra:
        assert torch.allclose(ra[name], rb[name], rtol=0, atol=1e-9)


@pytest.mark.parametrize("bad", [[0], [], [-3, 5]])
def test_invalid_k_is_refused(bad):
    with pytest.raises(ValueError, match="k"):
        LogLikelihoodEvaluator(bad)


def test_analytic_kl_elbo_matches_monte_carlo_elbo():
    from dgm_modules.models.gaussian_vae import GaussianVAE

    torch.manual_seed(0)
    model = GaussianVAE((1, 4, 4), latent_dim=3, hidden=(8,))
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.3))
    n = 4000
    analytic = torch.stack([model.analytic_elbo(x) for _ in range(200)]).detach()
    mc = model.log_weights(x, n).detach()
    diff = analytic.mean(0) - mc.mean(0)
    se = (analytic.var(0) / 200 + mc.var(0) / n).sqrt()
    assert (diff.abs() < 4 * se + 1e-4).all(), (diff, se)


def test_fast_bernoulli_log_likelihood_equals_torch_distributions():
    from torch.distributions import Bernoulli, Independent

    from dgm_modules.models.likelihoods import bernoulli_log_likelihood

    torch.manual_seed(0)
    logits = torch.randn(7, 5, 30) * 6  # large logits exercise the stable branches
    x = torch.bernoulli(torch.full((5, 30), 0.4))
    ref = Independent(Bernoulli(logits=logits), 1).log_prob(x)
    assert torch.allclose(bernoulli_log_likelihood(logits, x), ref, atol=1e-4, rtol=1e-6)
    assert torch.allclose(bernoulli_log_likelihood(logits[0], x), ref[0], atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_elbo_with_k_samples_keeps_the_mean_and_divides_the_variance_by_k(analytic_kl):
    from dgm_modules.models.gaussian_vae import GaussianVAE
    from dgm_modules.objectives.elbo import ELBO

    torch.manual_seed(0)
    model = GaussianVAE((1, 4, 4), latent_dim=3, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.3))
    n = 400
    with torch.no_grad():
        one = torch.stack([ELBO(analytic_kl, k=1)(model, x).bound for _ in range(n)])
        five = torch.stack([ELBO(analytic_kl, k=5)(model, x).bound for _ in range(n)])
    se = (one.var(0) / n + five.var(0) / n).sqrt()
    assert ((one.mean(0) - five.mean(0)).abs() < 4 * se).all()  # the same bound ...
    ratio = five.var(0) / one.var(0)  # ... averaged over 5 independent draws: variance / 5
    assert ((ratio > 0.2 * 0.7) & (ratio < 0.2 * 1.4)).all(), ratio
    with pytest.raises(ValueError, match="objective.k"):
        ELBO(k=0)


def test_active_units_counts_dimensions_whose_posterior_mean_varies():
    from dgm_modules.evaluation.latent_structure import active_units

    torch.manual_seed(0)
    means = torch.zeros(2000, 6)
    means[:, :3] = torch.randn(2000, 3)  # Cov_x = 1: active
    means[:, 3] = 0.05 * torch.randn(2000)  # 0.0025 < 0.01: inactive (Burda et al.'s threshold)
    means[:, 4] = 0.15 * torch.randn(2000)  # 0.0225 > 0.01: active
    assert active_units(means) == 4


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_importance_sampler_equals_log_weights_for_a_conv_decoder(likelihood):
    """Subclasses of the Gaussian VAE with other decoders (the VAE-GAN's conv nets) take the generic
    density inside the fast sampler: the same draws give the same log-weights as log_weights."""
    from dgm_modules.models.gan import VAEGAN

    torch.manual_seed(0)
    model = VAEGAN((1, 8, 8), latent_dim=3, channels=4, likelihood=likelihood).eval()
    x = torch.rand(5, 1, 8, 8)
    torch.manual_seed(1)
    fast = model.importance_sampler(x)(6)
    torch.manual_seed(1)
    with torch.no_grad():
        reference = model.log_weights(x, 6)
    assert fast.shape == (6, 5) and torch.allclose(fast, reference, rtol=0, atol=1e-4)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_fused_bounds_equal_a_per_sample_reference(likelihood):
    """The chunked, blocked, in-place L_k of the Gaussian VAE against one (image, sample) pair at a time
    in float64 through torch.distributions, on the same noise: a dropped or repeated chunk or block, a
    wrong running log-sum-exp or a wrong fast density each move L_k by far more than the tolerance."""
    import dgm_modules.models.gaussian_vae as gaussian_vae
    from torch.distributions import Bernoulli, Independent, Normal

    torch.manual_seed(0)
    model = gaussian_vae.GaussianVAE((1, 9, 9), latent_dim=3, hidden=(16, 8), likelihood=likelihood)
    with torch.no_grad():  # large logits exercise the stable branches of the fast Bernoulli density
        model.generative[-1].weight.mul_(8)
    x = torch.rand(3, 1, 9, 9)
    x = torch.bernoulli(x) if likelihood == "bernoulli" else x
    ks, max_pairs = [7, 60], 15  # 5 samples a chunk: chunks of 5, 2 (to k=7), then 5, ..., 3
    old_block = gaussian_vae._BLOCK_PAIRS
    gaussian_vae._BLOCK_PAIRS = 6  # blocks of 2 samples inside each chunk
    try:
        torch.manual_seed(1)
        fused = importance_weighted_bounds(model, x, ks, max_pairs)
    finally:
        gaussian_vae._BLOCK_PAIRS = old_block

    ref_model = model.double()
    xd = x.double().flatten(1)
    mu, log_std = ref_model.inference(xd).chunk(2, -1)
    torch.manual_seed(1)  # replay the draws: one standard-normal tensor [n, B, latent] per chunk
    sizes = [5, 2] + [5] * 10 + [3]
    eps = torch.cat([torch.empty(n, 3, 3).normal_() for n in sizes]).double()
    log_w = torch.empty(60, 3, dtype=torch.float64)
    for i in range(60):
        for b in range(3):
            z = mu[b] + eps[i, b] * log_std[b].exp()
            out = ref_model.generative(z)
            p_x = (Bernoulli(logits=out) if likelihood == "bernoulli"
                   else Normal(torch.sigmoid(out), model.obs_sigma))
            log_w[i, b] = (Normal(0.0, 1.0).log_prob(z).sum() + Independent(p_x, 1).log_prob(xd[b])
                           - Normal(mu[b], log_std[b].exp()).log_prob(z).sum())
    for k in ks:
        ref = torch.logsumexp(log_w[:k], 0) - math.log(k)
        assert torch.allclose(fused[k], ref, rtol=0, atol=2e-4), (k, fused[k], ref)
