"""The registry's DuckDB mirror: versions and events copied into the ``policies`` / ``policy_events`` tables.

The files are the source of truth; the serving process mirrors them into its trace store so
queries can join episodes with the policy that served them, including changes other processes
made. A change schedules its agent (:meth:`StoreMirror.schedule`) and a background thread copies
it within milliseconds, so a registry change never waits on DuckDB; :meth:`StoreMirror.sync`
does it now. The mirrored ``digest`` is the one recorded at registration, and
:meth:`StoreMirror.mirrored_digest` reads it back for the load-time comparison.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from agentgym_runtime.policy.registry.files import PolicyFiles
    >>> StoreMirror(PolicyFiles(Path(tempfile.mkdtemp())), None, rows=lambda agent: []).sync()
    0
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agentgym_runtime.errors import StoreUnavailableError
from agentgym_runtime.policy.registry.files import PolicyFiles

if TYPE_CHECKING:
    import duckdb

    from agentgym_runtime.collectors.store import TraceStore

logger = logging.getLogger("agentgym_runtime.policy")


def utc(ts: float) -> datetime:
    """Unix seconds as an aware UTC datetime (the tables' timestamp type)."""
    return datetime.fromtimestamp(ts, tz=UTC)


class StoreMirror:
    """Copies an agent's versions and new events into the store (module docstring).

    Args:
        files: The file store (source of truth).
        store: The serving process's trace store (``None``: mirror nothing).
        rows: ``rows(agent)``: the ``policies`` rows of ``agent`` (the registry builds them).
        on_error: Where mirroring failures go; they never fail a registry change.
    """

    def __init__(
        self,
        files: PolicyFiles,
        store: TraceStore | None,
        *,
        rows: Callable[[str], list[list[Any]]],
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.files = files
        self.store = store
        self._rows = rows
        self._on_error = on_error
        self._sync_lock = threading.Lock()
        self._event_offsets: dict[str, int] = {}
        self._cond = threading.Condition()
        self._pending: set[str] = set()
        self._thread: threading.Thread | None = None

    def schedule(self, agent: str) -> None:
        """Mirror ``agent`` soon, on a background thread."""
        if self.store is None:
            return
        with self._cond:
            self._pending.add(agent)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="agentgym-policy-mirror", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    if not self._cond.wait(timeout=5.0) and not self._pending:
                        self._thread = None  # idle: a later change starts a new one
                        return
                agents, self._pending = self._pending, set()
            for agent in sorted(agents):
                self._mirror_now(agent)

    def _mirror_now(self, agent: str) -> None:
        store = self.store
        if store is None or not store.is_open:
            return  # not opened yet, or closed at shutdown: never reopen it from here
        try:
            self.sync(agent)
        except StoreUnavailableError as exc:
            logger.debug("agentgym: cannot mirror policies of %s now: %s", agent, exc)
        except Exception as exc:
            try:
                if self._on_error is None:
                    raise
                self._on_error("policy registry mirror", exc)
            except Exception:
                logger.exception("agentgym: mirroring the policies of %s into the store failed", agent)

    def sync(self, agent: str | None = None) -> int:
        """Mirror versions and new events (also other processes') now; return how many events were new."""
        written = 0
        for name in [agent] if agent is not None else self.files.agents():
            with self._sync_lock:
                store = self.store  # read under the lock: close() detaches it under the same lock
                if store is None:
                    break
                written += self._sync_agent(store, name)
        return written

    def close(self) -> None:
        """Mirror what is pending, then stop using the store."""
        if self.store is None:
            return
        with self._cond:
            pending, self._pending = self._pending, set()
        for agent in sorted(pending):
            self._mirror_now(agent)
        with self._sync_lock:
            self.store = None

    def mirrored_digest(self, agent: str, version: int) -> str | None:
        """The manifest digest the store holds for ``agent@v<version>`` (``None``: none, or no open store)."""
        store = self.store
        if store is None or not store.is_open:
            return None
        try:
            rows = store.query("SELECT manifest_sha256 FROM policies WHERE agent = ? AND version = ?", [agent, version])
        except Exception as exc:  # the comparison is a second line of defence: never fail a load on it
            logger.debug("agentgym: cannot read the mirrored digest of %s@v%d: %s", agent, version, exc)
            return None
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def _sync_agent(self, store: TraceStore, agent: str) -> int:
        if self.files.read_state(agent) is None:
            return 0
        rows = self._rows(agent)
        offset = self._event_offsets.get(agent)
        if offset is None:
            known = store.query("SELECT count(*) FROM policy_events WHERE agent = ?", [agent])
            offset = self.files.offset_after_lines(agent, int(known[0][0]) if known else 0)
        events, new_offset = self.files.events_from(agent, offset)

        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM policies WHERE agent = ?", [agent])
            con.executemany("INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if events:
                con.executemany(
                    "INSERT INTO policy_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        [
                            e.agent,
                            e.version,
                            e.from_status,
                            e.to_status,
                            e.actor,
                            e.reason,
                            utc(e.occurred_at),
                            json.dumps({**e.details, "sequence": e.sequence}, default=str),
                        ]
                        for e in events
                    ],
                )

        store.write(write)
        self._event_offsets[agent] = new_offset
        return len(events)
