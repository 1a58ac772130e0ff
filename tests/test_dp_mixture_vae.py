"""The DP-mixture prior: its MAP term is the prior density of the logits it optimises, and it keeps
several mixture components in use on MNIST."""
from __future__ import annotations

import math

import pytest
import torch

from datamodules.mnist import MNISTDataModule
from dgm_modules.evaluation.latent_structure import components_used
from dgm_modules.models.dp_mixture_vae import DPMixturePrior, DPMixtureVAE
from dgm_modules.objectives.elbo import ELBO

f64 = torch.float64


@pytest.mark.parametrize("alpha0", [0.5, 1.0, 5.0, 20.0])
def test_map_term_is_the_logits_density_and_peaks_at_its_mode(alpha0):
    """``v ~ Beta(1, alpha0)``, ``l = logit(v)``: ``p(l) = alpha0 v (1 - v)^alpha0``, mode ``l = -log(alpha0)``."""
    # the term is a sum over fractions of one function of each logit: its gradient is that function's derivative
    grid = torch.linspace(-15, 15, 300_001, dtype=f64)  # step 1e-4
    prior = DPMixturePrior(latent_dim=1, truncation=len(grid) + 1, alpha0=alpha0).double()
    prior.stick_logits.data = grid.clone()
    prior.fraction_log_prior().backward()
    slope = prior.stick_logits.grad
    crossings = ((slope[:-1] > 0) & (slope[1:] <= 0)).nonzero().flatten()
    assert len(crossings) == 1 and (slope[: crossings[0] + 1] > 0).all() and (slope[crossings[0] + 1:] <= 0).all()
    assert grid[crossings[0]].item() == pytest.approx(-math.log(alpha0), abs=2e-4)  # an interior maximiser
    # and it is a density of l: it integrates to 1 over the real line
    one = DPMixturePrior(latent_dim=1, truncation=2, alpha0=alpha0).double()
    ls, dens = torch.linspace(-60, 30, 9001, dtype=f64), []
    with torch.no_grad():
        for l in ls:
            one.stick_logits.fill_(l)
            dens.append(one.fraction_log_prior().exp())
    assert torch.trapezoid(torch.stack(dens), ls).item() == pytest.approx(1.0, abs=1e-4)


def test_dp_vae_keeps_several_components_in_use_on_mnist(shared_data):
    """300 steps on MNIST, 50 latent dimensions, 20 components (the stick-breaking reproduction's prior).

    Means started at N(0, I) sit ~10 apart: the nearest component took every example and the rest
    never moved (1 component above 1% of the test points' responsibilities).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = MNISTDataModule(data_dir=str(shared_data), batch_size=100)
        data.setup("fit")
        torch.manual_seed(0)
        model = DPMixtureVAE(tuple(data.dims), latent_dim=50, truncation=20, hidden=(200,), n_train=50_000)
        objective = ELBO()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        steps = 0
        while steps < 300:
            for batch in data.train_dataloader():
                loss = objective(model, batch.x).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps += 1
                if steps == 300:
                    break
        model.eval()
        with torch.no_grad():
            weights = model.component_weights(data.test_x[:2000]).mean(0)
    finally:
        torch.set_num_threads(threads)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert components_used(weights, threshold=0.01) >= 3, weights
