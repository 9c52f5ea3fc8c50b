"""An OpenTelemetry ``SpanExporter`` that writes spans into the DuckDB trace store.

It runs behind a ``BatchSpanProcessor``, whose worker thread is the one thread
that writes spans; it receives spans or the rows already made of them
(:class:`~agentgym_runtime.collectors.rows.SpanRecord`). Each batch is one
transaction. Span rows go in as one Arrow table through ``INSERT ... SELECT``:
building it holds the GIL ~1.5 µs a row and DuckDB then reads it without the
GIL, so the agent's threads keep running. Without pyarrow (or until its
background import is done) they go through DuckDB's appender, which converts
every value under the GIL (~6 µs a row; ``executemany`` is ~30x slower still).
Episode and feedback rows, which are few, always use the appender.

When the store cannot be written (read-only location, full disk, file locked by
another process), rows are kept in a bounded retry buffer and written on the
next attempt, so recording resumes by itself; only rows beyond the buffer's
bound are dropped, and they are counted. Each pending batch is its own transaction,
oldest first, so a backlog drains batch by batch as space comes back. A batch that fails
because of its *values* (see :func:`is_data_error`) is split in halves until the bad rows
stand alone; those are quarantined (kept in ``quarantine/`` next to the store with their
reason, and counted), and never block the rows after them.

Example:
    >>> from agentgym_runtime.collectors.store import TraceStore
    >>> exporter = DuckDBSpanExporter(TraceStore(":memory:"))
    >>> exporter.export([]).name
    'SUCCESS'
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from agentgym_runtime.collectors.journal import Journal
from agentgym_runtime.collectors.rows import Row, RowBatch, SpanRecord, SpanRows, preload_arrow, span_rows, to_arrow
from agentgym_runtime.collectors.schema import SPAN_COLUMNS
from agentgym_runtime.collectors.stats import PipelineStats
from agentgym_runtime.collectors.store import TraceStore
from agentgym_runtime.errors import StoreUnavailableError
from agentgym_runtime.recording.files import atomic_write_text, ensure_private_dir

if TYPE_CHECKING:
    import duckdb

logger = logging.getLogger("agentgym_runtime.exporter")

#: Folder next to the store where rows that cannot be stored are kept, one JSON file per row.
QUARANTINE_DIR = "quarantine"


def is_data_error(exc: BaseException) -> bool:
    """Whether a failed write was caused by the rows themselves (retrying cannot help).

    Everything about the place (a full disk, a read-only file, a lock held by another process,
    an invalidated connection, memory) is *not* a data error: those rows wait and are retried.
    Only what DuckDB or the conversion reports about values (an unencodable string, a value out
    of range, a constraint) is; a batch failing so is split until the bad rows stand alone.

    Example:
        >>> is_data_error(UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed"))
        True
        >>> is_data_error(OSError(28, "No space left on device"))
        False
    """
    import duckdb

    environmental = (
        StoreUnavailableError,
        OSError,
        MemoryError,
        duckdb.OperationalError,  # IO, out of memory, transaction conflicts
        duckdb.FatalException,
        duckdb.InternalException,
        duckdb.PermissionException,
        duckdb.InterruptException,
    )
    if isinstance(exc, environmental):
        return False
    if isinstance(exc, duckdb.Error):
        # Conservative: only errors that name a value. Others (e.g. "the Python interpreter is
        # shutting down", raised for every row at exit) would otherwise quarantine good rows.
        if isinstance(exc, duckdb.DataError | duckdb.IntegrityError):
            return True
        message = str(exc).lower()
        return any(word in message for word in _VALUE_WORDS) and "shutting down" not in message
    return isinstance(exc, UnicodeError | OverflowError | ValueError | TypeError)


#: Words of DuckDB messages that blame a value (checked lower-case).
_VALUE_WORDS = ("conversion", "encode", "surrogate", "utf-8", "utf8", "out of range", "invalid unicode")


def _halves(batch: RowBatch) -> tuple[RowBatch, RowBatch]:
    """Split ``batch`` into two non-empty batches (its rows in order: spans, episodes, feedback)."""
    items = (
        [("spans", row) for row in batch.spans]
        + [("episodes", row) for row in batch.episodes]
        + [("feedback", row) for row in batch.feedback]
    )
    middle = len(items) // 2
    parts = (RowBatch(), RowBatch())
    for index, (table, row) in enumerate(items):
        getattr(parts[0 if index < middle else 1], table).append(row)
    return parts


class DuckDBSpanExporter(SpanExporter):
    """Write span batches into a :class:`TraceStore`, retrying what could not be written.

    Args:
        store: Where to write.
        stats: Counters to update (a fresh set if omitted).
        max_pending_rows: Span rows kept for retry while the store is unwritable.
        reopen_backoff_s: Least time between two attempts after a failure.
        on_write: Called after every successful write (e.g. to publish the status file).
        columnar: Insert span rows as one Arrow table per batch when pyarrow is installed
            (``False``: always DuckDB's appender, the slower path used without pyarrow).
        journal: The process's crash journal (:mod:`.journal`): the rows of every batch that
            leaves the retry buffer (committed, quarantined or dropped) are settled in it.
    """

    #: The span processor hands this exporter ``SpanRecord`` rows instead of spans.
    accepts_records = True

    def __init__(
        self,
        store: TraceStore,
        *,
        stats: PipelineStats | None = None,
        max_pending_rows: int = 262_144,
        reopen_backoff_s: float = 1.0,
        on_write: Callable[[], None] | None = None,
        columnar: bool = True,
        journal: Journal | None = None,
    ) -> None:
        self.store = store
        self.journal = journal
        self.stats = stats or PipelineStats()
        self._max_pending_rows = max_pending_rows
        self._backoff_s = reopen_backoff_s
        self._on_write = on_write
        self._columnar = columnar
        if columnar:
            preload_arrow()
        self._pending: deque[RowBatch] = deque()
        self._pending_spans = 0
        self._lock = threading.Lock()
        self._next_attempt = 0.0
        self._logged: set[str] = set()
        self._shutdown = False
        self._quarantined_files = 0

    def export(self, spans: Sequence[ReadableSpan | SpanRecord | SpanRows]) -> SpanExportResult:
        """Convert ``spans`` (or the records made of them as they ended) to rows and write them.

        What cannot be written now stays in the retry buffer for the next attempt.
        """
        if not spans:
            return SpanExportResult.SUCCESS
        # Counted as "exporting" until the rows sit in the retry buffer, so stats read meanwhile
        # never mistake this batch for lost spans.
        self.stats.exporting(len(spans))
        try:
            batch = span_rows(spans)
        except Exception as exc:  # a span we cannot read must not stop the others
            self.stats.exporting(-len(spans))
            self.stats.add(spans_unconvertible=len(spans))
            self._log_once("convert", f"agentgym: could not convert {len(spans)} spans to rows: {exc!r}")
            return SpanExportResult.FAILURE
        with self._lock:
            self._pending.append(batch)
            self._pending_spans += len(batch.spans)
            self.stats.set_pending(self._pending_spans)
            self.stats.exporting(-len(spans))
            self._trim()
            ok = self._drain(force=False)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def retry_pending(self) -> bool:
        """Try to write what the retry buffer holds now, ignoring the back-off."""
        with self._lock:
            return self._drain(force=True)

    @property
    def pending_spans(self) -> int:
        """Span rows waiting in the retry buffer."""
        return self._pending_spans

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Write the retry buffer; ``False`` if the store is still unwritable."""
        return self.retry_pending()

    def shutdown(self) -> None:
        """Make a last attempt to write what is pending."""
        if self._shutdown:
            return
        self._shutdown = True
        if not self.retry_pending() and self._pending_spans:
            logger.error(
                "agentgym: %d recorded spans could not be written to %s at shutdown: %s",
                self._pending_spans,
                self.store.path,
                self.stats.last_error,
            )

    def _trim(self) -> None:
        # Oldest rows go first: under a long outage the newest traffic is the most useful.
        while self._pending_spans > self._max_pending_rows and len(self._pending) > 1:
            dropped = self._pending.popleft()
            self._pending_spans -= len(dropped.spans)
            if self.journal is not None:
                self.journal.settle(dropped.spans)
            self.stats.add(rows_dropped=len(dropped))
            self._log_once("drop", "agentgym: the trace store retry buffer is full; dropping the oldest rows")
        self.stats.set_pending(self._pending_spans)

    def _drain(self, *, force: bool) -> bool:
        # One transaction per pending batch, oldest first: under a full disk each batch that fits
        # in the space freed is written and leaves the buffer, so a backlog drains step by step.
        if not self._pending:
            return True
        if not force and time.monotonic() < self._next_attempt:
            return False
        wrote_any = False
        while self._pending:
            batch = self._pending[0]
            try:
                self.store.write(functools.partial(_append, batch=batch, columnar=self._columnar))
            except Exception as exc:
                if self._columnar and "shutting down" in str(exc):
                    # At interpreter exit DuckDB refuses to scan Python objects (the Arrow table):
                    # the appender still works, so the last flush goes through it.
                    self._columnar = False
                    continue
                if not is_data_error(exc):
                    self._write_failed(exc)
                    return False
                # The rows themselves cannot be stored: split the batch until the bad rows stand
                # alone, write the rest, set the bad ones aside. Never retried, never blocking.
                self._pending.popleft()
                if len(batch) <= 1:
                    self._settle(batch)
                    self._quarantine(batch, exc)
                else:
                    first, second = _halves(batch)
                    self._pending.appendleft(second)
                    self._pending.appendleft(first)
                continue
            self._pending.popleft()
            self._settle(batch)
            self.stats.add(
                spans_written=len(batch.spans),
                episodes_written=len(batch.episodes),
                feedback_written=len(batch.feedback),
                write_batches=1,
            )
            wrote_any = True
        if wrote_any:
            self.stats.wrote()
            if self._logged:
                logger.warning("agentgym: writing to the trace store %s again", self.store.path)
                self._logged.clear()
            if self._on_write is not None:
                try:
                    self._on_write()
                except Exception:
                    logger.debug("agentgym: on_write hook failed", exc_info=True)
        return True

    def _settle(self, batch: RowBatch) -> None:
        """``batch`` left the retry buffer (written or quarantined)."""
        if self.journal is not None:
            self.journal.settle(batch.spans)
        self._pending_spans -= len(batch.spans)
        self.stats.set_pending(self._pending_spans)

    def _write_failed(self, exc: Exception) -> None:
        self._next_attempt = time.monotonic() + self._backoff_s
        self.stats.add(write_failures=1)
        self.stats.error(f"{type(exc).__name__}: {exc}")
        self._log_once(
            f"write:{type(exc).__name__}",
            f"agentgym: cannot write to the trace store {self.store.path} ({exc}); "
            f"keeping {self._pending_spans} spans to retry; the agent is not affected",
        )

    def _quarantine(self, batch: RowBatch, exc: Exception) -> None:
        """Keep a row that cannot be stored aside, on disk next to the store, with its reason."""
        reason = f"{type(exc).__name__}: {exc}"
        self.stats.add(rows_quarantined=len(batch), spans_quarantined=len(batch.spans))
        self.stats.error(f"quarantined {len(batch)} row(s): {reason}")
        self._log_once(
            f"quarantine:{type(exc).__name__}",
            f"agentgym: a recorded row cannot be stored ({reason}); it is kept aside in "
            f"{self.quarantine_dir or '(memory)'} and the other rows are written",
        )
        directory = self.quarantine_dir
        if directory is None:
            return
        self._quarantined_files += 1
        name = f"{time.time_ns()}-{os.getpid()}-{self._quarantined_files}.json"
        payload = {
            "reason": reason,
            "store": self.store.path,
            "at": time.time(),
            "rows": {
                table: [list(row) for row in rows]
                for table, rows in (("spans", batch.spans), ("episodes", batch.episodes), ("feedback", batch.feedback))
                if rows
            },
        }
        try:
            ensure_private_dir(directory)
            # ASCII JSON: a lone surrogate (a common reason) is kept as its \\uXXXX escape, readable back.
            text = json.dumps(payload, ensure_ascii=True, default=str, indent=1)
            atomic_write_text(directory / name, text, durable=False)  # evidence, not state: no fsync stall
        except Exception as write_exc:
            self._log_once("quarantine-file", f"agentgym: cannot keep a quarantined row in {directory}: {write_exc!r}")

    @property
    def quarantine_dir(self) -> Path | None:
        """Where rows that cannot be stored are kept (``None`` for an in-memory store)."""
        if self.store.path == ":memory:":
            return None
        return Path(self.store.path).parent / QUARANTINE_DIR

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(message)
        else:
            logger.debug(message)


_BATCH_VIEW = "__agentgym_span_batch"
_INSERT_SPANS = f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}) SELECT * FROM {_BATCH_VIEW}"


def _append(con: duckdb.DuckDBPyConnection, batch: RowBatch, *, columnar: bool = True) -> None:
    if batch.spans:
        table = None
        if columnar:
            try:
                table = to_arrow(batch.spans)
            except Exception:  # a value Arrow cannot hold: the appender gives DuckDB's own verdict
                logger.debug("agentgym: Arrow conversion failed; using the appender", exc_info=True)
        if table is not None:
            # One INSERT ... SELECT over the Arrow table: DuckDB reads the buffers without the GIL.
            con.register(_BATCH_VIEW, table)
            try:
                con.execute(_INSERT_SPANS)
            finally:
                con.unregister(_BATCH_VIEW)
        else:
            _append_rows(con, "spans", batch.spans)
    if batch.episodes:
        _append_rows(con, "episodes", batch.episodes)
    if batch.feedback:
        _append_rows(con, "feedback", batch.feedback)


def _append_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[Row]) -> None:
    appender = con.appender(table)
    appender.append_rows(rows)
    appender.flush()
