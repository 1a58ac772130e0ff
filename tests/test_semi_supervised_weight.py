"""M2's classification weight (Kingma et al. 2014, eq. 9): alpha N on E_labelled[-log q(y | x)].

Per-example weights are read off the real objective by autograd on the classifier's logits, over
batches from the real MNIST DataModule at the paper's setting (1% labels, batch 100).
"""
from __future__ import annotations

import math

import pytest
import torch

from datamodules.mnist import MNISTDataModule
from dgm_modules.models.m2 import M2
from dgm_modules.objectives.semi_supervised import SemiSupervisedELBO

ALPHA = 0.1


def _classification_weights(model: M2, objective: SemiSupervisedELBO, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``d loss / d (-log q(y_i | x_i))`` of each labelled example, in units of one example's bound weight (1 / B).

    A labelled example's bound ``ELBO(x, y)`` does not involve ``q(y | x)``, so its classifier logits
    get gradient from the classification term alone: ``w_i (softmax_i - onehot(y_i))``.
    """
    logits = {}
    hook = model.inference["classifier"].register_forward_hook(lambda m, i, out: logits.update(out=out) or out.retain_grad())
    try:
        objective(model, x, y).loss.backward()
    finally:
        hook.remove()
    y_ = y.clamp(min=0)[:, None]
    p_y = logits["out"].softmax(-1).gather(1, y_).squeeze(1)
    g_y = logits["out"].grad.gather(1, y_).squeeze(1)
    return torch.where(y >= 0, g_y / (p_y - 1), 0.0) * x.shape[0]


def test_weights_are_exact_on_a_hand_built_batch():
    torch.manual_seed(1)
    model = M2((6,), classes=3, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    y = torch.tensor([0, -1, 2, -1, -1])
    w = _classification_weights(model, SemiSupervisedELBO(ALPHA, labelled_fraction=0.25), x, y)
    torch.testing.assert_close(w, torch.tensor([0.4, 0, 0.4, 0, 0]), rtol=1e-4, atol=1e-6)  # alpha / f


@pytest.fixture(scope="module")
def mnist_one_percent(shared_data):
    data = MNISTDataModule(data_dir=str(shared_data), labelled_fraction=0.01, batch_size=100)
    data.setup("fit")
    return data


def test_expected_weight_of_labelled_examples_is_alpha_n_on_mnist_at_one_percent(mnist_one_percent):
    data = mnist_one_percent
    n, n_labelled = data.train_y.shape[0], int((data.train_y >= 0).sum())
    assert (n, n_labelled) == (50_000, 500)
    torch.manual_seed(2)
    model = M2(tuple(data.dims), latent_dim=2, hidden=(8,))
    objective = SemiSupervisedELBO(ALPHA)
    objective.bind_data(data)  # what the method does in setup
    loader = data.train_dataloader()
    epochs, total, per_example, empty = 1, 0.0, [], 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny steps: a second thread only adds contention
    try:
        for _ in range(epochs):  # every labelled example appears once an epoch
            for batch in loader:
                labelled = batch.y >= 0
                if not labelled.any():
                    empty += 1
                    continue
                w = _classification_weights(model, objective, batch.x, batch.y)
                total += w[labelled].sum().item()
                per_example += w[labelled].tolist()
    finally:
        torch.set_num_threads(threads)
    assert len(per_example) == epochs * n_labelled
    assert empty > 0.3 * epochs * len(loader)  # the regime of the bug: (0.99)^100 = 37% of batches hold none
    # Kingma et al.: J^alpha = J + alpha N E_labelled[-log q(y | x)], so the labelled examples' weights
    # add up to alpha N per epoch and each weighs alpha N / N_l, in units of one example's bound
    assert total / epochs == pytest.approx(ALPHA * n, rel=0.02)
    assert sum(per_example) / len(per_example) == pytest.approx(ALPHA * n / n_labelled, rel=0.02)


def test_labelled_examples_without_a_fraction_are_refused():
    model = M2((6,), classes=3, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((2, 6), 0.5))
    with pytest.raises(ValueError, match="objective.labelled_fraction"):
        SemiSupervisedELBO(ALPHA)(model, x, torch.tensor([1, -1]))
    SemiSupervisedELBO(ALPHA)(model, x, torch.tensor([-1, -1]))  # unlabelled only: nothing to weigh
    with pytest.raises(ValueError, match=r"objective\.labelled_fraction must be in \(0, 1\]"):
        SemiSupervisedELBO(ALPHA, labelled_fraction=0.0)


def test_labelled_examples_are_spread_over_every_epochs_batches(mnist_one_percent):
    """Labelled examples land in a batch as Binomial(100, 1%) draws, from the first epoch on.

    (The label subset's generator once shared its seed with epoch 0's shuffle: all 500 labelled
    examples then filled the first 5 batches and the other 495 held none.)
    """
    loader = mnist_one_percent.train_dataloader()
    for _ in range(2):
        counts = torch.tensor([int((batch.y >= 0).sum()) for batch in loader], dtype=torch.float64)
        assert counts.sum() == 500 and counts.max() <= 8  # P(Binomial(100, 0.01) > 8) ~ 1e-6 a batch
        empty, p_empty = (counts == 0).double().mean().item(), 0.99 ** 100
        assert abs(empty - p_empty) < 4 * math.sqrt(p_empty * (1 - p_empty) / len(counts)), empty
