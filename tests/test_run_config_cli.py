"""`dgm-bench run` on jsonargparse: config files merged in order, dotted overrides, --print_config,
per-class help, the resolved config beside the run when it starts, and run ids equal to the old syntax's."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.cli import main
from benchmarks.config import deep_merge, load_yaml, parse_set, resolve_config
from benchmarks.matrix import normalise_overrides
from benchmarks.run import run_id
from benchmarks.run_cli import parse_run

REPO = Path(__file__).resolve().parents[1]


def old_syntax(method, data, seed=0, config=None, sets=()):
    """How `run` resolved a config before jsonargparse: the file's sections, then --set."""
    over = normalise_overrides(load_yaml(config), config) if config else {}
    return resolve_config(method, data, seed, deep_merge(over, parse_set(list(sets))))


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_every_spelling_of_one_config_gets_the_old_run_id(tmp_path):
    cfg = write(tmp_path / "a.yaml", "model: {latent_dim: 4, hidden: [16]}\nobjective: {class_path: iwae, "
                                     "init_args: {k: 3}}\ntrainer: {max_epochs: 2}\nmodule: {eval_k: [1, 20]}\n")
    before = old_syntax("vae", "digits", 3, cfg, ["optimizer.lr=0.002"])
    spellings = [
        ["--config", cfg, "--set", "optimizer.lr=0.002"],
        ["--config", cfg, "--optimizer.lr", "0.002"],
        ["--config", cfg, "--optimizer.init_args.lr=0.002"],
        ["--model.latent_dim", "4", "--model.hidden", "[16]", "--objective", "iwae", "--objective.k", "3",
         "--trainer.max_epochs", "2", "--module.eval_k", "[1, 20]", "--optimizer.lr", "2e-3"],
        ["--set", "model.latent_dim=4", "--set", "model.hidden=[16]", "--set", "objective=iwae",
         "--set", "objective.k=3", "--max-epochs", "2", "--set", "module.eval_k=[1,20]", "--set", "optimizer.lr=0.002"],
    ]
    for argv in spellings:
        config, _ = parse_run(["--method", "vae", "--data", "digits", "--seed", "3", *argv])
        assert run_id(config) == run_id(before), argv
        assert config == before, argv
    # and a different value is a different configuration
    config, _ = parse_run(["--method", "vae", "--data", "digits", "--seed", "3", "--config", cfg,
                           "--optimizer.lr", "0.003"])
    assert run_id(config) != run_id(before)


def test_a_second_config_file_overrides_the_first_key_by_key(tmp_path):
    a = write(tmp_path / "a.yaml", "model: {latent_dim: 4, hidden: [16]}\ntrainer: {max_epochs: 2, accelerator: cpu}\n")
    b = write(tmp_path / "b.yaml", "model: {init_args: {latent_dim: 6}}\ntrainer: {max_epochs: 3}\n")
    config, _ = parse_run(["--method", "vae", "--data", "digits", "--config", a, "--config", b])
    assert config["model"]["init_args"]["latent_dim"] == 6 and config["model"]["init_args"]["hidden"] == [16]
    assert config["trainer"]["max_epochs"] == 3 and config["trainer"]["accelerator"] == "cpu"
    # the command line's dotted options come after the files; --set after everything
    config, _ = parse_run(["--method", "vae", "--data", "digits", "--set", "model.latent_dim=8", "--config", a,
                           "--model.latent_dim", "7", "--config", b])
    assert config["model"]["init_args"]["latent_dim"] == 8


def test_print_config_prints_the_resolved_config_and_replaying_it_names_the_same_run(tmp_path, capsys):
    argv = ["run", "--method", "iwae", "--data", "digits", "--objective.k", "7", "--model.hidden", "[32]",
            "--out", str(tmp_path / "o")]
    assert main([*argv, "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = old_syntax("iwae", "digits", 0, sets=["objective.k=7", "model.hidden=[32]"])
    assert printed["objective"] == {"class_path": "iwae", "init_args": {"k": 7}}
    assert printed["model"]["init_args"]["latent_dim"] == 50  # every default filled in
    assert not (tmp_path / "o").exists()  # nothing ran
    saved = write(tmp_path / "printed.yaml", yaml.safe_dump(printed))
    replayed, _ = parse_run(["--config", saved])
    assert run_id(replayed) == run_id(expected)


def test_class_help_lists_the_init_args_with_types_and_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--model.help", "gaussian-vae"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "--model.latent_dim" in out and "int" in out and "default: 50" in out
    assert "input_shape" not in out  # injected, not an option
    with pytest.raises(SystemExit):
        main(["run", "--method", "iwae", "--objective.help", "iwae"])
    assert "preset iwae: 5" in capsys.readouterr().out  # the method's preset, not the signature's 1
    assert main(["run", "--model.help", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and "gaussian-vae" in err


def test_run_help_lists_the_sections_and_the_chosen_classes_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--method", "sbn-vimco", "--help"])
    out = capsys.readouterr().out
    for section in ("model: sbn", "objective: vimco", "optimizer: adam", "module: variational", "trainer"):
        assert section in out, section
    assert "--objective.init_args.k V, --objective.k V" in out and "--trainer.max_epochs" in out


@pytest.mark.parametrize("argv, expected", [
    (["--model.latnt_dim", "3"], r"model: unknown option\(s\) \['latnt_dim'\]; valid options: latent_dim, hidden"),
    (["--model.latent_dim", "abc"], r"model.latent_dim: expected int, got 'abc'"),
    (["--trainer.max_epoch", "3"], r"trainer: unknown option\(s\) \['max_epoch'\]"),
    (["--modle.latent_dim", "3"], r"unknown config section\(s\) \['modle'\]"),
    (["--model", "nope"], r"unknown model 'nope'.*choose one of: .*gaussian-vae"),
    (["--seed", "x"], r"seed"),
])
def test_bad_options_name_the_option_and_the_valid_ones(tmp_path, capsys, argv, expected):
    code = main(["run", "--method", "vae", "--data", "digits", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert __import__("re").search(expected, err), err
    assert not list(tmp_path.iterdir())


def test_a_full_import_path_names_a_class_as_a_short_name_does():
    config, _ = parse_run(["--method", "vae", "--data", "digits", "--model",
                           "dgm_modules.models.gaussian_vae.GaussianVAE", "--model.latent_dim", "3"])
    assert config["model"]["class_path"] == "dgm_modules.models.gaussian_vae.GaussianVAE"  # kept as given, as before
    assert config["model"]["init_args"]["latent_dim"] == 3 and list(config["model"]["init_args"]["hidden"]) == [200, 200]


def test_top_level_help_imports_neither_torch_nor_lightning():
    code = ("import sys\nfrom benchmarks.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'jsonargparse'))\n"
            "print('HEAVY', heavy)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    assert "run " in out and "matrix " in out  # the commands are listed
    assert out.strip().splitlines()[-1] == "HEAVY []", out


def test_the_resolved_config_is_beside_the_run_before_training(tmp_path):
    """A callback looks for OUT/<run-id>/config.yaml when fit starts: there, and equal to the config."""
    import lightning as L

    from benchmarks.run import run_cell

    config, _ = parse_run(["--method", "vae", "--data", "digits", "--model.latent_dim", "2", "--model.hidden", "[8]",
                           "--module.eval_k", "[1]", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
                           "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                           "--trainer.limit_test_batches", "1"])
    seen = {}

    class Look(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            path = tmp_path / run_id(config) / "config.yaml"
            seen["config"] = yaml.safe_load(path.read_text()) if path.exists() else None

    record = run_cell(config, tmp_path, callbacks=[Look()])
    assert record["status"] == "completed"
    assert seen["config"] is not None, "config.yaml was not written before training"
    replayed = resolve_config(seen["config"]["method"], seen["config"]["data"], seen["config"]["seed"], seen["config"])
    assert run_id(replayed) == record["run_id"]


def test_reproduce_reads_config_files_of_overrides_for_every_cell(tmp_path, capsys):
    bad = write(tmp_path / "bad.yaml", "model: {latnt_dim: 2}\n")
    assert main(["reproduce", "iwae-table1", "--budget", "smoke", "--config", bad, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert r"unknown option(s) ['latnt_dim']" in err and "latent_dim" in err, err
    assert not (tmp_path / "o").exists()
