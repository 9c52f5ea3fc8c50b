"""LangChain adapter: real ``create_agent`` graphs and LCEL chains driven by a scripted chat model, offline."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import BaseTool, ToolException, tool
from langchain_core.tracers import context as tracer_context
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph.state import CompiledStateGraph
from pydantic import Field

import agentgym_runtime as agentgym
from agentgym_runtime import semconv
from agentgym_runtime.adapters import load_adapter
from agentgym_runtime.adapters.langchain import (
    LangChainAdapter,
    SeededAgent,
    instrument_langchain,
    register_model_factory,
    uninstrument_langchain,
)
from agentgym_runtime.recording.policy import Demonstration, LLMConfig, Policy, ToolCallExample
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded

SYSTEM = "You help customers with orders."
# ok, unknown_tool, invalid_arguments (schema), invalid_arguments (malformed JSON), error_result
EXPECTED = {"ok": 1, "unknown_tool": 1, "invalid_arguments": 2, "error_result": 1}


class ScriptedChatModel(GenericFakeChatModel):
    """A chat model whose answer depends on the conversation (safe to share between threads).

    It records what it received: the messages and the tool definitions it was bound with.
    """

    messages: Iterator[AIMessage | str] = Field(default_factory=lambda: iter(()))
    script: Callable[[int, str], AIMessage]
    model_name: str = "scripted-1"
    disable_streaming: bool = True
    seen: list[dict[str, Any]] = Field(default_factory=list)
    barrier: Any = None

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        """Bind like real providers do: OpenAI-format tool definitions as a call kwarg."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_provider="scripted", ls_model_name=self.model_name, ls_model_type="chat")

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.seen.append({"messages": list(messages), "tools": kwargs.get("tools")})
        last_human = max(i for i, m in enumerate(messages) if m.type == "human")
        turn = sum(1 for m in messages[last_human:] if m.type == "ai")
        if self.barrier is not None and turn == 0:
            self.barrier.wait(timeout=10)
        return ChatResult(generations=[ChatGeneration(message=self.script(turn, str(messages[last_human].content)))])


def _order_id(question: str) -> int:
    found = re.search(r"\d+", question)
    return int(found.group()) if found else 0


def faulty_script(turn: int, question: str) -> AIMessage:
    """Turn 0: a good call, an unknown tool, schema-invalid and malformed arguments; turn 1: refund."""
    order = _order_id(question)
    if turn == 0:
        return AIMessage(
            "",
            tool_calls=[
                {"name": "get_order", "args": {"order_id": order}, "id": "c1", "type": "tool_call"},
                {"name": "fly_to_moon", "args": {}, "id": "c2", "type": "tool_call"},
                {"name": "get_order", "args": {"order_id": "abc"}, "id": "c3", "type": "tool_call"},
            ],
            invalid_tool_calls=[
                {"name": "get_order", "args": '{"order_id": 7', "id": "c4", "error": None, "type": "invalid_tool_call"}
            ],
            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
            response_metadata={"model_name": "scripted-1", "finish_reason": "tool_calls"},
        )
    if turn == 1:
        return AIMessage(
            "",
            tool_calls=[{"name": "refund", "args": {"order_id": order}, "id": "c5", "type": "tool_call"}],
            usage_metadata={"input_tokens": 20, "output_tokens": 6, "total_tokens": 26},
        )
    return AIMessage(
        f"order {order} shipped; refund refused",
        usage_metadata={"input_tokens": 30, "output_tokens": 7, "total_tokens": 37},
    )


def raising_script(turn: int, question: str) -> AIMessage:
    if turn == 0:
        return AIMessage("", tool_calls=[{"name": "explode", "args": {}, "id": "x1", "type": "tool_call"}])
    return AIMessage("unreachable")


@tool
def get_order(order_id: int) -> str:
    """Look up an order by its id."""
    return f"order {order_id} shipped"


@tool
def refund(order_id: int) -> str:
    """Refund an order."""
    raise ToolException(f"refunds for order {order_id} are closed")


refund.handle_tool_error = True


@tool
def explode() -> str:
    """Always fails."""
    raise RuntimeError("the tool blew up")


TOOLS: list[BaseTool] = [get_order, refund, explode]


def make_agent(script: Callable[[int, str], AIMessage] = faulty_script, **model: Any) -> tuple[Any, ScriptedChatModel]:
    llm = ScriptedChatModel(script=script, **model)
    return create_agent(llm, TOOLS, system_prompt=SYSTEM), llm


def ask(question: str) -> dict[str, Any]:
    return {"messages": [HumanMessage(question)]}


def contents(result: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(m.type, m.content) for m in result["messages"]]


def attrs(row: dict[str, Any]) -> dict[str, Any]:
    value = row["attributes"]
    return json.loads(value) if isinstance(value, str) else dict(value or {})


@pytest.fixture(autouse=True)
def _release_instrumentation() -> Iterator[None]:
    """Every test leaves LangChain exactly as it found it (no hook, no wrapped chat model)."""
    yield
    adapter = load_adapter("langchain")
    while type(adapter)._instrument_count:
        adapter.uninstrument()
    register_model_factory(None)


# --- capture --------------------------------------------------------------------------------------
def test_invoke_records_every_outcome_and_reliability(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    graph, _ = make_agent()
    agent = agentgym.train_online(graph, name="support")

    result = agent.invoke(ask("where is order 7?"))

    assert isinstance(agent, CompiledStateGraph)
    assert agent.get_graph() is not None  # attributes pass through
    assert result["messages"][-1].content == "order 7 shipped; refund refused"
    episode = agentgym.last_episode()
    assert episode is not None
    assert episode.outcomes == EXPECTED
    assert recorded.outcomes(episode.id) == EXPECTED
    (row,) = recorded.episodes("support")
    assert row["episode_id"] == episode.id
    assert row["framework"] == "langchain"
    assert row["status"] == "ok"
    assert row["tool_calls"] == 5
    assert row["tool_failures"] == 4
    assert row["tool_reliability"] == pytest.approx(0.2)
    assert row["llm_calls"] == 3
    assert (row["input_tokens"], row["output_tokens"]) == (60, 18)
    calls = recorded.tool_calls(episode.id)
    by_id = {c["call_id"]: c["outcome"] for c in calls}
    assert by_id == {
        "c1": "ok",
        "c2": "unknown_tool",
        "c3": "invalid_arguments",
        "c4": "invalid_arguments",
        "c5": "error_result",
    }
    errors = {c["call_id"]: c["error_type"] for c in calls if c["outcome"] != "ok"}
    assert errors["c3"] == "ValidationError"
    assert errors["c5"] == "error_result"


def test_result_is_identical_with_and_without_the_wrapper(agentgym_runtime: Runtime) -> None:
    bare, _ = make_agent()
    wrapped_graph, _ = make_agent()
    wrapped = agentgym.train_online(wrapped_graph, name="support")

    assert contents(wrapped.invoke(ask("order 3"))) == contents(bare.invoke(ask("order 3")))


async def _run(agent: Any, mode: str, question: str) -> Any:
    if mode == "invoke":
        return agent.invoke(ask(question))
    if mode == "ainvoke":
        return await agent.ainvoke(ask(question))
    if mode == "stream":
        return list(agent.stream(ask(question)))
    chunks = []
    async for chunk in agent.astream(ask(question)):
        chunks.append(chunk)
    return chunks


@pytest.mark.parametrize("mode", ["ainvoke", "stream", "astream"])
async def test_every_entry_point_records_the_same_outcomes(
    agentgym_runtime: Runtime, recorded: Recorded, mode: str
) -> None:
    graph, _ = make_agent()
    agent = agentgym.train_online(graph, name=f"support-{mode}")

    output = await _run(agent, mode, "where is order 7?")

    if mode in ("stream", "astream"):
        bare, _ = make_agent()
        expected = [next(iter(chunk)) for chunk in bare.stream(ask("where is order 7?"))]
        assert [next(iter(chunk)) for chunk in output] == expected
        assert expected.count("model") == 3
    (row,) = recorded.episodes(f"support-{mode}")
    assert recorded.outcomes(row["episode_id"]) == EXPECTED
    assert (row["tool_calls"], row["llm_calls"], row["status"]) == (5, 3, "ok")
    assert row["tool_reliability"] == pytest.approx(0.2)


def test_batch_runs_one_episode_per_input(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    bare, _ = make_agent()
    graph, _ = make_agent()
    agent = agentgym.train_online(graph, name="batcher")

    results = agent.batch([ask("order 1"), ask("order 2")])

    assert [contents(r) for r in results] == [contents(r) for r in bare.batch([ask("order 1"), ask("order 2")])]
    rows = recorded.episodes("batcher")
    assert len(rows) == 2
    for row in rows:
        assert recorded.outcomes(row["episode_id"]) == EXPECTED
    inputs = sorted(json.loads(r["input"])["messages"][0]["content"] for r in rows)
    assert inputs == ["order 1", "order 2"]


async def test_abatch_runs_one_episode_per_input(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    graph, _ = make_agent()
    agent = agentgym.train_online(graph, name="abatcher")

    results = await agent.abatch([ask("order 4"), ask("order 5")])

    assert [r["messages"][-1].content for r in results] == [
        "order 4 shipped; refund refused",
        "order 5 shipped; refund refused",
    ]
    rows = recorded.episodes("abatcher")
    assert [recorded.outcomes(r["episode_id"]) for r in rows] == [EXPECTED, EXPECTED]


def test_a_raising_tool_propagates_and_is_a_tool_error(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    graph, _ = make_agent(raising_script)
    agent = agentgym.train_online(graph, name="exploder")

    with pytest.raises(RuntimeError, match="the tool blew up"):
        agent.invoke(ask("boom"))

    (row,) = recorded.episodes("exploder")
    assert row["status"] == "error"
    assert row["error_type"] == "RuntimeError"
    assert recorded.outcomes(row["episode_id"]) == {"tool_error": 1}
    (call,) = recorded.tool_calls(row["episode_id"])
    assert (call["tool_name"], call["call_id"], call["error_type"]) == ("explode", "x1", "RuntimeError")


def test_decorated_function_gets_langchain_capture(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    graph, _ = make_agent()
    instrument_langchain()

    @agentgym.train_online(name="fn-agent")
    def answer(question: str) -> str:
        return str(graph.invoke(ask(question))["messages"][-1].content)

    assert answer("where is order 9?") == "order 9 shipped; refund refused"
    (row,) = recorded.episodes("fn-agent")
    assert row["framework"] is None
    assert recorded.outcomes(row["episode_id"]) == EXPECTED
    assert row["llm_calls"] == 3
    arguments = [c["arguments"] for c in recorded.tool_calls(row["episode_id"]) if c["call_id"] == "c1"]
    assert arguments == ['{"order_id":9}']


def test_no_capture_outside_episodes_and_after_uninstrument(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    graph, _ = make_agent()
    original_invoke = BaseChatModel.__dict__["invoke"]
    hooks_before = len(tracer_context._configure_hooks)
    adapter = instrument_langchain()
    assert adapter.installed
    assert BaseChatModel.__dict__["invoke"] is not original_invoke
    assert len(tracer_context._configure_hooks) == hooks_before + 1

    graph.invoke(ask("order 1"))  # no episode: nothing recorded
    uninstrument_langchain()

    assert not adapter.installed
    assert BaseChatModel.__dict__["invoke"] is original_invoke
    assert len(tracer_context._configure_hooks) == hooks_before
    with agentgym.episode(agent="after") as episode:
        graph.invoke(ask("order 2"))

    assert episode.outcomes == {}
    assert episode.llm_calls == 0
    spans = recorded.spans()
    assert [s["operation"] for s in spans] == ["invoke_agent"]
    assert adapter.handler.in_flight == 0


def test_chat_span_carries_model_messages_tools_and_tokens(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    graph, _ = make_agent()
    agent = agentgym.train_online(graph, name="spans")
    agent.invoke(ask("where is order 7?"))

    episode = agentgym.last_episode()
    assert episode is not None
    chats = [s for s in recorded.spans(episode.id) if s["operation"] == "chat"]
    assert [c["name"] for c in chats] == ["chat scripted-1"] * 3
    first = chats[0]
    assert (first["request_model"], first["response_model"], first["provider"]) == (
        "scripted-1",
        "scripted-1",
        "scripted",
    )
    assert (first["input_tokens"], first["output_tokens"]) == (10, 5)
    assert first["framework"] == "langchain"
    attributes = attrs(first)
    assert json.loads(attributes[semconv.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "where is order 7?"},
    ]
    definitions = json.loads(attributes[semconv.GEN_AI_TOOL_DEFINITIONS])
    assert [(d["name"], d["description"]) for d in definitions] == [
        ("get_order", "Look up an order by its id."),
        ("refund", "Refund an order."),
        ("explode", "Always fails."),
    ]
    assert definitions[0]["parameters"]["properties"] == {"order_id": {"type": "integer"}}
    (output,) = json.loads(attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert [c["function"]["name"] for c in output["tool_calls"]] == ["get_order", "fly_to_moon", "get_order"]
    requested = json.loads(attributes[semconv.TOOL_REQUESTED_CALLS])
    assert [(r["name"], r["id"]) for r in requested] == [
        ("get_order", "c1"),
        ("fly_to_moon", "c2"),
        ("get_order", "c3"),
        ("get_order", "c4"),
    ]
    assert attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ["tool_calls"]
    tool_spans = [s for s in recorded.spans(episode.id) if s["operation"] == "execute_tool"]
    root = next(s for s in recorded.spans(episode.id) if s["operation"] == "invoke_agent")
    assert {s["parent_span_id"] for s in [*chats, *tool_spans]} == {root["span_id"]}


def test_lcel_chain_reconciles_requests_nobody_executed(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    llm = ScriptedChatModel(script=faulty_script)
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    chain = agentgym.train_online(prompt | llm.bind_tools(TOOLS), name="chain")

    message = chain.invoke({"question": "order 7"})

    assert [c["name"] for c in message.tool_calls] == ["get_order", "fly_to_moon", "get_order"]
    (row,) = recorded.episodes("chain")
    assert recorded.outcomes(row["episode_id"]) == {"not_executed": 1, "unknown_tool": 1, "invalid_arguments": 2}
    assert row["llm_calls"] == 1
    messages = {c["call_id"]: c for c in recorded.tool_calls(row["episode_id"])}
    assert messages["c3"]["error_type"] == "invalid_arguments"


# --- concurrency ----------------------------------------------------------------------------------
def _assert_isolated(recorded: Recorded, episodes: dict[int, str]) -> None:
    for order, episode_id in episodes.items():
        assert recorded.outcomes(episode_id) == EXPECTED
        calls = recorded.tool_calls(episode_id)
        assert len(calls) == 5
        good = [c for c in calls if c["call_id"] == "c1"]
        assert [json.loads(c["arguments"]) for c in good] == [{"order_id": order}]
        chats = [s for s in recorded.spans(episode_id) if s["operation"] == "chat"]
        assert len(chats) == 3
        for chat in chats:
            sent = json.loads(attrs(chat)[semconv.GEN_AI_INPUT_MESSAGES])
            assert sent[1]["content"] == f"where is order {order}?"
    all_tools = recorded.tool_calls()
    assert sorted({c["episode_id"] for c in all_tools}) == sorted(episodes.values())
    assert len(all_tools) == 5 * len(episodes)


def test_concurrent_threads_never_mix_episodes(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    graph, _ = make_agent(barrier=threading.Barrier(2))
    agent = agentgym.train_online(graph, name="threads")
    found: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(order: int) -> None:
        try:
            agent.invoke(ask(f"where is order {order}?"))
            episode = agentgym.last_episode()
            assert episode is not None
            found[order] = episode.id
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(order,)) for order in (11, 22)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(set(found.values())) == 2
    _assert_isolated(recorded, found)


async def test_concurrent_tasks_never_mix_episodes(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    graph, _ = make_agent()
    agent = agentgym.train_online(graph, name="tasks")

    async def one(order: int) -> tuple[int, str]:
        await agent.ainvoke(ask(f"where is order {order}?"))
        episode = agentgym.last_episode()
        assert episode is not None
        return order, episode.id

    found = dict(await asyncio.gather(one(33), one(44), one(55)))

    assert len(set(found.values())) == 3
    _assert_isolated(recorded, found)


# --- policies -------------------------------------------------------------------------------------
TRAINED = Policy(
    agent="support",
    version=2,
    system_prompt="Call get_order exactly once.",
    tool_descriptions={"get_order": "Fetch an order; order_id is an integer."},
    demonstrations=(
        Demonstration(
            input="where is order 1?",
            tool_calls=(ToolCallExample(name="get_order", arguments={"order_id": 1}, result="order 1 shipped"),),
            output="Order 1 has shipped.",
        ),
    ),
)


def test_policy_is_applied_at_the_llm_call_and_baseline_is_unchanged(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    graph, llm = make_agent()
    agent = agentgym.train_online(graph, name="support")

    agent.invoke(ask("where is order 7?"))  # baseline
    agentgym_runtime.policy_resolver = lambda name, session: TRAINED
    agent.invoke(ask("where is order 8?"))

    baseline, trained = llm.seen[0], llm.seen[3]
    assert [(m.type, m.content) for m in baseline["messages"]] == [("system", SYSTEM), ("human", "where is order 7?")]
    assert [t["function"]["description"] for t in baseline["tools"]] == [
        "Look up an order by its id.",
        "Refund an order.",
        "Always fails.",
    ]
    sent = trained["messages"]
    assert [m.type for m in sent] == ["system", "human", "ai", "tool", "ai", "human"]
    assert sent[0].content == "Call get_order exactly once."
    assert sent[1].content == "where is order 1?"
    assert sent[2].tool_calls == [{"name": "get_order", "args": {"order_id": 1}, "id": "demo0_0", "type": "tool_call"}]
    assert (sent[3].tool_call_id, sent[3].content) == ("demo0_0", "order 1 shipped")
    assert sent[4].content == "Order 1 has shipped."
    assert sent[5].content == "where is order 8?"
    assert [t["function"]["description"] for t in trained["tools"]] == [
        "Fetch an order; order_id is an integer.",
        "Refund an order.",
        "Always fails.",
    ]
    # every later turn of the trained episode carries the policy too; the agent itself is untouched
    assert all(call["messages"][0].content == "Call get_order exactly once." for call in llm.seen[3:6])
    rows = recorded.episodes("support")
    assert [r["policy_version"] for r in rows] == [0, 2]
    assert [recorded.outcomes(r["episode_id"]) for r in rows] == [EXPECTED, EXPECTED]
    chat = next(s for s in recorded.spans(rows[1]["episode_id"]) if s["operation"] == "chat")
    assert json.loads(attrs(chat)[semconv.GEN_AI_INPUT_MESSAGES])[0]["content"] == "Call get_order exactly once."
    agentgym_runtime.policy_resolver = lambda name, session: Policy.baseline(name)
    agent.invoke(ask("where is order 9?"))
    assert [(m.type, m.content) for m in llm.seen[6]["messages"]] == [
        ("system", SYSTEM),
        ("human", "where is order 9?"),
    ]


def test_concurrent_calls_on_different_versions_do_not_see_each_other(agentgym_runtime: Runtime) -> None:
    graph, llm = make_agent(barrier=threading.Barrier(2))
    canary = Policy(agent="support", version=3, system_prompt="CANARY")
    agentgym_runtime.policy_resolver = lambda name, session: canary if session == "canary" else Policy.baseline(name)
    agents = {
        "canary": agentgym.train_online(graph, name="support", session_id="canary"),
        "stable": agentgym.train_online(graph, name="support", session_id="stable"),
    }
    errors: list[BaseException] = []

    def worker(session: str) -> None:
        try:
            agents[session].invoke(ask(f"session {session}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    systems: dict[str, set[str]] = {}
    for call in llm.seen:
        human = next(m.content for m in reversed(call["messages"]) if m.type == "human")
        systems.setdefault(str(human), set()).add(str(call["messages"][0].content))
    assert systems == {"session canary": {"CANARY"}, "session stable": {SYSTEM}}
    assert len(llm.seen) == 6


def test_policy_llm_is_routed_to_the_registered_factory(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    graph, original = make_agent()
    routed: list[ScriptedChatModel] = []

    def factory(config: LLMConfig) -> BaseChatModel:
        model = ScriptedChatModel(script=faulty_script, model_name=config.model or "?")
        routed.append(model)
        return model

    register_model_factory(factory)
    policy = Policy(agent="support", version=4, system_prompt="Routed.", llm=LLMConfig(model="tuned-lora"))
    agentgym_runtime.policy_resolver = lambda name, session: policy
    agent = agentgym.train_online(graph, name="support")

    result = agent.invoke(ask("where is order 7?"))

    assert result["messages"][-1].content == "order 7 shipped; refund refused"
    assert original.seen == []
    assert len(routed) == 3
    assert all(m.seen[0]["messages"][0].content == "Routed." for m in routed)
    assert [t["function"]["name"] for t in routed[0].seen[0]["tools"]] == ["get_order", "refund", "explode"]
    (row,) = recorded.episodes("support")
    assert recorded.outcomes(row["episode_id"]) == EXPECTED
    models = [s["request_model"] for s in recorded.spans(row["episode_id"]) if s["operation"] == "chat"]
    assert models == ["tuned-lora"] * 3


def test_seed_fixes_a_policy_on_a_fresh_agent(agentgym_runtime: Runtime) -> None:
    graph, llm = make_agent()
    seeded = LangChainAdapter().seed(graph, Policy(agent="support", version=5, system_prompt="SEEDED"))

    seeded.invoke(ask("order 1"))
    list(seeded.stream(ask("order 2")))
    graph.invoke(ask("order 3"))

    assert isinstance(seeded, SeededAgent)
    assert isinstance(seeded, CompiledStateGraph)
    assert seeded.agentgym_policy.version == 5
    firsts = [c["messages"][0].content for c in llm.seen]
    assert firsts == ["SEEDED"] * 6 + [SYSTEM] * 3


def test_apply_policy_on_a_request(agentgym_runtime: Runtime) -> None:
    adapter = LangChainAdapter()
    request = {
        "messages": [HumanMessage("hi")],
        "tools": [convert_to_openai_tool(get_order)],
    }

    applied = adapter.apply_policy(TRAINED, request)

    assert [m.type for m in applied["messages"]] == ["system", "human", "ai", "tool", "ai", "human"]
    assert applied["tools"][0]["function"]["description"] == "Fetch an order; order_id is an integer."
    assert request["tools"][0]["function"]["description"] == "Look up an order by its id."
    assert [m.content for m in request["messages"]] == ["hi"]


@pytest.mark.parametrize("streaming", [True, False])
async def test_policy_applies_once_on_streamed_chains(agentgym_runtime: Runtime, streaming: bool) -> None:
    # disable_streaming=True makes stream() fall back to invoke(): the policy must not apply twice.
    llm = ScriptedChatModel(script=lambda turn, question: AIMessage("on it"), disable_streaming=not streaming)
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    chain = agentgym.train_online(prompt | llm.bind_tools(TOOLS), name="support")
    agentgym_runtime.policy_resolver = lambda name, session: TRAINED

    chunks = [c.content for c in chain.stream({"question": "order 7"})]
    async for chunk in chain.astream({"question": "order 8"}):
        chunks.append(chunk.content)

    assert "".join(chunks) == "on iton it"
    assert len(llm.seen) == 2
    for call, question in zip(llm.seen, ["order 7", "order 8"], strict=True):
        assert [m.type for m in call["messages"]] == ["system", "human", "ai", "tool", "ai", "human"]
        assert call["messages"][0].content == "Call get_order exactly once."
        assert call["messages"][-1].content == question
        assert call["tools"][0]["function"]["description"] == "Fetch an order; order_id is an integer."


def test_middleware_failure_never_breaks_the_agent(tmp_path: Any) -> None:
    runtime = agentgym.configure(home=tmp_path / "lenient", strict=False)
    try:

        def broken_factory(config: LLMConfig) -> BaseChatModel:
            raise RuntimeError("model factory down")

        register_model_factory(broken_factory)
        runtime.policy_resolver = lambda name, session: Policy(
            agent=name, version=1, system_prompt="never seen", llm=LLMConfig(model="m")
        )
        graph, llm = make_agent()
        bare, _ = make_agent()
        agent = agentgym.train_online(graph, name="robust")

        result = agent.invoke(ask("where is order 7?"))

        assert contents(result) == contents(bare.invoke(ask("where is order 7?")))
        assert [c["messages"][0].content for c in llm.seen] == [SYSTEM] * 3  # fell back to the call as made
        assert runtime.stats()["internal_errors"] == 3
        episode = agentgym.last_episode()
        assert episode is not None
        assert episode.outcomes == EXPECTED
    finally:
        agentgym.shutdown()
