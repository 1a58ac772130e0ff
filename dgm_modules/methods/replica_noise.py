"""Each packed replica's random draws from its own generator, in the order its single run draws them.

A single cell draws its training noise (reparameterisation, Bernoulli samples) from the global RNG
seeded by the cell's seed. Inside the vmapped step of a packed run, :class:`ReplicaNoise` (a
``TorchFunctionMode``) catches every such draw of per-replica shape ``S``, draws ``S`` once from
each replica's generator (a copy of the global RNG state the replica's single run would have), and
hands replica ``i`` its own draw. The kernels and the order of the draws are the single run's, so
each replica sees exactly its single run's noise; the single-cell path itself is untouched.

``torch.bernoulli(p)`` is drawn as ``rand < p``: torch's CPU kernel compares one uniform of the
same generator per element, so the two are equal bit for bit (checked by tests/test_packed.py).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode


class NotPackableError(RuntimeError):
    """The objective draws noise in a way a packed run cannot give each replica exactly."""


#: random functions whose per-replica draw is not written here: packing refuses the objective
_REFUSED = {torch.randint, torch.randperm, torch.multinomial, torch.poisson, torch.Tensor.random_,
            torch.Tensor.exponential_, torch.Tensor.geometric_, torch.Tensor.cauchy_, torch.Tensor.log_normal_,
            torch.Tensor.bernoulli_, torch.randint_like, torch._standard_gamma, torch._sample_dirichlet}


def _size(args: Sequence[Any], kwargs: dict) -> tuple[int, ...]:
    size = kwargs.get("size", args)
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = size[0]
    return tuple(int(s) for s in size)


class ReplicaNoise(TorchFunctionMode):
    """Within it, random draws come from ``generators[i]`` for replica ``i`` (see the module doc).

    ``replica`` must be set, inside the vmapped function, to the batched replica index ``[1]``.
    Draws given an explicit ``generator=`` are the caller's own stream and pass through unchanged.
    """

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        self.generators = list(generators)
        self.replica: Tensor | None = None

    def _per_replica(self, draw: Callable[[torch.Generator], Tensor]) -> Tensor:
        stacked = torch.stack([draw(g) for g in self.generators])
        return torch.index_select(stacked, 0, self.replica).squeeze(0)  # replica i's own draw

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: C901 -- one branch per draw
        kwargs = kwargs or {}
        if kwargs.get("generator") is not None or self.replica is None:
            return func(*args, **kwargs)
        if func in _REFUSED:
            raise NotPackableError(f"{getattr(func, '__qualname__', func)} draws noise that packing does not "
                                   "split per replica")
        if func in (torch.Tensor.normal_, torch.Tensor.uniform_):  # distributions: torch.empty(shape).normal_()
            t, rest = args[0], args[1:]
            return self._per_replica(lambda g: func(torch.empty(t.shape, dtype=t.dtype), *rest, **kwargs, generator=g))
        if func in (torch.rand, torch.randn):
            size, dtype = _size(args, kwargs), kwargs.get("dtype") or torch.get_default_dtype()
            return self._per_replica(lambda g: func(size, dtype=dtype, generator=g))
        if func in (torch.rand_like, torch.randn_like):
            t = args[0]
            dtype = kwargs.get("dtype") or t.dtype
            draw = torch.rand if func is torch.rand_like else torch.randn
            return self._per_replica(lambda g: draw(t.shape, dtype=dtype, generator=g))
        if func is torch.bernoulli:
            if len(args) > 1 or "p" in kwargs:
                raise NotPackableError("torch.bernoulli(input, p) with a scalar p is not split per replica")
            p = args[0]
            u = self._per_replica(lambda g: torch.rand(p.shape, dtype=p.dtype, generator=g))
            return (u < p).to(p.dtype)  # the CPU kernel's own comparison of one uniform per element
        if func is torch.normal:
            mean, std = (list(args) + [kwargs.get("mean"), kwargs.get("std")])[:2] if args else (
                kwargs.get("mean"), kwargs.get("std"))
            if isinstance(mean, Tensor) or isinstance(std, Tensor):
                shape = torch.broadcast_shapes(*(v.shape for v in (mean, std) if isinstance(v, Tensor)))
                dtype = (mean if isinstance(mean, Tensor) else std).dtype
                eps = self._per_replica(lambda g: torch.empty(shape, dtype=dtype).normal_(0, 1, generator=g))
                return eps * std + mean  # torch.normal's own: normal_(0, 1), then mul_(std).add_(mean)
            size = _size(args[2:], kwargs) if len(args) > 2 or "size" in kwargs else None
            if size is None:
                raise NotPackableError("torch.normal with scalar mean and std and no size")
            return self._per_replica(lambda g: torch.empty(size, dtype=kwargs.get("dtype") or torch.get_default_dtype())
                                     .normal_(float(mean), float(std), generator=g))
        return func(*args, **kwargs)
