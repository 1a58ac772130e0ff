"""A matrix (or a run) is checked whole before anything trains: one-line errors, exit code 2."""

import pytest

from benchmarks.cli import main

BASE = """
methods: [vae, iwae]
datasets: [digits]
seeds: [0]
overrides:
  model: {latent_dim: 2, hidden: [16]}
  module: {eval_k: [1], val_k: [1]}
  trainer: {max_epochs: 1, accelerator: cpu}
"""


pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()[-1] if err.strip() else ""


@pytest.mark.parametrize("extra, expected", [
    ("cells:\n  - match: {method: iwae}\n    overrides: {objective: {k: 0}}",
     "cell digits/iwae/default/seed0: objective.k must be an integer >= 1, got 0"),
    ("cells:\n  - match: {method: iwae}\n    overrides: {model: sbn, objective: iwae}",
     "objective 'iwae' cannot train a model with 'bernoulli' latents"),
    ("seeds: [0, -1]", "cell digits/vae/default/seed-1: seed: expected an integer in [0, 4294967295], got -1"),
    ("datasets: [digits, binarized-mnist]\ncells:\n  - match: {dataset: binarized-mnist}\n"
     "    overrides: {data: {data_dir: NODATA}}", "binarized-mnist: expected file(s) not found: binarized_mnist_train.amat"),
    ("cells:\n  - match: {method: iwae}\n    overrides: {trainer: {devices: abc}}",
     "cell digits/iwae/default/seed0: trainer: `devices`"),
])
def test_a_bad_cell_anywhere_stops_the_matrix_before_the_first_cell_trains(tmp_path, capsys, extra, expected):
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE + extra.replace("NODATA", str(tmp_path / "nodata")) + "\n")
    out = tmp_path / "out"
    code, line = run_cli(capsys, "matrix", spec, "--out", out)
    assert code == 2
    assert line.startswith(f"dgm-bench: error: {spec}: ") and expected in line, line
    assert not out.exists() or not any(out.iterdir()), "a cell was trained before the spec was checked"


def test_a_spec_path_that_does_not_exist_is_an_error_not_the_shipped_spec(tmp_path, capsys):
    code, line = run_cli(capsys, "matrix", "/no/such/dir/digits.yaml", "--out", tmp_path / "out")
    assert code == 2 and "/no/such/dir/digits.yaml: not found" in line and "digits.yaml" in line
    assert not (tmp_path / "out").exists()


def test_a_folder_or_binary_spec_is_a_one_line_error(tmp_path, capsys):
    code, line = run_cli(capsys, "matrix", tmp_path, "--out", tmp_path / "out")
    assert code == 2 and f"{tmp_path}: is a folder" in line
    binary = tmp_path / "spec.yaml"
    binary.write_bytes(bytes(range(256)))
    code, line = run_cli(capsys, "matrix", binary, "--out", tmp_path / "out")
    assert code == 2 and f"{binary}: not a text (YAML) file" in line


def test_out_naming_a_file_is_refused(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE)
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    code, line = run_cli(capsys, "matrix", spec, "--out", taken)
    assert code == 2 and f"--out {taken} is a file" in line
    code, line = run_cli(capsys, "run", "--method", "vae", "--data", "digits", "--out", taken)
    assert code == 2 and f"--out {taken} is a file" in line


def test_run_with_a_wrong_typed_trainer_option_is_one_line_and_trains_nothing(tmp_path, capsys):
    code, line = run_cli(capsys, "run", "--method", "vae", "--data", "digits", "--out", tmp_path / "out",
                         "--set", "trainer.devices=abc", "--set", "trainer.accelerator=cpu")
    assert code == 2 and "trainer: `devices`" in line, line
    assert not (tmp_path / "out").exists()
