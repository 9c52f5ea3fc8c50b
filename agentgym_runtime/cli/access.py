"""Opening a home's trace store for reading, from a process that does not write it.

DuckDB lets one process hold a database file for writing; a serving process usually does.
Then a reader gets a lock error, and reads a snapshot copy of the file instead. The CLI
commands (through :func:`agentgym_runtime.cli.common.reading_store`) and the dashboard's
home source share this one implementation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentgym_runtime.errors import StoreUnavailableError

if TYPE_CHECKING:
    from agentgym_runtime.collectors.store import TraceStore


class StoreMissingError(StoreUnavailableError):
    """Nothing has been recorded at the store's path yet."""


@dataclass(frozen=True, slots=True)
class OpenedStore:
    """A store opened for reading, and whether it is a snapshot copy of a busy one."""

    store: TraceStore
    snapshot: bool


@contextmanager
def open_for_reading(path: str) -> Iterator[OpenedStore]:
    """Open the DuckDB file at ``path`` read-only, or a snapshot copy while another process holds it.

    Raises:
        StoreMissingError: No file at ``path``.
        StoreUnavailableError: ``:memory:``, or neither the file nor a snapshot can be read.

    Example:
        >>> import tempfile, os
        >>> try:
        ...     with open_for_reading(os.path.join(tempfile.mkdtemp(), "none.duckdb")):
        ...         pass
        ... except StoreMissingError as exc:
        ...     print(str(exc).startswith("no trace store at"))
        True
    """
    from agentgym_runtime.collectors.store import TraceStore

    if path == ":memory:":
        raise StoreUnavailableError("an in-memory store cannot be read from another process")
    if not os.path.exists(path):
        raise StoreMissingError(f"no trace store at {path}")
    store = TraceStore(path, read_only=True)
    try:
        store.connect()
    except StoreUnavailableError as exc:
        if "lock" not in str(exc).lower():
            raise
        with _snapshot(path) as copy:
            snapshot = TraceStore(copy, read_only=True)
            try:
                snapshot.connect()
            except StoreUnavailableError as snap_exc:
                raise StoreUnavailableError(
                    f"the store is in use and no snapshot could be read: {snap_exc}"
                ) from snap_exc
            try:
                yield OpenedStore(snapshot, True)
            finally:
                snapshot.close()
        return
    try:
        yield OpenedStore(store, False)
    finally:
        store.close()


@contextmanager
def _snapshot(path: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="agentgym-snapshot-") as tmp:
        copy = os.path.join(tmp, "traces.duckdb")
        shutil.copyfile(path, copy)
        if os.path.exists(path + ".wal"):
            shutil.copyfile(path + ".wal", copy + ".wal")
        yield copy
