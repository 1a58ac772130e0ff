"""The cell's CSV log, kept across attempts: a resumed run appends to ``logs/metrics.csv``.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts, so a resumed cell would
lose the history of its earlier epochs. Rows of an epoch that was cut short and redone appear twice
(the ``step`` column tells them apart); nothing earlier is lost.
"""
from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # Lightning's removes the file; keep it and its header
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(next(csv.reader(fh), []))


class AppendingCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
