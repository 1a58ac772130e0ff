"""One base class for every dataset: tensors in memory, batched by index.

Subclasses only say how to read their raw splits (``load_splits``); the base owns
splitting, the binarisation protocol, batching and the record of the protocol.
"""
from __future__ import annotations

import math
from typing import Iterator, Literal, NamedTuple

import lightning as L
import torch

from datamodules.paths import DataFileError, resolve_data_dir

Binarization = Literal["dynamic", "fixed", "none"]
#: offset of the labelled-subset generator's seed, far from every shuffle seed (seed * 100_003 + epoch)
_LABEL_STREAM = 0x4C41_4245_4C53  # "LABELS"


class Batch(NamedTuple):
    """One minibatch: images, labels (or None) and the batch's global index in its epoch.

    The index is the same whatever the number of processes, so evaluation can seed its Monte
    Carlo noise by it and give identical numbers on one process and under DDP.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    index: int


class IndexBatchLoader:
    """Yields :class:`Batch` es ``x[idx]`` of an in-memory tensor: no per-item Python work.

    Training (``shuffle=True``): each rank of a distributed run takes an equal-length slice of
    the shuffled indices, so gradient all-reduces stay in step. Evaluation (``shuffle=False``):
    the fixed batches ``[j*b, (j+1)*b)`` are dealt round-robin to the ranks with no padding, so
    every example counts exactly once and each batch is the same as on one process. A rank left
    without a batch (fewer batches than ranks: digits' 200 validation images in batches of 500)
    gets one empty batch (its index one past the split's last): Lightning refuses a loader of length 0, and every rank must
    reach the epoch end, where the evaluators' sums are reduced across ranks.

    ``group`` > 1 yields lists of that many consecutive batches (the last list of an epoch may be
    shorter), for a module that takes several optimiser steps per Lightning step: the batches and
    their noise are exactly those of ``group=1``; ``skip`` still counts batches.
    """

    def __init__(self, x: torch.Tensor, batch_size: int, *, shuffle: bool, seed: int,
                 dynamic_binarize: bool, y: torch.Tensor | None = None, dequantize_width: float = 0.0,
                 group: int = 1) -> None:
        self.x, self.y = x, y
        self.group = group
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.dynamic_binarize = dynamic_binarize
        self.dequantize_width = dequantize_width  # > 0: add fresh U(0, width) noise to each use of an image
        self.epoch = 0
        self.skip = 0  # batches of the next epoch already trained on (a mid-epoch resume)
        self.rank, self.world_size = 0, 1

    def set_distributed(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def _batches(self) -> list[tuple[int, torch.Tensor]]:
        n, b = self.x.shape[0], self.batch_size
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            idx = torch.randperm(n, generator=gen)
            idx = idx[: n - n % self.world_size][self.rank :: self.world_size]
            return [(j, idx[j * b : (j + 1) * b]) for j in range(math.ceil(len(idx) / b))]
        starts = range(self.rank * b, n, b * self.world_size)
        return [(s // b, torch.arange(s, min(s + b, n))) for s in starts] or [(math.ceil(n / b), torch.arange(0))]

    def __len__(self) -> int:
        return math.ceil(len(self._batches()) / self.group)

    def __iter__(self) -> Iterator[Batch] | Iterator[list[Batch]]:
        if self.group == 1:
            yield from self._iter_batches()
            return
        group: list[Batch] = []
        for batch in self._iter_batches():
            group.append(batch)
            if len(group) == self.group:
                yield group
                group = []
        if group:
            yield group

    def _iter_batches(self) -> Iterator[Batch]:
        batches = self._batches()
        # A fresh Bernoulli (or dequantisation) draw each time an image is used, reproducible per
        # (seed, epoch, rank).
        gen = torch.Generator().manual_seed(self.seed * 7_919 + self.epoch * 1_000_003 + self.rank)
        self.epoch += 1
        skip, self.skip = self.skip, 0
        for j, sel in batches:
            x = self.x[sel]
            if self.dynamic_binarize:
                x = torch.bernoulli(x, generator=gen)  # drawn for skipped batches too: the same noise after
            elif self.dequantize_width:  # likewise
                x = x + self.dequantize_width * torch.rand(x.shape, generator=gen)
            if j >= skip:
                yield Batch(x, None if self.y is None else self.y[sel], j)


def train_position(trainer: L.Trainer) -> tuple[int, int]:
    """``(epoch, batches of it already trained)`` where a fit starts: ``(0, 0)``, or where the restored
    checkpoint left off.

    Lightning restores the loops' progress but not a plain loader's position: it would start the
    epoch's batches again. Our order and noise are functions of ``(seed, epoch)``, so the loader
    skips the batches done. Read when the train loader is made: after the restore, before Lightning
    resets the progress (``current_epoch`` is not yet advanced past an epoch-end checkpoint then;
    ``epoch_progress.processed`` is, as Lightning's own sampler ``set_epoch`` uses it).
    """
    fit_loop = trainer.fit_loop
    epoch = fit_loop.epoch_progress.current.processed
    total, batches = fit_loop.epoch_progress.total, fit_loop.epoch_loop.batch_progress
    mid_epoch = fit_loop.restarting and total.processed == total.started - 1 and not batches.is_last_batch
    return int(epoch), int(batches.current.processed) if mid_epoch else 0


class TensorDataModule(L.LightningDataModule):
    """Base DataModule: fixed seeded splits held as float32 tensors in memory.

    Args:
        data_dir: where the raw files live; defaults to ``$DGM_BENCH_DATA``, then a user cache dir.
        batch_size: training batch size.
        eval_batch_size: batch size for validation and test.
        binarization: ``dynamic`` (fresh Bernoulli draw of the intensities each time an image is
            used), ``fixed`` (one draw with ``binarization_seed``) or ``none`` (grey levels in [0, 1]).
        dequantize: continuous data from 8-bit grey levels (Wu et al. 2017; needs ``binarization:
            none`` and a dataset of ``levels`` integer intensities): ``x = (pixel + u) / levels``,
            ``u ~ U(0, 1)``, drawn afresh each time a training image is used and once (seeded by
            ``dequantize_seed``) for validation and test, so evaluation is deterministic.
        val_size: examples held out of the training split for validation (ignored where the
            dataset ships its own validation split).
        split_seed: seed of the train/validation split.
        seed: seed of shuffling and dynamic binarisation.
        download: fetch missing files (through torchvision where it has the dataset).
        labelled_fraction: fraction of the training examples that keep their label (semi-supervised
            learning); the others get label ``-1``. Validation and test labels are kept.
        label_seed: seed of the choice of labelled training examples.
    """

    name: str = "base"
    default_binarization: Binarization = "dynamic"
    binarizations: tuple[str, ...] = ("dynamic", "fixed", "none")
    #: number of integer intensity levels the [0, 1] values were made from (``pixel / (levels - 1)``);
    #: None where the data are not quantised that way, and dequantisation is refused
    levels: int | None = None

    def __init__(self, data_dir: str | None = None, batch_size: int = 100, eval_batch_size: int = 500,
                 binarization: str | None = None, binarization_seed: int = 0, val_size: int = 10_000,
                 split_seed: int = 0, seed: int = 0, download: bool = False,
                 labelled_fraction: float = 1.0, label_seed: int = 0, dequantize: bool = False,
                 dequantize_seed: int = 0) -> None:
        super().__init__()
        binarization = binarization or self.default_binarization
        if binarization not in self.binarizations:
            raise ValueError(f"data.binarization={binarization!r} is not valid for {self.name}; "
                             f"choose one of {list(self.binarizations)}")
        for opt, v in (("data.batch_size", batch_size), ("data.eval_batch_size", eval_batch_size)):
            if v < 1:
                raise ValueError(f"{opt} must be >= 1, got {v}")
        if val_size < 0:
            raise ValueError(f"data.val_size must be >= 0, got {val_size}")
        if not 0.0 <= labelled_fraction <= 1.0:
            raise ValueError(f"data.labelled_fraction must be in [0, 1], got {labelled_fraction}")
        self.labelled_fraction, self.label_seed = labelled_fraction, label_seed
        if not isinstance(dequantize, bool):
            raise ValueError(f"data.dequantize must be true or false, got {dequantize!r}")
        if dequantize and self.levels is None:
            raise ValueError(f"data.dequantize=true is not available for {self.name}: it applies to datasets of "
                             "8-bit grey levels (mnist, fashion-mnist)")
        if dequantize and binarization != "none":
            raise ValueError(f"data.dequantize=true needs data.binarization='none' (grey levels), "
                             f"got {binarization!r}")
        self.dequantize, self.dequantize_seed = dequantize, dequantize_seed
        self.data_dir = resolve_data_dir(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.binarization, self.binarization_seed = binarization, binarization_seed
        self.val_size, self.split_seed, self.seed, self.download = val_size, split_seed, seed, download
        self.train_x = self.val_x = self.test_x = None
        self.train_y = self.val_y = self.test_y = None

    # -- what subclasses provide -------------------------------------------------------------
    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Return ``{"train": (x, y), "test": (x, y)[, "val": (x, y)]}`` with x float in [0, 1]."""
        raise NotImplementedError

    @property
    def dims(self) -> tuple[int, ...]:
        raise NotImplementedError

    # -- shared machinery --------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_x is not None:
            return
        splits = self.load_splits()
        for split, (x, _) in splits.items():
            self._check_values(split, x)
        train_x, train_y = splits["train"]
        if "val" in splits:
            (self.val_x, self.val_y) = splits["val"]
        else:
            if self.val_size >= train_x.shape[0]:
                raise ValueError(f"data.val_size={self.val_size} leaves no training data "
                                 f"({train_x.shape[0]} training examples)")
            perm = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(self.split_seed))
            val_idx, train_idx = perm[: self.val_size].sort().values, perm[self.val_size :].sort().values
            self.val_x = train_x[val_idx]
            self.val_y = None if train_y is None else train_y[val_idx]
            train_x = train_x[train_idx]
            train_y = None if train_y is None else train_y[train_idx]
        if train_y is not None and self.labelled_fraction < 1.0:
            # a seeded subset keeps its labels; the rest are marked unlabelled (-1). The generator is
            # seeded apart from the training shuffle's (seed * 100_003 + epoch): with both seeds 0 the
            # same randperm put every labelled example in the first batches of epoch 0
            label_gen = torch.Generator().manual_seed(_LABEL_STREAM + self.label_seed)
            perm = torch.randperm(train_y.shape[0], generator=label_gen)
            train_y = train_y.clone()
            train_y[perm[round(self.labelled_fraction * train_y.shape[0]):]] = -1
        self.train_x, self.train_y = train_x, train_y
        self.test_x, self.test_y = splits["test"]
        # Evaluation splits are binarised once (seeded) under both binary protocols, so every
        # method and every process count is scored on the same binary images.
        gen = torch.Generator().manual_seed(self.binarization_seed)
        if self.binarization == "fixed":
            self.train_x = torch.bernoulli(self.train_x, generator=gen)
        if self.binarization != "none":
            self.val_x, self.test_x = (torch.bernoulli(t, generator=gen) for t in (self.val_x, self.test_x))
        if self.dequantize:
            self._dequantize_splits()

    def _dequantize_splits(self) -> None:
        """Training images become ``pixel / levels`` (the loader adds fresh ``u / levels``);
        validation and test get their one seeded draw of ``u`` here."""
        n = self.levels
        for name in ("train_x", "val_x", "test_x"):
            x = getattr(self, name)
            setattr(self, name, torch.round(x * (n - 1)).div_(n))
        gen = torch.Generator().manual_seed(self.dequantize_seed)
        self.val_x, self.test_x = (t + torch.rand(t.shape, generator=gen) / n for t in (self.val_x, self.test_x))

    def _check_values(self, split: str, x: torch.Tensor) -> None:
        """Finite values, and in [0, 1] where they are Bernoulli means: found here, not as a NaN loss
        or a ``bernoulli`` error after some training."""
        where = f"{self.name} ({type(self).__module__}.{type(self).__qualname__}, data in {self.data_dir}): {split} split"
        if not x.numel():
            return
        lo, hi = (float(v) for v in torch.aminmax(x))  # one pass; a NaN or inf anywhere shows in these
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = ~torch.isfinite(x)
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise DataFileError(f"{where} holds {int(bad.sum())} NaN or infinite value(s) (the first at index {first}); "
                                "the data file is corrupt or was written wrongly")
        if self.binarization != "none" and (lo < 0 or hi > 1):
            raise DataFileError(f"{where} holds values in [{lo:g}, {hi:g}]; "
                                f"binarization={self.binarization!r} draws Bernoulli pixels from them, which needs "
                                "[0, 1] (scale the data, or use binarization='none' where the dataset allows it)")

    def _loader(self, x: torch.Tensor, y: torch.Tensor | None, train: bool) -> IndexBatchLoader:
        loader = IndexBatchLoader(
            x, self.batch_size if train else self.eval_batch_size, shuffle=train, seed=self.seed,
            dynamic_binarize=train and self.binarization == "dynamic", y=y,
            dequantize_width=1.0 / self.levels if train and self.dequantize else 0.0)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            if trainer.world_size > 1:
                loader.set_distributed(trainer.global_rank, trainer.world_size)
            if train:  # a resumed run continues the epoch-indexed shuffles and binarisation draws
                # a module that steps several times per Lightning step takes its batches in groups
                loader.group = getattr(trainer.lightning_module, "steps_per_call", 1)
                loader.epoch, steps_done = train_position(trainer)
                loader.skip = steps_done * loader.group  # Lightning counts groups; a mid-epoch stop ends a whole one
        return loader

    def train_dataloader(self) -> IndexBatchLoader:
        return self._loader(self.train_x, self.train_y, True)

    def val_dataloader(self) -> IndexBatchLoader:
        return self._loader(self.val_x, self.val_y, False)

    def test_dataloader(self) -> IndexBatchLoader:
        return self._loader(self.test_x, self.test_y, False)

    def protocol(self) -> dict:
        """What a record must say about the data for its numbers to be comparable."""
        sizes = {s: None if t is None else int(t.shape[0])
                 for s, t in (("train", self.train_x), ("val", self.val_x), ("test", self.test_x))}
        out = {"dataset": self.name, "binarization": self.binarization, "split": sizes,
               "split_seed": self.split_seed, "dims": list(self.dims)}
        if self.binarization != "none":
            out["binarization_seed"] = self.binarization_seed
        if self.dequantize:  # never pooled with grey levels: the densities are of other data
            out.update(dequantize=f"uniform-1/{self.levels}", dequantize_seed=self.dequantize_seed)
        if self.labelled_fraction < 1.0:
            out.update(labelled_fraction=self.labelled_fraction, label_seed=self.label_seed)
        return out
