"""Where data lives, and the error a user sees when it is not there."""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "DGM_BENCH_DATA"


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dgm-bench"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The explicit argument, else ``$DGM_BENCH_DATA``, else ``~/.cache/dgm-bench/data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return _user_cache() / "data"


def extraction_dir() -> Path:
    """A writable place for files decompressed from a (possibly read-only) data directory."""
    return _user_cache() / "extracted"


class DataFileError(FileNotFoundError):
    """A data file is missing, unreadable or holds values the protocol cannot use; the message says
    what, where and how to get it."""


def require_files(root: Path, names: list[str | tuple[str, ...]], dataset: str, how: str) -> list[Path]:
    """Return the paths of ``names`` under ``root`` or raise one error listing all that are missing.

    A tuple in ``names`` lists alternatives (e.g. ``("x.amat", "x.amat.gz")``); the first that
    exists is returned.
    """
    found, missing = [], []
    for name in names:
        options = (name,) if isinstance(name, str) else tuple(name)
        hit = next((root / o for o in options if (root / o).exists()), None)
        if hit is None:
            missing.append(" or ".join(options))
        found.append(hit)
    if missing:
        listing = "\n  ".join(missing)
        raise DataFileError(
            f"{dataset}: expected file(s) not found:\n  {listing}\n"
            f"Looked in {root} (set the data directory with --set data.data_dir=DIR or "
            f"${ENV_VAR}). {how}")
    return found
