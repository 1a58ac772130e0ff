"""The shared log-likelihood evaluator against exact log p(x) and the exact ELBO (tests/exact_enumeration.py)."""
from __future__ import annotations

import math

import pytest
import torch

from datamodules.base import Batch
from dgm_modules.evaluation.log_likelihood import LogLikelihoodEvaluator
from dgm_modules.objectives import functional as F
from exact_enumeration import X_ALL, exact_elbo, exact_log_px, tiny_sbn

pytestmark = pytest.mark.usefixtures("one_thread")


def test_evaluator_bounds_against_exact_log_likelihood():
    model = tiny_sbn()
    x = X_ALL.repeat(25, 1)  # 400 examples
    ev = LogLikelihoodEvaluator([1, 10, 1000], seed=0)
    ev.update(model, Batch(x, None, 0))
    out = {k: float(v) for k, v in ev.compute().items()}
    with torch.no_grad():
        elbo, log_px = float(exact_elbo(model, X_ALL).mean()), float(exact_log_px(model, X_ALL).mean())
        torch.manual_seed(0)
        l1 = F.iwae_bound(model.log_weights(x, 1))
    se = float(l1.std()) / math.sqrt(len(l1))
    assert abs(-out["nll_k1"] - elbo) < 4 * se
    assert elbo < -out["nll_k10"] < -out["nll_k1000"]
    # L_k -> log p(x); 0.005 covers the Monte Carlo noise of L_1000 (its bias is below 1e-3 here)
    assert abs(log_px - (-out["nll_k1000"])) < 0.005
    assert log_px - elbo > 0.1  # the gap is real, so the ordering means something
