"""CIFAR-10 from a user's own copy, in any of three layouts (first found wins):

1. ``<data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (the python-version batches,
   as torchvision's ``CIFAR10(download=True)`` leaves them);
2. the archive of those batches, ``<data_dir>/cifar-10-python.tar.gz`` (or ``.tar`` / ``.zip``),
   read in memory without unpacking;
3. an image-folder tree ``<data_dir>/cifar10/{train,test}/<class>/*.png`` (classes sorted by name,
   which for the standard names is CIFAR-10's own label order).

Images are kept as grey levels in [0, 1] (binarisation ``none`` only); ``val_size`` (default
5,000) is held out of the 50,000 training images.
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from datamodules.base import TensorDataModule
from datamodules.paths import ENV_VAR, DataFileError

_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_ARCHIVES = ("cifar-10-python.tar.gz", "cifar-10-python.tar", "cifar-10-python.zip")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file must never run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one python-version batch: ``{b"data": uint8 [N, 3072], b"labels": [N]}``."""
    try:
        d = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
        d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
        data = np.asarray(d["data"])
        labels = np.asarray(d["labels"] if "labels" in d else d["fine_labels"], dtype=np.int64)
    except Exception as e:  # any unpickling failure means the same thing to the user
        raise DataFileError(f"{where}: not a readable CIFAR-10 batch ({type(e).__name__}: {e})") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],) \
            or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataFileError(f"{where}: malformed CIFAR-10 batch (data {data.dtype}{data.shape}, "
                            f"labels {labels.shape}); expected uint8 [N, 3072] and N labels in 0..9")
    return data, labels


def _archive_members(path: Path) -> dict[str, bytes]:
    """The batch files inside a .tar(.gz) or .zip, by base name."""
    wanted = set(_BATCHES["train"] + _BATCHES["test"])
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                return {Path(n).name: z.read(n) for n in z.namelist() if Path(n).name in wanted}
        with tarfile.open(path) as t:
            return {Path(m.name).name: t.extractfile(m).read() for m in t.getmembers()
                    if m.isfile() and Path(m.name).name in wanted}
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise DataFileError(f"{path}: cannot read archive ({e}); the file is truncated or corrupt") from e


class CIFAR10DataModule(TensorDataModule):
    """CIFAR-10 colour images, [N, 3, 32, 32] in [0, 1], with labels 0..9."""

    name = "cifar10"
    default_binarization = "none"
    binarizations = ("none",)

    def __init__(self, *, val_size: int = 5_000, **kwargs) -> None:
        super().__init__(val_size=val_size, **kwargs)

    @property
    def dims(self) -> tuple[int, ...]:
        return (3, 32, 32)

    def prepare_data(self) -> None:
        if self.download and self._source() is None:
            from torchvision.datasets import CIFAR10

            CIFAR10(str(self.data_dir), train=True, download=True)  # leaves cifar-10-batches-py/

    def _source(self) -> Path | None:
        candidates = [self.data_dir / "cifar-10-batches-py", *(self.data_dir / a for a in _ARCHIVES),
                      self.data_dir / "cifar10"]
        return next((p for p in candidates if p.exists()), None)

    def load_splits(self):
        self.prepare_data()
        src = self._source()
        if src is None:
            raise DataFileError(
                f"{self.name}: no CIFAR-10 data found in {self.data_dir}. Expected one of:\n"
                f"  cifar-10-batches-py/ with {', '.join(_BATCHES['train'] + _BATCHES['test'])}\n"
                f"  {' or '.join(_ARCHIVES)}\n"
                f"  cifar10/{{train,test}}/<class>/*.png\n"
                f"Pass download=True (--set data.download=true) to fetch it through torchvision, or set "
                f"${ENV_VAR} to a directory holding one of these.")
        if src.name == "cifar10":
            return {s: self._read_folder(src / s) for s in ("train", "test")}
        if src.is_dir():
            files = {}
            for name in _BATCHES["train"] + _BATCHES["test"]:
                if not (src / name).is_file():
                    raise DataFileError(f"{self.name}: {src / name} is missing (looked in {src}); "
                                        "the python-version batches are data_batch_1..5 and test_batch")
                files[name] = (src / name).read_bytes()
            where = {n: str(src / n) for n in files}
        else:
            files = _archive_members(src)
            missing = [n for n in _BATCHES["train"] + _BATCHES["test"] if n not in files]
            if missing:
                raise DataFileError(f"{src}: archive lacks {', '.join(missing)}")
            where = {n: f"{src}:{n}" for n in files}
        out = {}
        for split, names in _BATCHES.items():
            parts = [_read_batch(files[n], where[n]) for n in names]
            data = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
            x = torch.from_numpy(data).view(-1, 3, 32, 32).to(torch.float32).div_(255.0)
            out[split] = (x, torch.from_numpy(labels))
        return out

    def _read_folder(self, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``root/<class>/*.png`` (a one-off pass over files; batches are then by index)."""
        from PIL import Image

        classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if not classes:
            raise DataFileError(f"{self.name}: no class folders in {root}; expected {root}/<class>/*.png")
        images, labels = [], []
        for label, cls in enumerate(classes):
            for f in sorted((root / cls).glob("*.png")):
                try:
                    with Image.open(f) as im:
                        a = np.asarray(im.convert("RGB"))
                except OSError as e:
                    raise DataFileError(f"{f}: cannot decode image ({e})") from e
                if a.shape != (32, 32, 3):
                    raise DataFileError(f"{f}: image is {a.shape[1]}x{a.shape[0]}, expected 32x32")
                images.append(a)
                labels.append(label)
        if not images:
            raise DataFileError(f"{self.name}: no .png images under {root}")
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return x.contiguous(), torch.tensor(labels, dtype=torch.long)
