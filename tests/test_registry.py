"""Registration: decorators in each component's file, presets read from YAML, `methods: all` in a
spec, and an outside distribution's `dgm_bench.plugins` entry point showing in `dgm-bench list`."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from benchmarks.curves import resolve_curve
from benchmarks.matrix import load_spec
from dgm_modules.evaluation.log_likelihood import LogLikelihoodEvaluator
from dgm_modules.objectives.functional import vimco_leave_one_out
from dgm_modules.presets import MethodPreset, load_presets
from dgm_modules.registry import METHODS, MODELS, OBJECTIVES, ConfigError, check_k, check_ks

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, extra_path: Path | None = None) -> str:
    path = os.pathsep.join(p for p in (str(extra_path or ""), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": path}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_registries_fill_themselves_without_the_components_module():
    # a fresh interpreter that never imports dgm_modules.components still sees every component
    out = _python("import sys; from dgm_modules.registry import MODELS, OBJECTIVES, METHODS\n"
                  "print(len(MODELS.names()), len(OBJECTIVES.names()), len(METHODS.names()),"
                  " 'dgm_modules.components' in sys.modules)")
    assert out.split() == [str(len(MODELS.names())), str(len(OBJECTIVES.names())), str(len(METHODS.names())),
                           "False"]
    assert {"gaussian-vae", "sbn", "linear-gaussian", "gan"} <= set(MODELS.names())
    assert {"elbo", "iwae", "rws", "relax", "beta-elbo"} <= set(OBJECTIVES.names())


def test_every_component_is_registered_in_its_own_file():
    for registry in (MODELS, OBJECTIVES):
        for name, cls in registry.items():
            source = Path(sys.modules[cls.__module__].__file__).read_text()
            assert f'@{"MODELS" if registry is MODELS else "OBJECTIVES"}.register("{name}")' in source, name


def test_presets_come_from_yaml_and_name_registered_components():
    assert len(METHODS.names()) >= 27
    iwae = METHODS.get("iwae")
    assert iwae == MethodPreset("Gaussian VAE trained by the importance-weighted bound L_5", "gaussian-vae",
                                {"class_path": "iwae", "init_args": {"k": 5}},
                                citation="Burda, Grosse & Salakhutdinov 2016")
    # YAML 1.1 pitfall the file's floats avoid: 2e-4 would load as a string
    assert METHODS.get("gan").optimizer == {"class_path": "adam", "init_args": {"lr": 0.0002, "betas": [0.5, 0.999]}}
    assert METHODS.get("sbn-gumbel").model["init_args"]["anneal_rate"] == pytest.approx(3e-5)
    for name, preset in METHODS.items():
        for spec, registry in ((preset.model, MODELS), (preset.objective, OBJECTIVES)):
            registry.get(spec if isinstance(spec, str) else spec["class_path"], name)


def test_a_preset_file_with_an_unknown_key_names_the_file_and_the_method(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("my-vae: {description: x, model: gaussian-vae, objective: elbo, optimiser: adam}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: method 'my-vae'.*optimiser"):
        load_presets(bad)


def test_a_spec_may_say_methods_all(tmp_path):
    spec = tmp_path / "all.yaml"
    spec.write_text("name: all\nmethods: all\ndatasets: [digits]\nseeds: [0]\n"
                    "exclude: [{method: [gan, dcgan]}]\n")
    _, cells = load_spec(spec)
    assert sorted(c.method for c in cells) == sorted(set(METHODS.names()) - {"gan", "dcgan"})


def _plugin(root: Path) -> None:
    """A throwaway distribution on sys.path: a module registering an objective and a method, and the
    .dist-info whose entry_points.txt names it (what `pip install` of a plugin would leave)."""
    (root / "demo_dgm_plugin.py").write_text(textwrap.dedent('''
        from dgm_modules.objectives.elbo import ELBO
        from dgm_modules.presets import MethodPreset
        from dgm_modules.registry import METHODS, OBJECTIVES

        @OBJECTIVES.register("demo-elbo")
        class DemoELBO(ELBO):
            """The ELBO under another name."""

        METHODS.register("demo-vae")(MethodPreset("a plugin's VAE", "gaussian-vae", "demo-elbo",
                                                  citation="Demo 2026"))
    '''))
    info = root / "demo_dgm_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-dgm-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dgm_bench.plugins]\ndemo = demo_dgm_plugin\n")


def test_an_installed_plugins_methods_appear_in_dgm_bench_list(tmp_path):
    _plugin(tmp_path)
    out = _python("import sys; from benchmarks.cli import main; sys.exit(main(['list']))", tmp_path)
    assert "demo-vae" in out and "a plugin's VAE [Demo 2026]" in out
    assert "demo-elbo" in out.split("objectives:")[1]
    # and it trains like a built-in: resolve and build the plugin's method
    out = _python("from benchmarks.config import resolve_config\n"
                  "c = resolve_config('demo-vae', 'digits', 0, {})\nprint(c['objective']['class_path'])", tmp_path)
    assert out.strip() == "demo-elbo"


def test_a_broken_plugin_fails_naming_its_distribution(tmp_path):
    _plugin(tmp_path)
    (tmp_path / "demo_dgm_plugin.py").write_text("raise ImportError('missing dependency foo')\n")
    path = os.pathsep.join((str(tmp_path), str(REPO)))
    done = subprocess.run([sys.executable, "-c", "from dgm_modules.registry import MODELS; MODELS.names()"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}, timeout=300)
    assert done.returncode != 0
    assert "demo-dgm-plugin (demo = demo_dgm_plugin) failed to load" in done.stderr
    assert "missing dependency foo" in done.stderr


@pytest.mark.parametrize("option, build", [
    ("objective.k", lambda: OBJECTIVES.get("iwae")(k=0)),
    ("objective.k", lambda: OBJECTIVES.get("vimco")(k=1)),  # leave-one-out baselines need two samples
    ("objective.k", lambda: vimco_leave_one_out(torch.zeros(1, 3))),
    ("module.val_k", lambda: LogLikelihoodEvaluator([1, 0], option="module.val_k")),
    ("module.eval_k", lambda: LogLikelihoodEvaluator([], option="module.eval_k")),
    ("curve.k", lambda: resolve_curve({"k": 2.5})),
])
def test_every_number_of_samples_is_checked_by_one_rule_naming_its_option(option, build):
    with pytest.raises(ConfigError, match=rf"^{re.escape(option)} must be .*integers? >= [12]"):
        build()


def test_check_k_accepts_integers_and_sorts_lists():
    assert check_k(5, "objective.k") == 5 and check_k(2.0, "objective.k") == 2
    for bad in (True, 0, 2.5, "3", None):
        with pytest.raises(ConfigError, match="objective.k must be an integer >= 1"):
            check_k(bad, "objective.k")
    assert check_ks([5000, 1, 5, 1], "module.eval_k") == [1, 5, 5000]
