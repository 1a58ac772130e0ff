"""One lock per run folder, so that two runners sharing an output folder never train one cell twice.

``RUN_DIR/run.lock`` is held with ``flock`` (exclusive, non-blocking) for as long as a process works
in the folder; it names its holder (host, pid, start time). The kernel drops the lock when its
holder dies, however it dies, so a stale lock is simply taken over by the next runner. The file
itself is never deleted: removing a flock'ed file lets two processes lock two different inodes.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

LOCK = "run.lock"
#: a rank other than 0 of a multi-process run works in its rank 0's folder, under rank 0's lock
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_secondary_rank() -> bool:
    return any(os.environ.get(name, "0") not in ("", "0") for name in RANK_VARIABLES)


class RunLock:
    """``with``-less on purpose: :meth:`acquire` says whether it got the lock instead of waiting."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if no live process holds it; False (and nothing changed) if one does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "since": datetime.now(timezone.utc).isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no holder named once released
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str:
        """Who holds the lock, as its file says (``host pid N since T``), for messages."""
        try:
            info = json.loads(self.path.read_text())
            return f"pid {info['pid']} on {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"
