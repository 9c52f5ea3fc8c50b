"""The DuckDB store: schema contract, migrations, burst capacity, stats."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.collectors.schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from agentgym_runtime.collectors.store import TraceStore
from agentgym_runtime.errors import StoreUnavailableError
from agentgym_runtime.recording.capture import start_tool_call
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded

PUBLIC_COLUMNS = {
    "episodes": {
        "episode_id", "agent", "policy_version", "session_id", "started_at", "ended_at", "status",
        "tool_calls", "tool_failures", "tool_reliability", "reward",
    },
    "tool_calls": {
        "episode_id", "agent", "policy_version", "tool_name", "call_id", "outcome", "arguments", "result",
        "error_type", "duration_ms", "started_at",
    },
    "reliability": {"agent", "tool_name", "policy_version", "calls", "successes", "failures", "tool_reliability"},
    "spans": {
        "trace_id", "span_id", "parent_span_id", "name", "episode_id", "agent", "policy_version", "operation",
        "tool_name", "tool_outcome", "request_model", "input_tokens", "output_tokens", "status_code",
        "error_type", "started_at", "ended_at", "attributes",
    },
    "feedback": {"feedback_id", "episode_id", "name", "value", "label", "comment", "created_at"},
    "policies": {"agent", "version", "status", "created_at"},
    "training_runs": {"run_id", "agent", "trainer", "status"},
}  # fmt: skip


def test_public_tables_and_views_have_their_columns() -> None:
    store = TraceStore(":memory:")
    for table, expected in PUBLIC_COLUMNS.items():
        columns = {row[0] for row in store.query(f"DESCRIBE {table}")}
        assert expected <= columns, f"{table} lacks {expected - columns}"
    typed = dict(store.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_name='spans'"))
    assert typed["policy_version"] == "INTEGER"
    assert typed["input_tokens"] == "BIGINT"
    assert typed["started_at"] == "TIMESTAMP WITH TIME ZONE"
    assert typed["attributes"] == "JSON"


def test_migrations_are_idempotent_and_versioned(tmp_path: Path) -> None:
    path = str(tmp_path / "t.duckdb")
    con = duckdb.connect(path)
    assert migrate(con) == SCHEMA_VERSION == MIGRATIONS[-1].version
    assert migrate(con) == SCHEMA_VERSION
    assert con.execute("SELECT count(*) FROM agentgym_schema").fetchone() == (len(MIGRATIONS),)
    con.execute("INSERT INTO agentgym_schema (version, description) VALUES (999, 'from the future')")
    con.close()
    with pytest.raises(StoreUnavailableError, match="schema version 999, newer than this agentgym-runtime"):
        TraceStore(path).connect()
    con = duckdb.connect(path, read_only=True)
    assert schema_version(con) == 999
    con.close()


def test_burst_of_30k_spans_loses_nothing(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    n = 30_000
    with agentgym.episode(agent="burst") as ep:
        for i in range(n):
            start_tool_call("ping", call_id=str(i)).succeed(None)
    assert agentgym.flush()
    stats = agentgym.stats()
    assert stats["spans_enqueued"] == n + 1
    assert stats["spans_written"] == n + 1
    assert stats["spans_lost"] == 0
    assert stats["write_failures"] == 0
    rows = recorded.query("SELECT count(*) AS n, count(DISTINCT call_id) AS ids FROM tool_calls")
    assert rows == [{"n": n, "ids": n}]
    (episode,) = recorded.episodes()
    assert (episode["episode_id"], episode["tool_calls"], episode["tool_reliability"]) == (ep.id, n, 1.0)


def test_reliability_view_groups_by_agent_tool_and_version(recorded: Recorded) -> None:
    from agentgym_runtime.semconv import ToolOutcome

    with agentgym.episode(agent="a"):
        for i in range(4):
            call = start_tool_call("search", call_id=str(i))
            if i == 0:
                call.fail(ToolOutcome.INVALID_ARGUMENTS)
            else:
                call.succeed("hit")
        start_tool_call("book", call_id="b").fail(ToolOutcome.UNKNOWN_TOOL)
    rows = recorded.query("SELECT * FROM reliability ORDER BY tool_name")
    assert [(r["tool_name"], r["calls"], r["successes"], r["failures"], r["tool_reliability"]) for r in rows] == [
        ("book", 1, 0, 1, 0.0),
        ("search", 4, 3, 1, 0.75),
    ]
    assert rows[0]["unknown_tool"] == 1
    assert rows[1]["invalid_arguments"] == 1
    assert {r["policy_version"] for r in rows} == {0}


def test_status_file_is_published(agentgym_runtime: Runtime) -> None:
    import json

    with agentgym.episode(agent="s"):
        pass
    assert agentgym.flush()
    payload = json.loads(agentgym_runtime.settings.status_path.read_text())
    assert payload["stats"]["episodes_written"] == 1
    assert payload["store"] == agentgym_runtime.settings.store_path
