"""The suite's own classifier for grey-level datasets: the feature network of FID/KID and of the
perceptual loss (Dosovitskiy & Brox 2016) on 28x28 and 8x8 images.

Inception-v3 features mean little on 28x28 digits; a small CNN trained on the dataset's own
training split (never on test data) gives features that separate what matters there. Its
penultimate layer (``fc``) is the FID/KID feature; the conv layers serve the perceptual loss.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

LAYERS = ("conv1", "conv2", "fc")


class ClassifierNet(nn.Module):
    """conv(3x3) -> ReLU -> maxpool, twice, then a ReLU hidden layer (the features) and the logits.

    Args:
        input_shape: ``(C, H, W)`` with ``H`` and ``W`` divisible by 4.
        num_classes: number of labels.
        channels: widths of the two conv layers.
        feature_dim: width of the penultimate layer, the FID/KID feature.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                 channels: Sequence[int] = (32, 64), feature_dim: int = 128) -> None:
        super().__init__()
        c, h, w = input_shape
        if h % 4 or w % 4:
            raise ValueError(f"classifier input_shape must have H and W divisible by 4, got {tuple(input_shape)}")
        self.arch = {"input_shape": [c, h, w], "num_classes": num_classes, "channels": list(channels),
                     "feature_dim": feature_dim}
        self.feature_dim = feature_dim
        self.conv1 = nn.Sequential(nn.Conv2d(c, channels[0], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(channels[0], channels[1], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(channels[1] * (h // 4) * (w // 4), feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def feature_maps(self, x: Tensor, layers: Sequence[str] = LAYERS) -> dict[str, Tensor]:
        """Activations of the requested layers (``conv1``, ``conv2``, ``fc``), each ``[B, ...]``."""
        out, h = {}, x
        for name in LAYERS:
            h = getattr(self, name)(h)
            if name in layers:
                out[name] = h
            if len(out) == len(layers):
                break
        return out

    def features(self, x: Tensor) -> Tensor:
        """The penultimate layer, ``[B, feature_dim]``: what FID and KID compare."""
        return self.feature_maps(x, ("fc",))["fc"]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def default_arch(input_shape: Sequence[int], num_classes: int) -> dict:
    """Small enough to train in seconds on 8x8 digits, about 99% on MNIST in a few epochs."""
    small = input_shape[-1] <= 16
    return {"input_shape": list(input_shape), "num_classes": num_classes,
            "channels": [16, 32] if small else [32, 64], "feature_dim": 64 if small else 128}


@torch.no_grad()
def accuracy(net: ClassifierNet, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    net.eval()
    correct = sum(int((net(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return correct / len(y)


def train_classifier(x: Tensor, y: Tensor, arch: dict, epochs: int = 5, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0) -> ClassifierNet:
    """Fit a :class:`ClassifierNet` on ``(x, y)`` (a training split; grey levels in [0, 1]).

    Half of every batch is Bernoulli-binarised, so that the features mean the same on the
    grey-level and the binarised versions of a dataset (the protocols models are trained under).
    """
    if epochs < 1:
        raise ValueError(f"evaluator epochs must be >= 1, got {epochs}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ClassifierNet(**arch)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            xb = x[idx]
            binarize = torch.rand(len(idx), 1, 1, 1, generator=gen) < 0.5
            xb = torch.where(binarize, torch.bernoulli(xb, generator=gen), xb)
            with torch.random.fork_rng():
                torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))  # dropout noise
                loss = loss_fn(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval().requires_grad_(False)
