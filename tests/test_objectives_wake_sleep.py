"""Wake-sleep: its gradients are the wake (ELBO theta) and sleep (KL of the true posterior) gradients,
by enumerating every x and z."""
from __future__ import annotations

import pytest
import torch

from dgm_modules.objectives.wake_sleep import WakeSleep
from exact_enumeration import X, X_ALL, X_REP, draws, exact_elbo, exact_terms, grads, standard_error, tiny_sbn, within

pytestmark = pytest.mark.usefixtures("one_thread")


def test_wake_sleep_gradients_are_the_wake_and_sleep_gradients():
    model = tiny_sbn()
    # wake: theta follows E_q grad log p(x, z), the ELBO's theta-gradient
    exact_theta, _ = grads(model, -exact_elbo(model, X).mean())
    # sleep: phi follows grad E_p(x) KL(p(z | x) || q(z | x)), by enumerating every x and z
    log_joint, log_q = exact_terms(model, X_ALL)
    log_px = torch.logsumexp(log_joint, 0)
    post = (log_joint - log_px).detach()
    kl = (post.exp() * (post - log_q)).sum(0)
    _, exact_phi = grads(model, (log_px.detach().exp() * kl).sum())
    theta, phi = draws(model, WakeSleep(), X_REP)
    assert within(theta, exact_theta) and within(phi, exact_phi)
    assert exact_phi.abs().max() > 10 * standard_error(phi).max()
