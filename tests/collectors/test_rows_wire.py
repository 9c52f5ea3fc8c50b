"""agentgym's rows body (Arrow IPC) and the OTLP encoder built from rows: round trips, refusals, auth."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, Status, StatusCode

from agentgym_runtime import semconv
from agentgym_runtime.collectors.otlp import rows_wire
from agentgym_runtime.collectors.otlp.client import CollectorSpanExporter
from agentgym_runtime.collectors.otlp.decode import MalformedPayloadError, decode_request, request_rows
from agentgym_runtime.collectors.otlp.encode import encode_rows
from agentgym_runtime.collectors.otlp.server import Collector, CollectorServer
from agentgym_runtime.collectors.otlp.spool import Spool
from agentgym_runtime.collectors.rows import (
    RowBatch,
    arrow_ready,
    preload_arrow,
    span_record,
    span_rows,
    table_to_arrow,
)
from agentgym_runtime.collectors.store import TraceStore


@pytest.fixture(autouse=True)
def _arrow_loaded() -> None:
    preload_arrow()
    assert arrow_ready(60)


def _finished(*, ours: bool = True) -> list[Any]:
    """Tool spans, an episode root and a feedback span, with events, links, errors and odd values."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "wire"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer(semconv.SCOPE_NAME if ours else "elsewhere")
    root = tracer.start_span(
        "invoke_agent bot",
        attributes={
            semconv.EPISODE_ROOT: True,
            semconv.EPISODE_ID: "ep-1",
            semconv.GEN_AI_AGENT_NAME: "bot",
            semconv.EPISODE_TOOL_CALLS: 2,
            semconv.EPISODE_TOOL_FAILURES: 1,
            semconv.EPISODE_TOOL_RELIABILITY: 0.5,
            semconv.EPISODE_INPUT: '{"q": "é"}',
        },
    )
    from opentelemetry import trace

    context = trace.set_span_in_context(root)
    for i in range(3):
        span = tracer.start_span(
            f"execute_tool t{i}",
            context=context,
            attributes={
                semconv.EPISODE_ID: "ep-1",
                semconv.GEN_AI_TOOL_NAME: f"t{i}",
                semconv.POLICY_VERSION: 3,
                "k": i,
                "ratio": 0.25,
                "flag": True,
                "tags": ("a", "b"),
                "unicode": "ünï 😀",
            },
            links=[Link(SpanContext(7, 9, is_remote=True), {"why": "retry"})],
        )
        span.add_event("exception", {"exception.type": "ValueError", "n": 2})
        if i == 1:
            span.set_status(Status(StatusCode.ERROR, "boom"))
        span.end()
    tracer.start_span(
        semconv.FEEDBACK_SPAN_NAME,
        context=context,
        attributes={
            semconv.FEEDBACK_ID: "f1",
            semconv.FEEDBACK_TARGET_EPISODE: "ep-1",
            "gen_ai.evaluation.score.value": 1.0,
        },
    ).end()
    root.end()
    return list(memory.get_finished_spans())


def _mixed_items() -> list[Any]:
    # What the span processor hands the exporter: records for tool spans, spans for the rest.
    return [span_record(s) or s for s in _finished()]


def test_rows_body_round_trip_is_the_same_rows() -> None:
    batch = span_rows(_mixed_items())
    assert batch.episodes and batch.feedback  # the root and the feedback span made their rows
    body = rows_wire.encode_batch(batch)
    assert body is not None and body.startswith(rows_wire.MAGIC)
    tables = rows_wire.decode_batch(body).tables
    assert set(tables) == {"spans", "episodes", "feedback"}
    for name, rows in (("spans", batch.spans), ("episodes", batch.episodes), ("feedback", batch.feedback)):
        assert tables[name].equals(table_to_arrow(name, rows))


def test_otlp_from_rows_decodes_to_the_same_rows_as_the_sdk_spans() -> None:
    finished = _finished()
    batch = span_rows(finished)
    again = request_rows(decode_request(encode_rows(batch.spans), "application/x-protobuf", None)).batch
    assert again.spans == batch.spans
    assert again.episodes == batch.episodes
    assert again.feedback == batch.feedback


def _section(table: Any) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    return len(data).to_bytes(4, "little") + data


def _body(spans: Any) -> bytes:
    empty = (0).to_bytes(4, "little")
    return rows_wire.MAGIC + _section(spans) + empty + empty


def test_bad_rows_bodies_are_refused_with_the_reason() -> None:
    good = table_to_arrow("spans", span_rows(_finished()).spans)
    renamed = good.rename_columns([*good.column_names[:-1], "extra"])
    null_name = good.set_column(3, "name", pa.array([None] * good.num_rows, type=pa.string()))
    bad_id = good.set_column(1, "span_id", pa.array(["zz" * 8] * good.num_rows, type=pa.string()))
    compressed = pa.BufferOutputStream()
    with pa.ipc.new_stream(compressed, good.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(good)
    zipped = compressed.getvalue().to_pybytes()
    valid = _body(good)
    cases = [
        (b"PAR1 not ours", "must start with"),
        (rows_wire.MAGIC + b"\x10\x00", "ends before"),
        (rows_wire.MAGIC + (999).to_bytes(4, "little") + b"x", "cut short"),
        (valid + b"!", "after the feedback section"),
        (_body(renamed), "schema is not the store's"),
        (_body(null_name), "spans.name holds a null"),
        (_body(bad_id), "spans.span_id must be 16 lowercase hex"),
        (rows_wire.MAGIC + len(zipped).to_bytes(4, "little") + zipped + b"\0" * 8, "compressed"),
        (rows_wire.MAGIC + (8).to_bytes(4, "little") + b"\xff" * 8 + b"\0" * 8, "not a valid Arrow IPC stream"),
    ]
    for body, reason in cases:
        with pytest.raises(MalformedPayloadError, match=reason):
            rows_wire.decode_batch(body)
    assert rows_wire.decode_batch(valid).span_count == good.num_rows


@pytest.fixture
def served(tmp_path: Path) -> Iterator[CollectorServer]:
    server = CollectorServer(Collector(TraceStore(str(tmp_path / "t.duckdb")), token="s3cret"), port=0).start()
    yield server
    server.stop()


def _post(server: CollectorServer, body: bytes, token: str | None = "s3cret") -> httpx.Response:
    headers = {"content-type": rows_wire.CONTENT_TYPE}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(f"{server.endpoint}/v1/traces", content=body, headers=headers, timeout=10)


def test_collector_reads_rows_with_auth_dedupe_and_400s(served: CollectorServer) -> None:
    store = served.collector.store
    body = rows_wire.encode_batch(span_rows(_mixed_items()))
    assert body is not None
    status = httpx.get(f"{served.endpoint}/v1/status", headers={"authorization": "Bearer s3cret"}).json()
    assert rows_wire.CONTENT_TYPE in status["formats"]
    assert _post(served, body, token=None).status_code == 401
    assert _post(served, body, token="wrong").status_code == 401
    assert store.query("SELECT count(*) FROM spans") == [(0,)]
    assert _post(served, body).status_code == 200
    assert _post(served, body).status_code == 200  # a retry: acknowledged, written once
    assert store.query("SELECT count(*) FROM spans") == [(5,)]
    assert store.query("SELECT episode_id, tool_calls, tool_reliability FROM episodes") == [("ep-1", 2, 0.5)]
    assert store.query("SELECT feedback_id, value FROM feedback") == [("f1", 1.0)]
    refused = _post(served, b"AGRW1\nxx")
    assert refused.status_code == 400 and "ends before" in refused.json()["error"]
    stats = served.collector.stats.snapshot()
    assert (stats["unauthorized"], stats["duplicate_batches"], stats["malformed"], stats["spans_written"]) == (
        2,
        1,
        1,
        5,
    )


def test_foreign_spans_outside_an_episode_travel_as_otlp_even_to_our_collector(
    served: CollectorServer, tmp_path: Path
) -> None:
    exporter = CollectorSpanExporter(lambda: served.endpoint, spool=Spool(tmp_path / "spool"), token="s3cret")
    try:
        assert exporter.export(_foreign(3)).name == "SUCCESS"
    finally:
        exporter.shutdown()
    store = served.collector.store
    assert store.query(
        "SELECT count(*), count(DISTINCT episode_id) FROM tool_calls WHERE episode_id LIKE 'otel-%'"
    ) == [(3, 3)]


def _foreign(n: int) -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "js"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for i in range(n):
        tracer.start_span(f"execute_tool t{i}", attributes={"gen_ai.tool.name": f"t{i}"}).end()
    return list(memory.get_finished_spans())


def test_rows_the_store_refuses_get_400_and_the_rest_of_the_group_is_written(tmp_path: Path) -> None:
    from agentgym_runtime.collectors.otlp.sink import RejectedRows, StoreSink

    sink = StoreSink(TraceStore(str(tmp_path / "t.duckdb")))
    good = rows_wire.decode_batch(rows_wire.encode_batch(span_rows(_finished())) or b"")
    spans = good.tables["spans"]
    bad_json = spans.set_column(
        spans.schema.get_field_index("attributes"), "attributes", pa.array(["{not json"] * spans.num_rows)
    )
    bad = rows_wire.decode_batch(_body(bad_json))
    first, second = sink.submit("good", good), sink.submit("bad", bad)
    sink.start()
    assert first.result(30) == "written"
    with pytest.raises(RejectedRows, match="refused"):
        second.result(30)
    assert sink.store.query("SELECT count(*) FROM spans") == [(5,)]
    sink.close()


def test_exporter_sends_rows_to_our_collector_and_otlp_to_others(served: CollectorServer, tmp_path: Path) -> None:
    exporter = CollectorSpanExporter(lambda: served.endpoint, spool=Spool(tmp_path / "spool"), token="s3cret")
    try:
        assert exporter.export(_mixed_items()).name == "SUCCESS"
        assert exporter.describe()["format"] == "rows"
    finally:
        exporter.shutdown()
    store = served.collector.store
    assert store.query("SELECT count(*) FROM spans") == [(5,)]
    assert store.query("SELECT count(*) FROM episodes") == [(1,)]

    # A peer that reads only OTLP (an OpenTelemetry Collector, an older agentgym): rows are
    # never sent there, and a spooled rows batch is delivered as OTLP.
    other = CollectorServer(Collector(TraceStore(str(tmp_path / "o.duckdb"))), port=0).start()
    other.collector.formats = lambda: ["application/x-protobuf", "application/json"]  # type: ignore[method-assign]
    endpoint: list[str | None] = [None]
    spool = Spool(tmp_path / "spool2")
    exporter = CollectorSpanExporter(lambda: endpoint[0], spool=spool, drain_interval_s=0.05)
    try:
        assert exporter.export(_mixed_items()).name == "SUCCESS"  # no collector known: spooled as rows
        claim = spool.claim()
        assert claim is not None and claim.payload.startswith(rows_wire.MAGIC)
        spool.release(claim)
        endpoint[0] = other.endpoint
        assert exporter.force_flush(10_000)
        assert exporter.export(_foreign(2)).name == "SUCCESS"
        assert exporter.describe()["format"] == "otlp"
        assert other.collector.store.query("SELECT count(*) FROM spans") == [(7,)]
        assert other.collector.store.query("SELECT count(*) FROM episodes WHERE episode_id = 'ep-1'") == [(1,)]
        # Foreign GenAI spans outside an episode keep their OTLP mapping (tool calls of otel-<trace>).
        assert other.collector.store.query("SELECT count(*) FROM tool_calls WHERE episode_id LIKE 'otel-%'") == [(2,)]
        assert other.collector.stats.snapshot()["malformed"] == 0
    finally:
        exporter.shutdown()
        other.stop()


def test_rows_without_pyarrow_on_the_collector_are_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentgym_runtime.collectors.otlp import rows_wire as wire

    monkeypatch.setattr(wire, "arrow_schema", lambda table, wait=False: None)
    assert not wire.available()
    with pytest.raises(MalformedPayloadError, match="pyarrow is not installed"):
        wire.decode_batch(wire.MAGIC)
    monkeypatch.setattr(wire, "table_to_arrow", lambda table, rows: None)
    assert wire.encode_batch(RowBatch(spans=[("x",)])) is None


def test_a_batch_committed_as_rows_after_the_worker_gave_up_is_not_written_again_as_otlp(tmp_path: Path) -> None:
    """The worker sends rows, gives up waiting (the collector commits them later) and spools
    them; the collector is replaced on the same store by one that reads only OTLP, so the
    spooled batch arrives again in the other encoding (other bytes): written once."""
    store = TraceStore(str(tmp_path / "t.duckdb"))
    first = CollectorServer(Collector(store), port=0).start()
    endpoint: list[str | None] = [first.endpoint]
    spool = Spool(tmp_path / "spool")
    exporter = CollectorSpanExporter(lambda: endpoint[0], spool=spool, timeout_s=1.0, drain_interval_s=0.05)
    gate, holding = threading.Event(), threading.Event()

    def hold(_: Any) -> None:  # the collector's commit waits behind this transaction
        holding.set()
        gate.wait(60)

    blocker = threading.Thread(target=store.write, args=(hold,))
    blocker.start()
    assert holding.wait(10)
    other: CollectorServer | None = None
    try:
        assert exporter.export(_mixed_items()).name == "SUCCESS"  # no answer within 1 s: spooled as rows
        endpoint[0] = None  # no collector known for now: the spool waits
        deadline = time.monotonic() + 10
        while not spool.files() or any(spool.directory.glob(".*")):  # a drain try in flight times out too
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert spool.files()[0].read_bytes().startswith(rows_wire.MAGIC)
        gate.set()
        blocker.join(10)
        while store.query("SELECT count(*) FROM spans") != [(5,)]:  # the collector commits it after all
            assert time.monotonic() < deadline + 20
            time.sleep(0.05)
        first.stop()
        other = CollectorServer(Collector(store), port=0).start()
        other.collector.formats = lambda: ["application/x-protobuf", "application/json"]  # type: ignore[method-assign]
        endpoint[0] = other.endpoint
        assert exporter.force_flush(10_000)
        assert not spool.files()
    finally:
        gate.set()
        exporter.shutdown()
        if other is not None:
            other.stop()
    assert store.query("SELECT count(*), count(DISTINCT span_id) FROM spans") == [(5, 5)]
    assert other.collector.stats.snapshot()["duplicate_batches"] == 1  # it came as OTLP and was recognized
    assert store.query("SELECT count(*) FROM episodes") == [(1,)]
    assert store.query("SELECT count(*) FROM feedback") == [(1,)]
