"""One unstorable row never blocks the rest: it is quarantined with its reason and counted."""

from __future__ import annotations

import itertools
import json
import textwrap
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from agentgym_runtime.collectors.exporter import QUARANTINE_DIR, DuckDBSpanExporter
from agentgym_runtime.collectors.rows import RowBatch, span_rows
from agentgym_runtime.collectors.schema import SPAN_COLUMNS
from agentgym_runtime.collectors.store import TraceStore
from agentgym_runtime.recording.capture import start_tool_call
from tests.attack.helpers import count, run

LONE = "\ud800"


def test_surrogates_in_every_recorded_field_are_stored_replaced(tmp_path: Path) -> None:
    import agentgym_runtime as agentgym

    rt = agentgym.configure(home=str(tmp_path), schedule_delay_ms=60_000)
    try:

        @agentgym.tool
        def echo(text: str) -> str:
            return f"{text}{LONE}"

        @agentgym.train_online(name="bad-strings")
        def agent(i: int, note: str) -> str:
            if i % 3 == 0:
                agentgym.Toolbox([echo]).call("echo", {"text": note})
            elif i % 3 == 1:  # the model names a tool that does not exist, in broken text
                try:
                    agentgym.Toolbox([echo]).call(f"nope{LONE}", f'{{"text": "{LONE}"')
                except agentgym.UnknownToolError:
                    pass
            return note + LONE

        results = [agent(i, f"n{i}{LONE}") for i in range(1101)]
        assert results == [f"n{i}{LONE}{LONE}" for i in range(1101)]
        last = agentgym.last_episode()
        assert last is not None
        agentgym.feedback(last, 1.0, comment=f"c{LONE}", label=f"l{LONE}")
        assert agentgym.flush()
        stats = agentgym.stats()
        assert stats["episodes_written"] == 1101
        assert stats["feedback_written"] == 1
        assert stats["rows_quarantined"] == 0
        assert stats["spans_lost"] == 0
        rows = rt.store.query(
            "SELECT count(*) FROM spans WHERE attributes LIKE ? OR tool_arguments LIKE ? OR tool_result LIKE ?",
            ["%\ufffd%"] * 3,
        )
        assert rows[0][0] > 0  # the mark (U+FFFD) is what is stored
    finally:
        agentgym.shutdown()


def test_a_row_the_store_refuses_is_quarantined_and_later_batches_are_written(tmp_path: Path) -> None:
    """Rows that bypass serialization (a raw span attribute with a lone surrogate) reach the backstop."""
    import agentgym_runtime as agentgym

    rt = agentgym.configure(home=str(tmp_path), schedule_delay_ms=60_000, max_export_batch_size=32)
    try:

        @agentgym.train_online(name="poison")
        def agent(i: int) -> int:
            start_tool_call("tool", arguments={"i": i}).succeed(i)
            if i % 100 == 7:  # an attribute set directly on a span bypasses serialization
                rt.tracer.start_span("raw", attributes={"note": f"bad{LONE}"}).end()
            return i

        assert [agent(i) for i in range(1000)] == list(range(1000))
        assert agentgym.flush()
        stats = agentgym.stats()
        assert stats["episodes_written"] == 1000
        assert stats["rows_quarantined"] == 10
        assert stats["spans_quarantined"] == 10
        assert stats["spans_written"] == 2000
        assert stats["spans_lost"] == 0
        files = sorted((tmp_path / QUARANTINE_DIR).glob("*.json"))
        assert len(files) == 10
        kept = json.loads(files[0].read_text())
        assert "surrogate" in kept["reason"]
        assert len(kept["rows"]["spans"]) == 1
        status = json.loads((tmp_path / "status.json").read_text())
        assert status["stats"]["rows_quarantined"] == 10
    finally:
        agentgym.shutdown()
    assert count(tmp_path / "traces.duckdb", "spans") == 2000


def test_bisection_keeps_every_good_row_of_a_mixed_batch(tmp_path: Path) -> None:
    store = TraceStore(str(tmp_path / "t.duckdb"))
    exporter = DuckDBSpanExporter(store, columnar=False)
    provider = TracerProvider()
    span = provider.get_tracer("attack").start_span("execute_tool ok", attributes={"x": "y"})
    span.end()
    template = list(span_rows([span]).spans[0])
    at = SPAN_COLUMNS.index("span_id")
    good = [(*template[:at], f"{i:016x}", *template[at + 1 :]) for i in range(63)]
    bad = (*template[:at], "bad" + LONE, *template[at + 1 :])
    batch = RowBatch(spans=[*good[:40], bad, *good[40:]])
    exporter._pending.append(batch)
    exporter._pending_spans = len(batch.spans)
    assert exporter.retry_pending()
    assert exporter.stats.snapshot()["rows_quarantined"] == 1
    assert store.query("SELECT count(*) FROM spans")[0][0] == 63
    store.close()


def test_full_disk_backlog_drains_batch_by_batch_as_space_is_freed(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes fail like a full disk; raising it step by step frees space."""
    code = textwrap.dedent(
        f"""
        import json, os, resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        import agentgym_runtime as agentgym
        agentgym.configure(home={str(tmp_path)!r}, reopen_backoff_s=0.0, schedule_delay_ms=60000,
                           max_export_batch_size=50)
        @agentgym.train_online(name="disk")
        def agent(i):
            return {{"i": i, "pad": "x" * 2000}}
        agent(-1)
        assert agentgym.flush()
        db = {str(tmp_path / "traces.duckdb")!r}
        size = lambda: sum(os.path.getsize(p) for p in (db, db + ".wal") if os.path.exists(p))
        resource.setrlimit(resource.RLIMIT_FSIZE, (size() + 4096, resource.RLIM_INFINITY))
        results = [agent(i)["i"] for i in range(2000)]
        steps = [(agentgym.flush(), agentgym.stats()["episodes_written"])]
        limit = size() + 4096
        while not steps[-1][0] and len(steps) < 60:
            limit += 256 * 1024  # some space is freed, less than the backlog needs
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            steps.append((agentgym.flush(), agentgym.stats()["episodes_written"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        final = agentgym.flush()
        print(json.dumps({{"ok": results == list(range(2000)), "steps": steps, "final": final,
                           "stats": agentgym.stats()}}))
        """
    )
    result = run(code, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is True
    assert report["final"] is True
    written = [episodes for _, episodes in report["steps"]]
    assert written[0] < 2001  # the first flush under the limit could not write everything
    assert any(0 < b - a < 2001 - written[0] for a, b in itertools.pairwise(written)), written
    assert report["stats"]["episodes_written"] == 2001
    assert report["stats"]["rows_quarantined"] == 0
    assert count(tmp_path / "traces.duckdb", "episodes") == 2001
