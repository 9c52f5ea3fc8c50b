"""The capture API adapters use: LLM calls, tool calls, and requested-vs-executed reconciliation."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.recording.capture import reconcile, start_llm_call, start_tool_call
from agentgym_runtime.recording.context import RequestedToolCall
from agentgym_runtime.semconv import ToolOutcome
from agentgym_runtime.testing import Recorded

TOOLS = [
    {
        "name": "get_order",
        "description": "Look up an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "integer"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
    {"name": "ping", "description": "Ping.", "parameters": {"type": "object", "properties": {}}},
]


def _turn(requested: list[RequestedToolCall], tokens: tuple[int, int] = (10, 5)) -> None:
    call = start_llm_call(
        model="scripted-1",
        provider="test",
        input_messages=[{"role": "user", "content": "where is my order?"}],
        tools=TOOLS,
        framework="test",
    )
    call.finish(
        output_messages=[{"role": "assistant", "tool_calls": [r.name for r in requested]}],
        requested=requested,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        response_model="scripted-1-0001",
    )


def test_requested_calls_that_never_ran_are_classified(recorded: Recorded) -> None:
    with agentgym.episode(agent="framework-agent") as ep:
        _turn(
            [
                RequestedToolCall.from_raw("get_order", "c1", '{"order_id": 7}'),
                RequestedToolCall.from_raw("teleport", "c2", "{}"),
                RequestedToolCall.from_raw("get_order", "c3", '{"order_id": "seven"}'),
                RequestedToolCall.from_raw("get_order", "c4", '{"order_id": 7'),
                RequestedToolCall.from_raw("ping", "c5", "{}"),
            ]
        )
        # The framework executes only c1; c5 is valid but never run.
        start_tool_call("get_order", call_id="c1", arguments={"order_id": 7}).succeed({"status": "shipped"})
        _turn([])  # the next LLM call reconciles the previous turn
    assert ep.outcomes == {
        "ok": 1,
        "unknown_tool": 1,
        "invalid_arguments": 2,
        "not_executed": 1,
    }
    assert ep.llm_calls == 2
    assert (ep.input_tokens, ep.output_tokens) == (20, 10)
    rows = {c["call_id"]: c for c in recorded.tool_calls(ep.id)}
    assert {k: v["outcome"] for k, v in rows.items()} == {
        "c1": "ok",
        "c2": "unknown_tool",
        "c3": "invalid_arguments",
        "c4": "invalid_arguments",
        "c5": "not_executed",
    }
    assert "teleport" in rows["c2"]["arguments"] or rows["c2"]["tool_name"] == "teleport"
    (episode,) = recorded.episodes()
    assert (episode["tool_calls"], episode["tool_failures"], episode["llm_calls"]) == (5, 4, 2)
    assert (episode["input_tokens"], episode["output_tokens"]) == (20, 10)
    chats = [s for s in recorded.spans(ep.id) if s["operation"] == "chat"]
    assert len(chats) == 2
    assert chats[0]["name"] == "chat scripted-1"
    assert (chats[0]["request_model"], chats[0]["response_model"], chats[0]["provider"]) == (
        "scripted-1",
        "scripted-1-0001",
        "test",
    )
    attributes = json.loads(chats[0]["attributes"])
    assert json.loads(attributes["gen_ai.tool.definitions"])[0]["name"] == "get_order"
    assert json.loads(attributes["gen_ai.input.messages"]) == [{"role": "user", "content": "where is my order?"}]


def test_episode_end_reconciles_and_execution_without_id_matches_by_name(recorded: Recorded) -> None:
    with agentgym.episode(agent="react-agent") as ep:
        _turn([RequestedToolCall.from_raw("ping", None, {}), RequestedToolCall.from_raw("ping", None, {})])
        start_tool_call("ping", arguments={}).succeed("pong")
    # One ping executed (matched by name), the other never ran: reconciled at episode end.
    assert ep.outcomes == {"ok": 1, "not_executed": 1}
    assert reconcile(ep) == 0


def test_tool_call_failure_modes_on_the_span(recorded: Recorded) -> None:
    with agentgym.episode(agent="a") as ep:
        start_tool_call("ping", call_id="1").error_result("HTTP 500", message="upstream failed")
        start_tool_call("ping", call_id="2").fail(ToolOutcome.TOOL_ERROR, error=TimeoutError("slow"))
    rows = {c["call_id"]: c for c in recorded.tool_calls(ep.id)}
    assert (rows["1"]["outcome"], rows["1"]["result"], rows["1"]["error_type"]) == (
        "error_result",
        '"HTTP 500"',
        "error_result",
    )
    assert (rows["2"]["outcome"], rows["2"]["error_type"]) == ("tool_error", "TimeoutError")


def test_concurrent_episodes_on_threads_never_mix(recorded: Recorded) -> None:
    barrier = threading.Barrier(8)
    ids: dict[int, str] = {}

    def worker(index: int) -> None:
        with agentgym.episode(agent=f"agent-{index}") as ep:
            ids[index] = ep.id
            barrier.wait()
            for call in range(index + 1):
                start_tool_call("ping", call_id=f"{index}-{call}").succeed("pong")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    episodes = {e["episode_id"]: e for e in recorded.episodes()}
    assert len(episodes) == 8
    for index, episode_id in ids.items():
        calls = recorded.tool_calls(episode_id)
        assert len(calls) == index + 1
        assert {c["agent"] for c in calls} == {f"agent-{index}"}
        assert all(c["call_id"].startswith(f"{index}-") for c in calls)
        assert episodes[episode_id]["tool_calls"] == index + 1


async def test_concurrent_episodes_on_asyncio_tasks_never_mix(recorded: Recorded) -> None:
    @agentgym.train_online(name="async-agent")
    async def agent(tag: str, n: int) -> str:
        for i in range(n):
            await asyncio.sleep(0)
            start_tool_call("ping", call_id=f"{tag}-{i}").succeed(tag)
        return tag

    results = await asyncio.gather(*(agent(f"t{i}", i + 1) for i in range(5)))
    assert results == [f"t{i}" for i in range(5)]
    episodes = recorded.episodes()
    assert sorted(e["tool_calls"] for e in episodes) == [1, 2, 3, 4, 5]
    for episode in episodes:
        calls = recorded.tool_calls(episode["episode_id"])
        tags = {c["call_id"].split("-")[0] for c in calls}
        assert len(tags) == 1
        assert episode["output"] == json.dumps(tags.pop())


def test_malformed_arguments_shapes() -> None:
    assert RequestedToolCall.from_raw("t", "1", "[1]").parse_error == "arguments must be a JSON object, got list"
    assert RequestedToolCall.from_raw("t", "1", "").arguments == {}
    assert RequestedToolCall.from_raw("t", "1", None).arguments == {}
    bad = RequestedToolCall.from_raw("t", "1", "{'a': 1}")
    assert bad.parse_error is not None
    assert bad.parse_error.startswith("arguments are not valid JSON")
    with pytest.raises(AssertionError):
        assert RequestedToolCall.from_raw("t", "1", 5).parse_error is None


def test_execution_without_an_id_takes_the_requested_id(recorded: Recorded) -> None:
    with agentgym.episode(agent="a") as ep:
        _turn([RequestedToolCall.from_raw("ping", "req-1", "{}")])
        start_tool_call("ping", arguments={}).succeed("pong")
    (row,) = recorded.tool_calls(ep.id)
    assert (row["call_id"], row["outcome"]) == ("req-1", "ok")
