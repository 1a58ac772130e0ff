"""Omniglot at 28x28 from ``omniglot/omniglot_28x28.npz``: drawers 1-15 train, 16-20 test.

This is a rebuild from the original Omniglot images (see the data README), not Burda et al.'s
``chardata.mat``: its 24,345/8,115 split has the same training size but different images, so its
numbers are not comparable with published Omniglot NLLs. Labels are the character (0..1622).
"""
from __future__ import annotations

import zipfile

import numpy as np
import torch

from datamodules.base import TensorDataModule
from datamodules.paths import ENV_VAR, DataFileError, require_files


class OmniglotDataModule(TensorDataModule):
    """Omniglot 28x28 ink intensities in [0, 1]; ``val_size`` (default 1,345) held out of train."""

    name = "omniglot"

    def __init__(self, *, val_size: int = 1_345, **kwargs) -> None:
        # 1,345 leaves a round 23,000 training images.
        super().__init__(val_size=val_size, **kwargs)

    @property
    def dims(self) -> tuple[int, ...]:
        return (1, 28, 28)

    def load_splits(self):
        how = (f"No download is offered; set ${ENV_VAR} to a directory holding omniglot/omniglot_28x28.npz "
               "(keys images uint8 [N, 28, 28], char_id, train).")
        (path,) = require_files(self.data_dir / "omniglot", ["omniglot_28x28.npz"], self.name, how)
        try:
            with np.load(path, allow_pickle=False) as f:
                images, train, char_id = f["images"], f["train"], f["char_id"]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise DataFileError(f"{path}: cannot read ({type(e).__name__}: {e}); "
                                "expected an .npz with keys images, train and char_id") from e
        n = images.shape[0]
        if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or train.shape != (n,) or char_id.shape != (n,):
            raise DataFileError(f"{path}: unexpected contents: images {images.dtype}{images.shape}, "
                                f"train {train.shape}, char_id {char_id.shape}")
        x = torch.from_numpy(images).to(torch.float32).div_(255.0).unsqueeze(1)
        y = torch.from_numpy(char_id.astype(np.int64) - 1)
        mask = torch.from_numpy(train.astype(bool))
        return {"train": (x[mask], y[mask]), "test": (x[~mask], y[~mask])}
