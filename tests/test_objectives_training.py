"""Every objective trains every compatible model on digits through the real runner; the others are
refused naming the compatible objectives; bad options are refused naming the option; the
objectives and presets are registered."""
from __future__ import annotations

import math
import warnings

import pytest

from benchmarks.config import resolve_config
from benchmarks.run import run_cell
from dgm_modules.components import METHODS, OBJECTIVES
from dgm_modules.models.linear_gaussian import LinearGaussian
from dgm_modules.objectives.arm import ARM
from dgm_modules.objectives.base import IncompatibleObjectiveError
from dgm_modules.objectives.elbo import ELBO
from dgm_modules.objectives.stl import STL
from dgm_modules.registry import ConfigError
from exact_enumeration import tiny_sbn

warnings.filterwarnings("ignore", ".*does not have many workers.*")

pytestmark = pytest.mark.usefixtures("one_thread")


DISCRETE_MODELS = {
    "sbn": {"class_path": "sbn", "init_args": {"latent_sizes": [16, 8]}},
    "sbn-categorical": {"class_path": "sbn", "init_args": {"latent_sizes": [4], "latent": "categorical",
                                                           "categories": 5, "hidden": 16}},
    "sbn-concrete": {"class_path": "sbn", "init_args": {"latent_sizes": [16], "relaxation": "concrete",
                                                        "anneal_rate": 0.01}},
    "sbn-st": {"class_path": "sbn", "init_args": {"latent_sizes": [16], "relaxation": "straight-through"}},
    "gaussian-vae": {"class_path": "gaussian-vae", "init_args": {"latent_dim": 4, "hidden": [16]}},
    "m2": {"class_path": "m2", "init_args": {"latent_dim": 4, "hidden": [16]}},
}


DISCRETE_OBJECTIVES = {
    "wake-sleep": "wake-sleep", "rws": {"class_path": "rws", "init_args": {"k": 3, "insomnia": 0.5}},
    "reinforce": "score-function",
    "nvil": {"class_path": "score-function", "init_args": {"input_baseline": True, "centering": True,
                                                           "variance_normalization": True}},
    "vimco": {"class_path": "vimco", "init_args": {"k": 3}}, "elbo": "elbo", "iwae": {"class_path": "iwae", "init_args": {"k": 3}},
    "elbo-sleep": {"class_path": "elbo", "init_args": {"sleep_weight": 1.0}},
    "semi-supervised-elbo": "semi-supervised-elbo",
}


DISCRETE_SUPPORTED = {  # by hand, so a wrong supported_latents fails here
    "sbn": {"wake-sleep", "rws", "reinforce", "nvil", "vimco"},
    "sbn-categorical": {"wake-sleep", "rws", "reinforce", "nvil", "vimco"},
    "sbn-concrete": {"elbo", "iwae", "elbo-sleep"}, "sbn-st": {"elbo", "iwae", "elbo-sleep"},
    "gaussian-vae": {"wake-sleep", "rws", "reinforce", "nvil", "vimco", "elbo", "iwae", "elbo-sleep"},
    "m2": {"semi-supervised-elbo"},
}


ESTIMATOR_MODELS = {
    "sbn": {"class_path": "sbn", "init_args": {"latent_sizes": [16]}},
    "sbn-2": {"class_path": "sbn", "init_args": {"latent_sizes": [16, 8]}},
    "sbn-concrete": {"class_path": "sbn", "init_args": {"latent_sizes": [16], "relaxation": "concrete"}},
    "gaussian-vae": {"class_path": "gaussian-vae", "init_args": {"latent_dim": 4, "hidden": [16]}},
    "linear-gaussian": {"class_path": "linear-gaussian", "init_args": {"latent_dim": 4}},
    "stick-breaking-vae": {"class_path": "stick-breaking-vae", "init_args": {"truncation": 5, "hidden": [16]}},
}


ESTIMATOR_OBJECTIVES = {
    "stl": "stl", "dreg": {"class_path": "dreg", "init_args": {"k": 3}},
    "rws-dreg": {"class_path": "dreg", "init_args": {"k": 3, "alpha": 1.0}},
    "arm": "arm", "disarm": {"class_path": "disarm", "init_args": {"k": 2}},
    "relax": {"class_path": "relax", "init_args": {"hidden": 8}},
    "rebar": {"class_path": "relax", "init_args": {"hidden": 0}},
}


ESTIMATOR_SUPPORTED = {  # by hand, so a wrong supported_latents fails here
    "sbn": {"arm", "disarm", "relax", "rebar"}, "sbn-2": {"arm", "disarm"}, "sbn-concrete": set(),
    "gaussian-vae": {"stl", "dreg", "rws-dreg"}, "linear-gaussian": {"stl", "dreg", "rws-dreg"},
    "stick-breaking-vae": {"stl", "dreg"},
}


def _config(model: dict, objective, semi_supervised: bool = False, labelled_fraction: float | None = None) -> dict:
    """Three training batches of ``model`` by ``objective`` on digits (labelled in part, for M2's matrix)."""
    over = {"model": model, "objective": objective,
            "module": {"class_path": "semi-supervised" if semi_supervised else "variational",
                       "init_args": {"eval_k": [1, 5]}},
            "trainer": {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1, "limit_test_batches": 1}}
    if labelled_fraction is not None:
        over["data"] = {"class_path": "digits", "init_args": {"labelled_fraction": labelled_fraction}}
    return resolve_config("vae", "digits", 0, over)


def _trained_metrics(config: dict, tmp_path, model: str, objective: str) -> dict:
    """Train the cell three steps; it must complete with finite metrics, test/nll_k5 among them."""
    record = run_cell(config, tmp_path, enable_progress_bar=False)
    assert record["status"] == "completed", (model, objective, record["error"])
    assert record["steps"] == 3
    metrics = record["metrics"]
    assert "test/nll_k5" in metrics and all(math.isfinite(v) for v in metrics.values()), (model, objective)
    return metrics


@pytest.mark.parametrize("model", list(DISCRETE_MODELS))
def test_every_objective_trains_every_compatible_model_on_digits(model, tmp_path):
    for objective in DISCRETE_OBJECTIVES:
        config = _config(DISCRETE_MODELS[model], DISCRETE_OBJECTIVES[objective], model == "m2", 0.3)
        if objective not in DISCRETE_SUPPORTED[model]:
            with pytest.raises(ConfigError, match="compatible objectives: .+"):
                run_cell(config, tmp_path)
            continue
        metrics = _trained_metrics(config, tmp_path, model, objective)
        if model == "m2":
            assert 0.0 <= metrics["test/accuracy"] <= 1.0


@pytest.mark.parametrize("model", list(ESTIMATOR_MODELS))
def test_every_new_objective_trains_every_compatible_model_on_digits(model, tmp_path):
    for objective in ESTIMATOR_OBJECTIVES:
        config = _config(ESTIMATOR_MODELS[model], ESTIMATOR_OBJECTIVES[objective])
        if objective not in ESTIMATOR_SUPPORTED[model]:
            if model == "stick-breaking-vae" and objective == "rws-dreg":
                continue  # a legal pairing, left out to keep the file fast (dreg trains it)
            match = "one stochastic layer" if model == "sbn-2" and objective in ("relax", "rebar") else \
                "compatible objectives: .+"
            with pytest.raises(ConfigError, match=match):
                run_cell(config, tmp_path)
            continue
        _trained_metrics(config, tmp_path, model, objective)


def test_reparameterised_elbo_refuses_bernoulli_sbn_naming_compatible_objectives():
    with pytest.raises(IncompatibleObjectiveError) as err:
        ELBO().check_model(tiny_sbn())
    message = str(err.value)
    for name in ("rws", "score-function", "vimco", "wake-sleep"):
        assert name in message
    assert "'elbo'" in message and "iwae," not in message


def test_incompatible_pairing_names_the_compatible_objectives():
    with pytest.raises(IncompatibleObjectiveError) as err:
        ARM().check_model(LinearGaussian((4,)))
    message = str(err.value)
    assert all(name in message for name in ("stl", "dreg", "elbo", "iwae")) and "'arm'" in message
    assert "disarm" not in message.split("compatible objectives:")[1]
    with pytest.raises(IncompatibleObjectiveError) as err:
        STL().check_model(tiny_sbn())
    compatible = err.value.args[0].split("compatible objectives:")[1]
    assert all(name in compatible for name in ("arm", "disarm", "relax", "vimco")) and "stl" not in compatible


@pytest.mark.parametrize("option, value, method", [
    ("objective.k", 1, "sbn-vimco"), ("objective.insomnia", 1.5, "sbn-rws"), ("model.temperature", 0.0, "sbn-gumbel"),
    ("model.latent_sizes", [], "sbn-gumbel"), ("data.labelled_fraction", 2.0, "sbn-gumbel"),
    ("objective.k", 0, "iwae-dreg"), ("objective.alpha", 1.5, "iwae-dreg")])
def test_bad_options_refused_naming_the_option(option, value, method, tmp_path):
    section, key = option.split(".")
    with pytest.raises(ConfigError, match=option.replace(".", r"\.")):
        run_cell(resolve_config(method, "digits", 0, {section: {"init_args": {key: value}}}), tmp_path)


def test_wake_sleep_family_and_score_function_objectives_registered():
    assert {"wake-sleep", "rws", "score-function", "vimco", "semi-supervised-elbo"} <= set(OBJECTIVES.names())


def test_low_variance_estimators_and_their_presets_registered():
    assert {"stl", "dreg", "arm", "disarm", "relax"} <= set(OBJECTIVES.names())
    presets = {"vae-stl", "iwae-dreg", "rws-dreg", "sbn-arm", "sbn-disarm", "sbn-relax", "sbn-rebar"}
    assert presets <= set(METHODS.names())
