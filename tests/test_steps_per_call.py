"""Several optimiser steps per Lightning step (``module.steps_per_call``) change no number: the
same batches, the same noise, the same updates in the same order, the same epoch schedule."""
import lightning as L
import pytest
import torch

from benchmarks.config import build, resolve_config
from benchmarks.fingerprint import config_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")

# digits: 1,297 training images at batch 100 -> 13 batches an epoch, so groups of 4 end an epoch
# with a group of 1 (a short last group is exercised)
CASES = {
    # the IWAE schedule lowers the rate after the first pass: the module steps it itself
    "vae": {"model": {"init_args": {"latent_dim": 2, "hidden": [32]}},
            "module": {"init_args": {"lr_schedule": "iwae"}}},
    "sbn-nvil": {"model": {"init_args": {"latent_sizes": [8]}}},  # the objective's own parameters (its baseline)
    "m2": {"data": {"init_args": {"labelled_fraction": 0.2}}},  # the semi-supervised module's labels
}


def train(method: str, steps_per_call: int, epochs: int = 2):
    over = {**CASES[method], "trainer": {"max_epochs": epochs, "accelerator": "cpu"}}
    over["module"] = {"init_args": {**over.get("module", {}).get("init_args", {}),
                                    "steps_per_call": steps_per_call, "val_k": [1]}}
    over["data"] = {"init_args": {**over.get("data", {}).get("init_args", {}), "batch_size": 100}}
    config = resolve_config(method, "digits", 0, over)
    torch.manual_seed(0)
    datamodule, module = build(config)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    return config, trainer, module


@pytest.mark.parametrize("method", list(CASES))
def test_grouped_steps_give_the_single_steps_parameters_and_log(method):
    config1, trainer1, one = train(method, 1)
    config4, trainer4, four = train(method, 4)
    assert not four.automatic_optimization and trainer4.global_step == trainer1.global_step == 26
    for (name, a), (_, b) in zip(one.state_dict().items(), four.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)
    assert trainer1.optimizers[0].param_groups[0]["lr"] == trainer4.optimizers[0].param_groups[0]["lr"]
    logged1, logged4 = trainer1.callback_metrics, trainer4.callback_metrics
    assert logged1.keys() == logged4.keys() and "train/loss" in logged1 and "val/nll_k1" in logged1
    for name in logged1:
        torch.testing.assert_close(logged4[name], logged1[name], rtol=1e-6, atol=1e-7, msg=name)
    # a speed knob, not a configuration: the same fingerprint, so the same run folder and leaderboard row
    assert config_fingerprint(config4) == config_fingerprint(config1)


def test_the_rate_schedule_moves_at_epoch_ends_under_grouped_steps():
    """The IWAE schedule's rate after 1 and after 4 passes (3**0 passes at 1e-3, then 3**1 at 10**(-1/7)
    of it, then 10**(-2/7)): Lightning does not step it under manual optimisation, the module must."""
    for epochs, factor in ((1, 10 ** (-1 / 7)), (4, 10 ** (-2 / 7))):
        _, trainer, _ = train("vae", 4, epochs)
        assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * factor, rel=1e-12)


@pytest.mark.parametrize("value", [0, -1, 2.0, True])
def test_steps_per_call_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match=r"module.steps_per_call"):
        build(resolve_config("vae", "digits", 0, {"module": {"init_args": {"steps_per_call": value}}}))


@pytest.mark.parametrize("trainer", [{"gradient_clip_val": 1.0}, {"accumulate_grad_batches": 2}])
def test_grouped_steps_refuse_lightnings_clipping_and_accumulation_by_name(trainer):
    from benchmarks.validate import check_config
    from dgm_modules.registry import ConfigError

    config = resolve_config("vae", "digits", 0, {"module": {"init_args": {"steps_per_call": 4}}, "trainer": trainer})
    with pytest.raises(ConfigError, match=rf"module.steps_per_call=4 cannot be combined with trainer.{next(iter(trainer))}"):
        check_config(config, data=False)
    check_config(resolve_config("vae", "digits", 0, {"trainer": trainer}), data=False)  # one step a call: fine
