"""Gradient-estimator variance: the protocol of DESIGN.md, the same for every estimator.

At a fixed model state and a fixed minibatch ``x``, draw ``M`` independent gradient estimates
``g_1..g_M`` of one parameter group (``theta``: the generative model, ``phi``: the inference
network) as the gradient of ``objective(model, x).loss``, and report

- ``trace_cov = sum_j Var(g_j)`` (unbiased per-coordinate variances, summed),
- ``mean_sq_norm = ||mean g||^2``,
- the per-coordinate signal-to-noise ``|mean g_j| / std g_j`` summarised by its mean and median
  (Rainforth et al. 2018, "Tighter variational bounds are not necessarily better"),

with ``M``, the batch size and the group. The measurement works on a deep copy of the model and the
objective inside ``torch.random.fork_rng`` seeded by its own seed, so the parameters, their
``.grad``, the buffers (NVIL's running statistics, a relaxation's step counter), the optimiser
and the training random stream are untouched: a run with the measurement is identical to one
without. Every draw starts from the same buffers, so the ``M`` estimates are i.i.d.

``trace_cov`` depends on the gradient's scale (NVIL's variance normalisation divides its learning
signal, the IWAE gradient of phi shrinks with ``k``); the SNR does not, so compare estimators of
different scale by SNR. With ``M`` draws a coordinate with no signal still shows an SNR of about
``0.67 / sqrt(M)`` (median), the level below which an SNR estimate means nothing.

An *estimator* is an objective spec (any registered objective, by name) plus optional overrides of
the model's options (a relaxed sigmoid belief net is the same parameters under another model
option); :func:`default_estimators` gathers the comparisons of issue 6 from the objectives'
declarations.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import torch
import yaml
from torch import Tensor, nn
from torchmetrics import Metric

from dgm_modules.registry import MODELS, OBJECTIVES, ConfigError, normalise_spec, resolve_init_args

GROUPS = ("phi", "theta")
STATS = ("trace_cov", "mean_sq_norm", "snr_mean", "snr_median")


class GradientVariance(Metric):
    """Sum-reducible moments of ``M`` gradient estimates of ``num_params`` coordinates.

    State: float64 per-coordinate sums and sums of squares and the count, which add up across
    processes (each process may draw its own share of the ``M`` estimates).

    Args:
        num_params: number of coordinates of one flattened gradient.
        zero_tol: a coordinate whose variance is at most ``zero_tol`` times its mean square counts
            as noiseless (e.g. a parameter the objective does not reach) and is left out of the SNR.
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, num_params: int, zero_tol: float = 1e-10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_params < 1:
            raise ValueError(f"num_params must be >= 1, got {num_params}")
        self.zero_tol = zero_tol
        self.add_state("total", torch.zeros(num_params, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.zeros(num_params, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, grads: Tensor) -> None:
        """Add estimates: ``[num_params]`` (one) or ``[n, num_params]``."""
        grads = grads.detach().to(torch.float64).reshape(-1, self.total.shape[0])
        self.total += grads.sum(0)
        self.total_sq += grads.square().sum(0)
        self.count += grads.shape[0]

    def compute(self) -> dict[str, Tensor]:
        m = self.count
        if m < 2:
            raise ValueError(f"gradient variance needs at least 2 estimates, got {int(m)}")
        mean = self.total / m
        var = ((self.total_sq - self.total * mean) / (m - 1)).clamp(min=0.0)
        noisy = var > self.zero_tol * (self.total_sq / m)
        snr = mean[noisy].abs() / var[noisy].sqrt()
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=mean.device)
        return {"trace_cov": var.sum(), "mean_sq_norm": mean.square().sum(),
                "snr_mean": snr.mean() if snr.numel() else nan,
                # the lower median, as torch.median: for an even count, the smaller middle value
                "snr_median": snr.median() if snr.numel() else nan,
                "num_samples": m, "num_params": torch.tensor(float(mean.numel()), dtype=torch.float64),
                "noiseless_params": (~noisy).sum().to(torch.float64)}


def parameter_group(model: nn.Module, group: str) -> list[nn.Parameter]:
    """``theta`` (``model.theta_parameters()``) or ``phi`` (``model.phi_parameters()``), trainable only."""
    if group not in GROUPS:
        raise ValueError(f"gradvar group must be one of {list(GROUPS)}, got {group!r}")
    params = getattr(model, f"{group}_parameters")()
    return [p for p in params if p.requires_grad]


def _buffers(*modules: nn.Module) -> list[Tensor]:
    return [b for m in modules for b in m.buffers()]


def adapt_objective(model: nn.Module, objective: nn.Module, batches: Iterable[Tensor], lr: float = 1e-3) -> None:
    """Fit an objective's own state at a fixed model: its parameters (NVIL's ``b(x)``, a control
    variate) by Adam on its own loss, its running statistics by its own updates; the model's
    parameters are not touched. Needed when an estimator is measured at a state it did not train."""
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if params else None
    objective.train()
    for x in batches:
        loss = objective(model, x).loss
        if opt is not None:
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            opt.zero_grad(set_to_none=True)


@contextlib.contextmanager
def own_rng(seed: int, device: torch.device) -> Iterator[None]:
    """A random stream of its own: the caller's CPU (and this device's CUDA) state is restored after."""
    devices = _cuda_devices(device)
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        _seed(seed, devices)
        yield


def _cuda_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [torch.cuda.current_device() if device.index is None else device.index]


def _seed(seed: int, devices: list[int]) -> None:
    torch.default_generator.manual_seed(seed)  # not torch.manual_seed: that reseeds every GPU
    for d in devices:
        with torch.cuda.device(d):
            torch.cuda.manual_seed(seed)


def measure_gradient_variance(model: nn.Module, objective: nn.Module, x: Tensor,
                              groups: Sequence[str] = GROUPS, num_samples: int = 100, seed: int = 0,
                              adapt_batches: Iterable[Tensor] = (), adapt_lr: float = 1e-3,
                              train_mode: bool = True, process: tuple[int, int] = (0, 1)) -> dict[str, dict]:
    """The protocol: ``{group: {trace_cov, mean_sq_norm, snr_mean, snr_median, num_samples, ...}}``.

    Args:
        model: the model at the state to measure (left untouched; a copy is measured).
        objective: any objective; its ``loss``'s gradient is the estimator (left untouched too).
        x: the fixed minibatch.
        groups: parameter groups, measured from the same ``M`` draws.
        num_samples: ``M``, the number of independent estimates (over all processes).
        seed: seed of the measurement's own random stream.
        adapt_batches: minibatches on which the objective's own state is fitted first
            (:func:`adapt_objective`), drawn inside the measurement's random stream.
        adapt_lr: learning rate of that fit.
        train_mode: measure the model in training mode (a relaxed q relaxes in training mode only).
        process: ``(rank, world_size)``: each process draws its share of the ``M`` estimates
            with its own seed, and the sums are reduced across processes.
    """
    if num_samples < 2:
        raise ValueError(f"gradvar.samples must be >= 2, got {num_samples}")
    rank, world = process
    model, objective = copy.deepcopy((model, objective))  # together: shared submodules stay shared
    model.train(train_mode)
    for p in list(model.parameters()) + list(objective.parameters()):
        p.grad = None
    params = {g: parameter_group(model, g) for g in groups}
    flat = [p for g in groups for p in params[g]]
    sizes = [sum(p.numel() for p in params[g]) for g in groups]
    metrics = {g: GradientVariance(n).to(x.device) for g, n in zip(groups, sizes)}
    with own_rng(seed, x.device):
        adapt_objective(model, objective, adapt_batches, adapt_lr)
        objective.train(train_mode)
        model.train(train_mode)
        buffers = _buffers(model, objective)
        snapshot = [b.clone() for b in buffers]
        _seed(seed * 1_000_003 + rank + 1, _cuda_devices(x.device))
        share = math.ceil(num_samples / world)
        share = min(share, num_samples - rank * share) if world > 1 else num_samples
        chunk = max(1, min(64, 2**22 // max(1, sum(sizes))))  # estimates per metric update (<= 16 MB)
        pending: list[Tensor] = []
        for i in range(max(share, 0)):
            for b, s in zip(buffers, snapshot):  # every draw from the same state: i.i.d. estimates
                b.copy_(s)
            loss = objective(model, x).loss
            grads = torch.autograd.grad(loss, flat, allow_unused=True)
            pending.append(torch.cat([(torch.zeros_like(p) if d is None else d).reshape(-1)
                                      for p, d in zip(flat, grads)]))
            if len(pending) == chunk or i == share - 1:
                for name, part in zip(groups, torch.stack(pending).split(sizes, dim=1)):
                    metrics[name].update(part)
                pending = []
    out = {}
    for name in groups:
        if world == 1:
            metrics[name].sync_on_compute = False
        stats = {k: float(v) for k, v in metrics[name].compute().items()}
        stats["num_samples"] = int(stats["num_samples"])
        stats.update(num_params=int(stats["num_params"]), noiseless_params=int(stats["noiseless_params"]),
                     batch_size=int(x.shape[0]), group=name)
        out[name] = stats
    return out


# -- estimators: an objective spec plus model overrides ------------------------------------------
@dataclass(frozen=True)
class Estimator:
    """One gradient estimator to measure at a model state.

    Attributes:
        label: its name in records and figures.
        objective: a registered objective spec (``"iwae"`` or ``{"class_path", "init_args"}``);
            ``None`` means the run's own objective, with its state as trained.
        model_overrides: model options changed for this estimator (e.g. ``relaxation``); the
            parameters are copied from the measured model.
        adapt_steps: minibatches on which the objective's own state (baselines, running
            statistics) is fitted at the model state before measuring.
    """

    label: str
    objective: Any = None
    model_overrides: dict = field(default_factory=dict)
    adapt_steps: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


#: the model each default comparison measures (what its name says); its estimators are the
#: objectives' own declarations (``gradvar_defaults``), so a new estimator is added in its file
DEFAULT_GROUPS: dict[str, str] = {"vae": "gaussian-vae", "sbn": "sbn"}


def default_estimators() -> dict[str, list[Estimator]]:
    """The comparisons of issue 6, by model family: every registered objective's ``gradvar_defaults``,
    in their declared order."""
    entries: dict[str, list] = {group: [] for group in DEFAULT_GROUPS}
    seen = set()
    for name, cls in OBJECTIVES.items():
        if id(cls) in seen:  # a class registered under two names is listed once
            continue
        seen.add(id(cls))
        for d in getattr(cls, "gradvar_defaults", ()):
            if d.group not in entries:
                raise ValueError(f"objective {name!r}: gradvar default {d.label!r} names the group {d.group!r}; "
                                 f"choose one of {sorted(DEFAULT_GROUPS)}")
            spec = name if d.init_args is None else {"class_path": name, "init_args": dict(d.init_args)}
            entries[d.group].append((d.order, Estimator(d.label, spec, dict(d.model_overrides), d.adapt_steps)))
    for group, listed in entries.items():
        orders = [order for order, _ in listed]
        if len(set(orders)) != len(orders):
            raise ValueError(f"gradvar defaults of {group!r}: two estimators at one position {sorted(orders)}")
    return {group: [est for _, est in sorted(listed, key=lambda e: e[0])] for group, listed in entries.items()}


RUN = Estimator("run")


def parse_estimator(item: str | dict | Estimator) -> list[Estimator]:
    """One estimator (or a default list) from the command line or config.

    Accepts ``"vae"`` / ``"sbn"`` (the default lists), ``"run"`` (the run's own objective), a label
    of a default list (``"nvil"``, ``"iwae-k50"``), a registered objective with options
    (``"iwae"``, ``"iwae:k=100"``, ``"dreg:k=5"``), a mapping
    ``{"label", "objective", "model_overrides", "adapt_steps"}`` or a YAML/JSON string of one.
    """
    if isinstance(item, Estimator):
        return [item]
    if isinstance(item, str) and item.lstrip().startswith("{"):
        item = yaml.safe_load(item)
    # an objective in the config's own form, {class_path: iwae, init_args: {k: 100}} (optionally with
    # label, model_overrides, adapt_steps), labelled iwae:k=100; the string "iwae:k=100" is deprecated
    if isinstance(item, dict) and "class_path" in item:
        extra = {k: item[k] for k in ("label", "model_overrides", "adapt_steps") if k in item}
        spec = {k: v for k, v in item.items() if k not in extra}
        item = {"label": extra.pop("label", None) or objective_label(spec), "objective": spec, **extra}
    if isinstance(item, dict):
        unknown = sorted(set(item) - {"label", "objective", "model_overrides", "adapt_steps"})
        if unknown or "objective" not in item:
            raise ConfigError(f"gradvar.estimators: an estimator mapping needs 'objective' (and optionally 'label', "
                              f"'model_overrides', 'adapt_steps'); got keys {sorted(item)}")
        spec = item["objective"]
        label = item.get("label") or (spec if isinstance(spec, str) else spec.get("class_path", "?"))
        overrides, steps = item.get("model_overrides") or {}, item.get("adapt_steps", 0)
        if not isinstance(overrides, dict) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"gradvar.estimators[{label}]: model_overrides must be a mapping and "
                              f"adapt_steps an integer >= 0")
        return [Estimator(str(label), spec, dict(overrides), steps)]
    if not isinstance(item, str):
        raise ConfigError(f"gradvar.estimators: expected a name or a mapping, got {item!r}")
    defaults = default_estimators()
    if item in defaults:
        return defaults[item]
    if item == "run":
        return [RUN]
    for est in (est for listed in defaults.values() for est in listed):
        if est.label == item:
            return [est]
    name, _, opts = item.partition(":")
    if opts:
        warnings.warn(f"gradvar estimator {item!r}: the NAME:KEY=VALUE form is deprecated; write "
                      f"{{class_path: {name}, init_args: {{...}}}}", DeprecationWarning, stacklevel=2)
    init_args = {}
    for pair in filter(None, opts.split(",")):
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"gradvar.estimators: {item!r}: expected NAME:KEY=VALUE,KEY=VALUE")
        init_args[key] = yaml.safe_load(raw)
    OBJECTIVES.get(name, "gradvar.estimators")  # unknown names fail here, listing the registered ones
    return [Estimator(item, {"class_path": name, "init_args": init_args})]


def objective_label(spec: dict) -> str:
    """``{"class_path": "iwae", "init_args": {"k": 100}}`` -> ``"iwae:k=100"`` (the old form's label)."""
    init_args = spec.get("init_args") or {}
    flow = [yaml.safe_dump(v, default_flow_style=True).removesuffix("\n...\n").strip() for v in init_args.values()]
    opts = ",".join(f"{k}={v}" for k, v in zip(init_args, flow))
    return f"{spec['class_path']}:{opts}" if opts else str(spec["class_path"])


def resolve_estimators(items: Sequence[str | dict | Estimator] | str | None) -> list[Estimator]:
    """Expand and validate an estimator list (``None``: the run's own objective); labels must be unique."""
    if items is None:
        return [RUN]
    out = [e for item in ([items] if isinstance(items, (str, dict)) else items) for e in parse_estimator(item)]
    labels = [e.label for e in out]
    dupes = sorted({l for l in labels if labels.count(l) > 1})
    if dupes:
        raise ConfigError(f"gradvar.estimators: duplicate label(s) {dupes}; give each a distinct 'label'")
    for est in out:
        if est.objective is not None:
            spec = normalise_spec(est.objective, f"gradvar.estimators[{est.label}].objective")
            resolve_init_args(OBJECTIVES.get(spec["class_path"], f"gradvar.estimators[{est.label}].objective"),
                              spec["init_args"], f"gradvar.estimators[{est.label}].objective")
    return out


def build_estimator(est: Estimator, model: nn.Module, run_objective: nn.Module | None = None,
                    model_spec: dict | None = None) -> tuple[nn.Module, nn.Module]:
    """``(model, objective)`` of an estimator at ``model``'s state.

    The model is ``model`` itself unless the estimator overrides model options; then a new model
    is built from ``model_spec`` (the run's ``{"class_path", "init_args"}``) with the overrides and
    ``model``'s parameters and buffers are loaded into it. Raises ``ValueError`` (e.g.
    ``IncompatibleObjectiveError``) when the objective cannot train that model or the overrides
    change the parameters.
    """
    if est.model_overrides:
        if model_spec is None:
            raise ValueError(f"estimator {est.label!r} overrides model options but the run's model spec is unknown")
        spec = normalise_spec(model_spec, "model")
        cls = MODELS.get(spec["class_path"], "model.class_path")
        init = resolve_init_args(cls, {**spec["init_args"], **est.model_overrides},
                                 f"gradvar.estimators[{est.label}].model_overrides", ("input_shape",))
        variant = cls(input_shape=tuple(model.input_shape), **init)
        try:
            variant.load_state_dict(model.state_dict())
        except RuntimeError as err:
            raise ValueError(f"estimator {est.label!r}: its model_overrides change the parameters, so it would not "
                             f"measure the same state ({str(err).splitlines()[0]})") from None
        model = variant.to(next(model.parameters()).device)
    if est.objective is None:
        if run_objective is None:
            raise ValueError("estimator 'run' measures the run's own objective, which was not given")
        objective = run_objective
    else:
        spec = normalise_spec(est.objective, "objective")
        cls = OBJECTIVES.get(spec["class_path"], f"gradvar.estimators[{est.label}].objective")
        objective = cls(**resolve_init_args(cls, spec["init_args"], f"gradvar.estimators[{est.label}].objective"))
        objective.check_model(model)  # refuses an incompatible model; builds NVIL's b(x)
        objective = objective.to(next(model.parameters()).device)
    return model, objective


# -- the minibatches ------------------------------------------------------------------------------
def _train_images(datamodule: Any) -> Tensor:
    if getattr(datamodule, "train_x", None) is None:
        datamodule.setup("fit")
    return datamodule.train_x


def random_minibatches(datamodule: Any, batch_size: int, n: int, seed: int) -> list[Tensor]:
    """``n`` training minibatches drawn with their own generator (binarised as training would be)."""
    x = _train_images(datamodule)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        batch = x[torch.randperm(x.shape[0], generator=gen)[:batch_size]]
        if getattr(datamodule, "binarization", None) == "dynamic":
            batch = torch.bernoulli(batch, generator=gen)
        out.append(batch)
    return out


def fixed_minibatch(datamodule: Any, batch_size: int, seed: int = 0) -> Tensor:
    """The measurement's fixed minibatch: a seeded draw of training images (the same for a run's
    callback and for ``dgm-bench gradvar`` on its checkpoint)."""
    return random_minibatches(datamodule, batch_size, 1, seed)[0]


def measure_estimators(model: nn.Module, x: Tensor, estimators: Sequence[Estimator], *,
                       run_objective: nn.Module | None = None, model_spec: dict | None = None,
                       groups: Sequence[str] = GROUPS, num_samples: int = 100, seed: int = 0,
                       adapt_data: Any = None, adapt_lr: float = 1e-3, objectives: dict | None = None,
                       process: tuple[int, int] = (0, 1)) -> dict[str, dict]:
    """Every estimator at the same model state and minibatch: ``{label: {group: stats}}``.

    An estimator whose objective cannot train the model (or whose model overrides change the
    parameters) is reported as ``{"skipped": reason}``.
    ``adapt_data`` (a datamodule) supplies the ``adapt_steps`` minibatches; ``objectives``, a
    dict kept by the caller, keeps each estimator's objective (and its fitted state) between calls.
    Building and fitting draw from the measurement's own random stream, never the caller's.
    """
    objectives = {} if objectives is None else objectives
    out: dict[str, dict] = {}
    for i, est in enumerate(estimators):
        with own_rng(seed + 7_919 * (i + 1), x.device):  # initialising a network draws random numbers
            try:
                variant, objective = build_estimator(est, model, run_objective, model_spec)
            except ValueError as err:  # IncompatibleObjectiveError, or a model the objective refuses
                out[est.label] = {"skipped": str(err)}
                continue
            if est.objective is not None:  # a fresh estimator keeps its fitted state between calls
                objective = objectives.setdefault(est.label, objective)
            if est.adapt_steps and adapt_data is not None:
                batches = random_minibatches(adapt_data, x.shape[0], est.adapt_steps, seed + 17 + i)
                # fitted on a copy of the model, whose buffers (e.g. a step counter) it may advance
                adapt_objective(copy.deepcopy(variant).train(), objective, [b.to(x.device) for b in batches], adapt_lr)
        out[est.label] = measure_gradient_variance(variant, objective, x, groups, num_samples, seed + i,
                                                   process=process)
    return out
