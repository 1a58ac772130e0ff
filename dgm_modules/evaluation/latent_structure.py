"""Structure of the latent space: how many components carry weight, and how well it clusters classes.

Nalisnick & Smyth (2017, section 7.2) score a latent space by k-nearest-neighbour classification
error on the posterior means (k = 3, 5, 10): a classifier fitted on training-set latent means,
scored on test-set latent means. Stick-breaking and mixture models also report how many of their
``T`` components have a mean weight above a threshold over the test set.

Models opt in through two optional hooks: ``latent_means(x) -> [B, D]`` (else the mean of a
single-argument ``q(x)`` distribution is used) and ``component_weights(x) -> [B, T]``. A model
with several stochastic layers whose means ``latent_means`` puts side by side declares their
sizes (``latent_layer_sizes``, bottom first) and gets active units per layer too.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from datamodules.base import Batch
from dgm_modules.models.capabilities import ExplicitLatent, HasComponents, HasLatentLayers, HasLatentMeans

KNN_KS = (3, 5, 10)


def latent_means(model: Any, x: Tensor) -> Tensor | None:
    """The model's representation of ``x`` for kNN (``[B, D]``), or ``None`` where it has none."""
    if isinstance(model, HasLatentMeans):
        return model.latent_means(x).flatten(1)
    if isinstance(model, ExplicitLatent):
        return model.q(x).mean.flatten(1)
    return None


def component_weights(model: Any, x: Tensor) -> Tensor | None:
    """Per-example weights of the model's ``T`` components (``[B, T]``), or ``None``."""
    return model.component_weights(x) if isinstance(model, HasComponents) else None


def latent_layer_sizes(model: Any) -> tuple[int, ...]:
    """Units per stochastic layer (bottom first) of a model with several, else ``()``."""
    sizes = tuple(model.latent_layer_sizes) if isinstance(model, HasLatentLayers) else ()
    return sizes if len(sizes) > 1 else ()


def components_used(mean_weights: Tensor, threshold: float = 0.01) -> int:
    """How many components have a mean weight above ``threshold``."""
    return int((mean_weights > threshold).sum())


def active_units(means: Tensor, threshold: float = 1e-2) -> int:
    """Latent dimensions whose posterior mean varies over the data: ``Cov_x(E_q[z_d | x]) > 0.01``
    (Burda, Grosse & Salakhutdinov 2016, section 5.2)."""
    return int((means.double().var(0) > threshold).sum()) if means.shape[0] > 1 else 0


def knn_errors(train_z: Tensor, train_y: Tensor, test_z: Tensor, test_y: Tensor,
               ks: Sequence[int] = KNN_KS) -> dict[int, float]:
    """``{k: test error}`` of scikit-learn's ``KNeighborsClassifier(k)`` fitted on ``(train_z, train_y)``."""
    from sklearn.neighbors import KNeighborsClassifier

    xtr, ytr = train_z.double().cpu().numpy(), train_y.cpu().numpy()
    xte, yte = test_z.double().cpu().numpy(), test_y.cpu().numpy()
    out = {}
    for k in ks:
        if not 1 <= k <= len(xtr):
            raise ValueError(f"knn k must be in [1, {len(xtr)}] (training examples), got {k}")
        clf = KNeighborsClassifier(n_neighbors=k).fit(xtr, ytr)
        out[k] = float(np.mean(clf.predict(xte) != yte))
    return out


@torch.no_grad()
def encode(fn: Any, x: Tensor, batch_size: int = 1000) -> Tensor:
    """``fn`` applied to ``x`` in batches, on the device of ``x``, results on the CPU."""
    return torch.cat([fn(xs).cpu() for xs in x.split(batch_size)])


class LatentStructureEvaluator:
    """Collects test latent means, labels and component weights; computes the structure metrics.

    Args:
        ks: numbers of neighbours of the kNN classifier.
        threshold: a component is "used" when its mean weight over the test set exceeds this.
        max_train: at most this many training examples (a seeded random subset) are encoded.
        seed: seed of that subset and of binarising it under a binary protocol.
    """

    def __init__(self, ks: Sequence[int] = KNN_KS, threshold: float = 0.01, max_train: int = 10_000,
                 seed: int = 0) -> None:
        self.ks, self.threshold, self.max_train, self.seed = tuple(ks), threshold, max_train, seed
        self.datamodule: Any = None
        self.reset()

    def bind_data(self, datamodule: Any) -> None:
        """The run's DataModule: its train split is what the kNN classifier is fitted on."""
        self.datamodule = datamodule

    def reset(self) -> None:
        self.model: Any = None  # the model of the last update, encoded again for the train split
        self.means: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.weight_sum: Tensor | None = None
        self.count = 0

    @torch.no_grad()
    def update(self, model: Any, batch: Batch) -> None:
        x, y, self.model = batch.x, batch.y, model
        if not len(x):  # a rank's empty share of a small split: nothing to encode, the model is known
            return
        weights = component_weights(model, x)
        if weights is not None:
            total = weights.double().sum(0).cpu()
            self.weight_sum = total if self.weight_sum is None else self.weight_sum + total
            self.count += weights.shape[0]
        means = latent_means(model, x)
        if means is not None:
            self.means.append(means.cpu())
            if y is not None:
                self.labels.append(y.cpu())

    def compute(self) -> dict[str, float]:
        """The metrics: ``components_used``, ``active_units`` (and ``active_units_h{l}`` per stochastic
        layer) and ``knn_error_k{k}`` (the latter needs labels and the train split)."""
        model, datamodule = self.model, self.datamodule
        means, labels, weight_sum, count = self._gathered()
        out: dict[str, float] = {}
        if weight_sum is not None and count:
            out["components_used"] = float(components_used(weight_sum / count, self.threshold))
        if means is not None:
            out["active_units"] = float(active_units(means))
            sizes = latent_layer_sizes(model)
            if sizes and sum(sizes) == means.shape[1]:  # per layer: h1 the bottom one, as Burda et al. 2016
                for i, layer in enumerate(means.split(list(sizes), dim=1), start=1):
                    out[f"active_units_h{i}"] = float(active_units(layer))
        train = self._train_split(datamodule) if means is not None and labels is not None else None
        if train is not None:
            device = next(model.parameters()).device
            train_z = encode(lambda xs: latent_means(model, xs.to(device)), train[0])
            for k, err in knn_errors(train_z, train[1], means, labels, self.ks).items():
                out[f"knn_error_k{k}"] = err
        return out

    def _train_split(self, datamodule: Any) -> tuple[Tensor, Tensor] | None:
        x, y = getattr(datamodule, "train_x", None), getattr(datamodule, "train_y", None)
        if x is None or y is None or len(x) < max(self.ks):
            return None
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(x), generator=gen)[: self.max_train].sort().values
        x, y = x[idx], y[idx]
        if getattr(datamodule, "binarization", "none") != "none":  # score binary images, as in test
            x = torch.bernoulli(x, generator=gen)
        return x, y

    def _gathered(self) -> tuple[Tensor | None, Tensor | None, Tensor | None, int]:
        """This process's collections, joined across processes under DDP."""
        parts = [(self.means, self.labels, self.weight_sum, self.count)]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, (self.means, self.labels, self.weight_sum, self.count))
        means = [m for p in parts for m in p[0]]
        labels = [t for p in parts for t in p[1]]
        sums = [p[2] for p in parts if p[2] is not None]
        return (torch.cat(means) if means else None, torch.cat(labels) if labels else None,
                sum(sums) if sums else None, sum(p[3] for p in parts))
