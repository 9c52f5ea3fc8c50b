"""The collector's writer: requests queue here, are committed in groups, then acknowledged.

Every request waits for the transaction that holds its rows: a ``200`` means the spans are
in the store, so a client that got no answer (the collector was killed, the connection
dropped) keeps its batch and sends it again. A batch id is committed in ``otlp_batches`` with
the rows, so a retry of a batch that did commit is acknowledged without writing it twice,
across restarts too. The id is a hash of the request's span ids (:func:`spans_id`), not of
its bytes: a worker may send a batch as agentgym rows, get no answer although the collector
committed it, and deliver it again later as OTLP (the collector it then reaches reads only
OTLP), so the same spans arrive in two encodings. The hash of the body (:func:`batch_id`,
what earlier versions recorded) is still looked up, so a retry of a batch committed before
an upgrade is recognized too.

The queue is bounded in spans: past the bound :meth:`StoreSink.submit` raises
:class:`Overloaded` and the server answers ``429`` with ``Retry-After`` instead of growing.

The writer commits everything queued in one transaction. A transaction's cost is mostly fixed
(the commit), and a sender has one request in flight, so the senders' next requests arrive
just after a commit answered them: the writer then waits up to ``linger_s`` for as many
requests as its recent transactions held (:meth:`StoreSink._linger`) before it commits, so
groups stay as large as the number of active senders. A lone sender's group is one request,
which is never held back; each request is still acknowledged only after its commit.

Example:
    >>> from agentgym_runtime.collectors.store import TraceStore
    >>> sink = StoreSink(TraceStore(":memory:")).start()
    >>> from agentgym_runtime.collectors.otlp.decode import DecodedRows
    >>> sink.submit("b1", DecodedRows()).result(5)
    'written'
    >>> sink.submit("b2", DecodedRows(), also=("b1",)).result(5)
    'duplicate'
    >>> sink.close()
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agentgym_runtime import semconv
from agentgym_runtime.collectors.exporter import _append, is_data_error
from agentgym_runtime.collectors.otlp.decode import DecodedRows, MalformedPayloadError
from agentgym_runtime.collectors.otlp.rows_wire import RowTables
from agentgym_runtime.collectors.rows import RowBatch
from agentgym_runtime.collectors.schema import EPISODE_COLUMNS, FEEDBACK_COLUMNS, SPAN_COLUMNS
from agentgym_runtime.collectors.store import TraceStore

if TYPE_CHECKING:
    import duckdb

logger = logging.getLogger("agentgym_runtime.collector")

#: Batch ids remembered in memory (older ones are still found in ``otlp_batches``).
_RECENT_IDS = 200_000
#: Transactions whose request counts set the group the writer waits for.
_GROUP_HISTORY = 8


class Overloaded(Exception):
    """The write queue is full; the client should retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"the collector's write queue is full; retry after {retry_after_s:.0f}s")
        self.retry_after_s = retry_after_s


def batch_id(body: bytes) -> str:
    """The id of a request body: equal bytes (a retry, a spooled batch) give equal ids.

    Example:
        >>> batch_id(b"x") == batch_id(b"x") != batch_id(b"y")
        True
    """
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def spans_id(rows: DecodedRows | RowTables) -> str | None:
    """The id of a request's spans, whatever their encoding or order; ``None`` without spans.

    A hash of the sorted ``trace_id:span_id`` pairs: the rows body of a batch and the OTLP
    body built from the same rows (:mod:`.encode` groups spans by service and scope, so their
    order may differ) get the same id.

    Example:
        >>> from agentgym_runtime.collectors.rows import RowBatch
        >>> a = DecodedRows(RowBatch(spans=[("t1", "s1"), ("t1", "s2")]))
        >>> b = DecodedRows(RowBatch(spans=[("t1", "s2"), ("t1", "s1")]))
        >>> spans_id(a) == spans_id(b) != spans_id(DecodedRows(RowBatch(spans=[("t1", "s1")])))
        True
        >>> spans_id(DecodedRows()) is None
        True
    """
    if isinstance(rows, RowTables):
        table = rows.tables.get("spans")
        if table is None or not table.num_rows:
            return None
        traces, spans = table.column("trace_id").to_pylist(), table.column("span_id").to_pylist()
        keys = sorted(f"{trace}:{span}" for trace, span in zip(traces, spans, strict=True))
    else:
        if not rows.batch.spans:
            return None
        keys = sorted(f"{row[0]}:{row[1]}" for row in rows.batch.spans)
    return "s-" + hashlib.blake2b("\n".join(keys).encode(), digest_size=16).hexdigest()


@dataclass
class SinkStats:
    """Counters of the collector's writer (served on ``/v1/status``)."""

    requests: int = 0
    spans_received: int = 0
    spans_written: int = 0
    episodes_written: int = 0
    duplicate_batches: int = 0
    write_transactions: int = 0
    write_failures: int = 0
    rejected_overloaded: int = 0
    malformed: int = 0
    unauthorized: int = 0
    too_large: int = 0
    rate_limited: int = 0
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        """Add ``deltas`` to the named counters."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, Any]:
        """The counters as a dict."""
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class RejectedRows(MalformedPayloadError):
    """The store refused a request's rows for a data reason (alone in its transaction)."""


@dataclass(slots=True)
class _Item:
    batch_id: str
    rows: DecodedRows | RowTables
    future: Future[str]
    also: tuple[str, ...] = ()


class StoreSink:
    """Commit decoded requests into a :class:`TraceStore` from one writer thread.

    Args:
        store: The store this process owns.
        max_queued_spans: Spans waiting for the writer before requests are refused (429).
        max_transaction_spans: Spans committed in one transaction at most.
        stats: Counters to update.
        linger_s: Longest wait for more requests to join a transaction (``0``: never wait).
    """

    def __init__(
        self,
        store: TraceStore,
        *,
        max_queued_spans: int = 200_000,
        max_transaction_spans: int = 50_000,
        stats: SinkStats | None = None,
        linger_s: float = 0.005,
    ) -> None:
        self.store = store
        self.stats = stats or SinkStats()
        self._max_queued = max_queued_spans
        self._max_txn = max_transaction_spans
        self._linger_s = linger_s
        #: Requests in each recent transaction (the group the writer waits for).
        self._groups: deque[int] = deque(maxlen=_GROUP_HISTORY)
        self._queue: list[_Item] = []
        self._queued_spans = 0
        self._cond = threading.Condition()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._loaded = False

    @property
    def queued_spans(self) -> int:
        """Spans waiting for the writer."""
        return self._queued_spans

    def start(self) -> StoreSink:
        """Start the writer thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="agentgym-collector-writer", daemon=True)
            self._thread.start()
        return self

    def submit(self, batch_id: str, rows: DecodedRows | RowTables, *, also: tuple[str, ...] = ()) -> Future[str]:
        """Queue ``rows``; the future gives ``"written"`` or ``"duplicate"`` once committed.

        ``batch_id`` is recorded with the rows; a batch whose ``batch_id`` or any id in
        ``also`` was committed before is a duplicate.

        Rows decoded from OTLP and Arrow tables of agentgym's own format
        (:mod:`.rows_wire`) are committed together. The future raises :class:`RejectedRows`
        when the store refuses a request's own rows (the others of its group are written).

        Raises:
            Overloaded: The queue holds ``max_queued_spans`` already.
        """
        future: Future[str] = Future()
        count = rows.span_count
        with self._cond:
            if self._closing:
                raise Overloaded(1.0)
            if self._queue and self._queued_spans + count > self._max_queued:
                self.stats.add(rejected_overloaded=1)
                raise Overloaded(1.0)
            self._queue.append(_Item(batch_id, rows, future, also))
            self._queued_spans += count
            self._cond.notify()
        self.stats.add(requests=1, spans_received=count)
        return future

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, then stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # --- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue and self._closing:
                    return
                self._linger()
                group: list[_Item] = []
                spans = 0
                while self._queue and (not group or spans + self._queue[0].rows.span_count <= self._max_txn):
                    item = self._queue.pop(0)
                    group.append(item)
                    spans += item.rows.span_count
                self._groups.append(len(group))
            self._write_group(group)
            with self._cond:
                self._queued_spans -= spans

    def _linger(self) -> None:
        """Wait (``_cond`` held) up to ``linger_s`` until the queue holds a recent group's requests.

        Bounded three ways: the time, a transaction's spans, and the largest recent group (no
        more senders are expected than were active a moment ago).
        """
        target = max(self._groups, default=1)
        if self._linger_s <= 0 or len(self._queue) >= target:
            return
        deadline = time.monotonic() + self._linger_s
        while len(self._queue) < target and self._queued_spans < self._max_txn and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _write_group(self, group: list[_Item]) -> None:
        try:
            self._load_recent_ids()
            fresh: list[_Item] = []
            seen: set[str] = set()
            duplicates: list[_Item] = []
            for item in group:
                ids = (item.batch_id, *item.also)
                if any(i in self._recent or i in seen for i in ids):
                    duplicates.append(item)
                else:
                    seen.update(ids)
                    fresh.append(item)
            fresh_ids = [i for item in fresh for i in (item.batch_id, *item.also)]
            # Ids committed by an earlier run and no longer remembered in memory.
            if fresh_ids:
                known = self._committed_among(fresh_ids)
                if known:
                    duplicates += [item for item in fresh if known.intersection((item.batch_id, *item.also))]
                    fresh = [item for item in fresh if not known.intersection((item.batch_id, *item.also))]
            if fresh:
                try:
                    self._commit_items(fresh)
                except Exception as exc:
                    if not is_data_error(exc):
                        raise
                    if len(fresh) == 1:  # its own rows: refused (400), not "store unavailable" (503, retried)
                        self._reject(fresh[0], exc)
                    else:  # one request's rows are refused by the store: commit the others each alone
                        self._commit_alone(fresh)
                    fresh = []
            if duplicates:
                self.stats.add(duplicate_batches=len(duplicates))
        except Exception as exc:
            self._failed(group, exc)
            return
        for item in fresh:
            item.future.set_result("written")
        for item in duplicates:
            item.future.set_result("duplicate")

    def _commit_items(self, items: list[_Item]) -> None:
        merged = RowBatch()
        roots: dict[str, tuple[Any, ...]] = {}
        tables: dict[str, list[Any]] = {}
        spans = episodes = 0
        for item in items:
            rows = item.rows
            if isinstance(rows, RowTables):
                for name, table in rows.tables.items():
                    tables.setdefault(name, []).append(table)
                spans += rows.span_count
                episodes += rows.episode_count
            else:
                merged.extend(rows.batch)
                roots.update(rows.foreign_roots)
        now = datetime.now(UTC)
        marks = [(item.batch_id, item.rows.span_count, now) for item in items]
        episodes += self.store.write(lambda con: _commit(con, merged, roots, marks, tables))
        self.stats.add(
            spans_written=len(merged.spans) + spans,
            episodes_written=len(merged.episodes) + episodes,
            write_transactions=1,
        )
        for item in items:
            self._remember(item.batch_id)

    def _commit_alone(self, items: list[_Item]) -> None:
        for item in items:
            try:
                self._commit_items([item])
            except Exception as exc:
                if is_data_error(exc):
                    self._reject(item, exc)
                else:
                    self._failed([item], exc)
                continue
            item.future.set_result("written")

    def _reject(self, item: _Item, exc: Exception) -> None:
        self.stats.add(write_failures=1, malformed=1)
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        item.future.set_exception(RejectedRows(f"the store refused these rows: {exc}"))

    def _failed(self, items: list[_Item], exc: Exception) -> None:
        self.stats.add(write_failures=1)
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        logger.warning("agentgym collector: could not write %d requests: %s", len(items), exc)
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)

    def _remember(self, batch: str) -> None:
        self._recent[batch] = None
        if len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)

    def _load_recent_ids(self) -> None:
        if self._loaded:
            return
        rows = self.store.query(f"SELECT batch_id FROM otlp_batches ORDER BY received_at DESC LIMIT {_RECENT_IDS}")
        for (batch,) in reversed(rows):
            self._recent[batch] = None
        self._loaded = True

    def _committed_among(self, ids: list[str]) -> set[str]:
        if len(self._recent) < _RECENT_IDS:
            return set()  # every committed id is in memory
        rows = self.store.query("SELECT batch_id FROM otlp_batches WHERE batch_id IN (SELECT unnest(?))", [ids])
        return {row[0] for row in rows}


_TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "spans": SPAN_COLUMNS,
    "episodes": tuple(name for name, _ in EPISODE_COLUMNS),
    "feedback": tuple(name for name, _ in FEEDBACK_COLUMNS),
}
_ARROW_VIEW = "__agentgym_collector_rows"


def _commit(
    con: duckdb.DuckDBPyConnection,
    batch: RowBatch,
    roots: dict[str, tuple[Any, ...]],
    marks: list[tuple[str, int, datetime]],
    tables: dict[str, list[Any]] | None = None,
) -> int:
    if len(batch):
        _append(con, batch)
    for name, parts in (tables or {}).items():
        _insert_arrow(con, name, parts)
    con.executemany("INSERT INTO otlp_batches VALUES (?, ?, ?)", marks)
    return _foreign_episodes(con, roots) if roots else 0


def _insert_arrow(con: duckdb.DuckDBPyConnection, name: str, parts: list[Any]) -> None:
    """One ``INSERT ... SELECT`` per table over the requests' Arrow tables (DuckDB reads them without the GIL)."""
    import pyarrow as pa  # type: ignore[import-untyped]

    table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
    con.register(_ARROW_VIEW, table)
    try:
        con.execute(f"INSERT INTO {name} ({', '.join(_TABLE_COLUMNS[name])}) SELECT * FROM {_ARROW_VIEW}")
    except Exception:
        # In an aborted transaction unregistering fails too: DuckDB's verdict on the rows is
        # the error to report (the writer splits the group on a data error).
        with contextlib.suppress(Exception):
            con.unregister(_ARROW_VIEW)
        raise
    con.unregister(_ARROW_VIEW)


_TOOL = f"operation = '{semconv.OP_EXECUTE_TOOL}' AND tool_outcome IS NOT NULL"
_FOREIGN_EPISODE = f"""
INSERT INTO episodes
SELECT
  ? AS episode_id, ? AS agent, 0, NULL, ? AS trace_id,
  make_timestamptz(?::BIGINT // 1000), make_timestamptz(?::BIGINT // 1000), (?::BIGINT - ?::BIGINT) / 1e6,
  ? AS status, ? AS error_type, ? AS framework, NULL, ? AS entrypoint,
  count(*) FILTER (WHERE {_TOOL}),
  count(*) FILTER (WHERE {_TOOL} AND tool_outcome <> '{semconv.ToolOutcome.OK}'),
  CASE WHEN count(*) FILTER (WHERE {_TOOL}) = 0 THEN NULL
       ELSE count(*) FILTER (WHERE {_TOOL} AND tool_outcome = '{semconv.ToolOutcome.OK}')
            / count(*) FILTER (WHERE {_TOOL}) END,
  count(*) FILTER (WHERE operation = '{semconv.OP_CHAT}'),
  coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
  NULL, NULL, NULL, NULL
FROM spans WHERE episode_id = ?
"""


def _foreign_episodes(con: duckdb.DuckDBPyConnection, roots: dict[str, tuple[Any, ...]]) -> int:
    """Episode rows of foreign traces whose root arrived, counted from their spans in the store.

    A trace's spans end before its root, so by the time the root is written its children are
    in the store (or in this very transaction).
    """
    for episode_id, (agent, trace_id, start, end, status, error_type, framework, name) in roots.items():
        con.execute(
            _FOREIGN_EPISODE,
            [episode_id, agent, trace_id, start, end, end, start, status, error_type, framework, name, episode_id],
        )
    return len(roots)
