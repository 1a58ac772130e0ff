"""DataModules: splits, binarisation protocols, known facts of the real data, and bad input.

Real data comes from ``../shared/data`` beside the checkout (see its README for the facts checked
here); each real dataset is read once per module through module-scoped fixtures.
"""
from __future__ import annotations

import gzip
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import DATAMODULES, get_datamodule_class
from datamodules.base import Batch, IndexBatchLoader
from datamodules.binarized_mnist import BinarizedMNISTDataModule
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.digits import DigitsDataModule
from datamodules.mixtures import GridDataModule, RingDataModule
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from datamodules.omniglot import OmniglotDataModule
from datamodules.paths import DataFileError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    """Decompress into a private cache, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


def with_splits(cls, splits, **kwargs):
    """A DataModule whose raw splits are given (so MNIST is read from disk only once)."""
    dm = cls(**kwargs)
    dm.load_splits = lambda: splits
    dm.setup()
    return dm


def epoch(loader) -> list[Batch]:
    return list(loader)


def is_binary(t: torch.Tensor) -> bool:
    return bool(((t == 0) | (t == 1)).all())


@pytest.fixture(scope="module")
def mnist_splits():
    dm = MNISTDataModule(data_dir=SHARED)
    dm.prepare_data()
    return dm.load_splits()


@pytest.fixture(scope="module")
def binarized():
    dm = BinarizedMNISTDataModule(data_dir=SHARED)
    dm.setup()
    return dm


# -- registry and option validation ------------------------------------------------------------

def test_registry_has_every_dataset():
    assert set(DATAMODULES.names()) == {"digits", "mnist", "fashion-mnist", "binarized-mnist", "omniglot",
                                        "cifar10", "ring", "grid"}
    for name in DATAMODULES.names():
        assert get_datamodule_class(name).name == name


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'foo'") as err:
        get_datamodule_class("foo")
    assert "binarized-mnist, cifar10, digits, fashion-mnist, grid, mnist, omniglot, ring" in str(err.value)


@pytest.mark.parametrize("cls, bad, allowed", [
    (MNISTDataModule, "soft", "'dynamic', 'fixed', 'none'"),
    (BinarizedMNISTDataModule, "dynamic", "'fixed'"),
    (CIFAR10DataModule, "fixed", "'none'"),
    (RingDataModule, "dynamic", "'none'"),
])
def test_invalid_binarization_names_option_and_choices(cls, bad, allowed, tmp_path):
    with pytest.raises(ValueError, match="data.binarization") as err:
        cls(data_dir=tmp_path, binarization=bad)
    assert allowed in str(err.value)


def test_defaults_of_binarization():
    assert [DATAMODULES.get(n).default_binarization for n in ("mnist", "binarized-mnist", "omniglot", "cifar10")] \
        == ["dynamic", "fixed", "dynamic", "none"]


# -- MNIST ---------------------------------------------------------------------------------------

@needs_shared
def test_mnist_raw_splits_match_known_facts(mnist_splits):
    (xtr, ytr), (xte, yte) = mnist_splits["train"], mnist_splits["test"]
    assert xtr.shape == (60_000, 1, 28, 28) and xte.shape == (10_000, 1, 28, 28)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.long
    assert xtr.min() == 0 and xtr.max() == 1
    assert xtr.mean().item() == pytest.approx(0.1307, abs=2e-4)
    assert xte.mean().item() == pytest.approx(0.1325, abs=2e-4)
    assert ytr[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert yte[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(ytr).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@needs_shared
def test_mnist_split_sizes_and_protocol(mnist_splits):
    dm = with_splits(MNISTDataModule, mnist_splits, data_dir=SHARED)
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (50_000, 10_000, 10_000)
    p = dm.protocol()
    assert p["split"] == {"train": 50_000, "val": 10_000, "test": 10_000}
    assert p["binarization"] == "dynamic" and p["dims"] == [1, 28, 28]
    # Train and validation partition the 60k training images (labels and ink add up).
    grey = with_splits(MNISTDataModule, mnist_splits, binarization="none")
    x, y = mnist_splits["train"]
    assert torch.equal(torch.bincount(grey.train_y) + torch.bincount(grey.val_y), torch.bincount(y))
    assert torch.isclose(grey.train_x.double().sum() + grey.val_x.double().sum(), x.double().sum())


@needs_shared
def test_mnist_split_is_seeded(mnist_splits):
    a = with_splits(MNISTDataModule, mnist_splits, binarization="none", split_seed=0)
    b = with_splits(MNISTDataModule, mnist_splits, binarization="none", split_seed=0)
    c = with_splits(MNISTDataModule, mnist_splits, binarization="none", split_seed=1)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.val_x, c.val_x)


@needs_shared
def test_values_binary_under_binary_protocols_and_grey_under_none(mnist_splits):
    for b in ("dynamic", "fixed"):
        dm = with_splits(MNISTDataModule, mnist_splits, binarization=b)
        assert is_binary(dm.val_x) and is_binary(dm.test_x)
        assert is_binary(next(iter(dm.train_dataloader())).x)
    dm = with_splits(MNISTDataModule, mnist_splits, binarization="none")
    for t in (dm.train_x, dm.val_x, dm.test_x, next(iter(dm.train_dataloader())).x):
        assert not is_binary(t) and t.min() >= 0 and t.max() <= 1


@needs_shared
def test_dynamic_redraws_each_epoch_fixed_does_not(mnist_splits):
    # One training image: each epoch is the same image, so two epochs compare like for like.
    x, y = mnist_splits["train"]
    one = {"train": (x[:1], y[:1]), "test": mnist_splits["test"]}
    draws = {}
    for b in ("dynamic", "fixed"):
        loader = with_splits(MNISTDataModule, one, binarization=b, val_size=0).train_dataloader()
        e1, e2 = epoch(loader)[0].x, epoch(loader)[0].x
        assert is_binary(e1) and is_binary(e2)
        assert torch.all(e1[x[:1] == 0] == 0)  # a draw of that image: no ink where it has none
        draws[b] = torch.equal(e1, e2)
    assert draws == {"dynamic": False, "fixed": True}


@needs_shared
def test_fashion_mnist_known_facts():
    splits = FashionMNISTDataModule(data_dir=SHARED).load_splits()
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    assert xtr.shape == (60_000, 1, 28, 28) and xte.shape == (10_000, 1, 28, 28)
    assert ytr[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert torch.bincount(ytr).tolist() == [6000] * 10
    assert xtr.mean().item() == pytest.approx(0.2860, abs=2e-4)


def _mnist_tree(tmp_path: Path) -> Path:
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (SHARED / "MNIST" / "raw").glob("*.gz"):
        (raw / f.name).symlink_to(f)
    return raw


@needs_shared
def test_truncated_idx_gz_names_the_file(tmp_path):
    raw = _mnist_tree(tmp_path)
    name = "train-labels-idx1-ubyte.gz"
    data = (raw / name).read_bytes()
    (raw / name).unlink()
    (raw / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match=name):
        MNISTDataModule(data_dir=tmp_path / "data").setup()


@needs_shared
def test_idx_shorter_than_its_header_names_the_file(tmp_path):
    raw = _mnist_tree(tmp_path)
    labels = gzip.decompress((raw / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(labels[:-100])  # header still says 10,000 labels
    with pytest.raises(DataFileError, match="t10k-labels-idx1-ubyte.*truncated"):
        MNISTDataModule(data_dir=tmp_path / "data").prepare_data()


def test_idx_with_wrong_magic_names_the_file(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x01" + (0).to_bytes(4, "big"))
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte.*magic 0x801, expected 0x803"):
        MNISTDataModule(data_dir=tmp_path).setup()


def test_missing_mnist_says_what_where_and_how(tmp_path):
    dm = MNISTDataModule(data_dir=tmp_path / "nowhere")  # constructing reads nothing
    with pytest.raises(DataFileError) as err:
        dm.setup()
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    assert "download=True" in msg and "DGM_BENCH_DATA" in msg


# -- binarised MNIST -----------------------------------------------------------------------------

@needs_shared
def test_binarized_mnist_published_split(binarized):
    assert (len(binarized.train_x), len(binarized.val_x), len(binarized.test_x)) == (50_000, 10_000, 10_000)
    assert binarized.train_x.shape[1:] == (1, 28, 28)
    assert is_binary(binarized.train_x) and is_binary(binarized.val_x) and is_binary(binarized.test_x)
    assert binarized.train_x.mean().item() == pytest.approx(0.1306, abs=2e-4)
    assert binarized.val_x.mean().item() == pytest.approx(0.1311, abs=2e-4)
    assert binarized.test_x.mean().item() == pytest.approx(0.1325, abs=2e-4)
    p = binarized.protocol()
    assert p["binarization"] == "fixed" and p["binarization_source"] == "larochelle-murray-2011"
    assert "binarization_seed" not in p


@needs_shared
def test_binarized_mnist_is_the_same_every_epoch(binarized):
    loader = binarized.train_dataloader()
    sums = [torch.stack([b.x.sum() for b in epoch(loader)]).sum() for _ in range(2)]
    assert sums[0] == sums[1] == binarized.train_x.sum()


def _write_amat(root: Path, rows: dict[str, np.ndarray]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split, a in rows.items():
        text = "".join(" ".join(str(v) for v in r) + "\n" for r in a)
        (root / f"binarized_mnist_{split}.amat").write_text(text)


def test_binarized_mnist_reads_plain_amat(tmp_path):
    rng = np.random.default_rng(0)
    rows = {s: rng.integers(0, 2, (n, 784)) for s, n in (("train", 5), ("valid", 3), ("test", 2))}
    _write_amat(tmp_path / "binarized_mnist", rows)
    dm = BinarizedMNISTDataModule(data_dir=tmp_path)
    dm.setup()
    assert torch.equal(dm.train_x.view(5, 784), torch.as_tensor(rows["train"], dtype=torch.float32))
    assert (len(dm.val_x), len(dm.test_x)) == (3, 2)


def test_truncated_amat_names_file_and_line(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "binarized_mnist"
    _write_amat(root, {s: rng.integers(0, 2, (4, 784)) for s in ("train", "valid", "test")})
    f = root / "binarized_mnist_valid.amat"
    f.write_bytes(f.read_bytes()[: 2 * 1568 + 700])  # cut in the middle of line 3
    with pytest.raises(DataFileError, match=r"binarized_mnist_valid\.amat: line 3 has 350 values"):
        BinarizedMNISTDataModule(data_dir=tmp_path).setup()


def test_amat_with_non_binary_value_names_line(tmp_path):
    rows = {s: np.zeros((3, 784), dtype=int) for s in ("train", "valid", "test")}
    rows["test"][1, 5] = 2
    _write_amat(tmp_path / "binarized_mnist", rows)
    with pytest.raises(DataFileError, match=r"binarized_mnist_test\.amat: line 2 .*0 and 1"):
        BinarizedMNISTDataModule(data_dir=tmp_path).setup()


@needs_shared
def test_truncated_amat_gz_names_the_file(tmp_path):
    root = tmp_path / "binarized_mnist"
    root.mkdir()
    for f in (SHARED / "binarized_mnist").glob("*.gz"):
        (root / f.name).symlink_to(f)
    name = "binarized_mnist_test.amat.gz"
    data = (root / name).read_bytes()
    (root / name).unlink()
    (root / name).write_bytes(data[:1000])
    with pytest.raises(DataFileError, match=name):
        BinarizedMNISTDataModule(data_dir=tmp_path).setup()


def test_missing_binarized_mnist_names_files(tmp_path):
    with pytest.raises(DataFileError, match="binarized_mnist_train.amat or binarized_mnist_train.amat.gz") as err:
        BinarizedMNISTDataModule(data_dir=tmp_path).setup()
    assert str(tmp_path / "binarized_mnist") in str(err.value) and "DGM_BENCH_DATA" in str(err.value)


# -- Omniglot ------------------------------------------------------------------------------------

@needs_shared
def test_omniglot_split_and_values():
    dm = OmniglotDataModule(data_dir=SHARED, binarization="none")
    dm.setup()
    assert len(dm.train_x) + len(dm.val_x) == 24_345 and len(dm.test_x) == 8_115
    assert len(dm.val_x) == dm.val_size == 1_345
    assert dm.train_x.shape[1:] == (1, 28, 28) and dm.train_x.min() >= 0 and dm.train_x.max() <= 1
    assert not is_binary(dm.train_x)
    train_mean = (dm.train_x.sum() + dm.val_x.sum()) / (24_345 * 784)
    assert train_mean.item() == pytest.approx(0.0808, abs=2e-4)
    assert dm.test_x.mean().item() == pytest.approx(0.0799, abs=2e-4)
    assert 0 <= dm.train_y.min() and dm.train_y.max() == 1622
    assert DATAMODULES.get("omniglot")(data_dir=SHARED).default_binarization == "dynamic"


def test_missing_omniglot_names_file(tmp_path):
    with pytest.raises(DataFileError, match="omniglot_28x28.npz"):
        OmniglotDataModule(data_dir=tmp_path).setup()


def test_corrupt_omniglot_names_file(tmp_path):
    (tmp_path / "omniglot").mkdir()
    (tmp_path / "omniglot" / "omniglot_28x28.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataFileError, match="omniglot_28x28.npz"):
        OmniglotDataModule(data_dir=tmp_path).setup()


# -- CIFAR-10 (a tiny fake set in the standard formats) -------------------------------------------

def _fake_cifar(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": 20 for i in range(1, 6)} | {"test_batch": 10}
    out = {}
    (root / "cifar-10-batches-py").mkdir(parents=True)
    for name, n in batches.items():
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        with open(root / "cifar-10-batches-py" / name, "wb") as f:
            pickle.dump(d, f)
        out[name] = d
    return out


def _check_cifar(dm: CIFAR10DataModule, batches: dict) -> None:
    dm.setup()
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (90, 10, 10)
    assert dm.test_x.shape == (10, 3, 32, 32) and dm.test_x.dtype == torch.float32
    t = batches["test_batch"]
    # Rows are stored channel-planar: 1024 red, then green, then blue values.
    assert torch.equal(dm.test_x * 255, torch.as_tensor(t[b"data"], dtype=torch.float32).view(10, 3, 32, 32))
    assert dm.test_y.tolist() == t[b"labels"]
    assert dm.protocol()["binarization"] == "none" and not is_binary(dm.train_x)


def test_cifar10_python_batches(tmp_path):
    batches = _fake_cifar(tmp_path)
    _check_cifar(CIFAR10DataModule(data_dir=tmp_path, val_size=10), batches)


def test_cifar10_tar_archive(tmp_path):
    batches = _fake_cifar(tmp_path / "src")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as t:
        t.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    shutil.rmtree(tmp_path / "src")
    _check_cifar(CIFAR10DataModule(data_dir=tmp_path, val_size=10), batches)


def test_cifar10_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("airplane", "automobile"):
            (tmp_path / "cifar10" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "cifar10" / split / cls / f"{i}.png")
    dm = CIFAR10DataModule(data_dir=tmp_path, val_size=2)
    dm.setup()
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (6, 2, 4)
    assert dm.test_y.tolist() == [0, 0, 1, 1] and dm.test_x.shape == (4, 3, 32, 32)


def test_cifar10_refuses_code_in_pickles(tmp_path):
    _fake_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": print, b"labels": []}, f)
    with pytest.raises(DataFileError, match="data_batch_3"):
        CIFAR10DataModule(data_dir=tmp_path, val_size=10).setup()


def test_missing_cifar10_lists_the_layouts(tmp_path):
    with pytest.raises(DataFileError) as err:
        CIFAR10DataModule(data_dir=tmp_path).setup()
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and "cifar-10-python.tar.gz" in msg and "cifar10/{train,test}" in msg
    assert str(tmp_path) in msg and "download=True" in msg


# -- synthetic mixtures --------------------------------------------------------------------------

@pytest.mark.parametrize("cls, k, std", [(RingDataModule, 8, 0.02), (GridDataModule, 25, 0.05)])
def test_mixtures(cls, k, std):
    dm = cls(n_train=4_000, n_val=500, n_test=1_000)
    dm.setup()
    assert dm.train_x.shape == (4_000, 2) and dm.dims == (2,)
    assert (len(dm.val_x), len(dm.test_x)) == (500, 1_000)
    mu = dm.means()
    assert mu.shape == (k, 2) and set(dm.train_y.unique().tolist()) == set(range(k))
    # Every point lies near its own component's mean, at the stated spread.
    dist = (dm.train_x - mu[dm.train_y]).norm(dim=1)
    assert dist.max() < 6 * std
    assert (dm.train_x - mu[dm.train_y]).std().item() == pytest.approx(std, rel=0.05)
    p = dm.protocol()
    assert p["components"] == k and p["std"] == std and p["binarization"] == "none"
    same, other = cls(n_train=4_000), cls(n_train=4_000, split_seed=1)
    same.setup(), other.setup()
    assert torch.equal(same.train_x, dm.train_x) and not torch.equal(other.train_x, dm.train_x)


def test_mixture_geometry():
    assert torch.allclose(RingDataModule().means().norm(dim=1), torch.full((8,), 2.0))
    grid = GridDataModule().means()
    assert sorted(set(grid[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]


# -- digits and the loaders ------------------------------------------------------------------------

def test_digits_split():
    dm = DigitsDataModule()
    dm.setup()
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (1_297, 200, 300)
    other = DigitsDataModule(split_seed=1)
    other.setup()
    assert not torch.equal(dm.test_x, other.test_x)


def test_every_loader_is_an_index_batch_loader(tmp_path):
    _fake_cifar(tmp_path)
    for dm in (DigitsDataModule(), RingDataModule(n_train=300, n_val=50, n_test=70),
               CIFAR10DataModule(data_dir=tmp_path, val_size=10)):
        dm.setup()
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
            assert isinstance(loader, IndexBatchLoader)
            b = next(iter(loader))
            assert isinstance(b, Batch) and b.x.dtype == torch.float32 and b.x.shape[1:] == dm.dims
            assert b.y is not None and len(b.y) == len(b.x)


@pytest.mark.parametrize("batch_size", [1, 10, 101, 200])
def test_distributed_eval_covers_each_example_once(batch_size):
    n = 101
    x = torch.arange(n, dtype=torch.float32).view(n, 1)
    seen, lengths = [], []
    for rank in range(2):
        loader = IndexBatchLoader(x, batch_size, shuffle=False, seed=0, dynamic_binarize=False)
        loader.set_distributed(rank, 2)
        batches = epoch(loader)
        lengths.append(len(loader) == len(batches))
        seen += [int(v) for b in batches for v in b.x.view(-1)]
    assert all(lengths)
    assert sorted(seen) == list(range(n))  # all 101, none twice


def test_distributed_train_shards_are_disjoint_and_equal():
    n = 101
    x = torch.arange(n, dtype=torch.float32).view(n, 1)
    shards = []
    for rank in range(2):
        loader = IndexBatchLoader(x, 16, shuffle=True, seed=3, dynamic_binarize=False)
        loader.set_distributed(rank, 2)
        shards.append([int(v) for b in loader for v in b.x.view(-1)])
    assert len(shards[0]) == len(shards[1]) == 50
    assert not set(shards[0]) & set(shards[1])
