"""Synthetic 2-D Gaussian mixtures for mode-collapse studies (the VEEGAN / PacGAN toy sets).

``ring``: 8 equal-weight Gaussians on a circle of radius 2, std 0.02. ``grid``: 25 on the 5x5
grid {-4, -2, 0, 2, 4}^2, std 0.05. Points are [N, 2] (not images, not in [0, 1]); the label is
the component index. Each split is drawn from its own stream seeded by ``split_seed``.
"""
from __future__ import annotations

import math

import torch

from datamodules.base import TensorDataModule


class _MixtureDataModule(TensorDataModule):
    """Equal-weight isotropic Gaussian mixture in 2-D; subclasses give the component means."""

    default_binarization = "none"
    binarizations = ("none",)

    def __init__(self, *, n_train: int = 50_000, n_val: int = 5_000, n_test: int = 10_000, std: float,
                 batch_size: int = 500, **kwargs) -> None:
        kwargs.pop("val_size", None)  # the validation split is drawn, not held out
        super().__init__(val_size=n_val, batch_size=batch_size, **kwargs)
        for opt, v in (("data.n_train", n_train), ("data.n_test", n_test)):
            if v < 1:
                raise ValueError(f"{opt} must be >= 1, got {v}")
        if n_val < 0:
            raise ValueError(f"data.n_val must be >= 0, got {n_val}")
        if not std > 0:
            raise ValueError(f"data.std must be > 0, got {std}")
        self.n_train, self.n_val, self.n_test, self.std = n_train, n_val, n_test, std

    @property
    def dims(self) -> tuple[int, ...]:
        return (2,)

    def means(self) -> torch.Tensor:
        """Component means, [K, 2]."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.means()
        y = torch.randint(len(mu), (n,), generator=generator)
        return mu[y] + self.std * torch.randn(n, 2, generator=generator), y

    def load_splits(self):
        sizes = {"train": self.n_train, "val": self.n_val, "test": self.n_test}
        # One stream per split, so changing n_train leaves the val and test points unchanged.
        return {s: self.sample(n, torch.Generator().manual_seed(self.split_seed * 3 + i))
                for i, (s, n) in enumerate(sizes.items())}

    def protocol(self) -> dict:
        return {**super().protocol(), "components": len(self.means()), "std": self.std, **self.geometry()}

    def geometry(self) -> dict:
        """The shape parameters a record needs besides the std."""
        return {}


class RingDataModule(_MixtureDataModule):
    """8 Gaussians evenly spaced on a circle of ``radius`` (default 2), std 0.02."""

    name = "ring"

    def __init__(self, *, n_components: int = 8, radius: float = 2.0, std: float = 0.02, **kwargs) -> None:
        super().__init__(std=std, **kwargs)
        if n_components < 1:
            raise ValueError(f"data.n_components must be >= 1, got {n_components}")
        self.n_components, self.radius = n_components, radius

    def means(self) -> torch.Tensor:
        angle = torch.arange(self.n_components, dtype=torch.float32) * (2 * math.pi / self.n_components)
        return self.radius * torch.stack([angle.cos(), angle.sin()], dim=1)

    def geometry(self) -> dict:
        return {"radius": self.radius}


class GridDataModule(_MixtureDataModule):
    """A ``side`` x ``side`` grid (default 5x5) of Gaussians ``spacing`` apart, centred on 0, std 0.05."""

    name = "grid"

    def __init__(self, *, side: int = 5, spacing: float = 2.0, std: float = 0.05, **kwargs) -> None:
        super().__init__(std=std, **kwargs)
        if side < 1:
            raise ValueError(f"data.side must be >= 1, got {side}")
        self.side, self.spacing = side, spacing

    def means(self) -> torch.Tensor:
        ticks = (torch.arange(self.side, dtype=torch.float32) - (self.side - 1) / 2) * self.spacing
        gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)

    def geometry(self) -> dict:
        return {"side": self.side, "spacing": self.spacing}
