"""Reweighted wake-sleep: its terms sum to its loss, and wake-theta tends to the gradient of log p(x)."""
from __future__ import annotations

import pytest
import torch

from dgm_modules.objectives.reweighted_wake_sleep import ReweightedWakeSleep
from exact_enumeration import X, exact_log_px, grads, tiny_sbn

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rws_terms_sum_to_loss_and_mixture_uses_both_phases():
    model = tiny_sbn()
    torch.manual_seed(0)
    out = ReweightedWakeSleep(k=4, insomnia=0.5)(model, X)
    assert set(out.terms) == {"wake_theta", "wake_phi", "sleep_phi"}
    assert torch.allclose(sum(out.terms.values()), out.loss.detach())
    assert out.terms["sleep_phi"] != 0 and out.terms["wake_phi"] != 0
    # wake-theta with k -> large is the gradient of log p(x) (self-normalised IS is consistent)
    exact_theta, _ = grads(model, -exact_log_px(model, X).mean())
    torch.manual_seed(0)
    theta, _ = grads(model, ReweightedWakeSleep(k=2000)(model, X).loss)
    assert torch.allclose(theta, exact_theta, atol=0.05 * exact_theta.abs().max())
