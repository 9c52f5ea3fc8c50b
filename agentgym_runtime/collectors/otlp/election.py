"""Zero-config sharing of one home by several processes: one owns the store, the others send.

The processes that share a home (the workers of one gunicorn or Celery deployment) take an
exclusive ``fcntl`` lock on ``<home>/collector.lock``; the kernel releases it when its holder
dies, however it dies, so ownership survives crashes without stale-lock cleanup. The holder
owns the DuckDB file, writes its own spans in-process as a single process does, and serves
OTLP/HTTP on a loopback port that it writes into ``<home>/collector.json``. The others
export to that endpoint, spool what is not acknowledged, and keep trying the lock: when the
owner dies, one of them takes over, opens the store and serves, and the spool drains into it.
``agentgym collect`` takes the same lock, so workers started beside it simply send to it.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> home = Path(tempfile.mkdtemp())
    >>> first, second = HomeLock(home), HomeLock(home)
    >>> first.try_acquire(), second.try_acquire()
    (True, False)
    >>> first.release(); second.try_acquire()
    True
    >>> second.release()
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentgym_runtime.recording.files import atomic_write_json

logger = logging.getLogger("agentgym_runtime.collector")

LOCK_NAME = "collector.lock"
ENDPOINT_NAME = "collector.json"


class HomeLock:
    """The exclusive, crash-safe ownership lock of a home."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds it."""
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never blocks."""
        if self._fd is not None:
            return True
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def acquire(self) -> None:
        """Take the lock, waiting for its holder to release it (or die)."""
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    def forget_after_fork(self) -> None:
        """In a forked child: the lock is the parent's (a flock is shared across fork, so close it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def publish_endpoint(home: Path, endpoint: str, **extra: Any) -> None:
    """Write the owner's endpoint into ``<home>/collector.json``."""
    atomic_write_json(home / ENDPOINT_NAME, {"endpoint": endpoint, "pid": os.getpid(), **extra}, durable=False)


def read_endpoint(home: Path) -> dict[str, Any] | None:
    """What ``<home>/collector.json`` says, if anything."""
    try:
        document = json.loads((home / ENDPOINT_NAME).read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and isinstance(document.get("endpoint"), str) else None


class EndpointFile:
    """The owner's endpoint, re-read when ``collector.json`` changes (cheap enough per batch)."""

    def __init__(self, home: Path) -> None:
        self._path = Path(home) / ENDPOINT_NAME
        self._stamp: tuple[int, int] | None = None
        self._endpoint: str | None = None

    def __call__(self) -> str | None:
        """The endpoint now, or ``None`` while no owner has published one."""
        try:
            info = os.stat(self._path)
        except OSError:
            return None
        stamp = (info.st_mtime_ns, info.st_ino)
        if stamp != self._stamp:
            document = read_endpoint(self._path.parent)
            self._endpoint = document["endpoint"] if document else None
            self._stamp = stamp
        return self._endpoint


class Watcher:
    """Try the lock every ``interval_s`` until it is ours, then call ``on_acquired`` once."""

    def __init__(self, lock: HomeLock, on_acquired: Callable[[], None], interval_s: float = 0.5) -> None:
        self._lock = lock
        self._on_acquired = on_acquired
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentgym-home-watch", daemon=True)

    def start(self) -> Watcher:
        """Start watching."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._lock.try_acquire():
                try:
                    self._on_acquired()
                except Exception:
                    logger.warning("agentgym: taking over the home failed", exc_info=True)
                return
