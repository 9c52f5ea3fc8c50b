"""The DuckDB LightningStore behaves like Agent Lightning's in-memory store for the same calls."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest

agl = pytest.importorskip("agentlightning")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from agentgym_runtime.trainers.lightning.store import DuckDBLightningStore, rows_as_json  # noqa: E402

_ID = re.compile(r"\b(?:(ro|at|rs|sp)-[0-9a-f]{8,}|[0-9a-f]{32}|[0-9a-f]{16})\b")


def _otel_spans(count: int) -> list[Any]:
    """Real OTel SDK spans from a private provider (the global one is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("invoke_agent support"):
        for i in range(count - 1):
            with tracer.start_as_current_span(f"execute_tool t{i}") as span:
                span.set_attribute("gen_ai.tool.name", f"t{i}")
    return list(exporter.get_finished_spans())


def _normalise(value: Any, ids: dict[str, str]) -> Any:
    """Replace generated ids by their order of appearance and drop clock values."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _normalise(v, ids) for k, v in sorted(value.items()) if not k.endswith("_time")}
    if isinstance(value, list | tuple):
        return [_normalise(v, ids) for v in value]
    if isinstance(value, str):
        return _ID.sub(lambda m: ids.setdefault(m.group(0), f"{m.group(1) or 'hex'}#{len(ids)}"), value)
    return value


def _snap(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_snap(v) for v in value]
    if hasattr(value, "items") and hasattr(value, "total"):
        return {"items": _snap(list(value.items)), "total": value.total}
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


class _Seen(list[tuple[str, Any]]):
    """The in-memory store hands out live objects that later calls mutate: keep what each call returned."""

    def append(self, entry: tuple[str, Any]) -> None:
        super().append((entry[0], _snap(entry[1])))


async def _scenario(store: Any) -> list[tuple[str, Any]]:
    """The same sequence of store calls; returns what each call observed."""
    seen = _Seen()
    res = await store.add_resources({"prompt": agl.PromptTemplate(template="Be exact: {q}", engine="f-string")})
    seen.append(("add_resources", res))
    res2 = await store.update_resources(
        res.resources_id, {"prompt": agl.PromptTemplate(template="Be exacter: {q}", engine="f-string")}
    )
    seen.append(("update_resources", res2))
    seen.append(("latest_resources", await store.get_latest_resources()))
    rollouts = [
        await store.enqueue_rollout(input={"q": f"question {i}"}, mode="train" if i < 2 else "val") for i in range(3)
    ]
    seen.append(("enqueued", rollouts))
    first = await store.dequeue_rollout(worker_id="w1")
    seen.append(("dequeued", first))
    assert first is not None
    spans = _otel_spans(3)
    added = [await store.add_otel_span(first.rollout_id, first.attempt.attempt_id, s) for s in spans]
    seen.append(("spans_added", added))
    seen.append(("attempt_running", await store.get_latest_attempt(first.rollout_id)))
    seen.append(
        ("attempt_done", await store.update_attempt(first.rollout_id, first.attempt.attempt_id, status="succeeded"))
    )
    second = await store.dequeue_rollout(worker_id="w2")
    assert second is not None
    await store.update_attempt(second.rollout_id, second.attempt.attempt_id, status="failed")
    seen.append(("query_all", await store.query_rollouts()))
    seen.append(("query_queuing", await store.query_rollouts(status_in=["queuing"])))
    seen.append(("query_sorted", await store.query_rollouts(sort_by="start_time", sort_order="desc", limit=2)))
    seen.append(("query_val", await store.query_rollouts(mode="val") if _has_mode(store) else []))
    seen.append(("spans", await store.query_spans(first.rollout_id)))
    seen.append(("spans_named", await store.query_spans(first.rollout_id, name="execute_tool t1")))
    waited = await store.wait_for_rollouts(rollout_ids=[r.rollout_id for r in rollouts], timeout=0.2)
    seen.append(("waited", [r.rollout_id for r in waited]))
    seen.append(("attempts", await store.query_attempts(first.rollout_id)))
    seen.append(("workers", await store.query_workers(sort_by="worker_id")))
    seen.append(("resources", await store.query_resources(sort_by="resources_id")))
    return seen


def _has_mode(store: Any) -> bool:
    import inspect

    return "mode" in inspect.signature(store.query_rollouts).parameters


async def test_duckdb_store_matches_in_memory_store(tmp_path: Path) -> None:
    memory_seen = await _scenario(agl.InMemoryLightningStore())
    duck = DuckDBLightningStore(tmp_path / "lightning.duckdb")
    duck_seen = await _scenario(duck)

    assert [name for name, _ in duck_seen] == [name for name, _ in memory_seen]
    our_ids: dict[str, str] = {}
    their_ids: dict[str, str] = {}
    for (name, ours), (_, theirs) in zip(duck_seen, memory_seen, strict=True):
        assert _normalise(ours, our_ids) == _normalise(theirs, their_ids), name
    seen = dict(duck_seen)
    assert seen["dequeued"]["status"] == "preparing"
    # The values themselves, not only their equality with the in-memory store:
    assert [r["status"] for r in seen["query_all"]["items"]] == ["succeeded", "failed", "queuing"]
    assert [r["input"] for r in seen["query_queuing"]["items"]] == [{"q": "question 2"}]
    spans = seen["spans"]["items"]
    assert [s["name"] for s in spans] == ["execute_tool t0", "execute_tool t1", "invoke_agent support"]
    assert [s["sequence_id"] for s in spans] == [1, 2, 3]
    assert len(seen["waited"]) == 2
    assert seen["latest_resources"]["resources"]["prompt"]["template"] == "Be exacter: {q}"
    await duck.close()


async def test_duckdb_store_persists_in_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "job" / "lightning.duckdb"
    store = DuckDBLightningStore(path)
    rollout = await store.enqueue_rollout(input={"q": "kept"})
    attempted = await store.dequeue_rollout(worker_id="w")
    assert attempted is not None
    await store.add_otel_span(rollout.rollout_id, attempted.attempt.attempt_id, _otel_spans(1)[0])
    assert [r["input"] for r in rows_as_json(store, "rollouts")] == [{"q": "kept"}]
    await store.close()

    con = duckdb.connect(str(path), read_only=True)
    tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"rollouts", "attempts", "spans", "resources", "workers", "rollout_queue", "span_sequence_ids"} <= tables
    assert con.execute("SELECT count(*) FROM spans WHERE rollout_id = ?", [rollout.rollout_id]).fetchone() == (1,)
    con.close()

    reopened = DuckDBLightningStore(path)
    again = await reopened.get_rollout_by_id(rollout.rollout_id)
    assert again is not None
    assert again.input == {"q": "kept"}
    assert again.status == "running"  # the span counted as a heartbeat
    spans = await reopened.query_spans(rollout.rollout_id)
    assert [s.name for s in spans] == ["invoke_agent support"]
    await reopened.close()


async def test_duckdb_store_rejects_duplicates_and_unknown_updates(tmp_path: Path) -> None:
    store = DuckDBLightningStore(tmp_path / "l.duckdb")
    rollout = await store.enqueue_rollout(input={"q": 1})
    with pytest.raises(ValueError, match="Item already exists"):
        await store.collections.rollouts.insert([rollout])
    missing = rollout.model_copy(update={"rollout_id": "ro-000000000000"})
    with pytest.raises(ValueError, match="does not exist"):
        await store.collections.rollouts.update([missing])
    assert await store.collections.rollout_queue.size() == 1
    assert await store.collections.rollout_queue.dequeue(5) == [rollout.rollout_id]
    assert await store.collections.rollout_queue.size() == 0
    await store.close()


async def test_wait_for_rollouts_wakes_up_when_another_thread_finishes(tmp_path: Path) -> None:
    store = DuckDBLightningStore(tmp_path / "l.duckdb")
    rollout = await store.enqueue_rollout(input={"q": 1})
    attempted = await store.dequeue_rollout(worker_id="w")
    assert attempted is not None

    def finish() -> None:
        asyncio.run(store.update_attempt(rollout.rollout_id, attempted.attempt.attempt_id, status="succeeded"))

    waiter = asyncio.create_task(store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await asyncio.to_thread(finish)
    done = await asyncio.wait_for(waiter, 2)
    assert [r.status for r in done] == ["succeeded"]
    await store.close()
