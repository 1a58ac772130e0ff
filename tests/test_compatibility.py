"""The objective x model compatibility matrix, generated from the registries: every registered
objective either refuses a registered model before training (naming the objectives that can train
it) or trains it for one step with the one return type. A new objective or model joins the matrix
by registering itself; only a pairing refused for a reason beyond the latent kind is listed here."""
from __future__ import annotations

import itertools

import pytest
import torch

from dgm_modules.models.base import LatentVariableModel
from dgm_modules.objectives.adversarial import AdversarialObjective
from dgm_modules.objectives.base import IncompatibleObjectiveError
from dgm_modules.registry import MODELS, OBJECTIVES

SHAPE = (1, 8, 8)
#: pairings refused although the objective supports the model's latent kind, with the reason asked for
BEYOND_THE_KIND = {
    ("perceptual", "hierarchical-vae"): "has no q", ("beta-elbo", "hierarchical-vae"): "q\\(x\\), prior\\(\\)",
    ("relax", "sbn"): "one stochastic layer",  # the default sbn has two layers
    **{("vae-gan", m): "lacks \\['discriminator'\\]"  # continuous latents, but no discriminator player
       for m in ("dp-mixture-vae", "gaussian-vae", "hierarchical-vae", "linear-gaussian", "stick-breaking-vae")},
}
#: objectives whose forward takes more than (model, x): trained by their own tests (labels, players, data)
OWN_FORWARD = {"semi-supervised-elbo", "perceptual"}


def _pairs():
    return list(itertools.product(OBJECTIVES.names(), MODELS.names()))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: cls(SHAPE) for name, cls in MODELS.items()}


def test_the_matrix_covers_every_registered_component(models):
    assert len(_pairs()) == len(OBJECTIVES.names()) * len(MODELS.names()) >= 15 * 9
    compatible = {o for o, m in _pairs() if models[m].latent_kind in OBJECTIVES.get(o).supported_latents}
    assert compatible == set(OBJECTIVES.names())  # every objective trains some registered model


@pytest.mark.parametrize("objective_name, model_name", _pairs())
def test_objective_trains_or_refuses_model(objective_name, model_name, models):
    model, objective = models[model_name], OBJECTIVES.get(objective_name)()
    if model.latent_kind not in objective.supported_latents:
        with pytest.raises(IncompatibleObjectiveError, match=f"{objective_name!r} cannot train") as err:
            objective.check_model(model)
        named = err.value.args[0].split("compatible objectives:")[1]
        expected = [n for n, cls in OBJECTIVES.items() if model.latent_kind in cls.supported_latents]
        assert [n.strip() for n in named.split(",") if n.strip() not in ("", "none")] == expected
        return
    if (objective_name, model_name) in BEYOND_THE_KIND:
        with pytest.raises(ValueError, match=BEYOND_THE_KIND[objective_name, model_name]):
            objective.check_model(model)
        return
    objective.check_model(model)
    if objective_name in OWN_FORWARD:
        return
    x = torch.rand(6, *SHAPE).bernoulli()
    model.zero_grad(set_to_none=True)
    if isinstance(objective, AdversarialObjective):
        outputs = [objective(model, x, player) for player in objective.players]
    else:
        assert isinstance(model, LatentVariableModel)
        outputs = [objective(model, x)]
    for out in outputs:
        assert out.loss.dim() == 0 and torch.isfinite(out.loss)
        assert out.bound.shape == (6,) and not out.bound.requires_grad and torch.isfinite(out.bound).all()
        assert all(t.dim() == 0 and not t.requires_grad for t in out.terms.values())
        out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
