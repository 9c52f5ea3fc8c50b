"""Real CrewAI and AutoGen agents decorated with ``train_online``, served in-process by the tiny model and its adapters.

The adapter is trained on the very requests the frameworks send: each agent first runs on a scripted engine
that records what the chat model asked it (messages and tools, after the framework and the runtime built
them) and answers with the turns to learn; the adapter then learns those turns, and the same agents run on
the real engine, the version's adapter chosen per call by the pinned policy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft")
pytest.importorskip("crewai")
pytest.importorskip("autogen_agentchat")

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import ToolCallSummaryMessage
from crewai import LLM, Agent, Crew, Task
from crewai.tools import tool

import agentgym_runtime as agentgym
from agentgym_runtime.adapters.crewai import routed_llm
from agentgym_runtime.models.autogen import TransformersChatCompletionClient
from agentgym_runtime.models.chat_format import (
    end_of_turn_markers,
    parse_completion,
    split_prompt_completion,
    strip_end_of_turn,
)
from agentgym_runtime.models.crewai import TransformersLLM
from agentgym_runtime.models.engine import ChatEngine, Generation
from agentgym_runtime.recording.policy import LLMConfig, Policy
from agentgym_runtime.testing import Recorded
from tests.models.lora import Turn, random_adapter, trained_adapter
from tests.trainers.chat_toy import build_model

NEW_TOKENS = 40
ANSWER = "order 7 shipped"
FINAL = f"Final Answer: {ANSWER}"
CALL = {"id": "c1", "type": "function", "function": {"name": "get_order", "arguments": {"order_id": 7}}}
QUESTION = "where is my order 7?"


@tool("get_order")
def get_order(order_id: int) -> str:
    """Look up an order by id."""
    return f"order {order_id} shipped"


def lookup(order_id: int) -> str:
    """Look up an order by id."""
    return f"order {order_id} shipped"


@dataclass
class ScriptedEngine:
    """Stands in for the engine: records each request and answers with the next reply, as the model would write it."""

    engine: ChatEngine
    replies: list[Mapping[str, Any]]
    requests: list[dict[str, Any]] = field(default_factory=list)

    def generate(self, messages: Sequence[Mapping[str, Any]], tools: Any = None, **options: Any) -> Generation:
        self.requests.append({"messages": [dict(m) for m in messages], "tools": tools, **options})
        _, completion = split_prompt_completion(self.engine.tokenizer, [*messages, self.replies.pop(0)], tools)
        text = strip_end_of_turn(completion, end_of_turn_markers(self.engine.tokenizer))
        return Generation(text, parse_completion(text, self.engine.format()), 0, 0)

    def turns(self, replies: Sequence[Mapping[str, Any]]) -> list[Turn]:
        return [(r["messages"], r["tools"], reply) for r, reply in zip(self.requests, replies, strict=True)]


def make_crew(llm: Any) -> Crew:
    agent = Agent(
        role="support",
        goal="answer order questions",
        backstory="You help customers with orders.",
        llm=llm,
        tools=[get_order],
        verbose=False,
        max_iter=3,
    )
    task = Task(description="Where is order 7?", expected_output="the order status", agent=agent)
    return Crew(name="crew", agents=[agent], tasks=[task], verbose=False)


def make_assistant(client: Any) -> AssistantAgent:
    return AssistantAgent("support", model_client=client, tools=[lookup], system_message="You are support.")


CREW_REPLIES = [{"role": "assistant", "content": "", "tool_calls": [CALL]}, {"role": "assistant", "content": FINAL}]
ASSISTANT_REPLY = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{**CALL, "function": {"name": "lookup", "arguments": {"order_id": 7}}}],
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny model, its engine, a random adapter, and one trained on the crew's and the AutoGen agent's requests.

    Measured: ~140 s to train on 2 busy cores (three ~1000/1000/220-token prompts, 60 epochs), after which
    the adapter writes each of the three replies exactly.
    """
    root = tmp_path_factory.mktemp("agents")
    model_dir = build_model(root / "model")
    engine = ChatEngine(str(model_dir), max_new_tokens=NEW_TOKENS)

    crew_script = ScriptedEngine(engine, list(CREW_REPLIES))
    result = make_crew(TransformersLLM(model_dir, engine=crew_script, max_new_tokens=NEW_TOKENS)).kickoff()
    assert result.raw == ANSWER  # the script ran both turns: the second request holds the tool's observation
    assistant_script = ScriptedEngine(engine, [ASSISTANT_REPLY])
    asyncio.run(
        make_assistant(TransformersChatCompletionClient(str(model_dir), engine=assistant_script)).run(task=QUESTION)
    )

    turns = [*crew_script.turns(CREW_REPLIES), *assistant_script.turns([ASSISTANT_REPLY])]
    return {
        "model": model_dir,
        "engine": engine,
        "crew_requests": crew_script.requests,
        "assistant_request": assistant_script.requests[0],
        "trained": trained_adapter(model_dir, engine.tokenizer, root / "trained", turns),
        "random": random_adapter(model_dir, root / "random", seed=1),
    }


@pytest.fixture
def pinned(agentgym_runtime: Any) -> Iterator[Callable[[Policy], None]]:
    """``pin(policy)``: every agent runs ``policy`` from now on."""
    current: list[Policy | None] = [None]
    previous = agentgym_runtime.policy_resolver
    agentgym_runtime.policy_resolver = lambda agent, session_id: current[0]

    def pin(policy: Policy) -> None:
        current[0] = policy

    yield pin
    agentgym_runtime.policy_resolver = previous


def _version(toy: dict[str, Any], agent: str, version: int) -> Policy:
    adapter = {1: toy["trained"], 2: toy["random"]}.get(version)
    if adapter is None:
        return Policy.baseline(agent)
    return Policy(agent=agent, version=version, llm=LLMConfig(model=str(toy["model"]), adapter=str(adapter)))


def _chat_outputs(recorded: Recorded, episode_id: str) -> list[tuple[int, str]]:
    rows = recorded.query(
        "SELECT policy_version, json_extract_string(attributes, '$.\"gen_ai.output.messages\"') AS output "
        "FROM spans WHERE episode_id = ? AND operation = 'chat' ORDER BY start_unix_nano",
        [episode_id],
    )
    return [(r["policy_version"], json.loads(r["output"])[0]["content"]) for r in rows]


def test_a_crew_serves_each_pinned_versions_adapter_and_the_trained_one_calls_the_tool(
    toy: dict[str, Any], pinned: Callable[[Policy], None], recorded: Recorded
) -> None:
    engine: ChatEngine = toy["engine"]
    first = toy["crew_requests"][0]
    expected = {  # what the engine writes for the crew's first request, per version
        version: engine.generate(first["messages"], first["tools"], adapter=adapter, stop=first["stop"]).parsed
        for version, adapter in ((0, None), (1, toy["trained"]), (2, toy["random"]))
    }
    assert expected[1].tool_calls and not expected[0].is_tool_call and not expected[2].is_tool_call
    assert len({expected[0].content, expected[2].content}) == 2

    results = {}
    for version in (0, 1, 2):
        pinned(_version(toy, "support-crew", version))
        llm = TransformersLLM(toy["model"], engine=engine, max_new_tokens=NEW_TOKENS)
        crew = agentgym.train_online(make_crew(llm), name="support-crew")
        results[version] = crew.kickoff().raw

    episodes = recorded.episodes("support-crew")
    assert [e["policy_version"] for e in episodes] == [0, 1, 2]
    by_version = {e["policy_version"]: e["episode_id"] for e in episodes}
    # v1 (the trained adapter): the tool call, recorded ok under version 1, then the answer from its result.
    assert results[1] == ANSWER
    calls = recorded.tool_calls(by_version[1])
    assert [(c["tool_name"], c["outcome"], c["policy_version"], json.loads(c["arguments"])) for c in calls] == [
        ("get_order", "ok", 1, {"order_id": 7})
    ]
    assert json.loads(calls[0]["result"]) == "order 7 shipped"
    assert _chat_outputs(recorded, by_version[1]) == [
        (1, 'Action: get_order\nAction Input: {"order_id": 7}'),
        (1, FINAL),
    ]
    # v0 (the base model) and v2 (another adapter): one call each, their own text (CrewAI takes it as the answer).
    for version in (0, 2):
        assert recorded.tool_calls(by_version[version]) == []
        assert _chat_outputs(recorded, by_version[version]) == [(version, expected[version].content)]
        assert results[version] == expected[version].content
    (llm_calls,) = recorded.query(
        "SELECT count(*) AS n, sum(output_tokens) AS tokens FROM llm_calls WHERE episode_id = ?", [by_version[1]]
    )
    assert llm_calls["n"] == 2 and llm_calls["tokens"] > 0


def test_the_crews_llm_is_kept_by_policy_routing_and_a_local_model_is_served_in_process(
    toy: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # crewai.LLM checks for a key when built (nothing is sent)
    llm = TransformersLLM(toy["model"], engine=toy["engine"])
    config = LLMConfig(model=str(toy["model"]), adapter="adapter")
    assert routed_llm(config, llm) is llm  # it reads the pinned adapter itself: no crewai.LLM in its place
    api = LLM(model="gpt-4o-mini", stop=["\nObservation:"])
    routed = routed_llm(config, api)  # an API agent routed to a trained local model (distillation)
    assert isinstance(routed, TransformersLLM) and routed.model_path == str(toy["model"])
    assert routed.stop == ["\nObservation:"]
    fixed = TransformersLLM(toy["model"], engine=toy["engine"], adapter=str(toy["random"]))
    assert routed_llm(config, fixed) is not fixed  # a fixed adapter serves only itself
    assert not isinstance(routed_llm(LLMConfig(model="gpt-4o-mini"), llm), TransformersLLM)


def test_streaming_and_function_calling_through_the_crewai_llm(toy: dict[str, Any]) -> None:
    engine: ChatEngine = toy["engine"]
    first = toy["crew_requests"][0]
    llm = TransformersLLM(toy["model"], engine=engine, adapter=str(toy["trained"]), max_new_tokens=NEW_TOKENS)
    llm.stop = list(first["stop"])
    # The crew's first request, streamed: the pieces join to the reply CrewAI reads (the call as ReAct text).
    chunks: list[str] = []
    llm.stream = True
    llm._emit_stream_chunk_event = lambda chunk, *args, **kwargs: chunks.append(chunk)  # type: ignore[method-assign]
    agent = make_crew(llm).agents[0]  # not running a task: its tools are read from the agent itself
    engine_stream = engine.stream(first["messages"], first["tools"], adapter=toy["trained"], stop=first["stop"])
    assert list(engine_stream) == [] and engine_stream.result is not None and engine_stream.result.parsed.tool_calls
    streamed = llm.call(first["messages"], from_agent=agent)
    assert streamed == 'Action: get_order\nAction Input: {"order_id": 7}'
    assert "".join(chunks) == streamed

    llm.stream = False
    # Function calling, as CrewAI's reasoning passes tools: the AutoGen agent's request (tools as definitions).
    request = toy["assistant_request"]
    ran: list[int] = []

    def run_lookup(order_id: int) -> str:
        ran.append(order_id)
        return f"order {order_id} shipped"

    found = llm.call(request["messages"], tools=request["tools"], available_functions={"lookup": run_lookup})
    assert (found, ran) == ("order 7 shipped", [7])
    (call,) = llm.call(request["messages"], tools=request["tools"])  # no functions to run: the calls themselves
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == ("lookup", {"order_id": 7})


def test_an_autogen_assistant_decorated_with_train_online_calls_the_tool_on_the_pinned_adapter(
    toy: dict[str, Any], pinned: Callable[[Policy], None], recorded: Recorded
) -> None:
    engine: ChatEngine = toy["engine"]
    request = toy["assistant_request"]
    base = engine.generate(request["messages"], request["tools"]).parsed
    assert not base.is_tool_call

    outputs = {}
    for version in (0, 1):
        pinned(_version(toy, "support", version))
        client = TransformersChatCompletionClient(str(toy["model"]), engine=engine, max_new_tokens=NEW_TOKENS)
        agent = agentgym.train_online(make_assistant(client), name="support")
        outputs[version] = asyncio.run(agent.run(task=QUESTION)).messages[-1]

    assert isinstance(outputs[1], ToolCallSummaryMessage) and outputs[1].content == "order 7 shipped"
    assert outputs[0].content == base.content
    episodes = recorded.episodes("support")
    assert [e["policy_version"] for e in episodes] == [0, 1]
    assert recorded.tool_calls(episodes[0]["episode_id"]) == []
    calls = recorded.tool_calls(episodes[1]["episode_id"])
    assert [(c["tool_name"], c["outcome"], c["policy_version"], json.loads(c["arguments"])) for c in calls] == [
        ("lookup", "ok", 1, {"order_id": 7})
    ]
    (llm_call,) = recorded.query(
        "SELECT policy_version, request_model FROM llm_calls WHERE episode_id = ?", [episodes[1]["episode_id"]]
    )
    assert llm_call["policy_version"] == 1


def test_the_tools_a_crewai_agent_is_offered_are_the_ones_the_adapter_records(toy: dict[str, Any]) -> None:
    first = toy["crew_requests"][0]
    assert first["tools"] == [
        {
            "name": "get_order",
            "description": "Look up an order by id.",
            "parameters": get_order.args_schema.model_json_schema(),
        }
    ]
    assert first["stop"] == ["\nObservation:"]
    assert Path(toy["trained"], "adapter_config.json").is_file()
