"""The recording fast paths give the same rows, errors and JSON as the general ones.

Spans become rows either as they end (``span_record``, what the runtime does) or on the
writer thread (raw spans); rows go into DuckDB either as one Arrow table or through the
appender. Every combination must store the same values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

import agentgym_runtime as agentgym
from agentgym_runtime import semconv
from agentgym_runtime.collectors.exporter import DuckDBSpanExporter
from agentgym_runtime.collectors.processor import EpisodeSpanProcessor
from agentgym_runtime.collectors.rows import SpanRecord, arrow_ready, span_record, span_rows, to_arrow
from agentgym_runtime.collectors.schema import SPAN_COLUMNS
from agentgym_runtime.collectors.store import TraceStore
from agentgym_runtime.errors import ToolArgumentsError
from agentgym_runtime.recording.serialization import Serializer


def _spans() -> list[ReadableSpan]:
    """A mix of span shapes: tool calls, foreign attributes, events, links, odd types, episode, feedback."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer(semconv.SCOPE_NAME)
    root = tracer.start_span(
        "invoke_agent shop",
        attributes={
            semconv.EPISODE_ID: "ep1",
            semconv.EPISODE_ROOT: True,
            semconv.GEN_AI_AGENT_NAME: "shop",
            semconv.EPISODE_TOOL_CALLS: 3,
            semconv.EPISODE_TOOL_FAILURES: 1,
        },
    )
    from opentelemetry import trace

    with trace.use_span(root, end_on_exit=True):
        for i in range(3):
            tracer.start_span(
                "execute_tool ping",
                attributes={
                    semconv.EPISODE_ID: "ep1",
                    semconv.GEN_AI_OPERATION_NAME: semconv.OP_EXECUTE_TOOL,
                    semconv.GEN_AI_TOOL_NAME: "ping",
                    semconv.GEN_AI_TOOL_TYPE: "function",
                    semconv.GEN_AI_TOOL_CALL_ID: f"c{i}",
                    semconv.TOOL_OUTCOME: "ok",
                },
            ).end()
        odd = tracer.start_span(
            "chat tiny",
            kind=SpanKind.CLIENT,
            attributes={
                semconv.GEN_AI_OPERATION_NAME: semconv.OP_CHAT,
                semconv.POLICY_VERSION: "2",  # a string where an integer column waits: converted
                semconv.GEN_AI_USAGE_INPUT_TOKENS: 12,
                semconv.GEN_AI_RESPONSE_FINISH_REASONS: ("stop", "length"),  # not promoted: JSON rest
                semconv.ERROR_TYPE: ("Timeout",),  # promoted text column given a sequence: JSON text
                "flag": True,
                "count": 1,
            },
            links=[Link(root.get_span_context(), {"why": "follows"})],
        )
        odd.add_event("retry", {"attempt": 2})
        odd.set_status(Status(StatusCode.ERROR, "timed out"))
        odd.end()
        tracer.start_span(
            semconv.FEEDBACK_SPAN_NAME,
            attributes={
                semconv.FEEDBACK_ID: "f1",
                semconv.FEEDBACK_TARGET_EPISODE: "ep1",
                semconv.GEN_AI_EVALUATION_SCORE_VALUE: 1.0,
            },
        ).end()
    provider.shutdown()
    return list(memory.get_finished_spans())


def _stored(tmp_path: Path, name: str, items: list[Any], *, columnar: bool) -> TraceStore:
    store = TraceStore(str(tmp_path / f"{name}.duckdb"))
    exporter = DuckDBSpanExporter(store, columnar=columnar)
    assert exporter.export(items).name == "SUCCESS"
    assert exporter.stats.snapshot()["spans_written"] == len(items)
    return store


def _table(store: TraceStore, table: str, order: str) -> list[tuple[Any, ...]]:
    return store.query(f"SELECT * FROM {table} ORDER BY {order}")


def test_records_and_spans_through_arrow_and_appender_store_the_same_rows(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    spans = _spans()
    records = [span_record(s) or s for s in spans]  # episode root and feedback stay spans
    assert sum(type(r) is SpanRecord for r in records) == 4
    arrow_ready(120)  # a background import started by another test, if any
    assert to_arrow([]) is not None  # pyarrow is loaded: the "arrow" stores below really use it
    stores = {
        "spans_appender": _stored(tmp_path, "a", list(spans), columnar=False),
        "spans_arrow": _stored(tmp_path, "b", list(spans), columnar=True),
        "records_appender": _stored(tmp_path, "c", records, columnar=False),
        "records_arrow": _stored(tmp_path, "d", records, columnar=True),
    }
    reference = _table(stores["spans_appender"], "spans", "start_unix_nano, span_id")
    assert len(reference) == 6
    for name, store in stores.items():
        assert _table(store, "spans", "start_unix_nano, span_id") == reference, name
        assert _table(store, "episodes", "episode_id") == _table(stores["spans_appender"], "episodes", "episode_id")
        assert _table(store, "feedback", "feedback_id") == [
            ("f1", "ep1", "user_rating", 1.0, None, None, _table(store, "feedback", "feedback_id")[0][6])
        ]

    rows = stores["records_arrow"].query_dicts("SELECT * FROM spans WHERE name = 'chat tiny'")
    (chat,) = rows
    assert (chat["kind"], chat["status_code"], chat["status_message"]) == ("CLIENT", "ERROR", "timed out")
    assert (chat["policy_version"], chat["input_tokens"]) == (2, 12)
    assert json.loads(chat["error_type"]) == ["Timeout"]
    assert json.loads(chat["attributes"]) == {
        semconv.GEN_AI_RESPONSE_FINISH_REASONS: ["stop", "length"],
        "flag": True,
        "count": 1,
    }
    assert json.loads(chat["events"])[0]["attributes"] == {"attempt": 2}
    assert json.loads(chat["links"])[0]["attributes"] == {"why": "follows"}
    assert chat["parent_span_id"] == format(spans[-1].context.span_id, "016x")  # the episode root ends last
    tools = stores["records_arrow"].query("SELECT call_id, attributes FROM tool_calls JOIN spans USING (span_id)")
    assert sorted(tools) == [(f"c{i}", '{"gen_ai.tool.type":"function"}') for i in range(3)]
    episode = stores["records_arrow"].query_dicts("SELECT * FROM episodes")[0]
    assert (episode["episode_id"], episode["tool_calls"], episode["tool_failures"]) == ("ep1", 3, 1)


def test_a_record_is_the_row_the_writer_would_build() -> None:
    for span in _spans():
        record = span_record(span)
        if span.name in ("invoke_agent shop", semconv.FEEDBACK_SPAN_NAME):
            assert record is None
            continue
        assert record is not None
        assert record.context.trace_flags.sampled
        assert tuple(record) == span_rows([span]).spans[0]
        assert len(record) == len(SPAN_COLUMNS)


def test_attribute_rests_keep_their_json_types() -> None:
    # 1 == True == 1.0 as dict keys: a memo of rests must not hand one's JSON to the other.
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for value in (1, True, 1.0, "1", "1"):
        tracer.start_span("s", attributes={"x": value}).end()
    rests = [row[SPAN_COLUMNS.index("attributes")] for row in span_rows(memory.get_finished_spans()).spans]
    assert rests == ['{"x":1}', '{"x":true}', '{"x":1.0}', '{"x":"1"}', '{"x":"1"}']


class _Recording(SpanProcessor):
    """A pipeline that keeps what it is handed (with or without a store exporter behind it)."""

    def __init__(self, span_exporter: Any) -> None:
        self.span_exporter = span_exporter
        self.items: list[Any] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.items.append(span)


def test_router_hands_records_only_to_a_store_pipeline() -> None:
    spans = _spans()
    router = EpisodeSpanProcessor(lambda: None)
    store_pipeline = _Recording(DuckDBSpanExporter(TraceStore(":memory:")))
    router.set_pipeline(store_pipeline, None)
    for span in spans:
        router.on_end(span)
    assert [type(item).__name__ for item in store_pipeline.items] == [
        "SpanRecord",
        "SpanRecord",
        "SpanRecord",
        "SpanRecord",
        "ReadableSpan",
        "ReadableSpan",
    ]
    other = _Recording(InMemorySpanExporter())
    router.set_pipeline(other, None)
    for span in spans:
        router.on_end(span)
    assert other.items == spans


def test_router_hands_records_to_the_collector_client_and_journaled_roots_as_their_rows(tmp_path: Path) -> None:
    from agentgym_runtime.collectors.journal import Journal
    from agentgym_runtime.collectors.otlp.client import CollectorSpanExporter
    from agentgym_runtime.collectors.otlp.spool import Spool

    spans = _spans()
    router = EpisodeSpanProcessor(lambda: None)
    client = CollectorSpanExporter(lambda: None, spool=Spool(tmp_path / "spool"))
    try:
        to_collector = _Recording(client)
        router.set_pipeline(to_collector, None)
        for span in spans:
            router.on_end(span)
        assert [type(item).__name__ for item in to_collector.items] == [
            *["SpanRecord"] * 4,
            "ReadableSpan",
            "ReadableSpan",
        ]
    finally:
        client.shutdown()

    # The owner journals each span as it ends; the root's and the feedback span's rows, built
    # for the journal, travel to the writer as they are and are stored as the spans give them.
    journal = Journal(tmp_path / "journal")
    writer = DuckDBSpanExporter(TraceStore(":memory:"), journal=journal)
    owner = _Recording(writer)
    router.set_pipeline(owner, None)
    for span in spans:
        router.on_end(span)
    assert [type(item).__name__ for item in owner.items] == [*["SpanRecord"] * 4, "SpanRows", "SpanRows"]
    assert journal.outstanding == 6
    assert writer.export(owner.items).name == "SUCCESS"
    assert journal.outstanding == 0
    expected = span_rows(spans)
    stored = writer.store
    assert sorted(stored.query(f"SELECT {', '.join(SPAN_COLUMNS)} FROM spans")) == sorted(expected.spans)
    assert stored.query("SELECT * FROM episodes") == expected.episodes
    assert stored.query("SELECT * FROM feedback") == expected.feedback
    journal.close()


def _plain_tool() -> agentgym.Tool[..., Any]:
    def lookup(order_id: int, note: str = "", weight: float = 1.0, rush: bool = False) -> str:
        return f"{order_id}{note}{weight}{rush}"

    return agentgym.tool(lookup)


@pytest.mark.parametrize(
    "arguments",
    [
        {"order_id": 7},
        {"order_id": 7, "note": "é", "weight": 2.5, "rush": True},
        {"order_id": 7, "weight": 2},  # int for float: pydantic converts to 2.0
        {"order_id": True},  # bool for int: pydantic's lax rules decide
        {"order_id": "7"},  # numeric string: converted by pydantic
        {"order_id": "seven"},
        {},
        {"order_id": 7, "coupon": "X"},
        {"order_id": None},
        {"order_id": 7, "rush": "yes"},
    ],
)
def test_plain_tool_validation_matches_pydantic(arguments: dict[str, Any]) -> None:
    tool = _plain_tool()

    def reference() -> tuple[str, Any]:
        from pydantic import ValidationError

        try:
            model = tool._model.model_validate(dict(arguments))
        except ValidationError as exc:
            return "error", [(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors(include_url=False)]
        values = {name: getattr(model, name) for name in tool._model.model_fields}
        return "ok", [(k, v, type(v)) for k, v in values.items()]

    try:
        validated = tool.validate(arguments)
        got: tuple[str, Any] = ("ok", [(k, v, type(v)) for k, v in validated.items()])
    except ToolArgumentsError as exc:
        got = ("error", [(e["argument"], e["message"]) for e in exc.errors])
    assert got == reference()


@pytest.mark.parametrize(
    "value",
    [7, -3, 2.5, True, False, None, "", 'héllo "q" \n', {}, {"a": 1, "b": "é", "c": 2.5, "d": None, "e": True}],
)
def test_serializer_fast_path_is_plain_json(value: Any) -> None:
    assert Serializer().to_json(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_serializer_never_raises_on_an_int_too_long_to_print() -> None:
    assert Serializer().to_json(10**5000) == '"<unserializable int: ValueError>"'
