"""Shared DataModules, registered by name (``dgm-bench list`` shows them)."""
from __future__ import annotations

from datamodules.base import Batch, IndexBatchLoader, TensorDataModule
from datamodules.binarized_mnist import BinarizedMNISTDataModule
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.digits import DigitsDataModule
from datamodules.mixtures import GridDataModule, RingDataModule
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from datamodules.omniglot import OmniglotDataModule
from dgm_modules.registry import Registry

DATAMODULES: Registry = Registry("dataset")
for _cls in (DigitsDataModule, MNISTDataModule, FashionMNISTDataModule, BinarizedMNISTDataModule,
             OmniglotDataModule, CIFAR10DataModule, RingDataModule, GridDataModule):
    DATAMODULES.register(_cls.name)(_cls)
del _cls


def get_datamodule_class(name: str) -> type[TensorDataModule]:
    """The DataModule class registered as ``name``; unknown names list the valid ones."""
    return DATAMODULES.get(name, "data")


__all__ = ["DATAMODULES", "Batch", "IndexBatchLoader", "TensorDataModule", "get_datamodule_class"]
