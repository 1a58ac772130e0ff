"""FID/KID through torchmetrics with the suite's feature networks, and the evaluator cache."""
import json

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from benchmarks.cli import main
from dgm_modules.networks.classifier import accuracy
from dgm_modules.networks.feature_nets import (WEIGHTS, WEIGHTS_ENV, FeatureNetChecksumError,
                                                 FeatureNetNotFoundError, classifier_features, evaluator_dir,
                                                 feature_net_for, grey_datamodule, inception_features,
                                                 load_classifier)
from dgm_modules.evaluation.sample_quality import fid_kid, real_statistics


pytestmark = pytest.mark.usefixtures("one_thread")  # small convolutions: one thread beats oversubscribed ones


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache for the real-data statistics; the digits classifier is the shipped one."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DGM_BENCH_CACHE", str(root))
        classifier_features("digits")
        yield root


@pytest.fixture(scope="module")
def digits(cache):
    dm = grey_datamodule("digits")
    dm.setup("test")
    return dm


def noised(x: torch.Tensor, level: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (x + level * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def test_evaluator_trains_on_the_training_split_only_and_reaches_sensible_accuracy(cache, digits):
    net, meta = load_classifier("digits")
    assert meta["train_examples"] == meta["data_protocol"]["split"]["train"] == 1297  # not val, not test
    assert meta["test_accuracy"] > 0.9 and meta["val_accuracy"] > 0.9
    # the recorded accuracy is the cached network's, recomputed independently
    assert accuracy(net, digits.test_x, digits.test_y) == pytest.approx(meta["test_accuracy"])
    assert len(meta["sha256"]) == 64


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_the_noise(cache, digits):
    extractor = classifier_features("digits")
    real = real_statistics(extractor, digits)
    x = digits.test_x
    same = fid_kid(extractor, real, x)
    assert abs(same["fid"]) < 1e-6  # (KID's unbiased estimator is not 0 on one set: it drops k(x_i, x_i))
    scores = [fid_kid(extractor, real, noised(x, level)) for level in (0.1, 0.3, 0.6)]
    fids, kids = [s["fid"] for s in scores], [s["kid"] for s in scores]
    assert 100 * 1e-3 < fids[0] < fids[1] < fids[2]
    assert kids[0] < kids[1] < kids[2]


def test_fid_equals_torch_fidelity_on_the_same_features(cache, digits):
    extractor = classifier_features("digits")
    real = real_statistics(extractor, digits)
    fake = noised(digits.test_x, 0.2)
    ours = fid_kid(extractor, real, fake)["fid"]
    with torch.no_grad():
        f_real, f_fake = extractor(digits.test_x).double(), extractor(fake).double()
    reference = fid_statistics_to_metric(fid_features_to_statistics(f_real), fid_features_to_statistics(f_fake),
                                         verbose=False)["frechet_inception_distance"]
    assert ours == pytest.approx(reference, rel=1e-4)


def test_real_statistics_are_cached_by_the_feature_network_checksum(cache, digits):
    extractor = classifier_features("digits")
    first = real_statistics(extractor, digits)
    files = list((cache / "fid-stats").glob("digits-test-*.pt"))
    assert len(files) == 1 and extractor.sha256[:16] in files[0].name
    again = real_statistics(extractor, digits)  # from the file
    assert torch.equal(first["cov_sum"], again["cov_sum"]) and int(again["n"]) == 300
    np.testing.assert_allclose(first["sum"].numpy(), extractor(digits.test_x).double().sum(0).numpy(), rtol=1e-5)


def test_a_cached_network_whose_checksum_does_not_match_is_rejected(cache, tmp_path):
    src = evaluator_dir("digits")
    dst = tmp_path / "digits"
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    load_classifier("digits", dst)  # an exact copy loads
    state = torch.load(dst / WEIGHTS, weights_only=True)
    state["head.1.bias"] += 1.0  # a replaced file: loadable, but not the network the record describes
    torch.save(state, dst / WEIGHTS)
    with pytest.raises(FeatureNetChecksumError, match="does not match"):
        load_classifier("digits", dst)
    with pytest.raises(FeatureNetChecksumError):  # never silently retrained or used either
        classifier_features("digits", dst)


def test_a_missing_network_names_the_command_that_makes_it(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))  # an empty folder in place of the shipped networks
    with pytest.raises(FeatureNetNotFoundError, match="dgm-bench evaluator train --data mnist"):
        classifier_features("mnist")


def test_missing_inception_weights_give_a_clear_error_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_BENCH_CACHE", str(tmp_path))
    with pytest.raises(FeatureNetNotFoundError, match="weights-inception-2015-12-05-6726825d.pth") as err:
        inception_features()
    assert str(tmp_path / "inception") in str(err.value) and "https://" in str(err.value)

    class Colour:
        name, dims = "cifar10", (3, 32, 32)

    with pytest.raises(FeatureNetNotFoundError, match="Inception-v3 weights not found"):
        feature_net_for(Colour())


def test_evaluator_train_command_writes_weights_and_record(tmp_path, capsys):
    assert main(["evaluator", "train", "--data", "digits", "--epochs", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    meta = json.loads((tmp_path / "classifier.json").read_text())
    assert meta["epochs"] == 3 and meta["sha256"] in out and (tmp_path / WEIGHTS).exists()
    load_classifier("digits", tmp_path)
