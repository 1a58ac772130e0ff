"""Packed training changes no number: N packed seeds end where their N single-cell runs end.

Real Lightning Trainers on the embedded digits data, three seeds, a few dozen steps, float64 (the
packed step's batched matmuls round differently from a single cell's in the last bits; in float64
that stays far below the 1e-5 tolerance).
"""
from __future__ import annotations

import lightning as L
import pytest
import torch

from benchmarks.config import build, parse_set, resolve_config
from dgm_modules.methods.packed import PackedDataModule, PackedMethod
from dgm_modules.methods.replica_noise import ReplicaNoise

pytestmark = pytest.mark.usefixtures("one_thread")
SEEDS = (0, 1, 2)
STEPS = 30
CASES = {  # method -> overrides: the VAE, the IWAE and one SBN objective (score function, VIMCO)
    "vae": ["model.hidden=[32]", "model.latent_dim=4"],
    "iwae": ["model.hidden=[32]", "model.latent_dim=4", "objective.k=5"],
    "sbn-vimco": ["model.latent_sizes=[8, 4]"],
}
LRS = (1e-3, 3e-3, 1e-2)  # "vae-lrs": the three seeds each with its own learning rate


def _config(method: str, seed: int) -> dict:
    extra = []
    if method == "vae-lrs":
        method, extra = "vae", [f"optimizer.lr={LRS[SEEDS.index(seed)]}"]
    return resolve_config(method, "digits", seed, parse_set(CASES[method] + extra + [
        "data.batch_size=20", f"trainer.max_steps={STEPS}", "trainer.max_epochs=10", "trainer.accelerator=cpu",
        "trainer.precision=64-true", "trainer.check_val_every_n_epoch=1", "module.val_k=[1, 3]"]))


def _trainer(config: dict, precision: str = "64-true") -> L.Trainer:
    return L.Trainer(**{**config["trainer"], "precision": precision}, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, use_distributed_sampler=False)


def _test(module, datamodule) -> dict:
    """The test stage in float32: its latent-structure metrics read the float32 data as they are."""
    return _trainer(_config("vae", 0), "32-true").test(module, datamodule=datamodule, verbose=False)[0]


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("method", sorted(CASES) + ["vae-lrs"])
def test_packed_seeds_end_with_their_single_runs_parameters_and_metrics(method):
    singles = []
    for seed in SEEDS:
        config = _config(method, seed)
        datamodule, module = build(config)
        trainer = _trainer(config)
        trainer.fit(module, datamodule=datamodule)
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        params = {n: p.detach().clone() for n, p in module.named_parameters()}  # float64
        singles.append((params, val, _test(module.float(), datamodule)))

    replicas, datamodules, states = [], [], []
    for seed in SEEDS:
        datamodule, module = build(_config(method, seed))
        replicas.append(module)
        datamodules.append(datamodule)
        states.append(torch.get_rng_state())  # the stream each single run drew its training noise from
    lrs = LRS if method == "vae-lrs" else None
    packed = PackedMethod(replicas, states, lrs=lrs)
    trainer = _trainer(_config(method, 0))
    trainer.fit(packed, datamodule=PackedDataModule(datamodules))
    assert trainer.global_step == STEPS

    moved = 0.0
    for i, (params, val, test) in enumerate(singles):
        start = dict(build(_config(method, SEEDS[i]))[1].named_parameters())
        got = dict(packed.replicas[i].named_parameters())
        for name, p in params.items():
            assert got[name].dtype == p.dtype == torch.float64
            _close(got[name].detach(), p, f"seed {SEEDS[i]} {name}")
            moved = max(moved, float((p - start[name].double()).abs().max()))
        for name, value in val.items():  # the last validation, scored by the replica's own evaluator
            _close(torch.tensor(float(trainer.callback_metrics[f"r{i}/{name}"])), torch.tensor(value), name)
        packed_test = _test(packed.replicas[i].float(), datamodules[i])
        assert packed_test.keys() == test.keys()
        for name, value in test.items():
            _close(torch.tensor(packed_test[name]), torch.tensor(value), name)
    assert moved > 1e-3  # training moved the parameters: the equality is not of untouched inits
    first = [p for _, p in sorted(singles[0][0].items())]
    second = [p for _, p in sorted(singles[1][0].items())]
    assert not all(torch.equal(a, b) for a, b in zip(first, second))  # the seeds differ


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_replica_noise_is_each_replicas_single_stream(dtype):
    """Inside the vmapped step every replica's draws equal its own generator's, in order, for each kind."""
    p = torch.rand(3, 4, 25, dtype=dtype)  # per-replica Bernoulli means

    def draws():
        loc, scale = torch.zeros(4, 25, dtype=dtype), torch.ones(4, 25, dtype=dtype)
        return (torch.empty(2, 4, 25, dtype=dtype).normal_(), torch.bernoulli(pr),
                torch.normal(loc + 1, scale * 2), torch.rand(7, dtype=dtype), torch.randn_like(loc))

    seeds = [11, 12, 13]
    mode = ReplicaNoise([torch.Generator().manual_seed(s) for s in seeds])

    def step(probs, replica):
        global pr
        pr = probs
        mode.replica = replica
        try:
            return draws()
        finally:
            mode.replica = None

    with mode:
        got = torch.func.vmap(step, randomness="same")(p, torch.arange(3).unsqueeze(1))
    for i, s in enumerate(seeds):
        global pr
        pr = p[i]
        torch.manual_seed(s)
        want = draws()
        for g, w in zip(got, want):
            assert torch.equal(g[i], w)


PACK_SPEC = """
methods: [vae, sbn-nvil, gan]
datasets: [digits]
seeds: [0, 1, 2]
overrides:
  data: {batch_size: 20}
  module: {eval_k: [1, 5], val_k: [1]}
  trainer: {max_steps: 25, max_epochs: 5, accelerator: cpu}
cells:
  - match: {method: vae}   # FID: preparing its network draws from the RNG before training
    overrides: {model: {latent_dim: 2, hidden: [16]}, module: {fid_samples: 20}}
  - match: {method: sbn-nvil}
    overrides: {model: {latent_sizes: [4]}}
exclude:
  - {method: gan, seed: [1, 2]}
"""


def _records(out) -> dict[str, dict]:
    import json

    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/record.json")}


def test_matrix_pack_auto_writes_every_cells_record_as_single_runs_and_says_what_it_could_not_pack(tmp_path):
    """Same run ids, same record keys, same metrics as ``--pack off``; the unpackable cells named with
    their reason; a rerun after losing two records packs and trains only those two."""
    from benchmarks.matrix import load_spec, run_matrix

    spec = tmp_path / "spec.yaml"
    spec.write_text(PACK_SPEC)
    _, cells = load_spec(spec)
    run_matrix(cells, tmp_path / "single", echo=lambda line: None)
    lines: list[str] = []
    run_matrix(cells, tmp_path / "packed", echo=lines.append, pack=0)
    single, packed = _records(tmp_path / "single"), _records(tmp_path / "packed")
    assert packed.keys() == single.keys() and len(packed) == 7
    text = "\n".join(lines)
    assert "packing: 3 cells in 1 packed group(s) (3); 4 run singly" in text
    assert "not packed: digits/gan/default/seed0: module 'adversarial' trains with its own loop" in text
    nvil = [line for line in lines if "not packed: digits/sbn-nvil" in line]
    assert len(nvil) == 3 and all("cannot be vmapped" in line for line in nvil)  # bool() of a buffer
    for run, record in single.items():
        got = packed[run]
        assert got["status"] == record["status"] == "completed"
        assert set(got) - {"packed", "test_wall_time_s"} == set(record)
        assert got["metrics"].keys() == record["metrics"].keys()
        for name, value in record["metrics"].items():
            assert got["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (run, name)
        assert ("packed" in got) == (record["method"] == "vae")
        assert (tmp_path / "packed" / run / "checkpoints" / "last.ckpt").exists()

    vae = sorted(r for r in packed if "__vae__" in r)
    kept = packed[vae[0]]
    for run in vae[1:]:
        (tmp_path / "packed" / run / "record.json").unlink()
    lines.clear()
    run_matrix(cells, tmp_path / "packed", echo=lines.append, pack=0)
    assert "packing: 2 cells in 1 packed group(s) (2); 0 run singly" in "\n".join(lines)
    again = _records(tmp_path / "packed")
    assert again[vae[0]]["finished_at"] == kept["finished_at"]  # the complete cell was not trained again
    for run in vae[1:]:
        assert again[run]["packed"]["cells"] == 2
        for name, value in single[run]["metrics"].items():
            assert again[run]["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (run, name)


def test_pack_option_is_checked():
    from benchmarks.packing import parse_pack
    from dgm_modules.registry import ConfigError

    assert (parse_pack("off"), parse_pack("auto"), parse_pack("4")) == (None, 0, 4)
    with pytest.raises(ConfigError, match="--pack='some' is not valid; choose auto, off or a number"):
        parse_pack("some")


def _packed(method: str):
    replicas, datamodules, states = [], [], []
    for seed in SEEDS:
        datamodule, module = build(_config(method, seed))
        replicas.append(module)
        datamodules.append(datamodule)
        states.append(torch.get_rng_state())
    return PackedMethod(replicas, states), PackedDataModule(datamodules)


def test_a_resumed_packed_group_ends_where_an_uninterrupted_one_does(tmp_path):
    """The checkpoint carries each replica's noise stream; the loaders resume their epoch's streams."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(epochs: int, ckpt: str | None = None, save: bool = False):
        packed, data = _packed("vae")
        options = {**_config("vae", 0)["trainer"], "max_epochs": epochs, "max_steps": -1, "limit_train_batches": 8,
                   "precision": "32-true"}
        callbacks = [ModelCheckpoint(dirpath=str(tmp_path), filename="last")] if save else []
        trainer = L.Trainer(**options, logger=False, enable_checkpointing=save, callbacks=callbacks,
                            enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
        trainer.fit(packed, datamodule=data, ckpt_path=ckpt)
        assert trainer.global_step == 8 * epochs
        return {n: p.detach().clone() for n, p in packed.stacked.items()}

    whole = fit(3)
    fit(1, save=True)
    resumed = fit(3, ckpt=str(tmp_path / "last.ckpt"))
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-6, atol=1e-8)
