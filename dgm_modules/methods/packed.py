"""Packed training: N cells of one model shape trained side by side in one process, as one module.

Each replica is a :class:`~dgm_modules.methods.variational.VariationalMethod` built exactly as its
single cell would be (same seed, same init). Their parameters and buffers are stacked along a
leading replica axis; one vmapped call of the objective (``torch.func.functional_call``) computes
every replica's loss, one backward and one optimiser step update them all. Adam and the other
torch optimisers are elementwise, so the update of replica ``i``'s slice is its single run's.
Each replica keeps its own data order and binarisation (its own datamodule, zipped by
:class:`PackedDataModule`) and its own noise (:class:`~dgm_modules.methods.replica_noise.ReplicaNoise`).

The replica modules themselves are kept as submodules: validation and test copy the stacked
state into them and run their own evaluators, so every metric comes from the single-cell code.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Iterator, Sequence

import lightning as L
import torch
from torch import Tensor, nn
from torch.distributions import Distribution
from torch.func import functional_call, vmap

from datamodules.base import Batch
from dgm_modules.methods.base import DivergedError
from dgm_modules.methods.replica_noise import ReplicaNoise
from dgm_modules.methods.schedules import LR_SCHEDULES
from dgm_modules.methods.variational import VariationalMethod


#: optimisers whose step is proportional to the learning rate (so replicas may differ in it); AdamW
#: only without weight decay (its decay is lr * weight_decay * p)
LR_LINEAR = ("adam", "sgd", "rmsprop", "adagrad")


class _Cell(nn.Module):
    """Model and objective as one module, so ``functional_call`` swaps both sets of state."""

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.objective(self.model, x)
        values = {f"terms/{n}": v for n, v in out.terms.items()}
        if out.bound is not None:
            values["bound"] = out.bound.float().mean()
        return out.loss, values


def _key(name: str) -> str:
    return name.replace(".", "__")  # a registered parameter's name cannot hold dots


@contextlib.contextmanager
def _no_validation() -> Iterator[None]:
    """Distribution argument checks branch on tensor values, which vmap cannot; they change no number."""
    saved = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(saved)


class PackedMethod(L.LightningModule):
    """Trains ``replicas`` (single-cell modules of one shape) side by side; see the module doc.

    Args:
        replicas: the cells' modules, each built (and seeded) as its single run builds it.
        rng_states: each replica's global RNG state right after its build: the stream its single
            run draws training noise from.
        fused_optimizer: use the optimiser's fused kernel (Adam, AdamW, SGD, Adagrad) unless the
            config sets ``fused`` or ``foreach``.
        lrs: each replica's learning rate, where they differ. Only for optimisers whose step is
            linear in the learning rate (:data:`LR_LINEAR`): the step taken at lr 1 is scaled per
            replica, which equals the replica's own step up to rounding.
    """

    def __init__(self, replicas: Sequence[VariationalMethod], rng_states: Sequence[Tensor],
                 fused_optimizer: bool = True, lrs: Sequence[float] | None = None) -> None:
        super().__init__()
        self.fused_optimizer = fused_optimizer
        if lrs is not None and len(lrs) != len(replicas):
            raise ValueError(f"packed: {len(lrs)} learning rates for {len(replicas)} replicas")
        # one learning rate per replica: the optimiser steps with lr 1 and each slice's step is scaled
        self.register_buffer("lr_scale", None if lrs is None or len(set(lrs)) == 1
                             else torch.tensor([float(lr) for lr in lrs], dtype=torch.float64), persistent=False)
        if len(replicas) != len(rng_states) or not replicas:
            raise ValueError("packed: one RNG state per replica, at least one replica")
        self.replicas = nn.ModuleList(replicas)
        first = replicas[0]
        self.lr_schedule = first.lr_schedule
        self._cells = [_Cell(r.model, r.objective) for r in replicas]  # views, not registered twice
        names = [n for n, _ in self._skeleton.named_parameters()]
        shapes = {n: p.shape for n, p in self._skeleton.named_parameters()}
        for cell in self._cells[1:]:
            other = {n: p.shape for n, p in cell.named_parameters()}
            if other != shapes:
                raise ValueError("packed: replicas differ in their parameters' names or shapes")
        self._param_names = names
        self._buffer_names = [n for n, _ in self._skeleton.named_buffers()]
        self.stacked = nn.ParameterDict({_key(n): nn.Parameter(torch.stack(
            [dict(c.named_parameters())[n].detach() for c in self._cells]).clone()) for n in names})
        for n in self._buffer_names:
            self.register_buffer("stacked_buffer__" + _key(n), torch.stack(
                [dict(c.named_buffers())[n].detach() for c in self._cells]).clone())
        self.generators = []
        for state in rng_states:
            g = torch.Generator()
            g.set_state(state)
            self.generators.append(g)
        self.noise = ReplicaNoise(self.generators)
        self.register_buffer("replica_ids", torch.arange(len(replicas)).unsqueeze(1), persistent=False)
        self.diverged: dict[int, tuple[int, str]] = {}  # replica -> (step, message)
        self._sums: dict[str, Tensor] = {}
        self._count = 0

    @property
    def _skeleton(self) -> _Cell:
        return self._cells[0]  # the module functional_call runs with the stacked state

    @property
    def n(self) -> int:
        return len(self.replicas)

    # -- the state: stacked for training, copied into the replicas for evaluation ----------------
    def _state(self) -> dict[str, Tensor]:
        state = {n: self.stacked[_key(n)] for n in self._param_names}
        state.update({n: getattr(self, "stacked_buffer__" + _key(n)) for n in self._buffer_names})
        return state

    @torch.no_grad()
    def sync_replicas(self) -> None:
        """Copy each replica's slice of the stacked state into its own module."""
        state = self._state()
        for i, cell in enumerate(self._cells):
            for name, t in [*cell.named_parameters(), *cell.named_buffers()]:
                t.copy_(state[name][i])

    # -- training ---------------------------------------------------------------------------------
    def _replica_step(self, state: dict[str, Tensor], x: Tensor, replica: Tensor):
        self.noise.replica = replica
        try:
            return functional_call(self._skeleton, state, (x,))
        finally:
            self.noise.replica = None

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        with _no_validation(), self.noise:
            losses, values = vmap(self._replica_step, randomness="same")(self._state(), batch.x, self.replica_ids)
        finite = torch.isfinite(losses)
        if not bool(finite.all()):  # one replica diverging stops it alone, as its single run would stop
            for i in (~finite).nonzero().flatten().tolist():
                if i not in self.diverged:
                    self.diverged[i] = (self.global_step, f"non-finite training loss {losses[i].item()} at step "
                                                          f"{self.global_step}")
            if len(self.diverged) == self.n:
                raise DivergedError(self.global_step, float("nan"))
        alive = torch.tensor([i not in self.diverged for i in range(self.n)], device=losses.device)
        values = {**values, "loss": losses.detach()}
        for name, value in values.items():
            value = value.detach()
            self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._count += 1
        return torch.where(alive, losses, torch.zeros_like(losses)).sum()

    def on_train_epoch_end(self) -> None:
        if self._count:
            for name, total in self._sums.items():
                short = name.removeprefix("terms/")
                for i in range(self.n):
                    self.log(f"r{i}/train/{short}", total[i] / self._count, sync_dist=True)
        self._sums, self._count = {}, 0

    def on_train_end(self) -> None:
        self.sync_replicas()

    # -- validation: every replica by its own evaluator ---------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.sync_replicas()

    def validation_step(self, batch: Sequence[Batch], batch_idx: int) -> None:
        for replica, b in zip(self.replicas, batch):
            for evaluator in replica.evaluators("val"):
                evaluator.update(replica.model, b)

    def on_validation_epoch_end(self) -> None:
        data = getattr(getattr(self.trainer, "datamodule", None), "datamodules", [None] * self.n)
        for i, replica in enumerate(self.replicas):
            for evaluator in replica.evaluators("val"):
                evaluator.bind_data(data[i])
                for name, value in evaluator.compute().items():
                    self.log(f"r{i}/val/{name}", value, sync_dist=False)
                evaluator.reset()

    def configure_optimizers(self):
        optimizer = self._optimizer(list(self.stacked.values()))
        if self.lr_schedule == "constant":
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, LR_SCHEDULES[self.lr_schedule])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        if self.lr_scale is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        params = list(self.stacked.values())
        before = [p.detach().clone() for p in params]
        optimizer.step(closure=optimizer_closure)
        with torch.no_grad():
            for p, old in zip(params, before):
                scale = self.lr_scale.to(p.dtype).view(-1, *[1] * (p.dim() - 1))
                p.sub_(old).mul_(scale).add_(old)  # old + lr_i * (the step at lr 1)

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The cells' optimiser over the stacked tensors; its fused kernel where torch has one and the
        config does not choose: one pass over memory instead of a dozen, the same update to the last
        bit or two (the single-tensor loop rounds each of its steps apart)."""
        factory = self.replicas[0].optimizer_factory
        if self.lr_scale is not None:
            factory = functools.partial(factory, lr=1.0)
        func, chosen = getattr(factory, "func", None), getattr(factory, "keywords", {})
        if (self.fused_optimizer and func is not None and "fused" in inspect.signature(func).parameters
                and chosen.get("fused") is None and chosen.get("foreach") is None):
            try:
                return factory(params, fused=True)
            except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not take
                pass
        return factory(params)

    # -- checkpoints carry each replica's noise stream and divergence --------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["packed"] = {"rng_states": [g.get_state() for g in self.generators],
                                "diverged": dict(self.diverged)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        packed = checkpoint.get("packed", {})
        for g, state in zip(self.generators, packed.get("rng_states", [])):
            g.set_state(state)
        self.diverged = {int(k): tuple(v) for k, v in packed.get("diverged", {}).items()}


class _ZipLoader:
    """One batch of every replica's loader per step: training stacks their images ``[N, B, ...]``."""

    def __init__(self, loaders: list, stack: bool) -> None:
        self.loaders, self.stack = loaders, stack

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders)

    def __iter__(self):
        for batches in zip(*self.loaders):
            if self.stack:
                yield Batch(torch.stack([b.x for b in batches]), None, batches[0].index)
            else:
                yield list(batches)


_SPLITS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


def _same_splits(a: L.LightningDataModule, b: L.LightningDataModule) -> bool:
    """Two datamodules that differ at most in ``seed`` (shuffling, dynamic binarisation)."""
    def settings(dm):
        return {k: v for k, v in vars(dm).items()
                if k not in ("seed", "trainer", *_SPLITS) and not isinstance(v, (torch.Tensor, L.Trainer))}
    return type(a) is type(b) and all(hasattr(a, n) for n in _SPLITS) and settings(a) == settings(b)


class PackedDataModule(L.LightningDataModule):
    """The replicas' own datamodules (own seeds: own shuffles and binarisation draws), zipped."""

    def __init__(self, datamodules: Sequence[L.LightningDataModule]) -> None:
        super().__init__()
        self.datamodules = list(datamodules)

    def prepare_data(self) -> None:
        for dm in self.datamodules:
            dm.prepare_data()

    def setup(self, stage: str) -> None:
        first = self.datamodules[0]
        first.setup(stage)
        for dm in self.datamodules[1:]:
            if _same_splits(dm, first):  # seeds differ in shuffles and draws, not in the data: one copy
                for name in _SPLITS:
                    setattr(dm, name, getattr(first, name))
            dm.setup(stage)  # a no-op once the splits are there

    def _loaders(self, kind: str) -> list:
        for dm in self.datamodules:
            dm.trainer = self.trainer  # each loader resumes its epoch-indexed streams from the trainer
        return [getattr(dm, kind)() for dm in self.datamodules]

    def train_dataloader(self) -> _ZipLoader:
        loaders = self._loaders("train_dataloader")
        if self.trainer is not None:
            # Lightning builds the train loader before it moves current_epoch past an epoch whose
            # end a resumed checkpoint was saved at; the epochs processed are the ones to skip
            epoch = self.trainer.fit_loop.epoch_progress.current.processed
            for loader in loaders:
                loader.epoch = epoch
        return _ZipLoader(loaders, stack=True)

    def val_dataloader(self) -> _ZipLoader:
        return _ZipLoader(self._loaders("val_dataloader"), stack=False)
