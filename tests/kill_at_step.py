"""Run by test_periodic_checkpoint as its own process: ``dgm-bench run``'s options, and a SIGKILL that
this process sends itself when training reaches a given step (what the OOM killer or a lost node
does: no signal handler runs, nothing is saved at the end).

    python tests/kill_at_step.py STEP RUN-OPTIONS...
"""
import os
import signal
import sys

from lightning.pytorch.callbacks import Callback

from benchmarks.run import run_cell
from benchmarks.run_cli import parse_run


class KillAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    config, options = parse_run(sys.argv[2:])
    run_cell(config, options.out, callbacks=[KillAtStep(int(sys.argv[1]))], enable_progress_bar=False)
    sys.exit("not killed: the run ended before the step")
