"""The DuckDB trace store: one database file, opened lazily, migrated, guarded.

Writes in this process go through :meth:`TraceStore.write`, serialized by one
lock; the hot path never writes (spans reach the store on the exporter's
thread). Reads use cursors of the same database instance, so a process can
query what it recorded while it records. Other processes open the file
read-only (DuckDB allows one writing process at a time).

A file that is not a DuckDB database is moved aside as
``<name>.corrupt-<timestamp>`` and a fresh store is created, so a corrupted
file costs history, never the service.

Example:
    >>> store = TraceStore(":memory:")
    >>> store.query("SELECT count(*) FROM spans")
    [(0,)]
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from agentgym_runtime.collectors.schema import migrate
from agentgym_runtime.errors import StoreUnavailableError
from agentgym_runtime.recording.files import ensure_private_dir

if TYPE_CHECKING:
    import duckdb

logger = logging.getLogger("agentgym_runtime.store")
T = TypeVar("T")

_CORRUPT_MARKERS = ("not a valid DuckDB database file", "database file is corrupt", "Corrupt database")


class TraceStore:
    """A DuckDB database holding spans, episodes, feedback, policies and training runs.

    Args:
        path: Database file, or ``:memory:``.
        read_only: Open without taking the write lock (for the CLI and other processes).

    Example:
        >>> store = TraceStore(":memory:")
        >>> row = "('f1', 'e1', 'thumbs', 1.0, NULL, NULL, now())"
        >>> _ = store.write(lambda con: con.execute(f"INSERT INTO feedback VALUES {row}"))
        >>> store.query("SELECT name, value FROM feedback")
        [('thumbs', 1.0)]
    """

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self._path = path
        self._read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.RLock()
        self._quarantined: list[str] = []

    @property
    def path(self) -> str:
        """The database location."""
        return self._path

    @property
    def is_open(self) -> bool:
        """Whether a connection is currently held."""
        return self._con is not None

    @property
    def quarantined(self) -> list[str]:
        """Corrupt files this store moved aside."""
        return list(self._quarantined)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """Return the open connection, opening and migrating the database first if needed.

        Raises:
            StoreUnavailableError: The file cannot be opened now (locked by another process,
                unwritable location, newer schema); the message says which.
        """
        con = self._con
        if con is not None:
            return con
        with self._lock:
            if self._con is None:
                self._con = self._open()
            return self._con

    def _open(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        created = False
        if self._path != ":memory:" and not self._read_only:
            try:
                ensure_private_dir(Path(self._path).parent)
            except OSError as exc:
                raise StoreUnavailableError(f"cannot create the store directory for {self._path}: {exc}") from exc
            created = not os.path.exists(self._path)
        try:
            con = self._connect(duckdb)
        except duckdb.Error as exc:
            if any(marker in str(exc) for marker in _CORRUPT_MARKERS) and not self._read_only:
                self._quarantine()
                try:
                    con = self._connect(duckdb)
                except duckdb.Error as retry_exc:
                    raise StoreUnavailableError(f"cannot open the trace store {self._path}: {retry_exc}") from retry_exc
            else:
                raise StoreUnavailableError(f"cannot open the trace store {self._path}: {exc}") from exc
        if not self._read_only:
            if created:
                # Recorded content is private to the service's user, whatever the umask.
                with contextlib.suppress(OSError):
                    os.chmod(self._path, 0o600)
            try:
                migrate(con)
            except Exception:
                con.close()
                raise
        return con

    def _connect(self, module: Any) -> duckdb.DuckDBPyConnection:
        if self._read_only:
            if self._path != ":memory:" and not os.path.exists(self._path):
                raise StoreUnavailableError(f"no trace store at {self._path} (nothing recorded yet?)")
            return cast("duckdb.DuckDBPyConnection", module.connect(self._path, read_only=True))
        return cast("duckdb.DuckDBPyConnection", module.connect(self._path))

    def _quarantine(self) -> None:
        target = f"{self._path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        os.replace(self._path, target)
        wal = f"{self._path}.wal"
        if os.path.exists(wal):
            os.replace(wal, f"{target}.wal")
        self._quarantined.append(target)
        logger.error("agentgym: the trace store %s was not a valid DuckDB file; moved it to %s", self._path, target)

    def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn(connection)`` in one transaction, serialized with every other write.

        On any error the transaction is rolled back, the connection is dropped (it may be
        invalidated, e.g. after a full disk) and the error propagates.
        """
        if self._read_only:
            raise StoreUnavailableError(f"the trace store {self._path} is open read-only")
        with self._lock:
            con = self.connect()
            try:
                con.execute("BEGIN TRANSACTION")
                result = fn(con)
                con.execute("COMMIT")
                return result
            except BaseException:
                self._discard_connection(con)
                raise

    def _discard_connection(self, con: duckdb.DuckDBPyConnection) -> None:
        try:
            con.execute("ROLLBACK")
        except Exception:
            pass
        if self._path == ":memory:":
            return  # the data lives in this connection: never drop it
        try:
            con.close()
        except Exception:
            pass
        self._con = None

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query on a cursor of this store and return all rows."""
        cursor = self.connect().cursor()
        try:
            return cursor.execute(sql, params or []).fetchall()
        finally:
            cursor.close()

    def query_dicts(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Like :meth:`query`, with each row as a ``{column: value}`` dict."""
        cursor = self.connect().cursor()
        try:
            result = cursor.execute(sql, params or [])
            names = [d[0] for d in result.description or []]
            return [dict(zip(names, row, strict=True)) for row in result.fetchall()]
        finally:
            cursor.close()

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file (so a snapshot copy is complete)."""
        if self._con is not None and not self._read_only:
            with self._lock:
                if self._con is not None:
                    self._con.execute("CHECKPOINT")

    def close(self) -> None:
        """Close the connection; a later call opens it again."""
        with self._lock:
            if self._con is not None:
                try:
                    self._con.close()
                finally:
                    self._con = None

    def reset_after_fork(self) -> None:
        """Forget the parent's connection in a forked child (DuckDB handles do not survive fork)."""
        self._lock = threading.RLock()
        self._con = None
