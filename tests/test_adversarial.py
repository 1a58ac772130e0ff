"""GAN, VAE-GAN and the perceptual VAE: training on digits through the real runner, the players'
separate updates, FID in every record, bad input, divergence and the figures."""
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from benchmarks.config import build, resolve_config
from benchmarks.figures.samples import recon_figure, samples_figure
from benchmarks.run import run_cell
from dgm_modules.networks.feature_nets import WEIGHTS_ENV, FeatureNetNotFoundError, classifier_features
from dgm_modules.methods.base import DivergedError
from dgm_modules.objectives.perceptual import PerceptualELBO
from dgm_modules.registry import ConfigError

SMALL = {"trainer": {"max_epochs": 1},
         "module": {"init_args": {"eval_k": [1, 5], "fid_samples": 200}}}
SMALL_MODEL = {"init_args": {"latent_dim": 8, "hidden": [32, 32]}}
METHODS = ["gan", "dcgan", "vae-gan", "vae-perceptual", "vae"]


pytestmark = pytest.mark.usefixtures("one_thread")  # small convolutions: one thread beats oversubscribed ones


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DGM_BENCH_CACHE", str(root))  # FID statistics; the digits network is the shipped one
        yield root


def small_config(method: str, **extra) -> dict:
    over = {**SMALL, "model": {"init_args": {**SMALL_MODEL["init_args"], **extra}}}
    if method == "dcgan":
        over["model"]["init_args"]["channels"] = 8
    return resolve_config(method, "digits", 0, over)


@pytest.fixture(scope="module")
def runs(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {m: (run_cell(small_config(m), out, enable_progress_bar=False), out) for m in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_every_sampling_method_trains_on_digits_and_records_fid(runs, method):
    record, out = runs[method]
    assert record["status"] == "completed", record["error"]
    m = record["metrics"]
    assert math.isfinite(m["test/fid_n200"]) and m["test/fid_n200"] > 0 and math.isfinite(m["test/kid_n200"])
    sha = classifier_features("digits").sha256
    assert record["protocol"]["feature_net"] == "classifier-digits"
    assert record["protocol"]["feature_net_sha256"] == sha and record["protocol"]["fid_samples"] == 200
    has_likelihood = method not in ("gan", "dcgan")  # a GAN has no likelihood: FID/KID only
    assert ("test/nll_k5" in m) == has_likelihood and ("k" in record["protocol"]) == has_likelihood
    if has_likelihood:
        assert 0 < m["test/nll_k5"] < 64 * math.log(2) * 1.5


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


class StepRecorder(L.Callback):
    """Parameters before every optimiser step of the first batch, and after it."""

    def __init__(self):
        self.snapshots, self.optimizers = [], []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.snapshots.append(_snapshot(module.model))
        self.optimizers.append(trainer.optimizers.index(optimizer))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.snapshots.append(_snapshot(module.model))


@pytest.mark.parametrize("method,owners", [
    ("gan", {"discriminator": "discriminator.", "generator": "generator."}),
    ("vae-gan", {"encoder": "inference.", "decoder": "generative.", "discriminator": "discriminator."}),
])
def test_each_player_changes_only_its_own_parameters(cache, method, owners):
    datamodule, module = build(small_config(method))
    recorder = StepRecorder()
    trainer = L.Trainer(max_steps=len(owners), limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    trainer.fit(module, datamodule=datamodule)
    players = module.objective.players
    assert recorder.optimizers == list(range(len(players)))  # one step per player, in order
    for i, player in enumerate(players):
        before, after = recorder.snapshots[i], recorder.snapshots[i + 1]
        changed = {n for n in before if not torch.equal(before[n], after[n])}
        own = {n for n in before if n.startswith(owners[player])}
        assert changed and changed <= own, (player, sorted(changed - own)[:3])
        assert len(changed) >= len(own) // 2  # the player's own parameters really moved


def test_vae_gan_encoder_loss_is_kl_plus_feature_reconstruction(cache):
    torch.manual_seed(0)
    _, module = build(small_config("vae-gan"))
    x = torch.rand(4, 1, 8, 8).bernoulli()
    torch.manual_seed(1)
    out = module.objective(module.model, x, "encoder")
    assert out.loss.item() == pytest.approx((out.terms["kl"] + out.terms["feature_nll"]).item(), rel=1e-5)
    torch.manual_seed(1)
    dec = module.objective(module.model, x, "decoder")
    gamma = module.objective.gamma
    assert dec.loss.item() == pytest.approx((gamma * dec.terms["feature_nll"] + dec.terms["gan"]).item(), rel=1e-5)


def test_a_non_finite_player_loss_is_divergence(cache):
    datamodule, module = build(small_config("gan"))
    with torch.no_grad():
        module.model.discriminator.head.bias.fill_(float("nan"))
    trainer = L.Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(DivergedError):
        trainer.fit(module, datamodule=datamodule)


def test_bad_pairings_and_options_are_refused_before_training(cache):
    with pytest.raises(ConfigError, match="discriminator"):  # a plain VAE has no discriminator
        build(resolve_config("vae-gan", "digits", 0, {"model": "gaussian-vae"}))
    with pytest.raises(ConfigError, match="compatible objectives: .*gan"):
        build(resolve_config("vae", "digits", 0, {"model": "gan"}))
    with pytest.raises(ConfigError, match="objective.gamma must be > 0"):
        build(resolve_config("vae-gan", "digits", 0, {"objective": {"init_args": {"gamma": 0.0}}}))
    with pytest.raises(ConfigError, match="objective.layers"):
        build(resolve_config("vae-perceptual", "digits", 0, {"objective": {"init_args": {"layers": ["pool9"]}}}))
    with pytest.raises(ConfigError, match="model.arch='dcgan' needs images"):
        build(resolve_config("dcgan", "ring", 0, {}))


def test_perceptual_loss_without_a_trained_evaluator_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))  # an empty folder in place of the shipped networks
    objective = PerceptualELBO(feature_net="mnist")
    with pytest.raises(FeatureNetNotFoundError, match="dgm-bench evaluator train --data mnist"):
        objective.bind_data(None)


def test_perceptual_reconstruction_term_is_the_feature_space_gaussian(cache):
    datamodule, module = build(small_config("vae-perceptual"))
    objective, model = module.objective, module.model
    objective.bind_data(datamodule)
    x = torch.rand(3, 1, 8, 8).bernoulli()
    torch.manual_seed(0)
    out = objective(model, x)
    torch.manual_seed(0)
    q = model.q(x)
    x_hat = model.likelihood(q.rsample()).mean.view_as(x)
    net = classifier_features("digits").net
    expected = 0.0
    for layer in objective.layers:
        a, b = net.feature_maps(x)[layer].flatten(1), net.feature_maps(x_hat)[layer].flatten(1)
        d = a.shape[1]
        expected += (-0.5 * ((a - b) ** 2).sum(1) - 0.5 * d * math.log(2 * math.pi)).mean()
    kl = torch.distributions.kl_divergence(q, model.prior()).mean()
    assert out.loss.item() == pytest.approx(-(expected - kl).item(), rel=1e-5)


def test_sample_and_reconstruction_figures(runs, tmp_path):
    out = runs["vae"][1]
    run_dir = {m: Path(out) / runs[m][0]["run_id"] for m in METHODS}
    png = samples_figure(run_dir["gan"], tmp_path / "samples.png", n=16)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = recon_figure([run_dir["vae"], run_dir["vae-perceptual"], run_dir["vae-gan"]], tmp_path / "recon.png", n=6)
    assert png.stat().st_size > 1000
    with pytest.raises(ValueError, match="no encoder"):
        recon_figure([run_dir["gan"]], tmp_path / "x.png")
    record = json.loads((run_dir["gan"] / "record.json").read_text())
    assert record["config"]["module"]["class_path"] == "adversarial"


def test_mlp_gan_samples_stay_diverse_on_mnist(shared_data, monkeypatch):
    """A regression guard: without batch norm in its generator this MLP GAN collapsed to a single
    image within 300 steps on MNIST (pairwise spread 0.05 of the real digits'; 0.29 with it)."""
    monkeypatch.setenv("DGM_BENCH_DATA", str(shared_data))
    config = resolve_config("gan", "mnist", 0, {"data": {"init_args": {"binarization": "none"}},
                                                "module": {"init_args": {"fid_samples": 0}}})
    datamodule, module = build(config)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=300, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu")
    trainer.fit(module, datamodule=datamodule)
    torch.manual_seed(0)
    fake = module.model.sample(200).flatten(1)
    real = datamodule.train_x[:200].flatten(1)
    spread = torch.pdist(fake).mean() / torch.pdist(real).mean()
    assert spread > 0.15, float(spread)
