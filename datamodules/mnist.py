"""MNIST and Fashion-MNIST, read through torchvision from the standard IDX files.

torchvision reads only the *decompressed* files in ``<root>/<Name>/raw/``. Where the data
directory holds only the ``.gz`` files (and may be read-only), they are decompressed once into
a user cache (``~/.cache/dgm-bench/extracted/<key>/<Name>/raw/``) and torchvision reads from
there. Every file's IDX header and length are checked first, so a truncated or malformed file
gives a :class:`DataFileError` naming it rather than an assertion deep inside torchvision.

Validation split: a seeded random ``val_size`` (default 10,000) of the 60,000 training images,
drawn by the base class like every other dataset's. (The "first 50k / last 10k" split of some
papers is a different split; records state which one through ``split_seed`` and the sizes.)
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import zlib
from pathlib import Path

import torch

from datamodules.base import TensorDataModule
from datamodules.paths import ENV_VAR, DataFileError, extraction_dir

# name -> (IDX magic number, trailing dimensions after the count)
_IDX_FILES = {
    "train-images-idx3-ubyte": (0x803, (28, 28)),
    "train-labels-idx1-ubyte": (0x801, ()),
    "t10k-images-idx3-ubyte": (0x803, (28, 28)),
    "t10k-labels-idx1-ubyte": (0x801, ()),
}


def _check_idx_header(head: bytes, size: int, name: str, where: Path) -> int:
    """Check an IDX file's header against its name and total byte size; return the item count."""
    magic, dims = _IDX_FILES[name]
    ndim = 1 + len(dims)
    need = 4 * (1 + ndim)
    if len(head) >= 4 and struct.unpack(">I", head[:4])[0] != magic:
        raise DataFileError(f"{where}: not an IDX file of the expected kind "
                            f"(magic {struct.unpack('>I', head[:4])[0]:#x}, expected {magic:#x})")
    if len(head) < need:
        raise DataFileError(f"{where}: truncated IDX file ({size} bytes, shorter than its header)")
    _, *shape = struct.unpack(f">{1 + ndim}I", head[:need])
    if tuple(shape[1:]) != dims:
        raise DataFileError(f"{where}: item shape {tuple(shape[1:])}, expected {dims}")
    expected = need + shape[0] * (dims[0] * dims[1] if dims else 1)
    if size != expected:
        raise DataFileError(f"{where}: {size} bytes, but its header ({shape[0]} items) says {expected}; "
                            "the file is truncated or corrupt")
    return shape[0]


def _gunzip(src: Path) -> bytes:
    try:
        with gzip.open(src, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataFileError(f"{src}: cannot decompress ({e}); the file is truncated or corrupt") from e


class MNISTDataModule(TensorDataModule):
    """MNIST: 60,000 training (less ``val_size`` for validation) and 10,000 test digits, 28x28."""

    name = "mnist"
    folder = "MNIST"  # torchvision's <root>/<folder>/raw layout
    levels = 256  # 8-bit grey levels: data.dequantize=true is available

    @property
    def dims(self) -> tuple[int, ...]:
        return (1, 28, 28)

    def _torchvision_class(self):
        from torchvision.datasets import MNIST

        return MNIST

    def _how_to_get(self) -> str:
        return (f"Pass download=True (--set data.download=true) to fetch them through torchvision, or set "
                f"${ENV_VAR} to a directory holding {self.folder}/raw/<file> or <file>.gz.")

    def _torchvision_root(self, allow_download: bool = True) -> Path:
        """A root whose ``<folder>/raw`` holds the four decompressed, validated files.

        The data directory itself if it has them; else a cache filled from its ``.gz`` files;
        else (with ``download=True``) the data directory after torchvision's download.
        """
        raw = self.data_dir / self.folder / "raw"
        names = list(_IDX_FILES)
        if all((raw / n).is_file() for n in names):
            for n in names:
                with open(raw / n, "rb") as f:
                    _check_idx_header(f.read(16), os.path.getsize(raw / n), n, raw / n)
            return self.data_dir
        sources = {n: raw / n if (raw / n).is_file() else raw / f"{n}.gz" for n in names}
        missing = [n for n, p in sources.items() if not p.is_file()]
        if missing and self.download and allow_download:
            for train in (True, False):
                self._torchvision_class()(str(self.data_dir), train=train, download=True)
            return self._torchvision_root(allow_download=False)
        if missing:
            listing = "\n  ".join(f"{n} or {n}.gz" for n in missing)
            raise DataFileError(f"{self.name}: expected file(s) not found:\n  {listing}\n"
                                f"Looked in {raw}. {self._how_to_get()}")
        return self._extract(sources)

    def _extract(self, sources: dict[str, Path]) -> Path:
        # Keyed by the source files, so different data directories never share a cache entry.
        key = hashlib.sha1(repr(sorted((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                                       for p in sources.values())).encode()).hexdigest()[:16]
        root = extraction_dir() / key
        out = root / self.folder / "raw"
        out.mkdir(parents=True, exist_ok=True)
        for name, src in sources.items():
            dst = out / name
            if dst.is_file():
                with open(dst, "rb") as f:
                    head = f.read(16)
                try:
                    _check_idx_header(head, os.path.getsize(dst), name, dst)
                    continue
                except DataFileError:
                    pass  # a stale or damaged cache entry: rebuild it from the source
            data = _gunzip(src) if src.suffix == ".gz" else src.read_bytes()
            _check_idx_header(data[:16], len(data), name, src)
            # Write then rename, so another process never sees a half-written file.
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, dst)
        return root

    def prepare_data(self) -> None:
        # Runs once per node before setup(): decompress (or download) here, not in every process.
        self._torchvision_root()

    def load_splits(self):
        root = str(self._torchvision_root())
        out = {}
        for split, train in (("train", True), ("test", False)):
            ds = self._torchvision_class()(root, train=train, download=False)
            if len(ds.data) != len(ds.targets):
                raise DataFileError(f"{self.name}: {split} split has {len(ds.data)} images but "
                                    f"{len(ds.targets)} labels (in {Path(root) / self.folder / 'raw'})")
            x = ds.data.to(torch.float32).div_(255.0).unsqueeze(1)
            out[split] = (x, ds.targets.to(torch.long))
        return out


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: 60,000 training (less ``val_size``) and 10,000 test clothing images, 28x28."""

    name = "fashion-mnist"
    folder = "FashionMNIST"

    def _torchvision_class(self):
        from torchvision.datasets import FashionMNIST

        return FashionMNIST
