"""Pytest fixtures for testing agents recorded by agentgym-runtime (and for our own tests).

Enable them with ``pytest_plugins = ["agentgym_runtime.testing"]`` in a ``conftest.py``.

* ``agentgym_runtime`` — the services (what ``configure`` returns: the runtime, the policy router
  and registry, the scheduler) writing to a fresh DuckDB file under ``tmp_path``, strict
  (internal errors raise), flushed quickly; shut down after the test.
* ``recorded`` — helpers that flush and read back what was recorded.
* ``captured_spans`` — an in-memory OpenTelemetry exporter on the same provider, cleared per test.

Example:
    >>> def test_support_agent(agentgym_runtime, recorded):  # doctest: +SKIP
    ...     support("where is order 7?")
    ...     assert recorded.episodes()[0]["tool_reliability"] == 1.0
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentgym_runtime.api import configure, shutdown
from agentgym_runtime.services import Services


class Recorded:
    """Read back what a runtime recorded (each call flushes first)."""

    def __init__(self, runtime: Services) -> None:
        self.runtime = runtime

    def _rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        assert self.runtime.flush(), f"flush failed: {self.runtime.stats()}"
        return self.runtime.store.query_dicts(sql, params)

    def episodes(self, agent: str | None = None) -> list[dict[str, Any]]:
        """Rows of ``episodes``, oldest first."""
        if agent is None:
            return self._rows("SELECT * FROM episodes ORDER BY started_at")
        return self._rows("SELECT * FROM episodes WHERE agent = ? ORDER BY started_at", [agent])

    def tool_calls(self, episode_id: str | None = None) -> list[dict[str, Any]]:
        """Rows of the ``tool_calls`` view, in call order."""
        if episode_id is None:
            return self._rows("SELECT * FROM tool_calls ORDER BY started_at")
        return self._rows("SELECT * FROM tool_calls WHERE episode_id = ? ORDER BY started_at", [episode_id])

    def outcomes(self, episode_id: str) -> dict[str, int]:
        """Tool-call outcome counts of one episode, read from the store."""
        rows = self._rows(
            "SELECT outcome, count(*) AS n FROM tool_calls WHERE episode_id = ? GROUP BY outcome", [episode_id]
        )
        return {r["outcome"]: r["n"] for r in rows}

    def spans(self, episode_id: str | None = None) -> list[dict[str, Any]]:
        """Rows of ``spans``, in start order."""
        if episode_id is None:
            return self._rows("SELECT * FROM spans ORDER BY start_unix_nano")
        return self._rows("SELECT * FROM spans WHERE episode_id = ? ORDER BY start_unix_nano", [episode_id])

    def feedback(self) -> list[dict[str, Any]]:
        """Rows of ``feedback``."""
        return self._rows("SELECT * FROM feedback ORDER BY created_at")

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Any read query, after a flush."""
        return self._rows(sql, params)


@pytest.fixture
def agentgym_home(tmp_path: Path) -> Path:
    """A fresh agentgym home directory."""
    return tmp_path / ".agentgym"


@pytest.fixture
def agentgym_runtime(agentgym_home: Path) -> Iterator[Services]:
    """A strict runtime on a fresh DuckDB file, shut down after the test."""
    runtime = configure(home=agentgym_home, strict=True, schedule_delay_ms=20, reopen_backoff_s=0.0)
    try:
        yield runtime
    finally:
        shutdown()


@pytest.fixture
def recorded(agentgym_runtime: Services) -> Recorded:
    """Read back what the test's runtime recorded."""
    return Recorded(agentgym_runtime)


class CapturedSpans:
    """Finished spans seen by the tracer provider during one test."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self._exporter = exporter

    def all(self) -> list[ReadableSpan]:
        """Every finished span, in end order."""
        return list(self._exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        """Finished spans whose name starts with ``prefix``."""
        return [s for s in self.all() if s.name.startswith(prefix)]

    def clear(self) -> None:
        """Forget what was captured so far."""
        self._exporter.clear()


_memory_exporter: InMemorySpanExporter | None = None


@pytest.fixture
def captured_spans(agentgym_runtime: Services) -> Iterator[CapturedSpans]:
    """An in-memory exporter on the global tracer provider, cleared for each test."""
    global _memory_exporter
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "agentgym installs an SDK TracerProvider"
    if _memory_exporter is None:
        _memory_exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(_memory_exporter))
    _memory_exporter.clear()
    yield CapturedSpans(_memory_exporter)
    _memory_exporter.clear()
