"""The relaxed Gumbel-Softmax objective scored beside the discrete -ELBO (benchmarks/relaxed_bound.py)."""
import math

import pytest
import torch

from benchmarks.relaxed_bound import main, neg_elbos
from dgm_modules.models.sbn import SigmoidBeliefNet


def _model(latent: str, relaxation: str) -> SigmoidBeliefNet:
    torch.manual_seed(1)
    model = SigmoidBeliefNet((1, 8, 8), latent_sizes=(12,), latent=latent, categories=4, relaxation=relaxation,
                temperature=1.0, temperature_min=0.5, anneal_rate=1e-3)
    with torch.no_grad():  # confident q and p, so a relaxation at a high temperature is far from them
        for p in model.parameters():
            p.mul_(4.0)
    return model


def _apart(a: torch.Tensor, b: torch.Tensor) -> float:
    """|mean difference| in standard errors of two independent samples."""
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    return abs(float(a.mean() - b.mean())) / se


@pytest.mark.parametrize("latent", ["bernoulli", "categorical"])
def test_the_relaxed_objective_tends_to_the_discrete_elbo_as_the_temperature_falls(latent):
    model = _model(latent, "concrete")
    x = torch.bernoulli(torch.full((4000, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))
    discrete = neg_elbos(model, x, None, generator_seed=1)
    assert _apart(discrete, neg_elbos(model, x, 0.01, generator_seed=2)) < 4
    assert _apart(discrete, neg_elbos(model, x, 2.0, generator_seed=2)) > 8  # the relaxation is measured, not skipped


def test_scoring_restores_the_model_and_straight_through_scores_the_discrete_model():
    model = _model("bernoulli", "straight-through")
    model.train()
    model.anneal_step.fill_(7)
    x = torch.bernoulli(torch.full((4000, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))
    discrete, relaxed = neg_elbos(model, x, None, generator_seed=1), neg_elbos(model, x, 2.0, generator_seed=2)
    assert model.training and int(model.anneal_step) == 7 and model.temperature0 == 1.0 and model.anneal_rate == 1e-3
    assert _apart(discrete, relaxed) < 4  # hard samples forward: the same -ELBO at any temperature
    with pytest.raises(ValueError, match="relaxation='none'"):
        neg_elbos(_model("bernoulli", "none"), x[:10], 0.5)


def test_cli_refuses_a_folder_without_checkpoints_and_a_bad_temperature(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--temperature", "0"])
    assert "--temperature must be > 0" in capsys.readouterr().err
