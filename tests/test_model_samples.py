"""``model.sample(n)`` is the mean image of ``p(x | z)`` at ancestral draws of the latents, for every
latent-variable model: the images FID scores and the samples figure shows. Before, the models with
Bernoulli pixels returned a Bernoulli draw (a binary image) while the VAE-GAN returned its mean
image, so on grey-level MNIST the VAE's FID was that of binary images against grey test images."""
from __future__ import annotations

import pytest
import torch

from dgm_modules.components import MODELS
from dgm_modules.models.base import LatentVariableModel

SHAPE = (1, 8, 8)


@pytest.mark.parametrize("name", [n for n in MODELS.names()
                                  if issubclass(MODELS.get(n), LatentVariableModel) and n != "linear-gaussian"])
def test_sample_is_the_mean_of_the_pixel_draws(name):
    torch.manual_seed(0)
    model = MODELS.get(name)(SHAPE).eval()
    n = 4000
    with torch.no_grad():
        torch.manual_seed(1)
        means = model.sample(n).flatten(1)
        torch.manual_seed(1)
        _, latents = model.sample_joint(n, mean=True)
        torch.manual_seed(1)
        draws, latents_of_draws = model.sample_joint(n)
    # the same seed gives the same latents: only the last step differs (mean vs draw)
    for a, b in zip(latents, latents_of_draws):
        assert torch.equal(a, b)
    # intensities, not binary pixels (the old sample() fails here)
    assert ((means > 0) & (means < 1)).float().mean() > 0.99
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    # each draw is Bernoulli(mean): residuals have mean 0 with standard error sqrt(p(1-p)/n) per pixel
    draws = draws.flatten(1)
    se = (means * (1 - means)).sum(0).sqrt() / n
    z = (draws - means).mean(0) / se
    assert z.abs().max() < 5, float(z.abs().max())


def test_linear_gaussian_sample_is_the_decoder_mean():
    torch.manual_seed(0)
    model = MODELS.get("linear-gaussian")(SHAPE).eval()
    with torch.no_grad():
        torch.manual_seed(1)
        means = model.sample(50)
        torch.manual_seed(1)
        _, (z,) = model.sample_joint(50)
    assert torch.allclose(means.flatten(1), model.generative(z))
