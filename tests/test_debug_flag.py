"""Errors are one line on stderr; ``--debug`` (before or after the command) adds the full traceback."""
import json
import signal

import pytest

from benchmarks.cli import main


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def stderr_of(capsys, argv) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


BAD_METHOD = ["run", "--method", "no-such-method", "--data", "digits"]


def test_a_usage_error_is_one_line_without_debug_and_a_traceback_with_it(tmp_path, capsys):
    code, lines = stderr_of(capsys, [*BAD_METHOD, "--out", tmp_path])
    assert code == 2 and len(lines) == 1 and lines[0].startswith("dgm-bench: error: ") and "no-such-method" in lines[0]
    for argv in (["--debug", *BAD_METHOD, "--out", tmp_path], [*BAD_METHOD, "--out", tmp_path, "--debug"]):
        code, debug_lines = stderr_of(capsys, argv)
        assert code == 2 and debug_lines[0] == "Traceback (most recent call last):", debug_lines
        assert any("ConfigError" in line for line in debug_lines) and debug_lines[-1] == lines[0]


@pytest.fixture
def record_without_config(tmp_path):
    """A run folder whose record.json lost its config (hand-edited): evaluate cannot rebuild the run."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "record.json").write_text(json.dumps({"status": "completed"}))
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"\0" * 64)
    return run_dir


def test_an_unforeseen_error_is_one_line_naming_its_kind_and_pointing_to_debug(record_without_config, capsys):
    code, lines = stderr_of(capsys, ["evaluate", record_without_config])
    assert code == 1 and lines == [
        "dgm-bench: error: KeyError: 'config' (an unexpected error; run again with --debug for the traceback)"]


def test_debug_prints_the_traceback_of_an_unforeseen_error(record_without_config, capsys):
    code, lines = stderr_of(capsys, ["evaluate", record_without_config, "--debug"])
    assert code == 1 and lines[0] == "Traceback (most recent call last):"
    assert 'record["config"]' in "\n".join(lines)  # the line that failed, from the traceback
    assert lines[-1] == "dgm-bench: error: KeyError: 'config'"
