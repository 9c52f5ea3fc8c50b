"""Turn finished OpenTelemetry spans into rows of the store's tables.

One span gives one ``spans`` row; the root ``invoke_agent`` span of an episode
also gives its ``episodes`` row (its counters travel as attributes, computed
in-process as the episode ran), and a ``gen_ai.evaluation.result`` span gives a
``feedback`` row.

Where the time goes, and why the work is split the way it is (2-core machine):

* A finished SDK span waiting in the batch queue keeps ~10 garbage-collected
  objects alive (the span, its attributes, event and link lists, context,
  status). Tens of thousands of them waiting for the writer made the collector
  run full collections that cost the agent's thread more than recording itself.
  So :func:`span_record` turns each span into one flat tuple as it ends (a few
  microseconds, see :class:`SpanRecord`) and the span is freed at once. Episode
  roots and feedback spans, which are rare, travel as spans.
* The writer thread shares the GIL with the agent's threads. It turns a batch of
  rows into columns and, when pyarrow is installed, one Arrow table that DuckDB
  inserts without holding the GIL (:func:`to_arrow`); pyarrow is imported in the
  background (:func:`preload_arrow`), never by ``import agentgym_runtime``.

Example:
    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    >>> memory = InMemorySpanExporter()
    >>> provider = TracerProvider()
    >>> provider.add_span_processor(SimpleSpanProcessor(memory))
    >>> provider.get_tracer("doc").start_span("execute_tool ping", attributes={"gen_ai.tool.name": "ping"}).end()
    >>> batch = span_rows(memory.get_finished_spans())
    >>> row = dict(zip(SPAN_COLUMNS, batch.spans[0]))
    >>> row["name"], row["tool_name"], row["attributes"]
    ('execute_tool ping', 'ping', None)
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags

from agentgym_runtime import semconv
from agentgym_runtime.collectors.schema import (
    EPISODE_COLUMNS,
    FEEDBACK_COLUMNS,
    PROMOTED,
    SPAN_COLUMNS,
    SPAN_HEAD_COLUMNS,
    SPAN_TAIL_COLUMNS,
)

Row = tuple[Any, ...]
logger = logging.getLogger("agentgym_runtime.exporter")

# ``json.dumps`` with keyword arguments builds a new JSONEncoder per call; one shared encoder
# halves the cost of encoding a small value.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode

_KIND_NAMES: Final = {kind: kind.name for kind in SpanKind}
_STATUS_NAMES: Final = {code: code.name for code in StatusCode}
_WIDTH: Final = len(SPAN_COLUMNS)
_HEAD_WIDTH: Final = len(SPAN_HEAD_COLUMNS)
_INT_SQL_TYPES: Final = ("INTEGER", "BIGINT")
#: attribute -> (column index, integer column?) for the promoted attributes.
_SLOTS: Final[dict[str, tuple[int, bool]]] = {
    p.attribute: (_HEAD_WIDTH + index, p.sql_type in _INT_SQL_TYPES) for index, p in enumerate(PROMOTED)
}
_REST_AT: Final = _WIDTH - len(SPAN_TAIL_COLUMNS)  # the "attributes" column, then events, links
_EVENTS_AT: Final = _REST_AT + 1
_LINKS_AT: Final = _REST_AT + 2
_UNSET: Final[list[Any]] = [None] * (_WIDTH - _HEAD_WIDTH)  # promoted and tail columns, before filling

# Small memo tables. Spans of one episode share their trace id and mostly their parent, and
# every span of a provider shares its resource and scope. Plain dict operations are atomic
# under the GIL, so the agent's threads and the writer may share them.
_MEMO_SIZE: Final = 4096
_TRACE_HEX: dict[int, str] = {}
_PARENT_HEX: dict[int, str] = {}
#: The last (resource, scope, service name, scope name) seen: every span of a provider shares them.
_SOURCE: tuple[Any, Any, str | None, str | None] = (object(), object(), None, None)
#: JSON text of recurring all-string attribute rests (``{"gen_ai.tool.type": "function"}`` on
#: every tool span). Only all-string rests are memoized: ``1 == True == 1.0`` as dict keys would
#: otherwise return the JSON of another type.
_REST_JSON: dict[tuple[tuple[str, Any], ...], str] = {}


class SpanRecord(tuple[Any, ...]):
    """A finished span already turned into its ``spans`` row (values in :data:`SPAN_COLUMNS` order).

    It travels through the SDK's ``BatchSpanProcessor`` in place of the span: that processor
    only reads ``item.context.trace_flags.sampled`` and hands items to our exporter as they
    are, so the record carries a constant sampled context (only sampled spans end up here).
    One tuple with string and integer items is all that waits in the queue.

    Example:
        >>> record = SpanRecord([None] * len(SPAN_COLUMNS))
        >>> record.context.trace_flags.sampled, len(record) == len(SPAN_COLUMNS)
        (True, True)
    """

    __slots__ = ()
    context: ClassVar[SpanContext] = SpanContext(1, 1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


@dataclass(slots=True)
class RowBatch:
    """Rows for one write transaction."""

    spans: list[Row] = field(default_factory=list)
    episodes: list[Row] = field(default_factory=list)
    feedback: list[Row] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.spans) + len(self.episodes) + len(self.feedback)

    def extend(self, other: RowBatch) -> None:
        """Append ``other``'s rows to this batch."""
        self.spans.extend(other.spans)
        self.episodes.extend(other.episodes)
        self.feedback.extend(other.feedback)


class SpanRows:
    """All the rows of one finished span that makes more than a ``spans`` row, built once.

    An episode's root also makes its ``episodes`` row, a feedback span its ``feedback`` row.
    The owner of a shared home builds them on the calling thread anyway, to journal them; they
    then travel to the writer in place of the span, as a :class:`SpanRecord` does, so the
    writer does not build them a second time (15-25 µs an episode).

    Example:
        >>> SpanRows(RowBatch(spans=[("t",)])).batch.spans
        [('t',)]
    """

    __slots__ = ("batch",)
    context: ClassVar[SpanContext] = SpanRecord.context

    def __init__(self, batch: RowBatch) -> None:
        self.batch = batch


def span_record(span: ReadableSpan) -> SpanRecord | None:
    """The ``spans`` row of ``span`` as a :class:`SpanRecord`, as soon as the span ends.

    Returns ``None`` for spans that also make an ``episodes`` or ``feedback`` row (they go to
    the writer as spans) and for spans without a context.

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> span = TracerProvider().get_tracer("doc").start_span("execute_tool ping", attributes={"x": "y"})
        >>> span.end()
        >>> record = span_record(span)
        >>> record[SPAN_COLUMNS.index("name")], record[SPAN_COLUMNS.index("attributes")]
        ('execute_tool ping', '{"x":"y"}')
    """
    if span.name == semconv.FEEDBACK_SPAN_NAME:
        return None
    attributes = _attribute_dict(span)
    if attributes.get(semconv.EPISODE_ROOT) or span.context is None:
        return None
    return SpanRecord(_row(span, attributes))


def span_rows(items: Sequence[ReadableSpan | SpanRecord | SpanRows]) -> RowBatch:
    """Rows for ``spans``, ``episodes`` and ``feedback`` from finished spans or their records.

    Example:
        >>> span_rows([SpanRecord([None] * len(SPAN_COLUMNS))]).spans[0][:2]
        (None, None)
    """
    batch = RowBatch()
    rows = batch.spans
    for item in items:
        if type(item) is SpanRecord:
            rows.append(item)
            continue
        if type(item) is SpanRows:
            built: RowBatch = item.batch
            rows.extend(built.spans)
            batch.episodes.extend(built.episodes)
            batch.feedback.extend(built.feedback)
            continue
        span: ReadableSpan = item  # type: ignore[assignment]
        if span.context is None:
            continue
        attributes = _attribute_dict(span)
        row = _row(span, attributes)
        rows.append(tuple(row))
        if attributes.get(semconv.EPISODE_ROOT):
            batch.episodes.append(_episode_row(attributes, row[0], row[5], row[6]))
        elif span.name == semconv.FEEDBACK_SPAN_NAME:
            batch.feedback.append(_feedback_row(attributes, row[6]))
    return batch


def _attribute_dict(span: ReadableSpan) -> Mapping[str, Any]:
    # The SDK's BoundedAttributes iterates items through Python-level __getitem__ calls
    # (~0.15 µs each); the plain dict inside it is read directly when it is there. A span
    # handed to a processor's on_end has ended, so its attributes no longer change.
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(inner) is dict:
        return inner
    return span.attributes or {}


def _row(span: ReadableSpan, attributes: Mapping[str, Any]) -> list[Any]:
    """The ``spans`` row of ``span`` (which has a context): one pass, one object per value.

    This runs on the agent's thread for every span (see :func:`span_record`), so it is
    written for speed: ``%`` formatting is the cheapest hex (0.08 µs against 0.15 for ``format``),
    repeated values are memoized.
    """
    global _SOURCE
    context = span.context
    trace_id = context.trace_id
    trace_hex = _TRACE_HEX.get(trace_id)
    if trace_hex is None:
        trace_hex = _memo(_TRACE_HEX, trace_id, "%032x" % trace_id)  # noqa: UP031 - the fastest hex
    parent = span.parent
    parent_hex = None
    if parent is not None:
        parent_id = parent.span_id
        parent_hex = _PARENT_HEX.get(parent_id)
        if parent_hex is None:
            parent_hex = _memo(_PARENT_HEX, parent_id, "%016x" % parent_id)  # noqa: UP031
    kind = span.kind
    start = span.start_time or 0
    status = span.status
    code = status.status_code
    resource = span.resource
    scope = span.instrumentation_scope
    source = _SOURCE
    if source[0] is not resource or source[1] is not scope:
        service = resource.attributes.get("service.name") if resource is not None else None
        source = _SOURCE = (
            resource,
            scope,
            service if isinstance(service, str) else None,
            scope.name if scope is not None else None,
        )
    span_hex = "%016x" % context.span_id  # noqa: UP031
    # fmt: off
    row: list[Any] = [
        trace_hex, span_hex, parent_hex, span.name, _KIND_NAMES.get(kind) or kind.name,
        start, span.end_time or start, _STATUS_NAMES.get(code) or code.name, status.description,
        source[2], source[3], *_UNSET,
    ]
    # fmt: on
    place_attributes(row, attributes)
    # ``span.events`` / ``span.links`` copy the SDK's bounded lists into tuples (~0.4 µs each);
    # the lists themselves answer "any?" for a tenth of that.
    if _has_items(span, "_events", "events"):
        row[_EVENTS_AT] = _events(span)
    if _has_items(span, "_links", "links"):
        row[_LINKS_AT] = _links(span)
    return row


def place_attributes(row: list[Any], attributes: Mapping[str, Any]) -> None:
    """Put ``attributes`` into ``row``: promoted ones into their typed columns, the rest as JSON.

    Shared by the in-process writer and the OTLP collector, so a span gives the same row
    whichever way it reached the store.

    Example:
        >>> row = new_row()
        >>> place_attributes(row, {"gen_ai.tool.name": "ping", "x": 1})
        >>> row[SPAN_COLUMNS.index("tool_name")], row[SPAN_COLUMNS.index("attributes")]
        ('ping', '{"x":1}')
    """
    slots = _SLOTS
    rest: dict[str, Any] | None = None
    for key, value in attributes.items():
        slot = slots.get(key)
        if slot is None:
            if rest is None:
                rest = {}
            rest[key] = value
            continue
        index, is_int = slot
        if is_int:
            if type(value) is not int:
                value = _as_int(value)
        elif type(value) is not str:
            value = _dumps(value)
        row[index] = value
    if rest is not None:
        row[_REST_AT] = _rest_json(rest)


def new_row() -> list[Any]:
    """A ``spans`` row with every column unset (``None``), in :data:`SPAN_COLUMNS` order."""
    return [None] * _WIDTH


def episode_row(attributes: Mapping[str, Any], trace_id: str, start: int, end: int) -> Row:
    """The ``episodes`` row of an episode's root span (its counters travel as attributes)."""
    return _episode_row(attributes, trace_id, start, end)


def feedback_row(attributes: Mapping[str, Any], end: int) -> Row:
    """The ``feedback`` row of a ``gen_ai.evaluation.result`` span."""
    return _feedback_row(attributes, end)


def _has_items(span: ReadableSpan, private: str, public: str) -> bool:
    items = getattr(span, private, None)
    if items is None:
        items = getattr(span, public)
    return bool(items)


def _memo(table: dict[Any, Any], key: Any, value: Any) -> Any:
    if len(table) >= _MEMO_SIZE:
        table.clear()  # high-cardinality keys must not pin memory
    table[key] = value
    return value


def _rest_json(rest: dict[str, Any]) -> str:
    try:
        key = tuple(rest.items())
        for _, value in key:
            if type(value) is not str:
                return _dumps(rest)
        text = _REST_JSON.get(key)
    except TypeError:  # an unhashable value (a mapping attribute)
        return _dumps(rest)
    if text is None:
        text = _memo(_REST_JSON, key, _dumps(rest))
    return text


def _events(span: ReadableSpan) -> str:
    return _dumps(
        [{"name": e.name, "time_unix_nano": e.timestamp, "attributes": dict(e.attributes or {})} for e in span.events]
    )


def _links(span: ReadableSpan) -> str:
    return _dumps(
        [
            {
                "trace_id": format(link.context.trace_id, "032x"),
                "span_id": format(link.context.span_id, "016x"),
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ]
    )


def _ts(unix_nano: int) -> datetime:
    return datetime.fromtimestamp(unix_nano / 1e9, UTC)


def _json_or_none(text: Any) -> str | None:
    """Attributes holding JSON text go into JSON columns as they are; anything else is encoded."""
    if text is None:
        return None
    if isinstance(text, str):
        return text
    return _dumps(text)


def _as_int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _episode_row(attributes: Mapping[str, Any], trace_id: str, start: int, end: int) -> Row:
    return (
        attributes.get(semconv.EPISODE_ID),
        attributes.get(semconv.GEN_AI_AGENT_NAME) or "unknown",
        _as_int(attributes.get(semconv.POLICY_VERSION)),
        attributes.get(semconv.EPISODE_SESSION_ID),
        trace_id,
        _ts(start),
        _ts(end),
        (end - start) / 1e6,
        attributes.get(semconv.EPISODE_STATUS) or semconv.EpisodeStatus.OK.value,
        attributes.get(semconv.ERROR_TYPE),
        attributes.get(semconv.FRAMEWORK),
        attributes.get(semconv.EPISODE_SCENARIO),
        attributes.get(semconv.EPISODE_ENTRYPOINT),
        _as_int(attributes.get(semconv.EPISODE_TOOL_CALLS)),
        _as_int(attributes.get(semconv.EPISODE_TOOL_FAILURES)),
        _as_float(attributes.get(semconv.EPISODE_TOOL_RELIABILITY)),
        _as_int(attributes.get(semconv.EPISODE_LLM_CALLS)),
        _as_int(attributes.get(semconv.EPISODE_INPUT_TOKENS)),
        _as_int(attributes.get(semconv.EPISODE_OUTPUT_TOKENS)),
        _as_float(attributes.get(semconv.EPISODE_REWARD)),
        _json_or_none(attributes.get(semconv.EPISODE_INPUT)),
        _json_or_none(attributes.get(semconv.EPISODE_OUTPUT)),
        _json_or_none(attributes.get(semconv.EPISODE_METADATA)),
    )


def _feedback_row(attributes: Mapping[str, Any], end: int) -> Row:
    return (
        attributes.get(semconv.FEEDBACK_ID),
        attributes.get(semconv.FEEDBACK_TARGET_EPISODE),
        attributes.get(semconv.GEN_AI_EVALUATION_NAME) or "user_rating",
        _as_float(attributes.get(semconv.GEN_AI_EVALUATION_SCORE_VALUE)),
        attributes.get(semconv.GEN_AI_EVALUATION_SCORE_LABEL),
        attributes.get(semconv.FEEDBACK_COMMENT),
        _ts(end),
    )


# --- columnar insert through Arrow ----------------------------------------------------------

_arrow_lock = threading.Lock()  # held while importing
_preload_lock = threading.Lock()
_arrow_state: list[tuple[Any, Any] | None] = []  # empty: not looked up yet; [None]: no pyarrow
_arrow_preload: list[threading.Thread] = []


def to_arrow(rows: Sequence[Row]) -> Any | None:
    """``rows`` of ``spans`` as a ``pyarrow.Table``; ``None`` without pyarrow or while it loads.

    Raises:
        Exception: pyarrow's error for a value its column type cannot hold (an integer out of
            range, a string that is not valid Unicode); the writer then uses DuckDB's appender.

    Example:
        >>> table = to_arrow([SpanRecord([None] * len(SPAN_COLUMNS))])
        >>> table is None or (table.num_rows, table.num_columns) == (1, len(SPAN_COLUMNS))
        True
    """
    return table_to_arrow("spans", rows)


def table_to_arrow(table: str, rows: Sequence[Row]) -> Any | None:
    """``rows`` of ``table`` (``spans``, ``episodes`` or ``feedback``) as a ``pyarrow.Table``.

    Column by column (one ``pa.array`` per column, C loops): the rows' tuples are never
    visited one by one in Python. ``None`` without pyarrow or while it loads.

    Raises:
        Exception: pyarrow's error for a value its column type cannot hold.

    Example:
        >>> t = table_to_arrow("feedback", [])
        >>> t is None or t.column_names[0] == "feedback_id"
        True
    """
    schema = arrow_schema(table)
    if schema is None:
        return None
    pa = _arrow_state[0][0]  # type: ignore[index]
    width = len(schema)
    columns = zip(*rows, strict=True) if rows else ([] for _ in range(width))
    arrays = [pa.array(values, type=f.type) for values, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def arrow_schema(table: str, *, wait: bool = False) -> Any | None:
    """The Arrow schema of the rows this module builds for ``table``; ``None`` without pyarrow.

    ``spans``: :data:`SPAN_COLUMNS`; ``episodes`` / ``feedback``: their tables' columns, the
    types mapped from SQL (``VARCHAR``/``JSON`` string, ``INTEGER`` int32, ``BIGINT`` int64,
    ``DOUBLE`` float64, ``TIMESTAMPTZ`` timestamp[us, UTC]). ``wait``: wait for a background
    import of pyarrow instead of answering ``None`` meanwhile.
    """
    arrow = _load_arrow() if wait else _arrow()
    if arrow is None:
        return None
    return _schemas(arrow[0])[table]


_SCHEMAS: dict[str, Any] = {}


def _schemas(pa: Any) -> dict[str, Any]:
    if not _SCHEMAS:
        types = {
            "BIGINT": pa.int64(),
            "INTEGER": pa.int32(),
            "DOUBLE": pa.float64(),
            "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
        }

        def schema(columns: Sequence[tuple[str, str]]) -> Any:
            return pa.schema([pa.field(name, types.get(sql.split()[0], pa.string())) for name, sql in columns])

        declared = [sql for _, sql in SPAN_HEAD_COLUMNS] + [p.sql_type for p in PROMOTED]
        declared += [sql for _, sql in SPAN_TAIL_COLUMNS]
        _SCHEMAS.update(
            spans=schema(list(zip(SPAN_COLUMNS, declared, strict=True))),
            episodes=schema(EPISODE_COLUMNS),
            feedback=schema(FEEDBACK_COLUMNS),
        )
    return _SCHEMAS


def preload_arrow() -> None:
    """Import pyarrow on a background thread, so that no write waits for the import.

    Importing pyarrow (and what it imports on first use) on the writer thread while an agent
    thread kept the GIL busy took seconds on two cores, and the batch queue filled meanwhile;
    until the import is done, batches go through DuckDB's appender. Exit waits for the thread:
    a daemon thread inside an extension module's C++ code at interpreter shutdown aborts it.

    Example:
        >>> preload_arrow()  # returns at once; a second call does nothing
    """
    with _preload_lock:
        if _arrow_state or _arrow_preload:
            return
        thread = threading.Thread(target=_load_arrow, name="agentgym-arrow-preload", daemon=True)
        _arrow_preload.append(thread)
    thread.start()
    atexit.register(thread.join, 30.0)


def arrow_ready(timeout_s: float | None = None) -> bool:
    """Wait up to ``timeout_s`` for a background import of pyarrow; whether inserts are columnar now.

    For benchmarks and tests that measure the steady state: right after a runtime starts,
    the import runs alongside the agent (one-time, ~0.4 s for pyarrow, ~1 s more where
    pandas is installed, since pyarrow imports it on first use).

    Example:
        >>> isinstance(arrow_ready(0), bool)
        True
    """
    for thread in list(_arrow_preload):
        thread.join(timeout_s)
    return bool(_arrow_state) and _arrow_state[0] is not None


def _forget_preload_after_fork() -> None:
    # The preload thread does not exist in a forked child: let the child load pyarrow itself.
    if not _arrow_state:
        _arrow_preload.clear()


os.register_at_fork(after_in_child=_forget_preload_after_fork)


def _arrow() -> tuple[Any, Any] | None:
    if _arrow_state:
        return _arrow_state[0]
    if _arrow_preload:
        return None  # being imported in the background: never block a write on it
    return _load_arrow()


def _load_arrow() -> tuple[Any, Any] | None:
    with _arrow_lock:
        if not _arrow_state:
            try:
                state = _import_arrow()
            except Exception:  # a broken pyarrow install: the appender still works
                logger.warning("agentgym: pyarrow could not be loaded; writing spans with the appender", exc_info=True)
                state = None
            _arrow_state.append(state)
        return _arrow_state[0]


def _import_arrow() -> tuple[Any, Any] | None:
    try:
        pa: Any = importlib.import_module("pyarrow")
    except ImportError:
        return None
    schema = _schemas(pa)["spans"]
    # The first conversion imports more (pyarrow looks for pandas): do it here, not in a write.
    pa.array(["warm-up", None], type=pa.string())
    return pa, schema
