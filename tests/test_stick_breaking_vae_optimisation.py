"""The stick-breaking VAE learns a code as fast as a Gaussian VAE of the same networks.

The paper's parameterisation (raw weights pi into the decoder, softplus concentrations) is the same
model but trains far slower under Adam: the weights lie on the simplex (entries ~1/T) and an
informative Kumaraswamy needs concentrations in the tens, while Adam moves each parameter ~lr per
step. The SB-VAE then sits at its prior (KL ~0.1 nats) while a Gaussian VAE has learnt the code.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import kl_divergence

from dgm_modules.models.gaussian_vae import GaussianVAE
from dgm_modules.models.stick_breaking_vae import StickBreakingVAE

pytestmark = pytest.mark.usefixtures("one_thread")

#: ten random binary 64-pixel prototypes: a model that knows which one it sees pays log 10 = 2.3 nats of
#: KL and almost no reconstruction; one that does not pays the pixels' entropy, ~40 nats
D, K, T, HIDDEN, STEPS, LR = 64, 10, 20, (64,), 300, 1e-3


def _train(model, protos: torch.Tensor, seed: int) -> tuple[float, float]:
    """-ELBO and KL (nats per image) over the prototypes after STEPS Adam steps at batch 100."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(STEPS):
        loss = -model.analytic_elbo(protos[torch.randint(0, K, (100,), generator=gen)]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x = protos.repeat(100, 1)
        q = model.q(x)
        kl = model.kl(q) if isinstance(model, StickBreakingVAE) else kl_divergence(q, model.prior())
        return -model.analytic_elbo(x).mean().item(), kl.mean().item()


@pytest.fixture(scope="module")
def gaussian_and_protos():
    torch.manual_seed(0)
    protos = (torch.rand(K, D) < 0.5).float()
    torch.manual_seed(0)
    return _train(GaussianVAE((D,), T, HIDDEN), protos, 0), protos


def test_sbvae_learns_the_code_as_fast_as_a_gaussian_vae(gaussian_and_protos):
    (gauss_loss, gauss_kl), protos = gaussian_and_protos
    torch.manual_seed(0)
    loss, kl = _train(StickBreakingVAE((D,), T, 5.0, HIDDEN), protos, 0)
    assert gauss_kl > math.log(K)  # the Gaussian VAE has learnt which prototype it sees
    assert kl > 0.5 * math.log(K), kl  # so has the SB-VAE (at least ~3 prototypes told apart) ...
    assert loss < gauss_loss + 5.0, (loss, gauss_loss)  # ... at the same cost (not knowing costs ~20 nats)


def test_the_papers_parameterisation_fails_the_same_test(gaussian_and_protos):
    (gauss_loss, _), protos = gaussian_and_protos
    torch.manual_seed(0)
    loss, kl = _train(StickBreakingVAE((D,), T, 5.0, HIDDEN, pi_scale=1.0, link="softplus"), protos, 0)
    assert kl < 0.5 and loss > gauss_loss + 10.0, (loss, kl, gauss_loss)  # still at the prior


def test_pi_scale_is_a_reparameterisation_of_the_first_decoder_layer():
    """Same model: pi_scale = T with first-layer weights W equals pi_scale = 1 with T W."""
    torch.manual_seed(1)
    scaled, raw = StickBreakingVAE((6,), truncation=5, hidden=(7,)).double(), StickBreakingVAE((6,), truncation=5, hidden=(7,), pi_scale=1.0).double()
    raw.load_state_dict(scaled.state_dict())
    with torch.no_grad():
        raw.generative[0].weight.mul_(5.0)
    x = torch.bernoulli(torch.full((3, 6), 0.5, dtype=torch.float64))
    (v,), _ = scaled.sample_q(x, 4)
    torch.testing.assert_close(scaled.log_joint(x, (v,)), raw.log_joint(x, (v,)))


def test_exp_link_gives_the_concentrations_as_exp_of_the_encoder_outputs():
    torch.manual_seed(2)
    model = StickBreakingVAE((6,), truncation=4, hidden=(5,))
    x = torch.rand(3, 6)
    h = model.inference(x)
    kuma = model.q(x).base_dist
    torch.testing.assert_close(torch.cat([kuma.concentration1, kuma.concentration0], -1), h.exp())
