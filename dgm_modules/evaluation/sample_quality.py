"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) of a model's samples against a split.

Both are torchmetrics' own metrics with the suite's feature network plugged in. Real-data
statistics (feature sums, cross-products and the features themselves, for KID) are computed
once per (dataset, split, data protocol, feature network sha256) and cached on disk, the key
torch-fidelity uses for its statistics cache, extended by the checksum.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from dgm_modules.evaluation.base import WholeSplitEvaluator
from dgm_modules.networks.feature_nets import FeatureExtractor, _write_atomic, cache_root, feature_net_for


@torch.no_grad()
def _features(extractor: FeatureExtractor, x: Tensor, batch_size: int) -> Tensor:
    return torch.cat([extractor(xb) for xb in x.split(batch_size)]).double()


def real_statistics(extractor: FeatureExtractor, datamodule: Any, split: str = "test", batch_size: int = 500,
                    root: str | Path | None = None) -> dict[str, Tensor]:
    """``{"features" [N, d], "sum" [d], "cov_sum" [d, d], "n"}`` of a split, from the cache if there."""
    datamodule.setup("test")
    protocol = json.dumps(datamodule.protocol(), sort_keys=True)
    key = hashlib.sha256(protocol.encode()).hexdigest()[:12]
    folder = Path(root) if root is not None else cache_root() / "fid-stats"
    path = folder / f"{datamodule.name}-{split}-{key}-{extractor.name}-{extractor.sha256[:16]}.pt"
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 -- a torn cache file is recomputed, never trusted
            pass
    f = _features(extractor, getattr(datamodule, f"{split}_x"), batch_size)
    stats = {"features": f.float(), "sum": f.sum(0), "cov_sum": f.T @ f, "n": torch.tensor(len(f))}
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda fh: torch.save(stats, fh))
    return stats


def fid_kid(extractor: FeatureExtractor, real: dict[str, Tensor], fake: Tensor, batch_size: int = 500,
            kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """FID and KID of images ``fake`` [N, C, H, W] in [0, 1] against cached real statistics."""
    fid = FrechetInceptionDistance(feature=extractor, normalize=True, reset_real_features=False,
                                   sync_on_compute=False)
    n_real = int(real["n"])
    fid.real_features_sum = real["sum"].double().clone()
    fid.real_features_cov_sum = real["cov_sum"].double().clone()
    fid.real_features_num_samples = torch.tensor(n_real)
    size = min(kid_subset_size, n_real, len(fake))
    kid = KernelInceptionDistance(feature=extractor, normalize=True, subsets=kid_subsets, subset_size=size,
                                  sync_on_compute=False)
    kid.real_features = [real["features"]]
    with torch.no_grad():
        for xb in fake.split(batch_size):
            fid.update(xb, real=False)
            kid.update(xb, real=False)
        with torch.random.fork_rng():  # KID draws its subsets from the global RNG
            torch.manual_seed(seed)
            kid_mean, kid_std = kid.compute()
        return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}


class SampleQualityEvaluator(WholeSplitEvaluator):
    """At test end: draw ``num_samples`` images from the model, score them against the test split.

    Samples are intensities in [0, 1]; under a binarised data protocol they are binarised the
    way the test images were (one Bernoulli draw), so every model is compared on equal terms.

    Not an ``nn.Module``: it holds no state worth checkpointing. After :meth:`evaluate`,
    ``feature_net`` and ``feature_net_sha256`` say which network made the numbers.

    Args:
        num_samples: images drawn from the model (0 turns the evaluation off).
        batch_size: images per forward pass of the sampler and the feature network.
        seed: seed of the sampling noise and of KID's subsets (the training RNG is left alone).
    """

    def __init__(self, num_samples: int, batch_size: int = 500, seed: int = 0) -> None:
        if num_samples < 0 or num_samples == 1:
            raise ValueError(f"module.fid_samples must be 0 (off) or >= 2, got {num_samples}")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.feature_net: str | None = None
        self.feature_net_sha256: str | None = None
        super().__init__()  # update() only remembers the model: its samples are drawn once, in compute()

    def compute(self) -> dict[str, float]:
        return self.evaluate(self.model.sample, self.datamodule)

    def evaluate(self, sample: Callable[[int], Tensor], datamodule: Any) -> dict[str, float]:
        """``{"fid_n{N}", "kid_n{N}", "kid_std_n{N}"}`` for the model's ``sample(n)``."""
        if datamodule is None:
            raise ValueError("FID needs the run's DataModule (trainer.test(..., datamodule=...))")
        extractor = feature_net_for(datamodule)
        self.feature_net, self.feature_net_sha256 = extractor.name, extractor.sha256
        real = real_statistics(extractor, datamodule, "test", self.batch_size)
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.seed)
            chunks = [sample(min(self.batch_size, self.num_samples - i)).cpu().float()
                      for i in range(0, self.num_samples, self.batch_size)]
            fake = torch.cat(chunks).view(-1, *datamodule.dims).clamp(0, 1)
            if getattr(datamodule, "binarization", "none") != "none":
                # the test images are one Bernoulli draw of their intensities: so are the samples
                fake = torch.bernoulli(fake)
        scores = fid_kid(extractor, real, fake, self.batch_size, seed=self.seed)
        return {f"{name}_n{self.num_samples}": value for name, value in scores.items()}
