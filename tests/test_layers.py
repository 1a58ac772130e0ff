"""Imports run one way: datamodules and networks -> models -> objectives -> evaluation -> methods ->
benchmarks. Checked twice: statically on every module-level import, and by importing each layer
in a fresh interpreter and finding no module of a higher layer loaded."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dgm_modules", "datamodules", "benchmarks")
#: prefix -> layer; the longest matching prefix wins. Layer 0 (registry, presets) imports no component.
LAYERS = {"dgm_modules": 0, "dgm_modules.registry": 0, "dgm_modules.presets": 0,
          "datamodules": 1, "dgm_modules.networks": 1, "dgm_modules.models": 2, "dgm_modules.objectives": 3,
          "dgm_modules.evaluation": 4, "dgm_modules.methods": 5, "dgm_modules.components": 5, "benchmarks": 6}


def layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` of the project's imports in ``path``
    (``if TYPE_CHECKING:`` blocks skipped: they never run)."""
    found: list[tuple[str, int, bool]] = []
    known = modules()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, not in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                # `from dgm_modules import components` imports the module dgm_modules.components
                found.extend((f"{child.module}.{a.name}" if f"{child.module}.{a.name}" in known else child.module,
                              child.lineno, not in_function) for a in child.names)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return [f for f in found if f[0].split(".")[0] in PACKAGES]


def test_no_import_reaches_a_higher_layer():
    wrong = [f"{name}:{line} imports {target} (layer {layer(target)} > {layer(name)})"
             for name, path in modules().items() for target, line, _ in imports(path)
             if layer(target) > layer(name)]
    assert not wrong, "\n".join(wrong)


def test_the_model_packages_hold_no_import_inside_a_function():
    # a function-level import between the project's modules is how a cycle hides; benchmarks may
    # still defer imports to keep `dgm-bench --help` fast
    hidden = [f"{name}:{line} imports {target} inside a function"
              for name, path in modules().items() if not name.startswith("benchmarks")
              for target, line, top in imports(path) if not top]
    assert not hidden, "\n".join(hidden)


def test_the_layer_table_covers_every_package_module():
    assert {layer(m) for m in modules()} == set(range(7))
    assert layer("dgm_modules.objectives.elbo") == 3 and layer("dgm_modules.registry") == 0


@pytest.mark.parametrize("level", range(7))
def test_importing_a_layer_in_a_fresh_interpreter_loads_nothing_above_it(level):
    names = [m for m in modules() if layer(m) == level]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            f"print('\\n'.join(m for m in sys.modules if m.split('.')[0] in {PACKAGES!r}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert set(names) <= set(loaded)
    above = sorted(m for m in loaded if layer(m) > level)
    assert not above, f"importing layer {level} loaded {above}"
