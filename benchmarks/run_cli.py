"""``dgm-bench run`` on jsonargparse, with LightningCLI's conventions.

``--config`` files merge in order, key by key; ``--model.latent_dim 20`` (short for
``--model.init_args.latent_dim``) and ``--model sbn`` (short for ``--model.class_path sbn``) override
them; ``--print_config`` prints the fully resolved config and exits; ``--model.help NAME`` lists a
class's init args. ``--set a.b=v`` and ``--max-epochs N`` are kept as aliases that become dotted
options (applied last, as before). The parser only carries the options; the registry checks them
(``benchmarks.config.resolve_config``), so messages name the option and the valid choices, and a
config reaches the same resolved form, fingerprint and run id whichever way it was written.

Unset options hold :data:`UNSET` and are dropped after parsing: what reaches ``resolve_config`` is
exactly what was given, as before jsonargparse.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from benchmarks.cli import EXTEND_HELP
from dgm_modules.registry import ConfigError

COMPONENTS = ("data", "model", "objective", "optimizer", "module")
#: optional top-level sections: ``true`` or a mapping (benchmarks/callbacks.py, curves.py, ais.py, resume.py)
OPTIONAL = ("gradvar", "curve", "early_stopping", "ais", "checkpoint")
#: values a component receives from elsewhere (benchmarks.config.INJECTED, without importing Lightning)
INJECTED = {"data": ("seed",), "model": ("input_shape",), "module": ("model", "objective", "optimizer"),
            "optimizer": ("params",), "objective": ()}
TRAINER_RESERVED = ("logger", "callbacks", "default_root_dir", "enable_checkpointing", "use_distributed_sampler")
UNSET = "<unset>"
#: run's own options that are not part of the config
CLI_ONLY = ("config", "print_config", "out", "wandb", "debug", "extend_from")


def registry(section: str):
    if section == "data":
        from datamodules import DATAMODULES

        return DATAMODULES
    from dgm_modules import components

    return {"model": components.MODELS, "objective": components.OBJECTIVES, "optimizer": components.OPTIMIZERS,
            "module": components.MODULES, "method": components.METHODS}[section]


# -- phase 1: read the config files and the command line for the keys they name ---------------------
@dataclass
class Given:
    """What the command line and config files name, so the parser can be built to accept it."""

    argv: list[str] = field(default_factory=list)
    keys: set[tuple[str, ...]] = field(default_factory=set)  # dotted paths, leaves
    sections: set[str] = field(default_factory=set)  # optional sections given (even empty)
    classes: dict[str, str] = field(default_factory=dict)  # section -> last class_path given
    method: str | None = None
    help_for: tuple[str, str | None] | None = None  # --model.help NAME


def normalise_file(data: dict, where: str) -> dict:
    """Shorthands of a config file in the full form: ``model: sbn`` -> class_path, ``model: {k: v}``
    -> init_args, ``curve: true`` -> ``curve: {}``."""
    out = {}
    for section, value in data.items():
        if section in COMPONENTS:
            if isinstance(value, str):
                value = {"class_path": value}
            elif isinstance(value, dict) and not ({"class_path", "init_args"} & set(value)):
                value = {"init_args": value}
            elif not isinstance(value, dict):
                raise ConfigError(f"{where}: {section}: expected a name or a mapping with 'class_path' and "
                                  f"'init_args', got {value!r}")
            extra = sorted(set(value) - {"class_path", "init_args"})
            if extra:
                raise ConfigError(f"{where}: {section}: unknown key(s) {extra}; expected 'class_path' and 'init_args'")
            if not isinstance(value.get("init_args") or {}, dict):
                raise ConfigError(f"{where}: {section}.init_args: expected a mapping, got {value['init_args']!r}")
        elif section in OPTIONAL and value is True:
            value = {}
        elif section == "trainer" and not isinstance(value, dict):
            raise ConfigError(f"{where}: trainer: expected a mapping of Trainer options, got {value!r}")
        out[section] = value
    return out


def _note(given: Given, data: dict) -> None:
    for section, value in data.items():
        if section in COMPONENTS:
            if "class_path" in value:
                given.classes[section] = value["class_path"]
                given.keys.add((section, "class_path"))
            given.keys.update((section, "init_args", k) for k in (value.get("init_args") or {}))
        elif isinstance(value, dict) and (section in OPTIONAL or section == "trainer"):
            given.keys.update((section, k) for k in value)
            given.sections.add(section)
        else:
            given.keys.add((section,))
            if section == "method" and isinstance(value, str):
                given.method = value


def _dotted(option: str) -> tuple[str, ...]:
    """``--model.latent_dim`` -> ``("model", "init_args", "latent_dim")``; ``--model`` -> class_path."""
    path = tuple(option[2:].split("."))
    if path[0] in COMPONENTS:
        if len(path) == 1:
            return (path[0], "class_path")
        if path[1] not in ("class_path", "init_args", "help"):
            return (path[0], "init_args", *path[1:])
    return path


def _set_alias(item: str) -> tuple[tuple[str, ...], str]:
    """``--set objective.k=50`` as the dotted option ``--objective.init_args.k`` with its value (YAML,
    as before; passed on in a form jsonargparse reads back as the same value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. objective.k=50")
    value = yaml.safe_load(raw) if raw else ""
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).removesuffix(
        "\n...\n").strip()
    return _dotted("--" + key), text


def prescan(argv: list[str]) -> Given:
    """Rewrite the aliases into jsonargparse's dotted options and note every key named."""
    from benchmarks.config import load_yaml

    given, tail, sets = Given(), [], []
    i = 0
    while i < len(argv):
        token = argv[i]
        option, eq, inline = token.partition("=")
        takes_value = option.startswith("--") and option not in ("--print_config", "--help", "--debug", "--wandb")
        following = argv[i + 1] if takes_value and i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
        value = inline if eq else following
        step = 1 if eq or value is None else 2
        if option.endswith(".help") and option[2:-5] in COMPONENTS:
            given.help_for = (option[2:-5], value)
        elif not option.startswith("--") or not takes_value or value is None:
            given.argv.append(token)
        elif option == "--config":
            data = normalise_file(load_yaml(value), value)
            _note(given, data)
            given.argv += ["--config", yaml.safe_dump(data, default_flow_style=True)]
        elif option == "--set":
            sets.append(_set_alias(value))
        elif option == "--max-epochs":
            tail.append((("trainer", "max_epochs"), value))
        elif option in ("--out", "--seed", "--extend-from"):
            given.argv += [option, value]
        else:
            path = _dotted(option)
            given.argv += ["--" + ".".join(path), value]
            _note_path(given, path, value)
        i += step
    for path, value in tail + sets:  # after everything else, as before: --set wins
        given.argv += ["--" + ".".join(path), value]
        _note_path(given, path, value)
    return given


def _note_path(given: Given, path: tuple[str, ...], value: str) -> None:
    given.keys.add(path)
    if len(path) == 2 and path[1] == "class_path":
        given.classes[path[0]] = value
    elif path == ("method",):
        given.method = value
    elif path[0] in OPTIONAL:
        given.sections.add(path[0])


# -- phase 2: the jsonargparse parser for this method and these classes --------------------------------
def init_params(cls: Any, injected: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``(name, type hint, default)`` of the options a class takes; ``**kwargs`` follow its bases."""
    targets = [c.__init__ for c in cls.__mro__ if "__init__" in vars(c)] if inspect.isclass(cls) else [cls]
    out: dict[str, tuple[str, Any, Any]] = {}
    for target in targets:
        sig = inspect.signature(target)
        try:
            hints = typing.get_type_hints(target)
        except Exception:  # unresolvable forward references: show no type
            hints = {}
        for name, p in sig.parameters.items():
            if name not in ("self", *injected) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.setdefault(name, (name, hints.get(name, p.annotation), p.default))
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return list(out.values())


def describe(hint: Any) -> str:
    if hint is inspect.Parameter.empty:
        return "any"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    text = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
    return text or str(hint).replace("typing.", "").replace("collections.abc.", "")


def default_text(default: Any) -> str:
    return "required" if default is inspect.Parameter.empty else f"default: {default!r}"


def class_help(section: str, name: str | None, method: str | None = None) -> str:
    """``--model.help gaussian-vae``: the init args of that class, with types and defaults."""
    reg = registry(section)
    if not name:
        raise ConfigError(f"--{section}.help: name a class, e.g. --{section}.help {reg.names()[0]}; "
                          f"choose one of: {', '.join(reg.names())}")
    cls = reg.get(name, f"--{section}.help")
    preset = preset_init_args(method, section, name)
    lines = [f"{section} {name!r} ({cls.__module__}.{cls.__qualname__}): "
             + ((cls.__doc__ or "").strip().splitlines() or [""])[0],
             f"init args (set with --{section}.NAME VALUE or {section}: {{init_args: {{NAME: VALUE}}}}):"]
    for pname, hint, default in init_params(cls, INJECTED[section]):
        shown = f"preset {method}: {preset[pname]!r}" if pname in preset else default_text(default)
        lines.append(f"  --{section}.{pname:<22} {describe(hint)}  ({shown})")
    return "\n".join(lines)


def preset_init_args(method: str | None, section: str, class_path: str) -> dict:
    """The preset's init_args of ``section`` when it names this class (a method preset's defaults)."""
    if method is None or section == "data":
        return {}
    try:
        preset = registry("method").get(method)
    except ConfigError:
        return {}
    spec = getattr(preset, section)
    spec = {"class_path": spec, "init_args": {}} if isinstance(spec, str) else spec
    return dict(spec.get("init_args") or {}) if spec.get("class_path") == class_path else {}


def preset_class(method: str | None, section: str) -> str | None:
    if method is None or section == "data":
        return None
    try:
        spec = getattr(registry("method").get(method), section)
    except ConfigError:
        return None
    return spec if isinstance(spec, str) else spec.get("class_path")


DESCRIPTION = """Train and score one (method, dataset, seed) cell.

Options come from, in order: the method's preset, each --config file (merged key by key), then the
dotted options on the command line. Components are named LightningCLI's way: --model sbn or
--model.class_path sbn (a registered short name or a full import path), --model.latent_dim 20 or
--model.init_args.latent_dim 20. --model.help NAME lists a class's init args; with --method the
sections below list the preset classes' options. --print_config prints the resolved config."""


def build_run_parser(given: Given):
    from jsonargparse import ActionConfigFile, ArgumentParser

    from benchmarks.wandb_log import MODES

    usage = ("dgm-bench run [--method NAME] [--data NAME] [--config FILE ...] [--SECTION.OPTION VALUE ...] "
             "[--print_config] [--out DIR] [--seed N]")
    parser = ArgumentParser(prog="dgm-bench run", usage=usage, description=DESCRIPTION, print_config=None,
                            exit_on_error=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="a YAML config file (sections as in --print_config; repeatable: later files override "
                             "earlier ones key by key)")
    parser.add_argument("--print_config", action="store_true", help="print the fully resolved config as YAML and exit")
    parser.add_argument("--method", type=typing.Optional[str], default=None, help="a registered method (dgm-bench list)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--setting", type=Any, default=UNSET, help="a label of this configuration (default: default)")
    parser.add_argument("--out", type=str, default="runs", help="output folder (default: runs)")
    parser.add_argument("--wandb", nargs="?", const="offline", default="disabled", choices=MODES,
                        help="log the cell as a Weights & Biases run in the group 'run' (bare --wandb: offline)")
    parser.add_argument("--debug", action="store_true", help="on an error, print the full traceback")
    parser.add_argument("--extend-from", metavar="DIR", help=EXTEND_HELP)
    parser.add_argument("--set", metavar="KEY=VALUE", help="alias of the dotted option --KEY VALUE (repeatable; "
                                                          "applied after the others)")
    parser.add_argument("--max-epochs", metavar="N", help="alias of --trainer.max_epochs N")
    declared: set[tuple[str, ...]] = {("method",), ("seed",), ("setting",)}

    for section in COMPONENTS:
        reg = registry(section)
        name = given.classes.get(section) or preset_class(given.method, section)
        group = parser.add_argument_group(f"{section}" + (f": {name}" if name else ""),
                                          f"choose with --{section} NAME ({', '.join(reg.names())}) or an import "
                                          f"path; --{section}.help NAME lists a class's options")
        group.add_argument(f"--{section}.class_path", type=Any, default=UNSET, metavar="NAME",
                           help=f"the {section} class")
        group.add_argument(f"--{section}.help", metavar="NAME", help=f"list the init args of the {section} class NAME and exit")
        declared.add((section, "class_path"))
        params = []
        if isinstance(name, str):
            try:
                params = init_params(reg.get(name), INJECTED[section])
            except ConfigError:
                pass  # an unknown class: resolve_config names it with the valid choices
        preset = preset_init_args(given.method, section, name) if isinstance(name, str) else {}
        for pname, hint, default in params:
            shown = f"preset: {preset[pname]!r}" if pname in preset else default_text(default)
            group.add_argument(f"--{section}.init_args.{pname}", f"--{section}.{pname}", type=Any, default=UNSET,
                               metavar="V", help=f"{describe(hint)} ({shown})")
            declared.add((section, "init_args", pname))

    trainer = parser.add_argument_group("trainer", "lightning.Trainer options (set by dgm-bench unless given: "
                                                   "max_epochs 10, accelerator auto, devices 1, log_every_n_steps 50)")
    import lightning as L

    for pname, hint, default in init_params(L.Trainer):
        if pname not in TRAINER_RESERVED:
            trainer.add_argument(f"--trainer.{pname}", type=Any, default=UNSET, metavar="V",
                                 help=f"{describe(hint)} ({default_text(default)})")
            declared.add(("trainer", pname))
    extra = parser.add_argument_group("optional sections and other keys given",
                                      f"{', '.join(OPTIONAL)}: true or a mapping (see the README)")
    for path in sorted(given.keys - declared):
        if path[-1] == "help":
            continue
        # keys no class declares are passed on, so that the registry refuses them by name
        extra.add_argument("--" + ".".join(path), type=Any, default=UNSET, metavar="V")
        declared.add(path)
    return parser


def strip_unset(value: Any) -> Any:
    """Drop unset options, and the sections left empty by that (a given ``{}`` value stays)."""
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        if isinstance(v, str) and v == UNSET:
            continue
        stripped = strip_unset(v)
        if isinstance(v, dict) and v and not stripped:
            continue
        out[k] = stripped
    return out


def overrides_of(namespace: Any, given: Given) -> dict:
    """The options given (config files and command line), as ``resolve_config`` takes them."""
    tree = namespace.as_dict()
    for key in CLI_ONLY + ("set", "max-epochs", "max_epochs"):
        tree.pop(key, None)
    for section in COMPONENTS:
        if isinstance(tree.get(section), dict):
            tree[section].pop("help", None)
    over = strip_unset(tree)
    for section in given.sections & set(OPTIONAL):  # given, even as `curve: true`: the section is on
        over.setdefault(section, {})
    return over


def parse_run(argv: list[str]) -> tuple[dict, argparse.Namespace]:
    """``(resolved config, the run's own options)``; ``--model.help`` and ``--help`` print and exit."""
    from benchmarks.config import resolve_config

    given = prescan(argv)
    if given.help_for is not None:  # --model.help alone: the class the method or config chose
        section, name = given.help_for
        name = name or given.classes.get(section) or preset_class(given.method, section)
        print(class_help(section, name, method=given.method))
        raise SystemExit(0)
    parser = build_run_parser(given)
    try:
        namespace = parser.parse_args(given.argv)
    except argparse.ArgumentError as err:
        raise ConfigError(f"run: {' '.join(str(err).split())}") from None
    over = overrides_of(namespace, given)
    method, data = over.pop("method", None), over.pop("data", None)
    seed = over.pop("seed", namespace.seed)
    if method is None or not isinstance(data, dict) or "class_path" not in data:
        raise ConfigError("run: --method and --data are required (or give them in --config)")
    config = resolve_config(method, {"class_path": data["class_path"], "init_args": data.get("init_args", {})},
                            seed, over)
    options = argparse.Namespace(out=namespace.out, wandb=namespace.wandb, print_config=namespace.print_config,
                                 extend_from=namespace.extend_from)
    return config, options


def cmd_run(argv: list[str]) -> int:
    from benchmarks import signals

    config, options = parse_run(argv)
    if options.print_config:
        from benchmarks.records import config_yaml

        sys.stdout.write(config_yaml(config))
        return 0
    from benchmarks.validate import check_config, check_out_dir
    from benchmarks.wandb_log import run_cell_logged

    signals.install()
    check_out_dir(options.out)
    check_config(config, data=False)  # what building finds, before training (run_cell checks the data)
    if options.extend_from:
        from benchmarks.extend import extend_cells
        from benchmarks.matrix import Cell

        cell = Cell(config["method"], config["data"]["class_path"], config["seed"], config.get("setting", "default"),
                    config)
        extend_cells([cell], options.out, options.extend_from)
    record = run_cell_logged(config, options.out, options.wandb, group="run", enable_progress_bar=sys.stderr.isatty())
    print(json.dumps({k: record.get(k) for k in ("run_id", "status", "metrics", "epochs", "wall_time_s", "error")},
                     indent=2, default=str))
    from pathlib import Path

    if (Path(options.out) / record["run_id"] / "record.json").exists():  # a full disk may have kept it from being written
        print(f"record: {Path(options.out) / record['run_id'] / 'record.json'}")
    if signals.requested():
        return signals.exit_code(signals.requested())
    return 0 if record["status"] == "completed" else 1
