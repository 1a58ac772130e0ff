"""What "a resumed run ends as the uninterrupted one" means for a run's CSV history, shared by the
stop-signal and the periodic-checkpoint resume tests."""
import csv
from pathlib import Path

import pytest


def history(run_dir: Path) -> list[dict]:
    with open(run_dir / "logs" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def assert_same_rows(rows_whole: list[dict], rows_resumed: list[dict]) -> None:
    """Row by row, the same columns, the same blanks and the same values within 1e-6."""
    for a, b in zip(rows_whole, rows_resumed):
        assert a.keys() == b.keys()
        for key in a:
            if a[key] == "" or b[key] == "":
                assert a[key] == b[key], key
            else:
                assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-6, abs=1e-9), key
