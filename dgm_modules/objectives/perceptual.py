"""A VAE objective with the reconstruction measured in a fixed network's feature space
(Dosovitskiy & Brox 2016, "Generating images with perceptual similarity metrics").

The feature network is the suite's classifier of the dataset being trained on (the one FID
uses; shipped for digits, MNIST and Fashion-MNIST), loaded when the method binds to its data. It is a likelihood
surrogate: ``log N(phi_l(x); phi_l(x_hat), s^2 I)`` summed over the chosen layers ``l``, where
``x_hat`` is the decoder's mean image, optionally plus ``pixel_weight`` times the model's own
pixel log-likelihood. The objective is this surrogate minus ``KL(q(z|x) || p(z))``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from torch.distributions import Independent, Normal, kl_divergence

from dgm_modules.models.base import LatentKind, LatentVariableModel
from dgm_modules.models.capabilities import ExplicitLatent
from dgm_modules.networks.classifier import LAYERS
from dgm_modules.networks.feature_nets import classifier_features
from dgm_modules.objectives.base import Objective, ObjectiveOutput
from dgm_modules.registry import OBJECTIVES


@OBJECTIVES.register("perceptual")
class PerceptualELBO(Objective):
    """``E_q[sum_l log N(phi_l(x); phi_l(x_hat(z)), s^2) + w log p(x|z)] - KL(q || p)``.

    Args:
        feature_net: ``auto`` (the classifier of the dataset trained on) or a dataset name whose
            classifier to use (shipped, or made by ``dgm-bench evaluator train --data NAME``).
        layers: classifier layers compared: any of ``conv1``, ``conv2``, ``fc``.
        feature_scale: ``s``, the standard deviation of the feature-space Gaussian.
        pixel_weight: ``w``, weight of the pixel log-likelihood term (0 = features only).
    """

    supported_latents = frozenset({LatentKind.CONTINUOUS})

    def __init__(self, feature_net: str = "auto", layers: Sequence[str] = ("conv1", "conv2", "fc"),
                 feature_scale: float = 1.0, pixel_weight: float = 0.0) -> None:
        super().__init__()
        bad = [name for name in layers if name not in LAYERS]
        if not layers or bad:
            raise ValueError(f"objective.layers must be a non-empty subset of {list(LAYERS)}, got {list(layers)}")
        if not feature_scale > 0:
            raise ValueError(f"objective.feature_scale must be > 0, got {feature_scale}")
        if pixel_weight < 0:
            raise ValueError(f"objective.pixel_weight must be >= 0, got {pixel_weight}")
        self.feature_net, self.layers = feature_net, tuple(layers)
        self.feature_scale, self.pixel_weight = feature_scale, pixel_weight
        # kept out of the module tree: fixed, not trained, and not part of the run's checkpoint
        self.__dict__["_net"] = None

    def bind_data(self, datamodule: Any) -> None:
        """Load the feature network for the run's data (the method calls this in ``setup``)."""
        if self._net is None:
            if datamodule is None and self.feature_net == "auto":
                raise ValueError("objective.feature_net='auto' needs the run's DataModule; name a dataset instead")
            name = datamodule.name if self.feature_net == "auto" else self.feature_net
            self.__dict__["_net"] = classifier_features(name).net

    def check_model(self, model: LatentVariableModel) -> None:
        super().check_model(model)
        if not isinstance(model, ExplicitLatent):
            missing = next(m for m in ("q", "prior", "likelihood") if not hasattr(model, m))
            raise ValueError(f"objective 'perceptual' needs a model with q(x), prior() and likelihood(z) "
                             f"(e.g. gaussian-vae); {type(model).__name__} has no {missing}()")

    def forward(self, model: LatentVariableModel, x: Tensor) -> ObjectiveOutput:
        if self._net is None:
            raise RuntimeError("objective 'perceptual' has no feature network: call bind_data(datamodule) first")
        net = self._net.to(x.device)
        q = model.q(x)
        likelihood = model.likelihood(q.rsample())
        x_hat = likelihood.mean.view_as(x)
        with torch.no_grad():
            target = net.feature_maps(x, self.layers)
        recon = net.feature_maps(x_hat, self.layers)
        terms = {}
        log_lik = torch.zeros(x.shape[0], device=x.device)
        for name in self.layers:
            lp = Independent(Normal(recon[name].flatten(1), self.feature_scale), 1).log_prob(target[name].flatten(1))
            terms[f"feature_nll_{name}"] = -lp.mean().detach()
            log_lik = log_lik + lp
        if self.pixel_weight > 0:
            pixel = likelihood.log_prob(x.flatten(1))
            terms["pixel_nll"] = -pixel.mean().detach()
            log_lik = log_lik + self.pixel_weight * pixel
        kl = kl_divergence(q, model.prior())
        terms["kl"] = kl.mean().detach()
        bound = log_lik - kl
        return ObjectiveOutput(loss=-bound.mean(), bound=bound.detach(), terms=terms)
