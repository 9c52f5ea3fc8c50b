"""The per-agent training lock: one run of an agent at a time, across threads, processes and restarts."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("agentgym_runtime.trainers")


class TrainLock:
    """``<home>/locks/train-<agent>.lock``: held (``fcntl.flock``) while a run of the agent is active.

    The file holds the holder's pid, run id and start time. The OS drops a dead process's
    lock, so a file with content whose lock is free is stale: it is taken over (and
    :attr:`stale_holder` says whose it was). The file is truncated, never deleted, on release
    (deleting a lock file races with a concurrent opener).

    Example:
        >>> import tempfile
        >>> lock = TrainLock(Path(tempfile.mkdtemp()) / "train-a.lock")
        >>> lock.acquire("r1"), TrainLock(lock.path).acquire("r2")
        (True, False)
        >>> lock.release()
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.stale_holder: dict[str, Any] | None = None
        self._fd: int | None = None

    def acquire(self, run_id: str) -> bool:
        """Take the lock without waiting; ``False`` if another run holds it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        previous = _parse_holder(os.pread(fd, 4096, 0))
        if previous is not None:
            self.stale_holder = previous
            logger.warning(
                "agentgym: taking over the stale training lock %s of %s (no longer running)", self.path, previous
            )
        payload = json.dumps({"pid": os.getpid(), "run_id": run_id, "started_at": datetime.now(UTC).isoformat()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload.encode(), 0)
        self._fd = fd
        return True

    def holder(self) -> dict[str, Any] | None:
        """Who holds (or last held, if stale) the lock, from the file."""
        try:
            return _parse_holder(self.path.read_bytes())
        except OSError:
            return None

    def release(self) -> None:
        """Clear the file and drop the lock (no-op if not held)."""
        import fcntl

        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _parse_holder(data: bytes) -> dict[str, Any] | None:
    if not data.strip():
        return None
    try:
        holder = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return {"raw": data.decode("utf-8", "replace")[:200]}
    return holder if isinstance(holder, dict) else {"raw": str(holder)[:200]}
