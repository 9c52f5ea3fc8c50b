"""The OTLP/HTTP collector with real servers on loopback: formats, limits, dedupe, foreign spans."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentgym_runtime.collectors.otlp.client import CollectorSpanExporter
from agentgym_runtime.collectors.otlp.server import Collector, CollectorServer, Limits
from agentgym_runtime.collectors.otlp.spool import Spool
from agentgym_runtime.collectors.rows import SpanRecord, span_record
from agentgym_runtime.collectors.schema import SPAN_COLUMNS
from agentgym_runtime.collectors.store import TraceStore
from agentgym_runtime.errors import ConfigurationError


def _spans(n: int, service: str = "svc") -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for i in range(n):
        tracer.start_span(f"execute_tool t{i}", attributes={"gen_ai.tool.name": f"t{i}", "k": i}).end()
    return list(memory.get_finished_spans())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[CollectorServer]:
    server = CollectorServer(Collector(TraceStore(str(tmp_path / "t.duckdb"))), port=0).start()
    yield server
    server.stop()


def _post(server: CollectorServer, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.endpoint}/v1/traces", content=body, headers=headers, timeout=10)


def test_protobuf_gzip_and_json_bodies_land_once(served: CollectorServer) -> None:
    store = served.collector.store
    proto = encode_spans(_spans(3)).SerializeToString()
    assert _post(served, proto, **{"content-type": "application/x-protobuf"}).status_code == 200
    # The same body again (a retry): acknowledged, not written twice.
    assert _post(served, proto, **{"content-type": "application/x-protobuf"}).status_code == 200
    zipped = gzip.compress(encode_spans(_spans(2)).SerializeToString())
    assert (
        _post(served, zipped, **{"content-type": "application/x-protobuf", "content-encoding": "gzip"}).status_code
        == 200
    )
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js-agent"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "js"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "execute_tool lookup",
                                "kind": 1,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [{"key": "gen_ai.tool.name", "value": {"stringValue": "lookup"}}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    response = _post(served, json.dumps(document).encode(), **{"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert store.query("SELECT count(*) FROM spans") == [(6,)]
    assert store.query("SELECT span_id, service_name, tool_name, duration_ms FROM spans WHERE scope_name = 'js'") == [
        ("eee19b7ec3c1b174", "js-agent", "lookup", 1000.0)
    ]
    stats = served.collector.stats.snapshot()
    assert (stats["spans_written"], stats["duplicate_batches"]) == (6, 1)


def test_malformed_bodies_get_400_with_a_reason_and_are_counted(served: CollectorServer) -> None:
    cases = [
        (b"\xff\xff garbage", {"content-type": "application/x-protobuf"}, "protobuf"),
        (b"{not json", {"content-type": "application/json"}, "OTLP/JSON"),
        (b"xx", {"content-type": "application/x-protobuf", "content-encoding": "gzip"}, "gzip"),
        (b"", {"content-type": "text/plain"}, "Content-Type"),
    ]
    for body, headers, reason in cases:
        response = _post(served, body, **headers)
        assert response.status_code == 400
        assert reason in response.json()["error"]
    assert served.collector.stats.snapshot()["malformed"] == 4
    assert served.collector.store.query("SELECT count(*) FROM spans") == [(0,)]


def test_size_limit_rate_limit_and_backpressure(tmp_path: Path) -> None:
    limits = Limits(max_body_bytes=1000, requests_per_s=0.001, burst=3, max_queued_spans=1)
    server = CollectorServer(Collector(TraceStore(str(tmp_path / "t.duckdb")), limits=limits), port=0).start()
    try:
        assert _post(server, b"x" * 2000).status_code == 413
        assert _post(server, encode_spans(_spans(1)).SerializeToString()).status_code == 200
        assert _post(server, b"").status_code == 200  # an empty request is valid OTLP
        limited = _post(server, b"")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        stats = server.collector.stats.snapshot()
        assert (stats["too_large"], stats["rate_limited"]) == (1, 1)
    finally:
        server.stop()


def test_non_loopback_needs_a_token_and_the_token_is_checked(tmp_path: Path) -> None:
    store = TraceStore(str(tmp_path / "t.duckdb"))
    with pytest.raises(ConfigurationError, match="bearer token"):
        CollectorServer(Collector(store), host="0.0.0.0", port=0)
    server = CollectorServer(Collector(store, token="s3cret"), port=0).start()
    try:
        assert _post(server, b"").status_code == 401
        assert _post(server, b"", authorization="Bearer s3cret").status_code == 200
    finally:
        server.stop()


def test_sql_endpoint_reads_while_serving_and_refuses_writes(served: CollectorServer) -> None:
    assert _post(served, encode_spans(_spans(4)).SerializeToString()).status_code == 200
    url = f"{served.endpoint}/v1/sql"
    ok = httpx.post(url, json={"sql": "SELECT count(*) AS n FROM spans WHERE service_name = ?", "params": ["svc"]})
    assert ok.json() == {"columns": ["n"], "rows": [[4]]}
    refused = httpx.post(url, json={"sql": "DELETE FROM spans"})
    assert refused.status_code == 400 and "only SELECT" in refused.json()["error"]
    assert served.collector.store.query("SELECT count(*) FROM spans") == [(4,)]


def test_sdk_exporter_and_openinference_langchain_spans_become_episodes(served: CollectorServer) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.tools import tool
    from openinference.instrumentation.langchain import LangChainInstrumentor

    provider = TracerProvider(resource=Resource.create({"service.name": "lc-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{served.endpoint}/v1/traces")))
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:

        @tool
        def lookup(order_id: str) -> str:
            """Find an order."""
            return f"order {order_id}: shipped"

        @tool
        def refund(order_id: str) -> str:
            """Refund an order."""
            raise ValueError("refunds are closed")

        from langchain_core.runnables import RunnableLambda

        model = FakeListChatModel(responses=["checking"])

        def run(question: str) -> str:
            model.invoke(question)
            lookup.invoke({"order_id": "A1"})
            try:
                refund.invoke({"order_id": "A1"})
            except ValueError:
                pass
            return "done"

        RunnableLambda(run, name="support_agent").invoke("where is A1?")
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    store = served.collector.store
    calls = store.query("SELECT tool_name, outcome, agent FROM tool_calls ORDER BY tool_name")
    assert calls == [("lookup", "ok", "lc-agent"), ("refund", "tool_error", "lc-agent")]
    episodes = store.query(
        "SELECT agent, framework, tool_calls, tool_failures, tool_reliability, llm_calls FROM episodes"
    )
    assert episodes == [("lc-agent", "openinference", 2, 1, 0.5, 1)]
    assert store.query("SELECT count(DISTINCT episode_id) FROM spans") == [(1,)]


def test_worker_exporter_spools_while_the_collector_is_down_and_delivers_once(tmp_path: Path) -> None:
    store_path = str(tmp_path / "t.duckdb")
    endpoint: list[str | None] = [None]
    exporter = CollectorSpanExporter(lambda: endpoint[0], spool=Spool(tmp_path / "spool"), drain_interval_s=0.05)
    try:
        assert exporter.export(_spans(5)).name == "SUCCESS"  # no collector yet: spooled
        assert exporter.spool.spans() == 5
        server = CollectorServer(Collector(TraceStore(store_path)), port=0).start()
        endpoint[0] = server.endpoint
        assert exporter.force_flush(10_000)
        assert exporter.export(_spans(2)).name == "SUCCESS"
        # A second process delivering a copy of an already-committed batch changes nothing.
        payload = encode_spans(_spans(1)).SerializeToString()
        assert _post(server, payload).status_code == 200
        Spool(tmp_path / "spool").put(payload, spans=1)
        assert exporter.force_flush(10_000)
        assert server.collector.store.query("SELECT count(*) FROM spans") == [(8,)]
        assert server.collector.stats.snapshot()["duplicate_batches"] == 1
        server.stop()
    finally:
        exporter.shutdown()


def test_agentgym_sql_from_a_shell_is_routed_to_the_owner(served: CollectorServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agentgym_runtime.cli.app import build_app
    from agentgym_runtime.collectors.otlp.election import publish_endpoint

    assert _post(served, encode_spans(_spans(3)).SerializeToString()).status_code == 200
    home = tmp_path / "home"
    home.mkdir()
    publish_endpoint(home, served.endpoint)
    runner = CliRunner()
    app = build_app()
    result = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM tool_calls", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == '[{"n": 3}]'  # foreign gen_ai.tool.name spans become tool calls
    result = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM spans", "--home", str(home), "--json"])
    assert result.output.strip() == '[{"n": 3}]'
    refused = runner.invoke(app, ["sql", "DROP TABLE spans", "--home", str(home)])
    assert refused.exit_code == 1
    assert "only SELECT" in refused.output


def test_agentgym_sql_in_the_owning_process(tmp_path: Path) -> None:
    import agentgym_runtime as agentgym

    agentgym.configure(home=tmp_path, share_home=False)
    try:

        @agentgym.train_online(name="bot")
        def bot(x: int) -> int:
            return x + 1

        for i in range(4):
            bot(i)
        rows = agentgym.sql("SELECT agent, count(*) AS n FROM episodes WHERE agent = ? GROUP BY 1", params=["bot"])
        assert rows == [{"agent": "bot", "n": 4}]
        table = agentgym.sql("SELECT count(*) AS n FROM episodes", arrow=True)
        assert table.to_pylist() == [{"n": 4}]
    finally:
        agentgym.shutdown()


def test_the_writer_waits_for_as_many_requests_as_it_last_committed_together_and_acks_after_the_commit(
    tmp_path: Path,
) -> None:
    from agentgym_runtime.collectors.otlp.decode import PROTOBUF, decode_request, request_rows
    from agentgym_runtime.collectors.otlp.sink import StoreSink, spans_id

    store = TraceStore(str(tmp_path / "t.duckdb"))
    # A long linger: only the number of requests, never the clock, can end these waits.
    sink = StoreSink(store, linger_s=60.0)
    rows = [
        request_rows(decode_request(encode_spans(_spans(3, f"s{i}")).SerializeToString(), PROTOBUF, None))
        for i in range(8)
    ]
    first = [sink.submit(spans_id(r) or "", r) for r in rows[:4]]
    sink.start()  # 4 senders' requests, queued together: one transaction
    assert [f.result(30) for f in first] == ["written"] * 4
    assert sink.stats.write_transactions == 1
    second = [sink.submit(spans_id(r) or "", r) for r in rows[4:7]]
    assert not any(f.done() for f in second)  # 3 of the 4 senders: the writer waits for the 4th
    assert store.query("SELECT count(*) FROM spans") == [(12,)]  # nothing of them committed yet
    last = sink.submit(spans_id(rows[7]) or "", rows[7])
    assert [f.result(30) for f in [*second, last]] == ["written"] * 4
    assert (sink.stats.write_transactions, store.query("SELECT count(*) FROM spans")) == (2, [(24,)])
    lone = sink.submit(spans_id(rows[0]) or "", rows[0])  # a retry, alone: closing ends the wait at once
    sink.close()
    assert lone.result(0) == "duplicate"
    assert sink.stats.write_transactions == 2


def test_a_spooled_batch_the_collector_refuses_is_set_aside_and_the_batches_behind_it_are_delivered(
    tmp_path: Path,
) -> None:
    """The spool is delivered oldest first: a batch refused with 400 (the store refuses its rows,
    a damaged file) must not hold back every batch spooled after it."""
    store = TraceStore(str(tmp_path / "t.duckdb"))
    server = CollectorServer(Collector(store), port=0).start()
    spool = Spool(tmp_path / "spool")
    assert spool.put(b"\x0a\x05damaged", spans=3)  # the oldest file: not an OTLP request
    endpoint: list[str | None] = [None]
    exporter = CollectorSpanExporter(lambda: endpoint[0], spool=spool, drain_interval_s=0.05)
    try:
        assert exporter.export(_spans(4)).name == "SUCCESS"  # no collector known yet: spooled behind it
        endpoint[0] = server.endpoint
        assert exporter.force_flush(10_000)
        assert store.query("SELECT count(*) FROM spans") == [(4,)]
        assert not spool.files()
        rejected = list((tmp_path / "spool" / "rejected").iterdir())
        assert [p.read_bytes() for p in rejected] == [b"\x0a\x05damaged"]  # kept for a look, not retried
        assert exporter.stats.snapshot()["rows_dropped"] == 3
        # Sent directly, rows the store refuses (here: invalid JSON) are set aside too, not spooled.
        good = span_record(_spans(1)[0])
        assert good is not None
        at = SPAN_COLUMNS.index("attributes")
        assert exporter.export([SpanRecord([*good[:at], "{not json", *good[at + 1 :]])]).name == "FAILURE"
        assert not spool.files()
        assert len(list((tmp_path / "spool" / "rejected").iterdir())) == 2
        assert exporter.stats.snapshot()["rows_dropped"] == 4
        assert exporter.export(_spans(2)).name == "SUCCESS"
        assert store.query("SELECT count(*) FROM spans") == [(6,)]
    finally:
        exporter.shutdown()
        server.stop()
