"""Plain multilayer perceptrons."""
from __future__ import annotations

from typing import Sequence

from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus,
               "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid}


def activation(name: str, option: str = "activation") -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"{option}={name!r} is not valid; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """``in -> hidden[0] -> ... -> hidden[-1] -> out`` with an activation between layers."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, act: str = "tanh") -> None:
        layers: list[nn.Module] = []
        sizes = [in_features, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), activation(act)]
        layers.append(nn.Linear(sizes[-1], out_features))
        super().__init__(*layers)
