"""scikit-learn's 8x8 digits: the embedded default, shipped with scikit-learn (no download)."""
from __future__ import annotations

import torch

from datamodules.base import TensorDataModule


class DigitsDataModule(TensorDataModule):
    """1,797 8x8 grey-level digits (0..16, scaled to [0, 1]); a fixed seeded 1,297/200/300 split."""

    name = "digits"

    def __init__(self, *, val_size: int = 200, test_size: int = 300, batch_size: int = 50, **kwargs) -> None:
        super().__init__(val_size=val_size, batch_size=batch_size, **kwargs)
        if test_size < 1:
            raise ValueError(f"data.test_size must be >= 1, got {test_size}")
        self.test_size = test_size

    @property
    def dims(self) -> tuple[int, ...]:
        return (1, 8, 8)

    def load_splits(self):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.as_tensor(bunch.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
        y = torch.as_tensor(bunch.target, dtype=torch.long)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        test, train = perm[: self.test_size].sort().values, perm[self.test_size :].sort().values
        return {"train": (x[train], y[train]), "test": (x[test], y[test])}
