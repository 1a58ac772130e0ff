"""The leaderboard of a fixed set of records matches checked-in expected tables, and its statistics
and its handling of bad records hold on cases worked by hand.

The records (tests/data/leaderboard/records, written by make_records.py there with real resolved
configs) hold three seeds of vae, two completed and one diverged seed of iwae (k=5, its preset),
two seeds of iwae with objective.k=50 (another configuration, so another row), a GAN with an FID
and its feature network, a fixed-binarisation table with a failed run, and a 2-epoch vae left by
an earlier version of the spec. Worked by hand (95% t interval, t_{0.975,1} = 12.706,
t_{0.975,2} = 4.303): vae nll 90/92/91 -> 91.00 +- 4.303 * 1/sqrt(3) = 2.48; iwae 88.5/89.5 ->
89.00 +- 12.706 * 0.7071/sqrt(2) = 6.35; k=50 80/81 -> 80.50 +- 6.35, bold: Welch's t against
iwae is 12.0 (p = 0.003) and against vae 13.7; gan FID 30/34 -> 32.00 +- 25.41, alone: no bold.
"""
import json
import math
import shutil
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.leaderboard import build_leaderboard, load_records, render_markdown, write_leaderboard
from benchmarks.metric_info import metric_info, sort_key
from benchmarks.stats import pick_best, summarise

DATA = Path(__file__).parent / "data" / "leaderboard"
RECORDS = DATA / "records"


def spec_fingerprints(root=RECORDS) -> set[str]:
    """The spec being tabulated ran 10 epochs; the 2-epoch record is a leftover of an older version."""
    runs, _ = load_records(root)
    return {r.fingerprint for r in runs if r.record["config"]["trainer"]["max_epochs"] == 10}


def test_leaderboard_matches_expected_tables(tmp_path):
    markdown = write_leaderboard(RECORDS, tmp_path, current=spec_fingerprints())
    assert markdown == (DATA / "expected.md").read_text()
    assert (tmp_path / "leaderboard.csv").read_text() == (DATA / "expected.csv").read_text()
    assert (tmp_path / "runs.csv").read_text() == (DATA / "expected_runs.csv").read_text()
    assert (tmp_path / "leaderboard.tex").read_text() == (DATA / "expected.tex").read_text()


def test_rows_are_configurations_not_methods():
    board = build_leaderboard(RECORDS, spec_fingerprints())
    dynamic = next(t for name, t in board.tables.items() if "dynamic" in name)
    labels = {row.label: [r.record["seed"] for r in row.runs] for row in dynamic.rows.values()}
    assert labels == {"vae": [0, 1, 2], "iwae": [0, 1], "iwae (objective.k=50)": [0, 1], "gan": [0, 1]}
    k50 = next(r for r in dynamic.rows.values() if r.label == "iwae (objective.k=50)")
    assert k50.values == {"test/nll_k5000": [80.0, 81.0]}  # never pooled with the k=5 seeds
    assert [run.record["status"] for run in dynamic.failed] == ["diverged"]
    # the 2-epoch vae of an older spec: apart, and not among the vae seeds
    (outside,) = board.outside.values()
    (old,) = outside.rows.values()
    assert old.values == {"test/nll_k5000": [150.0]} and outside.shared == ["trainer.max_epochs=2"]
    fixed = next(t for name, t in board.tables.items() if "fixed" in name)
    assert fixed.shared == ["data.binarization=fixed"]
    assert [r.values for r in fixed.rows.values()] == [{"test/nll_k5000": [88.71]}]


@pytest.mark.parametrize("overrides, expected", [
    ({}, []),
    ({"objective": {"init_args": {"k": 50}}, "trainer": {"max_epochs": 3}}, ["objective.k=50", "trainer.max_epochs=3"]),
    ({"objective": {"class_path": "dreg", "init_args": {"k": 50}}}, ["objective=dreg", "objective.k=50"]),
    ({"seed": 7, "data": {"init_args": {"data_dir": "/elsewhere"}}}, []),  # neither changes a number
])
def test_label_says_how_a_config_differs_from_its_preset(overrides, expected):
    from benchmarks.config import resolve_config
    from benchmarks.leaderboard import config_differences

    seed = overrides.pop("seed", 0)
    config = resolve_config("iwae", "digits", seed, overrides)
    assert config_differences(config) == expected
    config["optimizer"]["init_args"]["weight_decay"] = 0.0  # as a float-typed writer saves the preset's 0
    assert config_differences(config) == expected


def test_without_a_spec_every_configuration_is_a_row():
    board = build_leaderboard(RECORDS)
    assert not board.outside
    dynamic = next(t for name, t in board.tables.items() if "dynamic" in name)
    assert sorted(r.label for r in dynamic.rows.values()) == [
        "gan", "iwae", "iwae (objective.k=50)", "vae", "vae (trainer.max_epochs=2)"]


BAD = {"torn.json": '{"status": "completed", "metr', "list.json": "[]", "null.json": "null", "empty.json": "{}",
       "status-only.json": '{"status": "completed"}'}
REASONS = {"torn": "invalid JSON", "list": "expected a JSON object, got list", "null": "expected a JSON object, got null",
           "empty": "missing field(s) status, method, dataset, seed, config",
           "status-only": "missing field(s) method, dataset, seed, config"}


def test_bad_records_are_listed_and_change_nothing_else(tmp_path):
    root = tmp_path / "records"
    shutil.copytree(RECORDS, root)
    for name, text in BAD.items():
        (root / name.removesuffix(".json")).mkdir()
        (root / name.removesuffix(".json") / "record.json").write_text(text)
    markdown = write_leaderboard(root, tmp_path / "out", current=spec_fingerprints())
    tables, _, problems = markdown.partition("## Records not read (5)\n")
    assert tables.rstrip() + "\n" == (DATA / "expected.md").read_text()  # same rows, same bold
    listed = dict(line.removeprefix("- `").split("`: ", 1) for line in problems.strip().splitlines())
    assert set(listed) == {f"{n}/record.json" for n in REASONS}
    for name, reason in REASONS.items():
        assert listed[f"{name}/record.json"].startswith(reason), (name, listed[f"{name}/record.json"])


def test_a_nan_mean_is_shown_and_never_bolded(tmp_path):
    root = tmp_path / "records"
    shutil.copytree(RECORDS, root)
    # k=50, the clear best, gets a NaN seed: its mean is NaN and the bold goes by the test to iwae
    # (89.00 vs vae 91.00: Welch's t = 2.62, df = 2.98, one-sided p = 0.040)
    (path,) = [p for p in root.glob("*/record.json") if json.loads(p.read_text())["metrics"].get("test/nll_k5000") == 81.0]
    rec = json.loads(path.read_text())
    rec["metrics"]["test/nll_k5000"] = math.nan
    path.write_text(json.dumps(rec))
    lines = write_leaderboard(root, tmp_path / "out", current=spec_fingerprints(root)).splitlines()
    k50 = next(line for line in lines if line.startswith("| iwae (objective.k=50)"))
    assert "| nan ± nan |" in k50 and "**" not in k50
    assert "| **89.00 ± 6.35** |" in next(line for line in lines if line.startswith("| iwae |"))


@pytest.mark.parametrize("best, other, expected", [
    # the published mnist-cpu table bolded 121.09 +- 1.28 over 121.31 +- 0.40 (sd, n = 3): t = 0.28
    ([121.09 - 1.28, 121.09, 121.09 + 1.28], [121.31 - 0.40, 121.31, 121.31 + 0.40], None),
    ([80.0], [90.0, 92.0, 91.0], None),  # n = 1 against n = 3: no test, no bold
    ([90.0, 92.0, 91.0], [100.0], None),
    ([80.0, 81.0], [88.5, 89.5], "best"),  # t = 12.0, p = 0.003
    ([80.0, 80.0], [81.0, 81.0], "best"),  # deterministic and different
    ([80.0, 80.0], [80.0, 80.0], None),
])
def test_bold_only_where_welch_separates(best, other, expected):
    got = pick_best({"best": best, "other": other}, "lower")
    assert got == expected
    flipped = pick_best({"best": [-v for v in best], "other": [-v for v in other]}, "higher")
    assert flipped == expected


def test_bold_needs_every_rival_separated_and_a_direction():
    rows = {"a": [80.0, 81.0], "b": [88.5, 89.5], "c": [80.4, 81.6]}  # a beats b, not c
    assert pick_best(rows, "lower") is None
    assert pick_best({"a": [80.0, 81.0], "b": [88.5, 89.5]}, None) is None  # kid_std: not a score
    assert pick_best({"a": [80.0, 81.0]}, "lower") is None  # nothing to separate from
    assert pick_best({"a": [math.nan, 1.0], "b": [5.0, 6.0], "c": [9.0, 10.0]}, "lower") == "b"


def test_t_interval_by_hand():
    s = summarise([90.0, 92.0, 91.0])
    assert (s.n, s.mean, s.std) == (3, 91.0, 1.0)
    assert s.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    one = summarise([88.71])
    assert one.mean == 88.71 and math.isnan(one.half_width)


def test_metric_table_directions_units_and_order():
    assert metric_info("test/nll_k5000").direction == "lower" and metric_info("test/nll_k5000").unit == "nats"
    assert metric_info("test/fid_n10000 [classifier-mnist:9f40b571]").direction == "lower"
    assert metric_info("test/kid_std_n100 [net:1]").direction is None
    assert metric_info("test/knn_error_k5").decimals == 3
    assert metric_info("test/active_units").direction == "higher"
    assert metric_info("test/active_units_h2").direction == "higher"  # per stochastic layer
    assert metric_info("test/something_new").direction is None
    assert metric_info("test/nll_ais").direction == "lower" and metric_info("test/nll_ais").unit == "nats"
    assert metric_info("test/bdmc_gap").direction is None and metric_info("test/ais_seconds").unit == "s"
    names = ["test/neg_elbo", "test/knn_error_k5", "test/nll_k1", "test/fid_n100 [n:1]", "test/nll_k5000",
             "test/nll_ais"]
    assert sorted(names, key=sort_key) == ["test/nll_ais", "test/nll_k5000", "test/nll_k1", "test/fid_n100 [n:1]",
                                           "test/neg_elbo", "test/knn_error_k5"]


def test_leaderboard_cli(tmp_path, capsys):
    assert main(["leaderboard", str(RECORDS), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| gan | 2 | — | 32.00 ± 25.41 |" in out
    assert (tmp_path / "runs.csv").exists()
    assert main(["leaderboard", str(tmp_path / "nothing")]) == 2


def test_records_without_budget_fields_are_still_tabulated(tmp_path):
    """Older records lack epochs or wall time (or hold null): the row is shown, the column says —."""
    root = tmp_path / "records"
    shutil.copytree(RECORDS / "mnist__vae__seed0__f48600769acf", root / "fixed-vae")
    path = root / "fixed-vae" / "record.json"
    rec = json.loads(path.read_text())
    rec["epochs"] = None
    del rec["wall_time_s"], rec["git"]
    path.write_text(json.dumps(rec))
    markdown = write_leaderboard(root, tmp_path / "out", html=tmp_path / "site")
    assert "| vae | 1 | 88.71 | — | — |" in markdown
    assert ",fixed-vae/record.json," in (tmp_path / "out" / "runs.csv").read_text()
