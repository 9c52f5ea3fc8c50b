"""AutoGen adapter: real AutoGen agents and teams driven by scripted model clients, offline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models.replay import ReplayChatCompletionClient

import agentgym_runtime as agentgym
from agentgym_runtime.adapters import load_adapter
from agentgym_runtime.adapters.autogen import AutoGenAdapter, PolicyModelClient, register_client_factory
from agentgym_runtime.recording.policy import LLMConfig, Policy
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from tests.adapters.autogen_stub import INFO, StubClient
from tests.adapters.support_policy import SUPPORT_POLICY


def get_order(order_id: int) -> str:
    """Look up an order by its id."""
    return f"order {order_id} shipped"


def refund(order_id: int, amount: float) -> str:
    """Refund part of an order."""
    raise RuntimeError(f"refund service down for order {order_id}")


def calls_result(*calls: tuple[str, str, str], prompt: int = 11, completion: int = 7) -> CreateResult:
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=i, name=n, arguments=a) for i, n, a in calls],
        usage=RequestUsage(prompt_tokens=prompt, completion_tokens=completion),
        cached=False,
    )


MIXED = calls_result(
    ("c1", "get_order", '{"order_id": 7}'),
    ("c2", "cancel_order", '{"order_id": 7}'),  # unknown tool
    ("c3", "get_order", '{"order_id": "seven"}'),  # fails the schema
    ("c4", "get_order", '{"order_id": 7'),  # malformed JSON
    ("c5", "refund", '{"order_id": 7, "amount": 5.0}'),  # the tool raises
)
MIXED_OUTCOMES = {"ok": 1, "unknown_tool": 1, "invalid_arguments": 2, "tool_error": 1}
MIXED_BY_CALL = {
    "c1": "ok",
    "c2": "unknown_tool",
    "c3": "invalid_arguments",
    "c4": "invalid_arguments",
    "c5": "tool_error",
}


def support_agent(*script: str | CreateResult, name: str = "support", **kwargs: Any) -> AssistantAgent:
    client = ReplayChatCompletionClient(list(script), model_info=INFO)
    return AssistantAgent(
        name, model_client=client, tools=[get_order, refund], system_message="You are support.", **kwargs
    )


class RecordingClient(StubClient):
    """A scripted client that remembers the messages and tools of every call."""

    def __init__(self, script: Sequence[str | CreateResult]) -> None:
        self.script = list(script)
        self.received: list[dict[str, Any]] = []

    def _next(self, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]) -> CreateResult:
        self.received.append({"messages": list(messages), "tools": list(tools)})
        item = self.script.pop(0)
        if isinstance(item, str):
            return CreateResult(
                finish_reason="stop",
                content=item,
                usage=RequestUsage(prompt_tokens=3, completion_tokens=2),
                cached=False,
            )
        return item

    async def create(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = (), **kwargs: Any
    ) -> CreateResult:
        return self._next(messages, tools)

    async def create_stream(  # type: ignore[override]
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = (), **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        result = self._next(messages, tools)
        if isinstance(result.content, str):
            yield result.content
        yield result


def contents(result: TaskResult) -> list[tuple[str, str, str]]:
    return [(type(m).__name__, m.source, str(m.content)) for m in result.messages]


def assert_one_row_per_call(recorded: Recorded, episode_id: str, expected: Mapping[str, str]) -> None:
    rows = recorded.tool_calls(episode_id)
    assert sorted(r["call_id"] for r in rows) == sorted(expected)
    assert {r["call_id"]: r["outcome"] for r in rows} == dict(expected)


# --- single agent ---------------------------------------------------------------------------------
def test_run_records_each_requested_call_once_with_its_outcome(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    agent = agentgym.train_online(support_agent(MIXED), name="support")
    result = asyncio.run(agent.run(task="where is order 7?"))

    assert isinstance(result, TaskResult)
    episode = agentgym.last_episode()
    assert episode is not None
    assert episode.outcomes == MIXED_OUTCOMES
    assert recorded.outcomes(episode.id) == MIXED_OUTCOMES
    assert_one_row_per_call(recorded, episode.id, MIXED_BY_CALL)
    (row,) = recorded.episodes("support")
    assert row["tool_calls"] == 5 and row["tool_failures"] == 4
    assert row["tool_reliability"] == pytest.approx(0.2)
    assert row["llm_calls"] == 1 and row["framework"] == "autogen"
    assert row["output_tokens"] == 7
    assert row["input"] == json.dumps("where is order 7?")
    # AutoGen's own execute_tool span is folded into ours: one execute_tool span per requested call.
    spans = recorded.query(
        "SELECT tool_call_id, scope_name, tool_outcome FROM spans WHERE operation = 'execute_tool' ORDER BY tool_call_id"
    )
    assert [(r["tool_call_id"], r["scope_name"]) for r in spans] == [(c, "agentgym_runtime") for c in MIXED_BY_CALL]
    errors = {r["call_id"]: r["error_type"] for r in recorded.tool_calls(episode.id)}
    assert errors == {
        "c1": None,
        "c2": "unknown_tool",
        "c3": "ValidationError",
        "c4": "invalid_arguments",
        "c5": "RuntimeError",
    }
    (chat,) = recorded.query("SELECT * FROM llm_calls WHERE episode_id = ?", [episode.id])
    assert chat["agent"] == "support" and chat["provider"] == "replay" and chat["output_tokens"] == 7


def test_run_stream_records_the_same_outcomes(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    agent = agentgym.train_online(support_agent(MIXED), name="support")

    async def consume() -> list[Any]:
        return [item async for item in agent.run_stream(task="where is order 7?")]

    items = asyncio.run(consume())

    assert isinstance(items[-1], TaskResult)
    episode = agentgym.last_episode()
    assert episode is not None
    assert recorded.outcomes(episode.id) == MIXED_OUTCOMES
    assert_one_row_per_call(recorded, episode.id, MIXED_BY_CALL)
    (row,) = recorded.episodes()
    assert row["tool_reliability"] == pytest.approx(0.2) and row["tool_calls"] == 5


def test_on_messages_and_streaming_model_client(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    good = calls_result(("s1", "get_order", '{"order_id": 1}'), ("s2", "get_order", '{"order_id": 2}'))
    agent = agentgym.train_online(support_agent(good, model_client_stream=True), name="streamer")

    async def go() -> Any:
        return await agent.on_messages([TextMessage(content="orders 1 and 2", source="user")], CancellationToken())

    response = asyncio.run(go())

    assert "order 1 shipped" in str(response.chat_message.content)
    episode = agentgym.last_episode()
    assert episode is not None and episode.agent == "streamer"
    assert recorded.outcomes(episode.id) == {"ok": 2}
    (row,) = recorded.episodes()
    assert row["tool_reliability"] == 1.0 and row["llm_calls"] == 1


def test_on_messages_stream_entry_point(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    agent = agentgym.train_online(support_agent(MIXED), name="support")

    async def consume() -> list[Any]:
        messages = [TextMessage(content="where is order 7?", source="user")]
        return [item async for item in agent.on_messages_stream(messages, CancellationToken())]

    items = asyncio.run(consume())

    assert type(items[-1]).__name__ == "Response"
    (row,) = recorded.episodes()
    assert row["agent"] == "support" and row["tool_calls"] == 5
    assert recorded.outcomes(row["episode_id"]) == MIXED_OUTCOMES


def test_results_are_identical_with_and_without_the_wrapper(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    bare = asyncio.run(support_agent(MIXED).run(task="where is order 7?"))
    wrapped_agent = agentgym.train_online(support_agent(MIXED), name="support")
    wrapped = asyncio.run(wrapped_agent.run(task="where is order 7?"))

    assert contents(wrapped) == contents(bare)
    assert wrapped.stop_reason == bare.stop_reason
    assert len(recorded.episodes()) == 1  # the bare run, outside any episode, recorded nothing


def test_proxy_keeps_type_and_attributes(agentgym_runtime: Runtime) -> None:
    inner = support_agent("hi")
    agent = agentgym.train_online(inner, name="support")

    assert isinstance(agent, AssistantAgent)
    assert agent.name == "support" and agent.description == inner.description
    assert agent.produced_message_types == inner.produced_message_types
    assert agent.__wrapped__ is inner
    assert "autogen proxy" in repr(agent)


def test_outside_an_episode_autogen_keeps_its_own_tool_spans(agentgym_runtime: Runtime, captured_spans: Any) -> None:
    agentgym.train_online(support_agent("unused"), name="support")  # instruments the adapter
    good = calls_result(("n1", "get_order", '{"order_id": 1}'), ("n2", "refund", '{"order_id": 1, "amount": 2}'))

    asyncio.run(support_agent(good).run(task="no episode here"))

    tools = captured_spans.named("execute_tool")
    assert sorted((s.instrumentation_scope.name, s.attributes["gen_ai.tool.call.id"]) for s in tools) == [
        ("autogen-core", "n1"),
        ("autogen-core", "n2"),
    ]
    failed = next(s for s in tools if s.attributes["gen_ai.tool.call.id"] == "n2")
    assert failed.attributes["error.type"] == "RuntimeError"
    assert not captured_spans.named("chat")
    assert agentgym.last_episode() is None


def test_agent_exception_passes_through_unchanged(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    agent = agentgym.train_online(support_agent(), name="support")  # empty script: the client raises

    with pytest.raises(ValueError, match="No more mock responses available"):
        asyncio.run(agent.run(task="hello"))

    (row,) = recorded.episodes()
    assert row["status"] == "error" and row["error_type"] == "ValueError"
    (chat,) = recorded.query("SELECT * FROM llm_calls")
    assert chat["error_type"] == "ValueError"


# --- teams and concurrency ------------------------------------------------------------------------
def test_round_robin_team_attributes_calls_to_each_agent(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    lookup = support_agent(calls_result(("a1", "get_order", '{"order_id": 3}')), name="lookup")
    refunder = support_agent(
        calls_result(("b1", "refund", '{"order_id": 3, "amount": 1.5}'), ("b2", "ship", "{}")), name="refunder"
    )
    team = agentgym.train_online(
        RoundRobinGroupChat([lookup, refunder], termination_condition=MaxMessageTermination(3)), name="desk"
    )

    result = asyncio.run(team.run(task="refund order 3"))

    assert isinstance(result, TaskResult) and isinstance(team, RoundRobinGroupChat)
    (row,) = recorded.episodes()
    assert row["agent"] == "desk" and row["tool_calls"] == 3 and row["llm_calls"] == 2
    assert row["tool_reliability"] == pytest.approx(1 / 3)
    rows = recorded.tool_calls(row["episode_id"])
    assert {(r["agent"], r["call_id"], r["outcome"]) for r in rows} == {
        ("lookup", "a1", "ok"),
        ("refunder", "b1", "tool_error"),
        ("refunder", "b2", "unknown_tool"),
    }
    chats = recorded.query("SELECT agent FROM llm_calls WHERE episode_id = ? ORDER BY started_at", [row["episode_id"]])
    assert [c["agent"] for c in chats] == ["lookup", "refunder"]
    turns = recorded.query(
        "SELECT agent FROM spans WHERE episode_id = ? AND operation = 'invoke_agent' "
        "AND scope_name = 'agentgym_runtime' ORDER BY start_unix_nano",
        [row["episode_id"]],
    )
    assert [t["agent"] for t in turns] == ["desk", "lookup", "refunder"]


def test_selector_team_run_stream(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    lookup = support_agent(calls_result(("a1", "get_order", '{"order_id": 3}')), name="lookup")
    refunder = support_agent(calls_result(("b1", "refund", '{"order_id": "three", "amount": 1}')), name="refunder")
    selector = ReplayChatCompletionClient(["refunder", "lookup"], model_info=INFO)
    team = agentgym.train_online(
        SelectorGroupChat([lookup, refunder], model_client=selector, termination_condition=MaxMessageTermination(3)),
        name="selector_desk",
    )

    async def consume() -> list[Any]:
        return [item async for item in team.run_stream(task="refund order 3")]

    items = asyncio.run(consume())

    assert isinstance(items[-1], TaskResult) and isinstance(team, SelectorGroupChat)
    (row,) = recorded.episodes()
    rows = recorded.tool_calls(row["episode_id"])
    assert [(r["agent"], r["call_id"], r["outcome"]) for r in rows] == [
        ("refunder", "b1", "invalid_arguments"),
        ("lookup", "a1", "ok"),
    ]
    assert row["tool_calls"] == 2 and row["tool_reliability"] == 0.5
    # the selector's own model call is not an agent LLM call; the two participants' are
    assert row["llm_calls"] == 2


def test_concurrent_episodes_do_not_mix(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    first = agentgym.train_online(support_agent(MIXED, name="first"), name="first")
    second = agentgym.train_online(
        support_agent(calls_result(("z1", "get_order", '{"order_id": 9}')), name="second"), name="second"
    )

    async def both() -> None:
        await asyncio.gather(first.run(task="a"), second.run(task="b"))

    asyncio.run(both())

    (one,) = recorded.episodes("first")
    (two,) = recorded.episodes("second")
    assert recorded.outcomes(one["episode_id"]) == MIXED_OUTCOMES
    assert recorded.outcomes(two["episode_id"]) == {"ok": 1}
    assert_one_row_per_call(recorded, two["episode_id"], {"z1": "ok"})
    assert {r["agent"] for r in recorded.tool_calls(one["episode_id"])} == {"first"}
    assert two["tool_reliability"] == 1.0 and one["tool_reliability"] == pytest.approx(0.2)


def test_decorated_function_running_a_bare_agent(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    adapter = load_adapter("autogen")
    adapter.instrument()
    try:

        @agentgym.train_online(name="handler")
        async def handle(question: str) -> str:
            result = await support_agent(MIXED).run(task=question)
            return str(result.messages[-1].content)

        asyncio.run(handle("where is order 7?"))
    finally:
        adapter.uninstrument()

    (row,) = recorded.episodes()
    assert row["agent"] == "handler" and row["llm_calls"] == 1
    assert recorded.outcomes(row["episode_id"]) == MIXED_OUTCOMES
    assert_one_row_per_call(recorded, row["episode_id"], MIXED_BY_CALL)
    assert {r["agent"] for r in recorded.tool_calls(row["episode_id"])} == {"handler"}


def test_decorated_function_running_a_bare_team(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    adapter = load_adapter("autogen")
    adapter.instrument()
    try:
        lookup = support_agent(calls_result(("a1", "get_order", '{"order_id": 3}')), name="lookup")
        refunder = support_agent(calls_result(("b1", "ship", "{}")), name="refunder")

        @agentgym.train_online(name="team_handler")
        async def handle(question: str) -> None:
            team = RoundRobinGroupChat([lookup, refunder], termination_condition=MaxMessageTermination(3))
            await team.run(task=question)

        asyncio.run(handle("refund order 3"))
    finally:
        adapter.uninstrument()

    (row,) = recorded.episodes()
    assert row["agent"] == "team_handler" and row["tool_calls"] == 2 and row["tool_reliability"] == 0.5
    rows = recorded.tool_calls(row["episode_id"])
    assert {(r["agent"], r["outcome"]) for r in rows} == {("lookup", "ok"), ("refunder", "unknown_tool")}


def test_uninstrument_restores_autogen() -> None:
    from autogen_core.tools import BaseTool

    adapter = AutoGenAdapter()
    count = type(adapter)._instrument_count
    for _ in range(count):
        adapter.uninstrument()
    try:
        assert not adapter.instrumented
        assert not hasattr(AssistantAgent.__dict__["on_messages_stream"], "__wrapped__")
        assert not hasattr(BaseTool.__dict__["run_json"], "__wrapped__")
        adapter.instrument()
        assert hasattr(BaseTool.__dict__["run_json"], "__wrapped__")
        adapter.uninstrument()
        assert not hasattr(BaseTool.__dict__["run_json"], "__wrapped__")
    finally:
        for _ in range(count):
            adapter.instrument()


# --- policies -------------------------------------------------------------------------------------
POLICY = SUPPORT_POLICY


def test_policy_is_applied_per_call_without_changing_the_agent(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    client = RecordingClient([calls_result(("p1", "get_order", '{"order_id": 4}')), "done"])
    inner = AssistantAgent("support", model_client=client, tools=[get_order, refund], system_message="You are support.")
    agent = agentgym.train_online(inner, name="support")
    agentgym_runtime.policy_resolver = lambda name, session: POLICY if name == "support" else Policy.baseline(name)

    asyncio.run(agent.run(task="where is order 4?"))
    agentgym_runtime.policy_resolver = lambda name, session: Policy.baseline(name)
    asyncio.run(agent.run(task="and order 5?"))

    with_policy, baseline = client.received
    messages = with_policy["messages"]
    assert isinstance(messages[0], SystemMessage) and messages[0].content == POLICY.system_prompt
    assert isinstance(messages[1], UserMessage) and messages[1].content == "where is order 1?"
    assert isinstance(messages[2], AssistantMessage)
    assert messages[2].content == [FunctionCall(id="demo0_0", name="get_order", arguments='{"order_id": 1}')]
    assert isinstance(messages[3], FunctionExecutionResultMessage)
    assert messages[3].content[0].content == "shipped" and messages[3].content[0].call_id == "demo0_0"
    assert isinstance(messages[4], AssistantMessage) and messages[4].content == "Order 1 shipped."
    assert isinstance(messages[5], UserMessage) and messages[5].content == "where is order 4?"
    assert len(messages) == 6
    descriptions = {t["name"]: t["description"] for t in with_policy["tools"]}  # type: ignore[index]
    assert descriptions == {
        "get_order": "Fetch one order; order_id is an integer.",
        "refund": "Refund part of an order.",
    }
    # the baseline call sees the agent as written; the agent object itself never changed
    assert baseline["messages"][0].content == "You are support."
    assert {t["name"]: t["description"] for t in baseline["tools"]}["get_order"] == "Look up an order by its id."
    assert inner._system_messages[0].content == "You are support."
    assert inner._model_client is client
    first, second = recorded.episodes()
    assert (first["policy_version"], second["policy_version"]) == (3, 0)
    chats = recorded.query("SELECT policy_version FROM llm_calls ORDER BY started_at")
    assert [c["policy_version"] for c in chats] == [3, 0]


def test_policy_llm_routes_to_the_registered_client_factory(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    own = RecordingClient(["from the agent's own model"])
    routed = RecordingClient(["from the routed model"])
    built: list[LLMConfig] = []

    def factory(llm: LLMConfig) -> ChatCompletionClient:
        built.append(llm)
        return routed

    llm = LLMConfig(endpoint="http://localhost:9/v1", model="tuned")
    agent = agentgym.train_online(AssistantAgent("router", model_client=own), name="router")
    agentgym_runtime.policy_resolver = lambda name, session: Policy(agent=name, version=2, llm=llm)
    register_client_factory(factory)
    try:
        result = asyncio.run(agent.run(task="hi"))
    finally:
        register_client_factory(None)

    assert result.messages[-1].content == "from the routed model"
    assert built == [llm] and own.received == [] and len(routed.received) == 1


def test_seed_applies_a_policy_permanently(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    client = RecordingClient(["fine"])
    agent = AssistantAgent("support", model_client=client, tools=[get_order], system_message="You are support.")

    seeded = load_adapter("autogen").seed(agent, POLICY)

    assert seeded is agent and isinstance(agent._model_client, PolicyModelClient)
    asyncio.run(agent.run(task="hello"))  # no episode: the fixed policy still applies
    (call,) = client.received
    assert call["messages"][0].content == POLICY.system_prompt and len(call["messages"]) == 6
    with pytest.raises(TypeError, match="seeds AssistantAgent objects"):
        load_adapter("autogen").seed(RoundRobinGroupChat([support_agent("x")]), POLICY)
