"""Feature networks of FID/KID and the perceptual loss, cached on disk with a sha256 checksum.

Grey-level datasets (28x28, 8x8) use the suite's own classifier, trained on the dataset's
training split by ``dgm-bench evaluator train --data NAME`` and cached in
``$DGM_BENCH_CACHE/evaluators/NAME/`` (default ``~/.cache/dgm-bench/evaluators/NAME/``) as
``classifier.pt`` (a state dict) plus ``classifier.json`` (architecture, accuracies, sha256).
A file whose checksum does not match its record is refused, never silently used. Colour
images use torch-fidelity's Inception-v3 (Heusel et al. 2017) from a local weights file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dgm_modules.evaluation.classifier import ClassifierNet, accuracy, default_arch, train_classifier

CACHE_ENV = "DGM_BENCH_CACHE"
WEIGHTS, META = "classifier.pt", "classifier.json"
#: datasets whose classifier trains in seconds: trained and cached on first use
AUTO_TRAIN = {"digits": 30}
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE)


class FeatureNetNotFoundError(FileNotFoundError):
    """No cached feature network; the message says how to make one."""


class FeatureNetChecksumError(RuntimeError):
    """A cached feature network's file does not match its recorded sha256."""


def cache_root() -> Path:
    """``$DGM_BENCH_CACHE``, else ``$XDG_CACHE_HOME/dgm-bench``, else ``~/.cache/dgm-bench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dgm-bench"


def evaluator_dir(dataset: str, root: str | Path | None = None) -> Path:
    return Path(root) if root is not None else cache_root() / "evaluators" / dataset


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class FeatureExtractor(nn.Module):
    """What torchmetrics' FID/KID call: float images in [0, 1], ``[N, C, H, W]`` -> ``[N, d]``.

    ``num_features`` spares torchmetrics its dummy-input probe; ``name`` and ``sha256`` are what
    a record says about the feature network behind its FID.
    """

    def __init__(self, net: nn.Module, num_features: int, name: str, sha256: str) -> None:
        super().__init__()
        self.net, self.num_features, self.name, self.sha256 = net, num_features, name, sha256

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x.float())


def save_classifier(net: ClassifierNet, dataset: str, info: dict, root: str | Path | None = None) -> dict:
    """Write weights, then their record with the sha256; return the record."""
    out = evaluator_dir(dataset, root)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / WEIGHTS, lambda fh: torch.save(net.state_dict(), fh))
    meta = {"dataset": dataset, "weights": WEIGHTS, "sha256": file_sha256(out / WEIGHTS), "arch": net.arch, **info}
    _write_atomic(out / META, lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
    return meta


def load_classifier(dataset: str, root: str | Path | None = None) -> tuple[ClassifierNet, dict]:
    """The cached classifier of ``dataset`` and its record; the checksum is verified first."""
    folder = evaluator_dir(dataset, root)
    weights, meta_path = folder / WEIGHTS, folder / META
    if not weights.exists() or not meta_path.exists():
        raise FeatureNetNotFoundError(
            f"no feature network for {dataset!r}: {weights if not weights.exists() else meta_path} not found. "
            f"Train it with `dgm-bench evaluator train --data {dataset}` (cache folder: ${CACHE_ENV} "
            f"or ~/.cache/dgm-bench)")
    meta = json.loads(meta_path.read_text())
    actual = file_sha256(weights)
    if actual != meta.get("sha256"):
        raise FeatureNetChecksumError(
            f"{weights}: sha256 {actual} does not match {meta.get('sha256')} recorded in {meta_path}; the "
            f"file is corrupt or was replaced. Retrain it with `dgm-bench evaluator train --data {dataset}`")
    net = ClassifierNet(**meta["arch"])
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False), meta


def train_and_save(datamodule: Any, epochs: int, root: str | Path | None = None, seed: int = 0) -> dict:
    """Train the classifier on ``datamodule``'s training split only; cache it; return its record."""
    # may be called lazily from a test loop (inference mode): train with autograd on, fresh tensors
    with torch.inference_mode(False), torch.enable_grad():
        return _train_and_save(datamodule, epochs, root, seed)


def _train_and_save(datamodule: Any, epochs: int, root: str | Path | None, seed: int) -> dict:
    datamodule.setup("fit")
    if datamodule.train_y is None:
        raise ValueError(f"{datamodule.name}: the evaluator classifier needs labels; this dataset has none")
    x, y = datamodule.train_x, datamodule.train_y
    arch = default_arch(datamodule.dims, int(y.max()) + 1)
    net = train_classifier(x, y, arch, epochs=epochs, seed=seed)
    info = {"epochs": epochs, "seed": seed, "train_examples": len(x), "data_protocol": datamodule.protocol(),
            "val_accuracy": accuracy(net, datamodule.val_x, datamodule.val_y),
            "test_accuracy": accuracy(net, datamodule.test_x, datamodule.test_y),
            "torch": torch.__version__}
    return save_classifier(net, datamodule.name, info, root)


def grey_datamodule(name: str, data_dir: Any = None) -> Any:
    """``name``'s DataModule at its default split, grey levels (the evaluator's training data)."""
    from datamodules import DATAMODULES  # the data package imports this package's registry

    return DATAMODULES.get(name, "data")(data_dir=data_dir, binarization="none")


def classifier_features(dataset: str, root: str | Path | None = None, data_dir: Any = None) -> FeatureExtractor:
    """The suite classifier of ``dataset`` as a feature extractor; cheap ones are trained on a miss."""
    try:
        net, meta = load_classifier(dataset, root)
    except FeatureNetNotFoundError:
        if dataset not in AUTO_TRAIN:
            raise
        train_and_save(grey_datamodule(dataset, data_dir), AUTO_TRAIN[dataset], root)
        net, meta = load_classifier(dataset, root)
    return FeatureExtractor(net, net.feature_dim, f"classifier-{dataset}", meta["sha256"])


class _InceptionFeatures(nn.Module):
    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def features(self, x: Tensor) -> Tensor:
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.extractor(x)[0]


def inception_features(weights_path: str | Path | None = None) -> FeatureExtractor:
    """torch-fidelity's Inception-v3 (2048-d pool features) from a local weights file.

    Never downloads: a missing file is an error naming it, where it is looked for and its URL.
    """
    path = Path(weights_path) if weights_path else cache_root() / "inception" / INCEPTION_FILE
    if not path.exists():
        raise FeatureNetNotFoundError(
            f"Inception-v3 weights not found: {path}. Download {INCEPTION_URL} and put it there "
            f"(or under ${CACHE_ENV}/inception/{INCEPTION_FILE}); dgm-bench never downloads it itself")
    # Loading with weights_only=True proves the file holds tensors only; torch-fidelity then
    # reads the same, verified file itself.
    torch.load(path, map_location="cpu", weights_only=True)
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    return FeatureExtractor(_InceptionFeatures(extractor), 2048, "inception-v3-compat", file_sha256(path))


def feature_net_for(datamodule: Any, root: str | Path | None = None) -> FeatureExtractor:
    """The FID/KID feature network of a dataset: Inception-v3 for colour, the suite classifier otherwise."""
    if datamodule.dims[0] == 3:
        return inception_features()
    return classifier_features(datamodule.name, root, getattr(datamodule, "data_dir", None))
