"""The fixed binarisation of MNIST published by Larochelle & Murray (2011), 50k/10k/10k.

Reads ``binarized_mnist/binarized_mnist_{train,valid,test}.amat`` or ``.amat.gz``: one image per
line, 784 values ``0``/``1`` separated by spaces. The published validation split is used (so
``val_size`` is ignored) and there are no labels.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from datamodules.base import TensorDataModule
from datamodules.paths import ENV_VAR, DataFileError, require_files

_PIXELS = 784
_LINE = 2 * _PIXELS  # "d d ... d\n": one digit and one separator per pixel


def _parse_slow(data: bytes, path: Path) -> np.ndarray:
    """Line-by-line parse of any whitespace layout; names the first bad line."""
    rows = []
    for i, line in enumerate(data.splitlines(), start=1):
        if len(line) == _LINE - 1 and not line[0::2].strip(b"01") and not line[1::2].strip(b" "):
            rows.append(np.frombuffer(line[0::2], dtype=np.uint8) - ord("0"))  # the usual layout
            continue
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != _PIXELS:
            raise DataFileError(f"{path}: line {i} has {len(tokens)} values, expected {_PIXELS} "
                                "(the file is truncated or malformed)")
        try:
            row = np.array(tokens, dtype=np.float32)
        except ValueError as e:
            raise DataFileError(f"{path}: line {i} is not numeric ({e})") from e
        if not np.isin(row, (0.0, 1.0)).all():
            raise DataFileError(f"{path}: line {i} has values other than 0 and 1")
        rows.append(row.astype(np.uint8))
    if not rows:
        raise DataFileError(f"{path}: no images in the file")
    return np.stack(rows)


def read_amat(path: Path) -> np.ndarray:
    """Read a binarised-MNIST ``.amat`` (or ``.amat.gz``) into a uint8 array [N, 784] of 0/1."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataFileError(f"{path}: cannot read ({e}); the file is truncated or corrupt") from e
    # Fast path for the published layout (every line exactly "d d ... d\n"): a vectorised check.
    if data and len(data) % _LINE == 0:
        a = np.frombuffer(data, dtype=np.uint8).reshape(-1, _LINE)
        digits, seps = a[:, 0::2], a[:, 1::2]
        if ((digits == ord("0")) | (digits == ord("1"))).all() and (seps[:, :-1] == ord(" ")).all() \
                and (seps[:, -1] == ord("\n")).all():
            return digits - ord("0")
    return _parse_slow(data, path)


class BinarizedMNISTDataModule(TensorDataModule):
    """Larochelle & Murray's fixed binarised MNIST: the published 50,000/10,000/10,000 split."""

    name = "binarized-mnist"
    default_binarization = "fixed"
    binarizations = ("fixed",)  # the file's own draw; re-binarising it would change nothing

    @property
    def dims(self) -> tuple[int, ...]:
        return (1, 28, 28)

    def load_splits(self):
        root = self.data_dir / "binarized_mnist"
        names = [(f"binarized_mnist_{s}.amat", f"binarized_mnist_{s}.amat.gz") for s in ("train", "valid", "test")]
        how = ("The files are Larochelle & Murray's (2011) binarized_mnist_{train,valid,test}.amat; "
               f"torchvision does not distribute them, so download=True cannot fetch them. Set ${ENV_VAR} "
               "to a directory holding binarized_mnist/ with them (.amat or .amat.gz).")
        paths = require_files(root, names, self.name, how)
        out = {}
        for split, path in zip(("train", "val", "test"), paths):
            x = torch.from_numpy(read_amat(path)).to(torch.float32).view(-1, *self.dims)
            out[split] = (x, None)
        return out

    def protocol(self) -> dict:
        out = super().protocol()
        # The published set, not a draw of ours: no binarisation seed applies.
        out.pop("binarization_seed", None)
        out["binarization_source"] = "larochelle-murray-2011"
        return out
