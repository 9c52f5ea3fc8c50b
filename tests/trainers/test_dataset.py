"""Snapshots of recorded episodes to Parquet, and the tasks built from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.recording.capture import start_llm_call
from agentgym_runtime.recording.context import RequestedToolCall
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from agentgym_runtime.trainers.dataset import (
    SnapshotError,
    SnapshotManifest,
    load_tasks,
    read_tasks,
    split_by_session,
    write_snapshot,
)


@agentgym.tool
def get_order(order_id: int) -> dict[str, Any]:
    """Look up an order."""
    return {"id": order_id, "status": "shipped"}


def make_agent(name: str, session: str | None) -> Any:
    def support(question: str, order_id: int, typo: bool = False) -> str:
        call = start_llm_call(
            model="scripted",
            provider="test",
            tools=[get_order.definition()],
            input_messages=[{"role": "user", "content": question}],
            system_instructions="Be exact.",
        )
        requested = "get_ordr" if typo else "get_order"
        call.finish(
            requested=[RequestedToolCall.from_raw(requested, f"c{order_id}", json.dumps({"order_id": order_id}))]
        )
        if typo:
            return "sorry"
        return f"order {order_id} is {get_order(order_id=order_id)['status']}"

    return agentgym.train_online(name=name, session_id=session)(support)


def serve(count: int, *, agent: str = "support", sessions: int = 3, typo_every: int = 0, start: int = 0) -> None:
    agents = [make_agent(agent, f"s{k}") for k in range(sessions)]
    for i in range(start, start + count):
        agents[i % sessions](f"where is order {i}?", i, typo=bool(typo_every) and i % typo_every == 0)


def test_snapshot_copies_one_agents_episodes_spans_and_feedback(
    agentgym_runtime: Runtime, recorded: Recorded, tmp_path: Path
) -> None:
    serve(6, typo_every=3)  # episodes 0 and 3 request an unknown tool
    serve(2, agent="billing")
    support = recorded.episodes("support")
    agentgym.feedback(support[1]["episode_id"], True, name="thumbs")
    agentgym.feedback(support[2]["episode_id"], 0.25, name="grade", comment="slow")
    assert agentgym.flush()

    manifest = write_snapshot(agentgym_runtime.store, "support", tmp_path / "snap", run_id="r1")

    # invoke_agent + chat + execute_tool per episode, plus the two feedback spans.
    assert manifest.counts == {"episodes": 6, "sessions": 3, "spans": 20, "feedback": 2}
    store_spans = recorded.query(
        "SELECT count(*) AS n FROM spans WHERE episode_id IN (SELECT episode_id FROM episodes WHERE agent = 'support')"
    )
    assert store_spans[0]["n"] == 20
    assert manifest.agent == "support"
    assert manifest.run_id == "r1"
    assert manifest.since is None
    assert set(manifest.files) == {"episodes.parquet", "spans.parquet", "feedback.parquet"}
    reread = SnapshotManifest.read(tmp_path / "snap")
    assert reread.counts == manifest.counts
    assert reread.until == manifest.until
    reread.verify()  # sha256 and sizes match the files

    tasks = read_tasks(tmp_path / "snap")
    assert [t.episode_id for t in tasks] == [e["episode_id"] for e in support]
    ok, bad = tasks[1], tasks[0]
    assert ok.agent == "support"
    assert ok.session_id == "s1"
    assert ok.input == {"question": "where is order 1?", "order_id": 1, "typo": False}
    assert ok.output == "order 1 is shipped"
    assert ok.system_instructions == "Be exact."
    assert [tool["name"] for tool in ok.tools] == ["get_order"]
    assert ok.tools[0]["parameters"]["required"] == ["order_id"]
    assert len(ok.tool_calls) == 1
    call = ok.tool_calls[0]
    assert (call.name, call.outcome) == ("get_order", "ok")
    assert call.arguments == {"order_id": 1}
    assert call.result == {"id": 1, "status": "shipped"}
    assert ok.reward == 1.0
    assert ok.tool_reliability == 1.0
    assert [(f.name, f.value) for f in ok.feedback] == [("thumbs", 1.0)]
    assert [(f.name, f.value, f.comment) for f in tasks[2].feedback] == [("grade", 0.25, "slow")]
    assert [(c.name, c.call_id, c.outcome) for c in bad.tool_calls] == [("get_ordr", "c0", "unknown_tool")]
    assert bad.tool_calls[0].arguments == {"order_id": 0}
    assert bad.reward == 0.0
    assert bad.tool_reliability == 0.0


def test_snapshot_since_takes_only_later_episodes(
    agentgym_runtime: Runtime, recorded: Recorded, tmp_path: Path
) -> None:
    serve(5)
    episodes = recorded.episodes("support")
    cut = episodes[2]["ended_at"]

    manifest = write_snapshot(agentgym_runtime.store, "support", tmp_path / "later", run_id="r2", since=cut)

    assert manifest.counts["episodes"] == 2
    assert manifest.counts["spans"] == 6
    assert manifest.since == cut
    assert [t.episode_id for t in read_tasks(tmp_path / "later")] == [e["episode_id"] for e in episodes[3:]]
    until_only = write_snapshot(
        agentgym_runtime.store, "support", tmp_path / "until", run_id="r3", until=episodes[1]["ended_at"]
    )
    assert until_only.counts["episodes"] == 2


def test_heldout_split_is_by_session_and_deterministic(agentgym_runtime: Runtime, tmp_path: Path) -> None:
    serve(20, sessions=10)
    assert agentgym.flush()
    write_snapshot(agentgym_runtime.store, "support", tmp_path / "snap", run_id="r1")

    train, heldout = load_tasks(tmp_path / "snap", heldout_fraction=0.3)

    assert (len(train), len(heldout)) == (14, 6)  # 3 of 10 sessions, 2 episodes each
    train_sessions = {t.session_id for t in train}
    heldout_sessions = {t.session_id for t in heldout}
    assert len(heldout_sessions) == 3
    assert train_sessions.isdisjoint(heldout_sessions)
    assert train_sessions | heldout_sessions == {f"s{k}" for k in range(10)}
    _, again_heldout = load_tasks(tmp_path / "snap", heldout_fraction=0.3)
    assert [t.episode_id for t in again_heldout] == [t.episode_id for t in heldout]
    assert load_tasks(tmp_path / "snap", heldout_fraction=0.0)[1] == []


def test_split_keeps_episodes_without_session_apart() -> None:
    from agentgym_runtime.trainers.dataset import Task

    tasks = [Task(episode_id=f"e{i}", agent="a") for i in range(5)]
    train, heldout = split_by_session(tasks, 0.2)
    assert (len(train), len(heldout)) == (4, 1)
    single = split_by_session(tasks[:1], 0.5)
    assert (len(single[0]), len(single[1])) == (1, 0)  # one session cannot be split
    with pytest.raises(ValueError, match=r"heldout_fraction must be in \[0, 1\), got 1.0"):
        split_by_session(tasks, 1.0)


def test_altered_or_unfinished_snapshot_is_refused(agentgym_runtime: Runtime, tmp_path: Path) -> None:
    serve(3)
    assert agentgym.flush()
    write_snapshot(agentgym_runtime.store, "support", tmp_path / "snap", run_id="r1")
    spans = tmp_path / "snap" / "spans.parquet"
    data = bytearray(spans.read_bytes())
    data[len(data) // 2] ^= 0xFF
    spans.write_bytes(bytes(data))

    with pytest.raises(SnapshotError, match=r"spans\.parquet does not match its sha256 in manifest\.json"):
        load_tasks(tmp_path / "snap")
    (tmp_path / "half").mkdir()
    with pytest.raises(SnapshotError, match=r"no snapshot manifest at .*half/manifest\.json"):
        load_tasks(tmp_path / "half")
