"""The shipped FID/KID feature networks: checksums, accuracy on real test data, tampering, and a
run that makes a missing network before it trains."""
import json
import shutil

import lightning as L
import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from benchmarks.cli import main
from benchmarks.config import resolve_config
from benchmarks.evaluator import prepare_feature_nets
from benchmarks.matrix import resolve_spec, run_matrix
from benchmarks.run import run_cell
from dgm_modules.networks.classifier import accuracy
from dgm_modules.networks.feature_nets import (META, PUBLISHED_SHA256, SHIPPED_DIR, WEIGHTS, WEIGHTS_ENV,
                                                 FeatureNetChecksumError, classifier_features, evaluator_dir,
                                                 feature_net_for, file_sha256, grey_datamodule, load_classifier)

TARGETS = {"mnist": 0.99, "fashion-mnist": 0.90}  # test accuracy each shipped network must reach


pytestmark = pytest.mark.usefixtures("one_thread")  # small convolutions: one thread beats oversubscribed ones


def real_test_split(name: str, data_dir):
    dm = grey_datamodule(name, data_dir=str(data_dir))
    try:
        dm.setup("test")
    except FileNotFoundError as err:
        pytest.skip(f"{name} not found: {err}")
    return dm


@pytest.mark.parametrize("name", sorted(PUBLISHED_SHA256))
def test_shipped_files_match_the_published_checksums(name):
    folder = SHIPPED_DIR / name
    assert evaluator_dir(name) == folder  # with no override, the shipped file is the one used
    assert file_sha256(folder / WEIGHTS) == PUBLISHED_SHA256[name]
    meta = json.loads((folder / META).read_text())
    assert meta["sha256"] == PUBLISHED_SHA256[name] and meta["name"] == f"classifier-{name}"
    assert (folder / WEIGHTS).stat().st_size == meta["size_bytes"] < 1_000_000
    state = torch.load(folder / WEIGHTS, weights_only=True)
    assert {t.dtype for t in state.values()} == {torch.float16}
    extractor = classifier_features(name)
    assert extractor.sha256 == PUBLISHED_SHA256[name] and extractor.name == f"classifier-{name}"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_shipped_networks_reach_their_accuracy_on_the_real_test_split(name, shared_data):
    dm = real_test_split(name, shared_data)
    net, meta = load_classifier(name)
    acc = accuracy(net, dm.test_x, dm.test_y)
    assert acc >= TARGETS[name]
    assert acc == pytest.approx(meta["test_accuracy"], abs=1e-12)  # the record describes this very file
    assert meta["train_examples"] == 50_000  # trained on the training split alone (10k validation held out)


def test_binarized_mnist_is_scored_with_the_mnist_network():
    class BinarizedMnist:
        name, dims = "binarized-mnist", (1, 28, 28)

    extractor = feature_net_for(BinarizedMnist())
    assert (extractor.name, extractor.sha256) == ("classifier-mnist", PUBLISHED_SHA256["mnist"])


def test_a_tampered_weight_file_is_refused(tmp_path, monkeypatch, capsys):
    shutil.copytree(SHIPPED_DIR / "mnist", tmp_path / "mnist")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert load_classifier("mnist")[1]["sha256"] == PUBLISHED_SHA256["mnist"]  # an exact copy loads
    state = torch.load(tmp_path / "mnist" / WEIGHTS, weights_only=True)
    state["head.1.bias"][0] += 1.0  # loadable, but not the network its record describes
    torch.save(state, tmp_path / "mnist" / WEIGHTS)
    with pytest.raises(FeatureNetChecksumError, match=f"does not match {PUBLISHED_SHA256['mnist']}"):
        classifier_features("mnist")
    # a user's own network (its record rewritten to match) loads, but is reported as not the published one
    meta = json.loads((tmp_path / "mnist" / META).read_text())
    meta["sha256"] = file_sha256(tmp_path / "mnist" / WEIGHTS)
    (tmp_path / "mnist" / META).write_text(json.dumps(meta))
    assert classifier_features("mnist").sha256 == meta["sha256"] != PUBLISHED_SHA256["mnist"]
    capsys.readouterr()
    assert main(["evaluator", "show", "--data", "mnist"]) == 0
    assert "NOT the published network" in capsys.readouterr().out


def test_show_prints_every_shipped_network(capsys):
    assert main(["evaluator", "show"]) == 0
    out = capsys.readouterr().out
    for name, sha in PUBLISHED_SHA256.items():
        assert f"classifier-{name}" in out and sha in out
    assert out.count(", published") == len(PUBLISHED_SHA256) and "KiB" in out and "test accuracy" in out


class FeatureNetAtFirstStep(L.Callback):
    """Whether the feature network's file was there when the first training batch began."""

    def __init__(self, path):
        self.path, self.seen = path, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seen is None:
            self.seen = self.path.exists() and file_sha256(self.path)


def small_fid_config(method: str = "vae") -> dict:
    return resolve_config(method, "digits", 0, {"trainer": {"max_epochs": 1},
                                                "model": {"init_args": {"latent_dim": 4, "hidden": [16]}},
                                                "module": {"init_args": {"eval_k": [1], "fid_samples": 100}}})


def test_a_run_asking_for_fid_makes_a_missing_network_before_it_trains(tmp_path, monkeypatch, capsys):
    nets = tmp_path / "nets"
    monkeypatch.setenv(WEIGHTS_ENV, str(nets))  # an empty folder: the network is missing
    weights = nets / "digits" / WEIGHTS
    probe = FeatureNetAtFirstStep(weights)
    record = run_cell(small_fid_config(), tmp_path / "runs", callbacks=[probe], enable_progress_bar=False)
    assert record["status"] == "completed", record["error"]
    assert "classifier-digits not found: training it" in capsys.readouterr().out
    assert probe.seen == file_sha256(weights)  # there, and the same file, before the first step
    assert record["protocol"]["feature_net"] == "classifier-digits"
    assert record["protocol"]["feature_net_sha256"] == probe.seen
    assert record["metrics"]["test/fid_n100"] > 0


def test_a_matrix_makes_every_cells_network_before_its_first_cell(tmp_path, monkeypatch, capsys):
    nets = tmp_path / "nets"
    monkeypatch.setenv(WEIGHTS_ENV, str(nets))
    spec = {"methods": ["vae"], "datasets": ["digits"], "seeds": [0, 1],
            "overrides": {"trainer": {"max_epochs": 1}, "model": {"latent_dim": 4, "hidden": [16]},
                          "module": {"eval_k": [1], "fid_samples": 100}}}
    cells = resolve_spec(spec, "test-spec")
    seen = []

    def launcher(todo, out, progress):  # a launcher that trains nothing: it only looks
        seen.append((len(todo), (nets / "digits" / WEIGHTS).exists()))

    run_matrix(cells, tmp_path / "runs", launcher, echo=print)
    assert seen == [(2, True)]
    assert capsys.readouterr().out.count("not found: training it") == 1  # once for both cells
    assert prepare_feature_nets([c.config for c in cells]) == {"digits": file_sha256(nets / "digits" / WEIGHTS)}


def test_a_run_without_fid_makes_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nets"))
    config = resolve_config("vae", "digits", 0, {"module": {"init_args": {"fid_samples": 0}}})
    assert prepare_feature_nets([config]) == {}
    assert not (tmp_path / "nets").exists()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fid_of_two_halves_of_the_test_split_is_small_against_noise(name, shared_data):
    dm = real_test_split(name, shared_data)
    extractor = classifier_features(name)
    x = dm.test_x
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    a, b = x[perm[: len(x) // 2]], x[perm[len(x) // 2:]]
    noise = torch.rand(b.shape, generator=torch.Generator().manual_seed(1))

    def fid(real, fake):
        metric = FrechetInceptionDistance(feature=extractor, normalize=True)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return float(metric.compute())

    halves, against_noise = fid(a, b), fid(a, noise)
    assert 0 < halves < 0.01 * against_noise
