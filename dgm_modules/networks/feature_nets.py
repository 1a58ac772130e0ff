"""Feature networks of FID/KID and the perceptual loss, each a file with a sha256 checksum.

Grey-level datasets (28x28, 8x8) use the suite's own classifier (``classifier.py``). The ones
for ``digits``, ``mnist`` and ``fashion-mnist`` ship with the package, in
``dgm_modules/networks/weights/NAME/`` as ``classifier.pt`` (a float16 state dict) plus
``classifier.json`` (architecture, accuracies, how it was trained); their sha256 is fixed in
:data:`PUBLISHED_SHA256`, so every installation scores FID with the same network, bit for bit.
Another folder can replace them: ``$DGM_BENCH_FEATURE_NETS/NAME/`` (then only that folder is
read). A dataset without a shipped network (e.g. omniglot) has its classifier trained here,
by ``dgm-bench evaluator train --data NAME`` or by a run before it trains, into
``$DGM_BENCH_FEATURE_NETS/NAME/`` or else ``$DGM_BENCH_CACHE/evaluators/NAME/`` (default
``~/.cache/dgm-bench/evaluators/NAME/``). A file whose checksum does not match its record (or,
for a shipped one, the published checksum) is refused, never silently used or replaced.
Colour images use torch-fidelity's Inception-v3 (Heusel et al. 2017) from a local weights file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from datamodules import DATAMODULES
from dgm_modules.networks.classifier import ClassifierNet, accuracy, default_arch, train_classifier

CACHE_ENV = "DGM_BENCH_CACHE"
WEIGHTS_ENV = "DGM_BENCH_FEATURE_NETS"
WEIGHTS, META = "classifier.pt", "classifier.json"
SHIPPED_DIR = Path(__file__).parent / "weights"
#: sha256 of the shipped ``classifier.pt`` files: what a published FID's network is
PUBLISHED_SHA256 = {
    "digits": "67ad692a589ec3761e537a7ccd7e409ca12590a72af44136ffb7330db2412779",
    "mnist": "360702e99715ced83fcd04a5c4baf332c934a83bbccc2f115b807de26bc05a36",
    "fashion-mnist": "9913863c9dd979f57ad757153944899ec2a29959199ddae94ef9e05e851a6b49",
}
#: datasets scored with another dataset's network (the same images; binarized-mnist has no labels)
NETWORK_OF = {"binarized-mnist": "mnist"}
#: training epochs of a classifier made here (measured accuracies: see the shipped classifier.json)
TRAIN_EPOCHS = {"digits": 30, "mnist": 4, "fashion-mnist": 10}
DEFAULT_EPOCHS = 4
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE)


class FeatureNetNotFoundError(FileNotFoundError):
    """No feature network file; the message says how to make one."""


class FeatureNetChecksumError(RuntimeError):
    """A feature network's file does not match its recorded (or published) sha256."""


def cache_root() -> Path:
    """``$DGM_BENCH_CACHE``, else ``$XDG_CACHE_HOME/dgm-bench``, else ``~/.cache/dgm-bench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dgm-bench"


def network_name(dataset: str) -> str:
    """The dataset whose classifier scores ``dataset`` (itself, unless it shares one)."""
    return NETWORK_OF.get(dataset, dataset)


def trained_dir(dataset: str) -> Path:
    """Where a classifier trained here goes: never the package's own folder."""
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV]).expanduser() / dataset
    return cache_root() / "evaluators" / dataset


def evaluator_dir(dataset: str, root: str | Path | None = None) -> Path:
    """The folder ``dataset``'s classifier is read from: ``root`` if given, else
    ``$DGM_BENCH_FEATURE_NETS/NAME`` if set, else the shipped one, else the cache."""
    if root is not None:
        return Path(root)
    shipped = SHIPPED_DIR / dataset
    if not os.environ.get(WEIGHTS_ENV) and (shipped / WEIGHTS).exists():
        return shipped
    return trained_dir(dataset)


def is_shipped(folder: str | Path, dataset: str) -> bool:
    return dataset in PUBLISHED_SHA256 and Path(folder).resolve() == (SHIPPED_DIR / dataset).resolve()


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
    """Write the weights (float16), then their record with the sha256; return the record."""
    out = Path(root) if root is not None else trained_dir(dataset)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    _write_atomic(out / WEIGHTS, lambda fh: torch.save(state, fh))
    meta = {"name": f"classifier-{dataset}", "dataset": dataset, "weights": WEIGHTS, "dtype": "float16",
            "sha256": file_sha256(out / WEIGHTS), "size_bytes": (out / WEIGHTS).stat().st_size, "arch": net.arch,
            **info}
    _write_atomic(out / META, lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
    return meta


def _missing_message(dataset: str, path: Path) -> str:
    where = (f"${WEIGHTS_ENV} is set: only {os.environ[WEIGHTS_ENV]} is read" if os.environ.get(WEIGHTS_ENV)
             else f"no shipped network for {dataset!r} (shipped: {', '.join(PUBLISHED_SHA256)})")
    return (f"no feature network for {dataset!r}: {path} not found ({where}). Make it with "
            f"`dgm-bench evaluator train --data {dataset}` (a run that asks for FID makes it before it trains)")


def load_classifier(dataset: str, root: str | Path | None = None) -> tuple[ClassifierNet, dict]:
    """``dataset``'s classifier and its record; the checksum is verified first.

    A shipped network must match :data:`PUBLISHED_SHA256`; any other must match its record.
    """
    folder = evaluator_dir(dataset, root)
    weights, meta_path = folder / WEIGHTS, folder / META
    if not weights.exists() or not meta_path.exists():
        raise FeatureNetNotFoundError(_missing_message(dataset, weights if not weights.exists() else meta_path))
    meta = json.loads(meta_path.read_text())
    expected = PUBLISHED_SHA256[dataset] if is_shipped(folder, dataset) else meta.get("sha256")
    actual = file_sha256(weights)
    if actual != expected or meta.get("sha256") != expected:
        raise FeatureNetChecksumError(
            f"{weights}: sha256 {actual} does not match {expected} ("
            + ("the published checksum in dgm_modules/networks/feature_nets.py; reinstall dgm-bench"
               if is_shipped(folder, dataset) else
               f"recorded in {meta_path}; the file is corrupt or was replaced: delete the folder and make it "
               f"again with `dgm-bench evaluator train --data {dataset}`") + ")")
    net = ClassifierNet(**meta["arch"])
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval().requires_grad_(False), meta


def train_and_save(datamodule: Any, epochs: int, root: str | Path | None = None, seed: int = 0) -> dict:
    """Train the classifier on ``datamodule``'s training split only; save it; return its record."""
    # may be called from a test loop (inference mode): train with autograd on, fresh tensors
    with torch.inference_mode(False), torch.enable_grad():
        return _train_and_save(datamodule, epochs, root, seed)


def _train_and_save(datamodule: Any, epochs: int, root: str | Path | None, seed: int) -> dict:
    datamodule.setup("fit")
    datamodule.setup("test")
    if datamodule.train_y is None:
        raise ValueError(f"{datamodule.name}: the evaluator classifier needs labels; this dataset has none")
    x, y = datamodule.train_x, datamodule.train_y
    arch = default_arch(datamodule.dims, int(y.max()) + 1)
    net = train_classifier(x, y, arch, epochs=epochs, seed=seed)
    # the file holds float16 weights: the accuracies are those of the rounded network
    net.load_state_dict({k: v.to(torch.float16).float() for k, v in net.state_dict().items()})
    info = {"epochs": epochs, "seed": seed, "train_examples": len(x), "data_protocol": datamodule.protocol(),
            "val_accuracy": accuracy(net, datamodule.val_x, datamodule.val_y),
            "test_accuracy": accuracy(net, datamodule.test_x, datamodule.test_y),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    return save_classifier(net, datamodule.name, info, root)


def grey_datamodule(name: str, data_dir: Any = None) -> Any:
    """``name``'s DataModule at its default split, grey levels (the evaluator's training data)."""
    return DATAMODULES.get(name, "data")(data_dir=data_dir, binarization="none")


def prepare_classifier(dataset: str, data_dir: Any = None, echo: Callable[[str], None] = print) -> dict:
    """Make sure ``dataset``'s classifier can be loaded; train it first if it is missing.

    Returns its record. A checksum mismatch is raised, never answered by retraining.
    """
    name = network_name(dataset)
    try:
        return load_classifier(name)[1]
    except FeatureNetNotFoundError:
        pass
    out, epochs = trained_dir(name), TRAIN_EPOCHS.get(name, DEFAULT_EPOCHS)
    echo(f"feature network classifier-{name} not found: training it on {name}'s training split into {out} "
         f"({epochs} epochs; minutes on one CPU thread), before anything else trains")
    meta = train_and_save(grey_datamodule(name, data_dir), epochs, out)
    published = PUBLISHED_SHA256.get(name)
    note = ("" if not published or meta["sha256"] == published else
            f"; it differs from the published {published[:12]}..., so its FIDs share no column with published ones")
    echo(f"feature network classifier-{name} ready: test accuracy {meta['test_accuracy']:.4f}, "
         f"sha256 {meta['sha256'][:12]}...{note}")
    return meta


def classifier_features(dataset: str, root: str | Path | None = None) -> FeatureExtractor:
    """The suite classifier of ``dataset`` (or of the dataset it shares one with) as a feature extractor."""
    name = network_name(dataset)
    net, meta = load_classifier(name, root)
    return FeatureExtractor(net, net.feature_dim, f"classifier-{name}", meta["sha256"])


class _InceptionFeatures(nn.Module):
    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def features(self, x: Tensor) -> Tensor:
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.extractor(x)[0]


def inception_path(weights_path: str | Path | None = None) -> Path:
    """The Inception-v3 weights file; a missing one is an error naming it, where it is looked for and its URL."""
    path = Path(weights_path) if weights_path else cache_root() / "inception" / INCEPTION_FILE
    if not path.exists():
        raise FeatureNetNotFoundError(
            f"Inception-v3 weights not found: {path}. Download {INCEPTION_URL} and put it there "
            f"(or under ${CACHE_ENV}/inception/{INCEPTION_FILE}); dgm-bench never downloads it itself")
    return path


def inception_features(weights_path: str | Path | None = None) -> FeatureExtractor:
    """torch-fidelity's Inception-v3 (2048-d pool features) from a local weights file (never downloaded)."""
    path = inception_path(weights_path)
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
    return classifier_features(datamodule.name, root)
