"""One validated registry per kind of component, and building components from config.

A component is named in config the way LightningCLI / jsonargparse name it::

    {"class_path": "iwae", "init_args": {"k": 50}}

where ``class_path`` is a registered short name or a full import path. ``init_args`` are
checked against the constructor's signature and type hints before anything is built, so a
typo or a wrong type fails with the option's name. Defaults live in one place: the signatures.

Components register themselves where they are defined (``@MODELS.register("gaussian-vae")`` on
the class). A registry imports its packages' modules, and the ``dgm_bench.plugins`` entry points
of installed distributions, the first time it is asked for its entries, so this module imports
no component and every layer may import it.
"""
from __future__ import annotations

import collections.abc
import importlib
import importlib.metadata
import inspect
import pkgutil
import types
import typing
from typing import Any, Callable, Generic, Literal, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid configuration, found before training starts; the message names the option."""


def section_options(section: str, options: Any, defaults: dict) -> dict:
    """A top-level config section (``curve``, ``early_stopping``, ``ais``) given as ``true`` or a
    mapping: unknown keys refused by name, every default filled in."""
    if options is True:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f"{section}: expected a mapping with keys {sorted(defaults)}, got {options!r}")
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(f"{section}: unknown option(s) {unknown}; valid options: {', '.join(sorted(defaults))}")
    return {**defaults, **options}


class Registry(Generic[T]):
    """Maps short names to classes (or factories) of one kind."""

    def __init__(self, kind: str, packages: tuple[str, ...] = (), plugins: bool = False) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._packages, self._plugins, self._loaded = packages, plugins, not (packages or plugins)

    def _load(self) -> None:
        """Import the modules that register into this registry (once, on first use)."""
        if self._loaded:
            return
        self._loaded = True  # first: a module imported below may query this registry
        for package in self._packages:
            import_package(package)
        if self._plugins:
            load_plugins()

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        if not name or name != name.strip().lower() or " " in name:
            raise ValueError(f"{self.kind} name {name!r} must be a lower-case word")

        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self):
        self._load()
        return sorted(self._entries.items())

    def get(self, name: str, option: str | None = None) -> Callable[..., T]:
        self._load()
        if name in self._entries:
            return self._entries[name]
        if "." in name:  # a full import path, as LightningCLI accepts
            module, _, attr = name.rpartition(".")
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as err:
                raise ConfigError(f"{option or self.kind}: cannot import {name!r} ({err})") from None
        raise ConfigError(f"unknown {self.kind} {name!r} ({option or self.kind}); "
                          f"choose one of: {', '.join(self.names())}")

    def name_of(self, obj: Any) -> str:
        self._load()
        for name, entry in self._entries.items():
            if entry is obj or (inspect.isclass(entry) and type(obj) is entry):
                return name
        cls = obj if inspect.isclass(obj) else type(obj)
        return f"{cls.__module__}.{cls.__qualname__}"


def import_package(package: str) -> None:
    """Import ``package`` and every module below it (their decorators register the components)."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        importlib.import_module(info.name)


#: the entry-point group an outside distribution declares to add components, e.g. in pyproject.toml
#: ``[project.entry-points."dgm_bench.plugins"] my-methods = "my_package.dgm_plugin"``
PLUGIN_GROUP = "dgm_bench.plugins"
_plugins_loaded = False


def load_plugins() -> None:
    """Import every installed ``dgm_bench.plugins`` entry point (once); a module registers on import,
    a function named by ``module:function`` is called. A broken plugin fails naming its distribution."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        where = f"{ep.dist.name if ep.dist else '?'} ({ep.name} = {ep.value})"
        try:
            obj = ep.load()
            if callable(obj) and not inspect.isclass(obj):
                obj()
        except Exception as err:
            raise ConfigError(f"{PLUGIN_GROUP} plugin {where} failed to load: {err!r}") from err


# One registry per kind of component, filled by the decorators in the named packages.
MODELS: Registry = Registry("model", ("dgm_modules.models",), plugins=True)
OBJECTIVES: Registry = Registry("objective", ("dgm_modules.objectives",), plugins=True)
MODULES: Registry = Registry("module", ("dgm_modules.methods",), plugins=True)
OPTIMIZERS: Registry = Registry("optimizer", ("dgm_modules.methods",), plugins=True)
#: named methods (:class:`dgm_modules.presets.MethodPreset`), read from dgm_modules/presets/*.yaml
METHODS: Registry = Registry("method", ("dgm_modules.presets",), plugins=True)


def check_k(k: Any, option: str, minimum: int = 1, why: str = "") -> int:
    """A number of samples (``objective.k``, ``module.eval_k``'s entries, ``curve.k``), checked by one rule
    for every option that sets one; the message names ``option``."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or k != int(k) or k < minimum:
        raise ConfigError(f"{option} must be an integer >= {minimum}{why}, got {k!r}")
    return int(k)


def check_ks(ks: Any, option: str) -> list[int]:
    """Sorted, distinct numbers of samples (``module.eval_k``), each by :func:`check_k`."""
    try:
        out = sorted({check_k(k, option) for k in ks})
    except (ConfigError, TypeError):
        out = []
    if not out:
        raise ConfigError(f"{option} must be a non-empty list of integers >= 1, got {ks!r}")
    return out


def normalise_spec(spec: Any, option: str) -> dict[str, Any]:
    """Accept ``"name"``, ``{"class_path": ..., "init_args": {...}}``; return the dict form."""
    if isinstance(spec, str):
        return {"class_path": spec, "init_args": {}}
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ConfigError(f"{option}: expected a name or a mapping with 'class_path' and 'init_args', got {spec!r}")
    extra = set(spec) - {"class_path", "init_args"}
    if extra:
        raise ConfigError(f"{option}: unknown key(s) {sorted(extra)}; expected 'class_path' and 'init_args'")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ConfigError(f"{option}.init_args: expected a mapping, got {init_args!r}")
    return {"class_path": spec["class_path"], "init_args": dict(init_args)}


def signature_defaults(fn: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword defaults of ``fn`` (a class: its ``__init__``), the single source of defaults."""
    params = inspect.signature(fn).parameters
    return {n: p.default for n, p in params.items()
            if n not in skip and p.default is not inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def resolve_init_args(fn: Callable[..., Any], init_args: dict[str, Any], option: str,
                      injected: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check ``init_args`` against ``fn``'s signature and hints; return them with defaults filled in."""
    params, hints = _parameters(fn)
    settable = [n for n in params if n not in injected]
    unknown = sorted(set(init_args) - set(settable))
    if unknown:
        raise ConfigError(f"{option}: unknown option(s) {unknown}; valid options: {', '.join(settable)}")
    out: dict[str, Any] = {}
    for name in settable:
        p = params[name]
        if name in init_args:
            out[name] = check_type(init_args[name], hints.get(name, Any), f"{option}.{name}")
        elif p.default is not inspect.Parameter.empty:
            out[name] = p.default
        else:
            raise ConfigError(f"{option}: missing required option {name!r}")
    return out


def _parameters(fn: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """Named parameters and type hints of ``fn``; a class's ``**kwargs`` follow its bases' ``__init__``."""
    targets = [c.__init__ for c in fn.__mro__ if "__init__" in vars(c)] if inspect.isclass(fn) else [fn]
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    for target in targets:
        sig = inspect.signature(target)
        for name, p in sig.parameters.items():
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(name, p)
        try:
            for name, hint in typing.get_type_hints(target).items():
                hints.setdefault(name, hint)
        except Exception:  # unresolvable forward references: no type checks for this level
            pass
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return params, hints


def check_type(value: Any, hint: Any, option: str) -> Any:
    """Validate (and lightly coerce: int -> float, list -> tuple) ``value`` against ``hint``."""
    ok, coerced = _match(value, hint)
    if not ok:
        raise ConfigError(f"{option}: expected {_describe(hint)}, got {value!r} ({type(value).__name__})")
    return coerced


def _match(value: Any, hint: Any) -> tuple[bool, Any]:
    if hint is Any or hint is inspect.Parameter.empty:
        return True, value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, v = _match(value, arg)
            if ok:
                return True, v
        return False, value
    if origin is Literal:
        return value in args, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False, value
        elem = args[0] if args else Any
        out = []
        for v in value:
            ok, c = _match(v, elem)
            if not ok:
                return False, value
            out.append(c)
        return True, tuple(out) if origin is tuple else list(out)
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    if inspect.isclass(hint):  # config values are plain data: a str is no Tensor or Module
        return isinstance(value, hint), value
    return True, value  # callables and other typing forms are checked by the constructors


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
