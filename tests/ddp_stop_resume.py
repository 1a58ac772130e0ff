"""Run by test_resume_exact's DDP test as its own script (Lightning's ``ddp`` re-runs it for rank 1).

Two CPU processes: SIGTERM reaches rank 0 only at step 5; then the cell is resumed, then the same
cell is run uninterrupted. Prints one JSON line per run (rank 0).
"""
import json
import signal
import sys

from lightning.pytorch.callbacks import Callback

from benchmarks import signals
from benchmarks.config import resolve_config
from benchmarks.run import run_cell


class SignalRank0(Callback):
    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_rank == 0 and trainer.global_step == 5:
            signals._handler(signal.SIGTERM, None)


if __name__ == "__main__":
    out = sys.argv[1]
    config = resolve_config("vae", "digits", 0, {
        "model": {"init_args": {"latent_dim": 2, "hidden": [16]}},
        "module": {"init_args": {"eval_k": [1], "val_k": [1]}}, "data": {"init_args": {"eval_batch_size": 50}},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "devices": 2, "strategy": "ddp"}})
    runs = {}
    signals.install()
    runs["stopped"] = run_cell(config, f"{out}/stopped", callbacks=[SignalRank0()], enable_progress_bar=False)
    signals.install()
    runs["resumed"] = run_cell(config, f"{out}/stopped", enable_progress_bar=False)
    signals.install()
    runs["whole"] = run_cell(config, f"{out}/whole", enable_progress_bar=False)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print("RUNS " + json.dumps({k: {f: r.get(f) for f in ("status", "steps", "resumed_at_step", "metrics")}
                                    for k, r in runs.items()}), flush=True)
