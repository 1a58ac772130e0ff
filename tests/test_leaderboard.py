"""The leaderboard of a fixed set of records matches the checked-in expected tables.

The records (tests/data/leaderboard/records) hold three seeds of vae, two completed and one
diverged seed of iwae, a second iwae setting, a GAN with an FID and its feature network, and a
fixed-binarisation table with a failed run. Expected means and stds were checked by hand
(vae nll 90/92/91 -> 91.00 +- 1.00; iwae 88.5/89.5 -> 89.00 +- 0.71; gan FID 30/34 -> 32.00 +- 2.83).
"""
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.leaderboard import aggregate, load_records, write_leaderboard

DATA = Path(__file__).parent / "data" / "leaderboard"


def test_leaderboard_matches_expected_tables(tmp_path):
    markdown = write_leaderboard(DATA / "records", tmp_path)
    assert markdown == (DATA / "expected.md").read_text()
    assert (tmp_path / "leaderboard.csv").read_text() == (DATA / "expected.csv").read_text()


def test_protocols_never_share_a_table_or_column():
    tables = aggregate(load_records(DATA / "records"))
    assert len(tables) == 2  # dynamic and fixed binarisation
    fixed = next(t for name, t in tables.items() if "fixed" in name)
    assert fixed["rows"]["vae"]["test/nll_k5000"] == [88.71]  # not averaged with the dynamic vae
    dynamic = next(t for name, t in tables.items() if "dynamic" in name)
    assert "iwae (k50)" in dynamic["rows"]  # a setting is its own row
    assert [f[2] for f in dynamic["failed"]] == ["diverged"]


def test_leaderboard_cli(tmp_path, capsys):
    assert main(["leaderboard", str(DATA / "records"), "--out", str(tmp_path)]) == 0
    assert "**32.00 ± 2.83 (2)**" in capsys.readouterr().out
    assert main(["leaderboard", str(tmp_path / "nothing")]) == 2
