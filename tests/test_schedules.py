"""Learning-rate schedules: the IWAE paper's, and that the module really applies it."""
import itertools
import math

import lightning as L
import pytest

from benchmarks.config import build, parse_set, resolve_config
from dgm_modules.methods.schedules import iwae_passes
from dgm_modules.registry import ConfigError


def test_iwae_schedule_is_3_to_the_i_passes_at_10_to_the_minus_i_over_7():
    runs = [(f, len(list(g))) for f, g in itertools.groupby(iwae_passes(e) for e in range(3280))]
    assert [n for _, n in runs] == [3**i for i in range(8)]  # 1 + 3 + ... + 2187 = 3280 passes
    assert all(math.isclose(f, 10 ** (-i / 7)) for i, (f, _) in enumerate(runs))
    assert iwae_passes(10_000) == pytest.approx(0.1)  # the last rate stays


@pytest.mark.parametrize("schedule, factor", [("constant", 1.0), ("iwae", 10 ** (-1 / 7))])
def test_the_module_steps_the_schedule_each_epoch(schedule, factor):
    config = resolve_config("vae", "digits", 0, parse_set([
        f"module.lr_schedule={schedule}", "optimizer.lr=0.001", "model.hidden=[16]", "model.latent_dim=2"]))
    datamodule, module = build(config)
    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu")
    trainer.fit(module, datamodule=datamodule)
    # epochs 0, 1, 2 ran; the scheduler stepped after each: epoch 3 is still in stage 1 (passes 1-3)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * factor)


def test_an_unknown_schedule_is_refused_with_the_choices():
    config = resolve_config("vae", "digits", 0, parse_set(["module.lr_schedule=cosine"]))
    with pytest.raises(ConfigError, match="constant.*iwae"):
        build(config)
