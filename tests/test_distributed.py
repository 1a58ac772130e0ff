"""Evaluation under real DDP (gloo, 2 CPU processes) gives the numbers of one process."""
import pytest

from benchmarks.config import parse_set, resolve_config
from benchmarks.evaluate import evaluate_run
from benchmarks.run import run_cell


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    # 101 test images in batches of 10: 11 batches, dealt 6/5 to two ranks; an odd-sized split
    config = resolve_config("vae", "digits", 0, parse_set([
        "data.test_size=101", "data.eval_batch_size=10", "trainer.max_epochs=1", "model.hidden=[32]",
        "model.latent_dim=4", "module.eval_k=[1,50]", "trainer.accelerator=cpu"]))
    record = run_cell(config, out, enable_progress_bar=False)
    assert record["status"] == "completed"
    return out / record["run_id"], record


def test_two_process_ddp_evaluation_equals_one_process(trained_run):
    run_dir, record = trained_run
    one = evaluate_run(run_dir)
    two = evaluate_run(run_dir, strategy="ddp_spawn", devices=2)
    names = ("test/nll_k1", "test/nll_k50", "test/neg_elbo")
    assert set(names) <= set(one) and set(names) <= set(two)
    for name in names:
        assert abs(one[name] - two[name]) < 1e-5, (name, one[name], two[name])
    # and re-scoring reproduces the metrics recorded at the end of training
    for name in names:
        assert abs(one[name] - record["metrics"][name]) < 1e-5


def test_padding_would_have_been_visible(trained_run):
    """Guard against a vacuous comparison: the split really is odd and the metric per-example."""
    run_dir, record = trained_run
    assert record["protocol"]["split"]["test"] == 101
    over = evaluate_run(run_dir, overrides={"data": {"init_args": {"test_size": 100}}})
    assert abs(over["test/nll_k50"] - record["metrics"]["test/nll_k50"]) > 1e-6


def test_two_process_ddp_training_where_a_rank_has_no_evaluation_batch(tmp_path):
    """digits' 200 validation and 300 test images in batches of 500 (the default): one batch each, so
    rank 1 has none. Lightning refused such a loader ("zero length") and the run failed; now that rank
    gets an empty batch and the 2-process val and test metrics are those of 1 process on the same weights."""
    import lightning as L

    from benchmarks.evaluate import load_run

    config = resolve_config("vae", "digits", 0, parse_set([
        "trainer.max_epochs=1", "trainer.limit_train_batches=3", "model.hidden=[16]", "model.latent_dim=2",
        "module.eval_k=[1,5]", "module.val_k=[1]", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.strategy=ddp_spawn"]))
    assert config["data"]["init_args"]["eval_batch_size"] == 500
    record = run_cell(config, tmp_path, enable_progress_bar=False)
    assert record["status"] == "completed", record.get("error")
    run_dir = tmp_path / record["run_id"]
    _, datamodule, module = load_run(run_dir, None, run_dir / "checkpoints" / "last.ckpt")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    one = {**trainer.validate(module, datamodule=datamodule, verbose=False)[0],
           **trainer.test(module, datamodule=datamodule, verbose=False)[0]}
    for name in ("val/nll_k1", "val/neg_elbo", "test/nll_k1", "test/nll_k5", "test/neg_elbo", "test/knn_error_k5"):
        assert abs(record["metrics"][name] - one[name]) < 1e-6, (name, record["metrics"][name], one[name])


def test_two_process_ddp_training_with_grouped_steps_equals_one_step_a_call(tmp_path):
    """Under real DDP the module's own optimiser steps (module.steps_per_call) still all-reduce each
    step's gradients: two ranks (7 batches each of digits' 1,297 images at batch 100, grouped 3, 3, 1)
    end with the parameters and metrics of one step a call."""
    import torch

    params, logged = {}, {}
    for group in (1, 3):
        config = resolve_config("vae", "digits", 0, parse_set([
            "trainer.max_epochs=1", "model.hidden=[16]", "model.latent_dim=2", "data.batch_size=100",
            "module.eval_k=[1]", "module.val_k=[1]", f"module.steps_per_call={group}", "trainer.accelerator=cpu",
            "trainer.devices=2", "trainer.strategy=ddp_spawn"]))
        record = run_cell(config, tmp_path / str(group), enable_progress_bar=False)
        assert record["status"] == "completed", record.get("error")
        assert (record["steps"], record["epochs"]) == (7, 1)  # trained in the spawned processes
        ckpt = torch.load(tmp_path / str(group) / record["run_id"] / "checkpoints" / "last.ckpt",
                          map_location="cpu", weights_only=False)
        params[group], logged[group] = ckpt["state_dict"], record["metrics"]
    for name, value in params[1].items():
        torch.testing.assert_close(params[3][name], value, rtol=1e-6, atol=1e-7, msg=name)
    for name in ("val/nll_k1", "test/nll_k1"):
        assert logged[3][name] == pytest.approx(logged[1][name], rel=1e-6), name
