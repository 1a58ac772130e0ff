"""Slurm at benchmark scale: per-cell resources, sbatch pass-through, requeue, no duplicate submission.

A spec may say what its cells need and how its jobs are submitted::

    resources: {gpus: 2, cpus: 8, mem_gb: 32, time_min: 600}   # every cell (a cell rule may override)
    cells:
      - match: {method: iwae}
        resources: {gpus: 1}
    slurm:                                   # sbatch options of every job
      account: my-account
      qos: high
      constraint: a100
      partition: gpu
      additional_parameters: {reservation: demo}   # any other sbatch option
      setup: [module load cuda, source .venv/bin/activate]

``gpus`` is one task per GPU (Lightning's Slurm environment wants ``ntasks-per-node`` equal to
``trainer.devices``), and it sets the cell's ``trainer.devices`` (and ``accelerator: gpu``): a
2-GPU cell is a 2-process run, a different computation, so it has its own fingerprint. ``cpus`` is
per task. Cells whose resources differ go out as separate job arrays.
"""
from __future__ import annotations

import json
import os
import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dgm_modules.registry import ConfigError

RESOURCE_KEYS = ("gpus", "cpus", "mem_gb", "time_min")
SLURM_KEYS = ("account", "qos", "constraint", "partition", "additional_parameters", "setup")
JOB_FILE = "slurm_job.json"  # in the cell's run folder: the job that was submitted for it
#: Slurm states of a job that is still going to run the cell (sacct's names); any other state,
#: UNKNOWN included, means finished or lost, and an unfinished cell is submitted again
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                 "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"}


def check_resources(block: Any, where: str) -> dict:
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(RESOURCE_KEYS)}, got {block!r}")
    unknown = sorted(set(block) - set(RESOURCE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(RESOURCE_KEYS)}")
    for key, value in block.items():
        least = 0 if key == "gpus" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{where}.{key}: expected an integer >= {least}, got {value!r}")
    return dict(block)


def check_slurm_section(block: Any, where: str) -> dict:
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(SLURM_KEYS)}, got {block!r}")
    unknown = sorted(set(block) - set(SLURM_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(SLURM_KEYS)} "
                          "(any other sbatch option goes under additional_parameters)")
    for key in ("account", "qos", "constraint", "partition"):
        if key in block and not isinstance(block[key], str):
            raise ConfigError(f"{where}.{key}: expected a string, got {block[key]!r}")
    extra = block.get("additional_parameters", {})
    if not isinstance(extra, dict):
        raise ConfigError(f"{where}.additional_parameters: expected a mapping of sbatch options, got {extra!r}")
    setup = block.get("setup", [])
    if not isinstance(setup, list) or not all(isinstance(line, str) for line in setup):
        raise ConfigError(f"{where}.setup: expected a list of shell lines, got {setup!r}")
    return dict(block)


def parse_slurm_options(options: list[str] | None) -> dict:
    """``--slurm-option key=value`` (repeated) -> sbatch options (``-`` in keys read as ``_``); a bare
    ``key`` is a flag (``--slurm-option exclusive`` -> ``#SBATCH --exclusive``)."""
    out: dict[str, Any] = {}
    for option in options or []:
        key, sep, value = option.partition("=")
        if not key.strip():
            raise ConfigError(f"--slurm-option {option!r}: expected key=value, e.g. --slurm-option account=my-account")
        out[key.strip().replace("-", "_")] = value if sep else True
    return out


def merge_slurm_options(section: dict | None, options: dict) -> dict:
    """The spec's ``slurm`` section with ``--slurm-option`` s on top: named keys replace, ``setup``
    adds a line, anything else is an sbatch option (``additional_parameters``)."""
    out = dict(section or {})
    for key, value in options.items():
        if key in ("account", "qos", "constraint", "partition"):
            out[key] = value
        elif key == "setup":
            out["setup"] = list(out.get("setup", [])) + [value]
        else:
            out["additional_parameters"] = {**out.get("additional_parameters", {}), key: value}
    return out


def slurm_plugins() -> list:
    """In a Slurm job, Lightning's Slurm environment without its own auto-requeue (see :class:`CellJob`)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def apply_gpus(config: dict, resources: dict, where: str, devices: Any = None) -> None:
    """A cell's GPUs are its ``trainer.devices`` (one process a GPU); refuse a spec whose overrides
    set ``trainer.devices`` (``devices``, None if they do not) to something else."""
    gpus = resources.get("gpus")
    if not gpus:
        return
    trainer = config["trainer"]
    if devices not in (None, "auto", gpus, [gpus], str(gpus)):
        raise ConfigError(f"{where}: resources.gpus={gpus} but trainer.devices={devices!r}; they must be equal "
                          "(one Slurm task a GPU): drop trainer.devices, or make it match")
    if trainer.get("accelerator", "auto") not in ("auto", "gpu", "cuda"):
        raise ConfigError(f"{where}: resources.gpus={gpus} but trainer.accelerator={trainer['accelerator']!r}")
    trainer.update(devices=gpus, accelerator="gpu")


def executor_parameters(resources: dict, slurm: dict, *, name: str, array_parallelism: int | None) -> dict:
    """submitit ``AutoExecutor.update_parameters`` arguments for cells with these resources."""
    gpus = resources.get("gpus", 0)
    params: dict[str, Any] = dict(
        timeout_min=resources["time_min"], gpus_per_node=gpus, tasks_per_node=max(1, gpus),
        cpus_per_task=resources["cpus"], mem_gb=resources["mem_gb"], name=name)
    for key in ("account", "qos", "constraint", "partition", "setup"):
        if slurm.get(key):
            params[f"slurm_{key}"] = slurm[key]
    if slurm.get("additional_parameters"):
        params["slurm_additional_parameters"] = dict(slurm["additional_parameters"])
    if array_parallelism is not None:
        params["slurm_array_parallelism"] = array_parallelism
    return params


def sbatch_script(params: dict, folder: str | Path, cells: int) -> str:
    """The sbatch script submitit would submit for an array of ``cells`` jobs (nothing submitted).

    Needs ``srun`` on the PATH, as submitit's Slurm executor does.
    """
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(**params)
    slurm = executor._executor  # what submitit's own array submission does: map_count, then the file text
    slurm.parameters["map_count"] = cells
    return slurm._make_submission_file_text(slurm._submitit_command_str, "array")


# -- one submission per cell --------------------------------------------------------------------

def record_submission(run_dir: Path, job: Any, cluster: str) -> None:
    from benchmarks.records import write_json_atomic

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / JOB_FILE, {"job_id": str(job.job_id), "cluster": cluster,
                                           "folder": str(job.paths.folder),
                                           "submitted_at": datetime.now(timezone.utc).isoformat()})


def submitted_job(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None


def job_state(entry: dict) -> str:
    """The recorded job's state now: sacct's through submitit on Slurm; for submitit's local
    executor (whose job id is its controller's pid) RUNNING while that process lives."""
    if entry.get("cluster") == "local":
        try:
            os.kill(int(entry["job_id"]), 0)
        except (ProcessLookupError, ValueError):
            return "UNKNOWN"
        except PermissionError:
            return "RUNNING"
        return "RUNNING" if not _zombie(int(entry["job_id"])) else "UNKNOWN"
    try:
        import submitit

        return str(submitit.SlurmJob(folder=entry["folder"], job_id=entry["job_id"]).state)
    except Exception:  # noqa: BLE001 -- no sacct, no record of the job: lost, submit again
        return "UNKNOWN"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def active_job(run_dir: Path) -> dict | None:
    """The job submitted for this cell if it is pending or running, with its state; else None."""
    entry = submitted_job(run_dir)
    if entry is None:
        return None
    state = job_state(entry)
    return {**entry, "state": state} if state.split()[0] in ACTIVE_STATES else None


# -- requeue on timeout and preemption ----------------------------------------------------------

class CellJob:
    """What each Slurm job runs: one cell. submitit's checkpointing protocol: on the pre-timeout or
    preemption signal (USR2, ``--signal=USR2@90``) submitit calls :meth:`checkpoint` and requeues the
    job, which then resumes the cell from its ``last.ckpt``.

    submitit would act inside the signal handler, in the middle of a training step. Here the signal
    is only recorded; the cell stops at the next batch end and saves its mid-epoch checkpoint there
    (:class:`benchmarks.signals.StopCallback`); then submitit's own handler is called to checkpoint
    and requeue. Lightning's own Slurm auto-requeue is off in these jobs (``run.slurm_plugins``):
    two requeuers would requeue twice, and its ``hpc_ckpt`` files would bypass our checkpoint checks.
    """

    def __init__(self, config: dict, out: str, threads: int, wandb: str, group: str) -> None:
        self.config, self.out, self.threads, self.wandb, self.group = config, out, threads, wandb, group

    def __call__(self) -> dict | None:
        from benchmarks import signals
        from benchmarks.launchers import _run_cell_in_worker

        preempt = _preempt_signal()
        submitit_handler = signal.getsignal(preempt)
        signals.STATE.signum = None
        signal.signal(preempt, signals._handler)  # recorded; the cell stops at its next batch end
        try:
            record = _run_cell_in_worker(self.config, self.out, self.threads, self.wandb, self.group)
        finally:
            signal.signal(preempt, submitit_handler)
        if signals.requested() == preempt and callable(submitit_handler):
            submitit_handler(preempt, None)  # calls self.checkpoint(), requeues and exits
        return record

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)  # the cell's state is on disk


def _preempt_signal() -> int:
    from submitit.core.job_environment import JobEnvironment

    return JobEnvironment._usr_sig()
