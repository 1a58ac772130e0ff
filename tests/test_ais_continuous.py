"""Continuous MNIST as Wu et al. (2017): dequantised data, the Gaussian observation model of fixed
sigma, AIS under it against the exact linear-Gaussian value, sigma chosen on held-out data, and
bad options refused before training."""
import math

import pytest
import torch
from torch.distributions import Independent, Normal

from benchmarks.cli import main
from benchmarks.leaderboard import table_key
from datamodules.base import IndexBatchLoader
from datamodules.mnist import MNISTDataModule
from dgm_modules.evaluation.ais import AISOptions, AISTarget, ais_log_likelihood, select_obs_sigma
from dgm_modules.models.gan import GAN, VAEGAN
from dgm_modules.models.gaussian_vae import GaussianVAE
from dgm_modules.models.likelihoods import gaussian_log_likelihood
from dgm_modules.models.linear_gaussian import LinearGaussian

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_dequantised_mnist_is_within_one_level_of_its_pixels_with_uniform_noise(shared_data):
    raw = MNISTDataModule(shared_data, binarization="none")
    deq = MNISTDataModule(shared_data, binarization="none", dequantize=True)
    raw.setup(), deq.setup()
    for split in ("val_x", "test_x"):
        x, grey = getattr(deq, split), getattr(raw, split)
        pixel = torch.round(grey * 255)
        assert x.min() >= 0 and x.max() <= 1
        assert (x - grey).abs().max() <= 1 / 256 + 1e-6  # grey = pixel / 255
        u = x.double() * 256 - pixel.double()  # the noise itself: U(0, 1) per pixel
        assert u.min() >= 0 and u.max() < 1 + 1e-4
        n = u.numel()  # mean 1/2 and variance 1/12, within 5 standard errors
        assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
        assert abs(u.var().item() - 1 / 12) < 5 * math.sqrt(1 / 180 / n)
        assert abs(x.mean().item() - (pixel.double().mean().item() + 0.5) / 256) < 5 * math.sqrt(1 / 12 / n) / 256
    # evaluation noise is fixed: another instance and another pass give the same images
    again = MNISTDataModule(shared_data, binarization="none", dequantize=True)
    again.setup()
    assert torch.equal(again.test_x, deq.test_x)
    first, second = (torch.cat([b.x for b in deq.test_dataloader()]) for _ in range(2))
    assert torch.equal(first, second) and torch.equal(first, deq.test_x)
    protocol = deq.protocol()
    assert protocol["dequantize"] == "uniform-1/256" and "dequantize" not in raw.protocol()
    # the leaderboard never pools dequantised densities with grey-level ones
    rec = {"dataset": "mnist"}
    assert table_key({**rec, "protocol": protocol}) != table_key({**rec, "protocol": raw.protocol()})


def test_training_noise_is_fresh_each_epoch_and_stays_within_the_pixel_level():
    pixel = torch.randint(0, 256, (40, 1, 4, 4)).float()
    loader = IndexBatchLoader(pixel / 256, 10, shuffle=False, seed=0, dynamic_binarize=False, dequantize_width=1 / 256)
    epoch0, epoch1 = (torch.cat([b.x for b in loader]) for _ in range(2))
    assert not torch.equal(epoch0, epoch1)
    for x in (epoch0, epoch1):
        assert torch.equal(torch.floor(x * 256), pixel)


def test_gaussian_observation_density_agrees_with_torch_distributions():
    torch.manual_seed(0)
    mean, x = torch.rand(3, 5, 7), torch.rand(5, 7)
    assert torch.allclose(gaussian_log_likelihood(mean, x, 0.07), Independent(Normal(mean, 0.07), 1).log_prob(x),
                          atol=1e-4)
    for cls, nets in ((GaussianVAE, {"hidden": (8,)}), (VAEGAN, {"channels": 2})):
        vae = cls((1, 4, 4), latent_dim=3, likelihood="gaussian", obs_sigma=0.07, **nets).eval()
        x, z = torch.rand(5, 1, 4, 4), torch.randn(2, 5, 3)
        mean = torch.sigmoid(vae.generative(z))
        expected = vae.prior().log_prob(z) + Independent(Normal(mean, 0.07), 1).log_prob(x.flatten(1))
        assert torch.allclose(vae.log_joint(x, (z,)), expected, atol=1e-3)
        xs, _ = vae.sample_joint(4)  # continuous samples, not 0/1
        assert not torch.isin(xs, torch.tensor([0.0, 1.0])).all()


def test_ais_under_gaussian_observations_of_a_linear_generator_converges_to_the_exact_value(float64):
    torch.manual_seed(0)
    linear = LinearGaussian((16,), latent_dim=4, obs_std=0.3)
    gan = GAN((16,), latent_dim=4, hidden=(8,)).eval()
    gan.generator = linear.generative  # G(z) = W z + b: the linear-Gaussian model, scored as a generator
    target = AISTarget(gan, obs_sigma=0.3)
    x, _ = target.simulate(16)
    exact = linear.exact_log_likelihood(x)
    torch.manual_seed(1)
    few = ais_log_likelihood(target, x, AISOptions(steps=2, chains=64, leapfrog=3))
    ais = ais_log_likelihood(target, x, AISOptions(steps=300, chains=64, leapfrog=3))
    assert (exact - few).mean().item() > 0.3  # the test has room to fail
    assert abs((ais - exact).mean().item()) < 0.05


@pytest.mark.parametrize("true_sigma", [0.05, 0.2])
def test_sigma_selection_picks_the_sigma_the_data_were_simulated_with(true_sigma):
    torch.manual_seed(0)
    gan = GAN((1, 4, 4), latent_dim=2, hidden=(16,)).eval()
    x, _ = AISTarget(gan, obs_sigma=true_sigma).simulate(100)
    grid = [0.025, 0.05, 0.1, 0.2, 0.4]
    out = select_obs_sigma(gan, x, grid, AISOptions(steps=30, chains=8, leapfrog=3))
    assert out["obs_sigma"] == true_sigma
    assert list(out["scores"]) == grid and out["images"] == 100 and out["steps"] == 30
    with pytest.raises(ValueError, match=r"ais.obs_sigma: expected a non-empty list"):
        select_obs_sigma(gan, x, [], AISOptions(steps=2))
    with pytest.raises(ValueError, match=r"ais.obs_sigma must be > 0"):
        select_obs_sigma(gan, x, [0.1, -1.0], AISOptions(steps=2))


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("data, sets, message", [
    ("mnist", ["data.dequantize=true"], "data.dequantize=true needs data.binarization='none' (grey levels), "
                                        "got 'dynamic'"),
    ("digits", ["data.binarization=none", "data.dequantize=true"], "data.dequantize=true is not available for digits"),
    ("mnist", ["data.binarization=none", "data.dequantize=3"], "data.dequantize: expected bool, got 3 (int)"),
    ("mnist", ["model.likelihood=laplace"], "model.likelihood must be one of ['bernoulli', 'gaussian'], got 'laplace'"),
    ("mnist", ["model.likelihood=gaussian", "model.obs_sigma=0"], "model.obs_sigma must be a number > 0, got 0"),
])
def test_bad_continuous_options_are_refused_before_training(tmp_path, capsys, keep_signal_handlers, data, sets,
                                                            message):
    argv = [a for s in sets for a in ("--set", s)]
    code, line = run_cli(capsys, "run", "--method", "vae", "--data", data, "--out", str(tmp_path / "out"), *argv)
    assert code == 2 and message in line
    assert not list(tmp_path.glob("out/*/record.json"))


def test_new_switches_at_their_defaults_leave_existing_fingerprints_alone():
    from benchmarks.config import resolve_config
    from benchmarks.fingerprint import config_fingerprint, identity

    config = resolve_config("vae", "mnist")
    assert config["data"]["init_args"]["dequantize"] is False and config["model"]["init_args"]["likelihood"] == "bernoulli"
    ident = identity(config)
    for section, keys in (("data", ("dequantize", "dequantize_seed")), ("model", ("likelihood", "obs_sigma"))):
        assert not set(keys) & set(ident[section]["init_args"])
    old = {**config, "data": {**config["data"], "init_args": {k: v for k, v in config["data"]["init_args"].items()
                                                              if not k.startswith("dequantize")}}}
    assert config_fingerprint(old) == config_fingerprint(config)  # a record written before the option
    continuous = resolve_config("vae", "mnist", overrides={"data": {"init_args": {"binarization": "none", "dequantize": True}},
                                                         "model": {"init_args": {"likelihood": "gaussian"}}})
    prints = {config_fingerprint(c) for c in (config, continuous, resolve_config(
        "vae", "mnist", overrides={"model": {"init_args": {"likelihood": "gaussian", "obs_sigma": 0.05}}}))}
    assert len(prints) == 3
