"""Data a binary protocol cannot use (NaN, inf, values outside [0, 1]) is refused when the data is
set up, in one line naming the dataset and its folder: before training, never as a bernoulli error
or a NaN loss some steps in."""
import signal

import numpy as np
import pytest

from benchmarks.cli import main

#: a user's own DataModule reading pixels.npy, as a spec's ``data: {class_path: module.Class}`` names it
MODULE = '''
import numpy as np
import torch

from datamodules.base import TensorDataModule


class NpyPixels(TensorDataModule):
    """8x8 intensities from pixels.npy: the first 300 rows are the test split."""

    name = "npy-pixels"

    def __init__(self, *, val_size: int = 100, batch_size: int = 50, **kwargs) -> None:
        super().__init__(val_size=val_size, batch_size=batch_size, **kwargs)

    @property
    def dims(self):
        return (1, 8, 8)

    def load_splits(self):
        x = torch.from_numpy(np.load(self.data_dir / "pixels.npy")).view(-1, 1, 8, 8)
        return {"train": (x[300:], None), "test": (x[:300], None)}
'''
TINY = ["--set", "model.latent_dim=2", "--set", "model.hidden=[16]", "--set", "module.eval_k=[1]",
        "--set", "module.val_k=[1]", "--set", "trainer.max_epochs=1", "--set", "trainer.accelerator=cpu"]


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture
def pixels(tmp_path, monkeypatch):
    """A folder with pixels.npy (uniform in [0, 1], float32) and the module that reads it, importable."""
    (tmp_path / "npy_pixels_module.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = tmp_path / "data"
    data.mkdir()
    x = np.random.default_rng(0).random((800, 64), dtype=np.float32)
    return data, x


def run(capsys, data, *extra):
    out = data.parent / "out"
    code = main(["run", "--method", "vae", "--data", "npy_pixels_module.NpyPixels", "--out", str(out),
                 "--set", f"data.data_dir={data}", *TINY, *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err.strip().splitlines(), out


def test_clean_data_trains(pixels, capsys):
    data, x = pixels
    np.save(data / "pixels.npy", x)
    code, _, out = run(capsys, data)
    assert code == 0 and len(list(out.glob("*/record.json"))) == 1


@pytest.mark.parametrize("value, split, index", [(np.nan, "test", 17), (np.inf, "train", 450), (-np.inf, "test", 0)])
def test_a_non_finite_value_is_a_one_line_error_naming_the_dataset_before_training(pixels, capsys, value, split, index):
    data, x = pixels
    x[index, 5] = value
    np.save(data / "pixels.npy", x)
    code, lines, out = run(capsys, data)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"dgm-bench: error: npy-pixels (npy_pixels_module.NpyPixels, data in {data}): {split} split "
                               "holds 1 NaN or infinite value(s)"), lines[0]
    assert not list(out.glob("*/record.json")), "a cell trained on the bad data"


@pytest.mark.parametrize("binarization", ["dynamic", "fixed"])
def test_values_outside_0_1_are_refused_under_a_bernoulli_protocol(pixels, capsys, binarization):
    data, x = pixels
    np.save(data / "pixels.npy", x * 255)  # unscaled grey levels
    code, lines, _ = run(capsys, data, "--set", f"data.binarization={binarization}")
    assert code == 2 and len(lines) == 1, lines
    assert "train split holds values in [" in lines[0] and f"binarization='{binarization}'" in lines[0], lines[0]
    assert "needs [0, 1]" in lines[0]


def test_a_matrix_names_the_spec_and_cell_of_the_bad_data(pixels, capsys, tmp_path):
    data, x = pixels
    x[3, 3] = np.nan
    np.save(data / "pixels.npy", x)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
methods: [vae]
datasets: [digits, npy_pixels_module.NpyPixels]
overrides:
  model: {{latent_dim: 2, hidden: [16]}}
  module: {{eval_k: [1], val_k: [1]}}
  trainer: {{max_epochs: 1, accelerator: cpu}}
cells:
  - match: {{dataset: npy_pixels_module.NpyPixels}}
    overrides: {{data: {{data_dir: {data}}}}}
""")
    out = tmp_path / "out"
    code = main(["matrix", str(spec), "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines[-1].startswith(f"dgm-bench: error: {spec}: cell npy_pixels_module.NpyPixels/vae/default/seed0: "
                                              "data: npy-pixels"), lines
    assert "test split holds 1 NaN" in lines[-1]
    assert not out.exists() or not any(out.iterdir()), "the digits cell trained before the bad data was found"
