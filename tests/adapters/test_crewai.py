"""CrewAI adapter: real crewai crews and agents driven by a scripted ReAct LLM, offline.

The lock pins crewai 1.6 (``CrewAgentExecutor``); the same tests pass with crewai 1.15 (the flow-based
``AgentExecutor``), which ``make check-extras`` installs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("crewai")

from crewai import Agent, Crew, Task
from crewai.events import crewai_event_bus
from crewai.llms.base_llm import BaseLLM
from crewai.tools import tool

import agentgym_runtime as agentgym
from agentgym_runtime.adapters import load_adapter
from agentgym_runtime.adapters.crewai import CrewAIAdapter, CrewAIRequest, hooks, register_llm_factory
from agentgym_runtime.recording.policy import Demonstration, LLMConfig, Policy, ToolCallExample
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded


class ScriptedLLM(BaseLLM):
    """Replies with a fixed list of ReAct texts and records the messages it received."""

    def __init__(self, replies: list[str], model: str = "scripted-1") -> None:
        super().__init__(model=model)
        self.replies = list(replies)
        self.received: list[list[dict[str, Any]]] = []

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> str:
        self.received.append([dict(m) for m in messages] if isinstance(messages, list) else [messages])
        self._track_token_usage_internal({"prompt_tokens": 11, "completion_tokens": 4})
        return self.replies.pop(0)

    def supports_function_calling(self) -> bool:
        return False


@tool("get_order")
def get_order(order_id: int) -> str:
    """Look up an order by id."""
    return f"order {order_id} shipped"


@tool("explode")
def explode(x: int) -> str:
    """Always fails."""
    raise RuntimeError(f"boom {x}")


GOOD = 'Thought: look it up\nAction: get_order\nAction Input: {"order_id": 7}'
UNKNOWN = 'Thought: try\nAction: fly_to_moon\nAction Input: {"x": 1}'
SCHEMA = 'Thought: again\nAction: get_order\nAction Input: {"order_id": "abc"}'
MALFORMED = "Thought: again\nAction: get_order\nAction Input: oops not json"
RAISING = 'Thought: risky\nAction: explode\nAction Input: {"x": 1}'
FINAL = "Thought: I now know the final answer\nFinal Answer: order 7 shipped"
FULL_SCRIPT = [GOOD, UNKNOWN, SCHEMA, MALFORMED, RAISING, FINAL]


def make_crew(replies: list[str], role: str = "support", name: str = "crew") -> tuple[Crew, ScriptedLLM]:
    llm = ScriptedLLM(replies)
    agent = Agent(
        role=role,
        goal="answer order questions",
        backstory="You help customers with orders.",
        llm=llm,
        tools=[get_order, explode],
        verbose=False,
        max_iter=10,
    )
    task = Task(description="Where is order 7?", expected_output="the order status", agent=agent)
    return Crew(name=name, agents=[agent], tasks=[task], verbose=False), llm


def outcome_rows(recorded: Recorded, episode_id: str) -> list[tuple[str, str, Any]]:
    rows = recorded.query(
        "SELECT tool_name, tool_outcome, json_extract(attributes, '$.\"agentgym.tool.attempt\"') AS attempt "
        "FROM spans WHERE episode_id = ? AND operation = 'execute_tool' ORDER BY start_unix_nano",
        [episode_id],
    )
    return [
        (r["tool_name"], r["tool_outcome"], None if r["attempt"] is None else json.loads(r["attempt"])) for r in rows
    ]


@pytest.fixture
def baseline_policies(agentgym_runtime: Runtime) -> Iterator[dict[str, Policy]]:
    """Per-agent policies served by the runtime (baseline for agents not listed)."""
    policies: dict[str, Policy] = {}
    previous = agentgym_runtime.policy_resolver
    agentgym_runtime.policy_resolver = lambda agent, session_id: policies.get(agent) or Policy.baseline(agent)
    yield policies
    agentgym_runtime.policy_resolver = previous
    register_llm_factory(None)


def test_crew_kickoff_counts_every_outcome_and_attempt(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    crew, llm = make_crew(FULL_SCRIPT)
    wrapped = agentgym.train_online(crew, name="support-crew")
    assert isinstance(wrapped, Crew)
    assert wrapped.agents[0].role == "support"

    result = wrapped.kickoff()

    assert result.raw == "order 7 shipped"
    episode = agentgym.last_episode()
    assert episode is not None
    # 1 ok; 1 unknown tool; 3 schema attempts (CrewAI retries) + 1 malformed Action Input; 3 raising attempts
    assert episode.outcomes == {"ok": 1, "unknown_tool": 1, "invalid_arguments": 4, "tool_error": 3}
    assert recorded.outcomes(episode.id) == {"ok": 1, "unknown_tool": 1, "invalid_arguments": 4, "tool_error": 3}
    assert outcome_rows(recorded, episode.id) == [
        ("get_order", "ok", 1),
        ("fly_to_moon", "unknown_tool", None),
        ("get_order", "invalid_arguments", 1),
        ("get_order", "invalid_arguments", 2),
        ("get_order", "invalid_arguments", 3),
        ("get_order", "invalid_arguments", None),
        ("explode", "tool_error", 1),
        ("explode", "tool_error", 2),
        ("explode", "tool_error", 3),
    ]
    (row,) = recorded.episodes()
    assert row["episode_id"] == episode.id
    assert row["agent"] == "support-crew"
    assert row["framework"] == "crewai"
    assert row["tool_calls"] == 9
    assert row["tool_failures"] == 8
    assert row["tool_reliability"] == pytest.approx(1 / 9)
    assert row["llm_calls"] == 6
    assert (row["input_tokens"], row["output_tokens"]) == (66, 24)
    calls = recorded.tool_calls(episode.id)
    assert {c["agent"] for c in calls} == {"support"}
    assert calls[0]["result"] == json.dumps("order 7 shipped")
    errors = [c["error_type"] for c in calls if c["outcome"] == "tool_error"]
    assert errors == ["RuntimeError"] * 3
    llm_rows = recorded.query("SELECT * FROM llm_calls WHERE episode_id = ? ORDER BY started_at", [episode.id])
    assert [r["request_model"] for r in llm_rows] == ["scripted-1"] * 6
    assert {r["agent"] for r in llm_rows} == {"support"}
    assert len(llm.received) == 6
    # recorded inline: every LLM/tool span ended before the episode's root span did
    (bounds,) = recorded.query(
        "SELECT max(end_unix_nano) FILTER (WHERE operation IN ('chat', 'execute_tool')) AS last_call, "
        "max(end_unix_nano) FILTER (WHERE parent_span_id IS NULL) AS root_end FROM spans WHERE episode_id = ?",
        [episode.id],
    )
    assert bounds["last_call"] <= bounds["root_end"]


def test_requested_calls_are_parsed_from_the_react_text(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    crew, _ = make_crew([GOOD, FINAL])
    agentgym.train_online(crew, name="support-crew").kickoff()
    episode = agentgym.last_episode()
    assert episode is not None
    rows = recorded.query(
        "SELECT json_extract_string(attributes, '$.\"agentgym.llm.requested_tool_calls\"') AS requested, "
        "json_extract_string(attributes, '$.\"gen_ai.tool.definitions\"') AS tools "
        "FROM spans WHERE episode_id = ? AND operation = 'chat' ORDER BY start_unix_nano",
        [episode.id],
    )
    assert json.loads(rows[0]["requested"]) == [{"name": "get_order", "id": None, "arguments": {"order_id": 7}}]
    assert rows[1]["requested"] is None
    tools = json.loads(rows[0]["tools"])
    assert [t["name"] for t in tools] == ["get_order", "explode"]
    assert tools[0]["description"] == "Look up an order by id."
    assert tools[0]["parameters"]["properties"]["order_id"]["type"] == "integer"


def test_results_and_llm_inputs_identical_with_and_without_the_wrapper(agentgym_runtime: Runtime) -> None:
    bare_crew, bare_llm = make_crew(FULL_SCRIPT)
    bare = bare_crew.kickoff()
    wrapped_crew, wrapped_llm = make_crew(FULL_SCRIPT)
    wrapped = agentgym.train_online(wrapped_crew, name="support-crew").kickoff()
    assert wrapped.raw == bare.raw == "order 7 shipped"
    assert [t.raw for t in wrapped.tasks_output] == [t.raw for t in bare.tasks_output]
    assert wrapped_llm.received == bare_llm.received


def test_crew_outside_an_episode_records_nothing(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    load_adapter("crewai").instrument()
    try:
        crew, _ = make_crew([GOOD, FINAL])
        assert crew.kickoff().raw == "order 7 shipped"
    finally:
        load_adapter("crewai").uninstrument()
    assert recorded.episodes() == []
    assert recorded.spans() == []


def test_tool_usage_limit_closes_the_started_call_as_error_result(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    @tool("once")
    def once(x: int) -> str:
        """Usable once."""
        return f"got {x}"

    once.max_usage_count = 1
    llm = ScriptedLLM(
        [
            'Thought: a\nAction: once\nAction Input: {"x": 1}',
            'Thought: b\nAction: once\nAction Input: {"x": 2}',
            FINAL,
        ]
    )
    agent = Agent(role="limited", goal="g", backstory="b", llm=llm, tools=[once], verbose=False)
    task = Task(description="Use it twice.", expected_output="x", agent=agent)
    crew = agentgym.train_online(Crew(agents=[agent], tasks=[task], verbose=False), name="limited-crew")

    assert crew.kickoff().raw == "order 7 shipped"

    (row,) = recorded.episodes()
    assert recorded.outcomes(row["episode_id"]) == {"ok": 1, "error_result": 1}
    # crewai 1.6 ends the messages with the observation, 1.15 adds a user nudge after it
    assert any("reached its usage limit" in m["content"] for m in llm.received[2][-2:])


def test_crew_kickoff_async(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    crew, _ = make_crew([GOOD, UNKNOWN, FINAL])
    wrapped = agentgym.train_online(crew, name="async-crew")

    result = asyncio.run(wrapped.kickoff_async())

    assert result.raw == "order 7 shipped"
    (row,) = recorded.episodes()
    assert row["agent"] == "async-crew"
    assert recorded.outcomes(row["episode_id"]) == {"ok": 1, "unknown_tool": 1}
    assert row["tool_reliability"] == pytest.approx(0.5)
    assert row["llm_calls"] == 3


def test_agent_kickoff_and_kickoff_async(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    llm = ScriptedLLM([GOOD, SCHEMA, FINAL, GOOD, FINAL])
    agent = Agent(
        role="solo",
        goal="answer order questions",
        backstory="You help customers with orders.",
        llm=llm,
        tools=[get_order],
        verbose=False,
    )
    wrapped = agentgym.train_online(agent)
    assert isinstance(wrapped, Agent)

    first = wrapped.kickoff("Where is order 7?")
    second = asyncio.run(wrapped.kickoff_async("Where is order 7?"))

    assert first.raw == second.raw == "order 7 shipped"
    rows = recorded.episodes()
    assert [r["agent"] for r in rows] == ["solo", "solo"]
    assert recorded.outcomes(rows[0]["episode_id"]) == {"ok": 1, "invalid_arguments": 3}
    assert rows[0]["tool_reliability"] == pytest.approx(0.25)
    assert rows[0]["llm_calls"] == 3
    assert recorded.outcomes(rows[1]["episode_id"]) == {"ok": 1}
    assert rows[1]["tool_reliability"] == 1.0
    assert rows[1]["llm_calls"] == 2


def test_two_agent_crew_attributes_calls_per_agent(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    researcher_llm = ScriptedLLM([GOOD, "Thought: done\nFinal Answer: order 7 shipped"])
    writer_llm = ScriptedLLM([UNKNOWN, RAISING, "Thought: done\nFinal Answer: Your order 7 has shipped."])
    researcher = Agent(role="researcher", goal="find facts", backstory="You research.", llm=researcher_llm,
                       tools=[get_order], verbose=False)  # fmt: skip
    writer = Agent(role="writer", goal="write replies", backstory="You write.", llm=writer_llm,
                   tools=[explode], verbose=False)  # fmt: skip
    tasks = [
        Task(description="Find the status of order 7.", expected_output="status", agent=researcher),
        Task(description="Write the customer reply.", expected_output="reply", agent=writer),
    ]
    crew = agentgym.train_online(Crew(agents=[researcher, writer], tasks=tasks, verbose=False), name="team")

    result = crew.kickoff()

    assert result.raw == "Your order 7 has shipped."
    (row,) = recorded.episodes()
    assert row["agent"] == "team"
    assert row["tool_calls"] == 5
    assert row["tool_reliability"] == pytest.approx(1 / 5)
    by_agent = recorded.query(
        "SELECT agent, outcome, count(*) AS n FROM tool_calls WHERE episode_id = ? GROUP BY ALL ORDER BY ALL",
        [row["episode_id"]],
    )
    assert [(r["agent"], r["outcome"], r["n"]) for r in by_agent] == [
        ("researcher", "ok", 1),
        ("writer", "tool_error", 3),
        ("writer", "unknown_tool", 1),
    ]
    llm_agents = recorded.query(
        "SELECT agent, count(*) AS n FROM llm_calls WHERE episode_id = ? GROUP BY agent ORDER BY agent",
        [row["episode_id"]],
    )
    assert [(r["agent"], r["n"]) for r in llm_agents] == [("researcher", 2), ("writer", 3)]
    turns = recorded.query(
        "SELECT name, parent_span_id IS NOT NULL AS nested FROM spans WHERE episode_id = ? "
        "AND operation = 'invoke_agent' ORDER BY start_unix_nano",
        [row["episode_id"]],
    )
    assert [(t["name"], t["nested"]) for t in turns] == [
        ("invoke_agent team", False),
        ("invoke_agent researcher", True),
        ("invoke_agent writer", True),
    ]


def test_async_execution_task_belongs_to_the_episode(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    researcher_llm = ScriptedLLM([GOOD, "Thought: done\nFinal Answer: order 7 shipped"])
    writer_llm = ScriptedLLM([UNKNOWN, "Thought: done\nFinal Answer: Your order 7 has shipped."])
    researcher = Agent(role="researcher", goal="find facts", backstory="You research.", llm=researcher_llm,
                       tools=[get_order], verbose=False)  # fmt: skip
    writer = Agent(role="writer", goal="write replies", backstory="You write.", llm=writer_llm,
                   tools=[explode], verbose=False)  # fmt: skip
    research = Task(description="Find order 7.", expected_output="status", agent=researcher, async_execution=True)
    reply = Task(description="Write the reply.", expected_output="reply", agent=writer, context=[research])
    crew = agentgym.train_online(Crew(agents=[researcher, writer], tasks=[research, reply], verbose=False), name="t")

    assert crew.kickoff().raw == "Your order 7 has shipped."

    (row,) = recorded.episodes()
    by_agent = recorded.query(
        "SELECT agent, outcome FROM tool_calls WHERE episode_id = ? ORDER BY agent", [row["episode_id"]]
    )
    assert [(r["agent"], r["outcome"]) for r in by_agent] == [("researcher", "ok"), ("writer", "unknown_tool")]
    assert row["llm_calls"] == 4


def test_decorated_function_running_a_crew_captures_the_same_spans(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    @agentgym.train_online(name="handler", framework="crewai")
    def handle(question: str) -> str:
        crew, _ = make_crew([GOOD, UNKNOWN, FINAL])
        return str(crew.kickoff(inputs={"question": question}).raw)

    assert handle("where is order 7?") == "order 7 shipped"
    (row,) = recorded.episodes()
    assert row["agent"] == "handler"
    assert recorded.outcomes(row["episode_id"]) == {"ok": 1, "unknown_tool": 1}
    assert {c["agent"] for c in recorded.tool_calls(row["episode_id"])} == {"support"}
    assert row["llm_calls"] == 3


def test_plain_decorator_with_the_adapter_instrumented(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    adapter = load_adapter("crewai")
    adapter.instrument()
    try:

        @agentgym.train_online(name="plain")
        def handle() -> str:
            crew, _ = make_crew([SCHEMA, FINAL])
            return str(crew.kickoff().raw)

        assert handle() == "order 7 shipped"
    finally:
        adapter.uninstrument()
    (row,) = recorded.episodes()
    assert row["agent"] == "plain"
    assert row["framework"] is None
    assert recorded.outcomes(row["episode_id"]) == {"invalid_arguments": 3}
    assert row["llm_calls"] == 2


def test_policy_is_applied_per_llm_call_and_undone(
    agentgym_runtime: Runtime, recorded: Recorded, baseline_policies: dict[str, Policy]
) -> None:
    demo = Demonstration(
        input="Where is order 1?",
        tool_calls=(ToolCallExample(name="get_order", arguments={"order_id": 1}, result="order 1 shipped"),),
        output="order 1 shipped",
    )
    baseline_policies["support"] = Policy(
        agent="support",
        version=3,
        system_prompt="You are meticulous: always check the order first.",
        tool_descriptions={"get_order": "Fetch an order's shipping status by its integer id."},
        demonstrations=(demo,),
    )
    crew, llm = make_crew([GOOD, FINAL])
    bare_crew, bare_llm = make_crew([GOOD, FINAL])
    bare_crew.kickoff()

    agentgym.train_online(crew, name="support-crew").kickoff()

    assert len(llm.received) == 2
    for received, bare in zip(llm.received, bare_llm.received, strict=True):
        system = received[0]
        assert system["role"] == "system"
        assert "You are support. You are meticulous: always check the order first." in system["content"]
        assert "You help customers with orders." not in system["content"]
        assert "Tool Description: Fetch an order's shipping status by its integer id.\n" in system["content"]
        assert "Tool Description: Always fails." in system["content"]
        assert received[1] == {"role": "user", "content": "Where is order 1?"}
        assert received[2]["role"] == "assistant"
        assert received[2]["content"] == (
            "Thought: I should use the get_order tool.\nAction: get_order\n"
            'Action Input: {"order_id": 1}\nObservation: order 1 shipped'
        )
        assert received[3] == {
            "role": "assistant",
            "content": "Thought: I now know the final answer\nFinal Answer: order 1 shipped",
        }
        # the rest is exactly what the agent sends without a policy (the change never accumulates)
        assert received[4:] == bare[1:]
    # the second call grows by what CrewAI itself appended (one message in 1.6, two in 1.15), nothing more
    grown = len(bare_llm.received[1]) - len(bare_llm.received[0])
    assert grown in (1, 2) and len(llm.received[1]) == len(llm.received[0]) + grown
    assert crew.agents[0].backstory == "You help customers with orders."
    assert get_order.description.endswith("Look up an order by id.")  # crewai 1.6 renders it, 1.15 keeps it raw
    rows = recorded.query("SELECT DISTINCT policy_version FROM spans WHERE operation IN ('chat', 'execute_tool')")
    assert [r["policy_version"] for r in rows] == [3]


def test_policy_routes_llm_calls_through_the_factory(
    agentgym_runtime: Runtime, recorded: Recorded, baseline_policies: dict[str, Policy]
) -> None:
    routed = ScriptedLLM([GOOD, FINAL], model="routed-model")
    seen: list[LLMConfig] = []

    def factory(config: LLMConfig) -> BaseLLM:
        seen.append(config)
        return routed

    register_llm_factory(factory)
    baseline_policies["support"] = Policy(agent="support", version=2, llm=LLMConfig(model="routed-model"))
    crew, own_llm = make_crew([])

    result = agentgym.train_online(crew, name="support-crew").kickoff()

    assert result.raw == "order 7 shipped"
    assert own_llm.received == []
    assert len(routed.received) == 2
    assert seen == [LLMConfig(model="routed-model")]
    assert routed.stop == own_llm.stop
    models = recorded.query("SELECT request_model, policy_version FROM llm_calls ORDER BY started_at")
    assert [(m["request_model"], m["policy_version"]) for m in models] == [("routed-model", 2)] * 2


def test_llm_failure_is_recorded_and_passes_through(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    class BrokenLLM(ScriptedLLM):
        def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
            raise ConnectionError("model endpoint down")

    agent = Agent(role="fragile", goal="g", backstory="b", llm=BrokenLLM([]), verbose=False, max_retry_limit=0)
    wrapped = agentgym.train_online(agent)
    with pytest.raises(ConnectionError, match="model endpoint down"):
        wrapped.kickoff("hello")
    (row,) = recorded.episodes()
    assert row["status"] == "error"
    assert row["error_type"] == "ConnectionError"
    (call,) = recorded.query("SELECT error_type, status_code FROM llm_calls")
    assert call["error_type"] == "ConnectionError"


def test_apply_policy_on_a_request() -> None:
    adapter = CrewAIAdapter()
    request = CrewAIRequest(
        messages=[
            {
                "role": "user",
                "content": "You are r. Old story.\nTool Name: t\nTool Arguments: {}\nTool Description: old",
            }
        ],
        backstory="Old story.",
        tool_names=("t",),
    )
    policy = Policy(agent="r", version=1, system_prompt="New story.", tool_descriptions={"t": "new"})
    applied = adapter.apply_policy(policy, request)
    assert applied.messages == [
        {"role": "user", "content": "You are r. New story.\nTool Name: t\nTool Arguments: {}\nTool Description: new"}
    ]
    assert request.messages[0]["content"].endswith("Tool Description: old")
    inserted = adapter.apply_policy(
        Policy(agent="r", version=1, system_prompt="Sys."), [{"role": "user", "content": "hi"}]
    )
    assert inserted.messages == [{"role": "system", "content": "Sys."}, {"role": "user", "content": "hi"}]


def test_seed_applies_a_policy_to_a_fresh_agent() -> None:
    routed = ScriptedLLM([], model="seeded")
    register_llm_factory(lambda config: routed)
    try:
        agent = Agent(role="support", goal="g", backstory="old", llm=ScriptedLLM([]), tools=[get_order], verbose=False)
        policy = Policy(
            agent="support",
            version=4,
            system_prompt="Check orders first.",
            tool_descriptions={"get_order": "Fetch an order."},
            demonstrations=(Demonstration(input="q", output="a"),),
            llm=LLMConfig(model="seeded"),
        )
        seeded = load_adapter("crewai").seed(agent, policy)
    finally:
        register_llm_factory(None)
    assert seeded is agent
    assert agent.backstory == (
        "Check orders first.\n\nExamples of good work:\nq\n\nThought: I now know the final answer\nFinal Answer: a"
    )
    # crewai 1.6 keeps the rendered "Tool Name/Arguments/Description" text in the tool, 1.15 the raw description
    description = agent.tools[0].description
    assert description == "Fetch an order." or description.endswith("\nTool Description: Fetch an order.")
    assert get_order.description.endswith("Look up an order by id.")
    assert "Fetch" not in get_order.description
    assert agent.llm is routed


def test_uninstrument_restores_crewai(agentgym_runtime: Runtime) -> None:
    from crewai import lite_agent

    modules = hooks._llm_response_modules()
    assert lite_agent in modules and len(modules) >= 2  # an agent executor's module too, whichever this crewai has
    adapter = load_adapter("crewai")
    original_emit = crewai_event_bus.emit
    adapter.instrument()
    count = CrewAIAdapter._instrument_count
    assert hooks.MISSING == []
    for module in modules:
        assert module.get_llm_response.__name__ == "get_llm_response"
        assert hasattr(module.get_llm_response, "__wrapped__")
    assert "emit" in crewai_event_bus.__dict__
    for _ in range(count):
        adapter.uninstrument()
    try:
        assert not any(hasattr(module.get_llm_response, "__wrapped__") for module in modules)
        assert "emit" not in crewai_event_bus.__dict__
        assert not hasattr(Agent.__dict__["execute_task"], "__wrapped__")
        assert not hasattr(Task.__dict__["execute_async"], "__wrapped__")
        assert original_emit is not None
        from crewai.hooks import get_after_tool_call_hooks

        assert not any(getattr(h, "__self__", None) is not None for h in get_after_tool_call_hooks())
    finally:
        for _ in range(count - 1):
            adapter.instrument()


def test_a_crewai_without_the_llm_hook_still_runs_and_says_so(
    agentgym_home: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A crewai that moved ``get_llm_response`` again: the crew runs, tools are recorded, the gap is named."""
    runtime = agentgym.configure(home=agentgym_home, strict=False, schedule_delay_ms=20).runtime
    adapter = load_adapter("crewai")
    count = CrewAIAdapter._instrument_count
    for _ in range(count):  # start from an uninstrumented crewai
        adapter.uninstrument()
    monkeypatch.setattr(hooks, "LLM_RESPONSE_MODULES", ("crewai.agents.no_such_executor",))
    try:
        errors = runtime.pipeline_stats.snapshot()["internal_errors"]
        crew, _ = make_crew([GOOD, FINAL])
        with caplog.at_level("WARNING", logger="agentgym_runtime.adapters"):
            result = agentgym.train_online(crew, name="degraded").kickoff()
        assert result.raw == "order 7 shipped"
        assert hooks.MISSING == ["get_llm_response in any of crewai.agents.no_such_executor"]
        assert f"crewai {hooks.crewai_version()} has no get_llm_response" in caplog.text
        assert runtime.pipeline_stats.snapshot()["internal_errors"] == errors + 1
        runtime.flush()
        episode = agentgym.last_episode()
        assert episode is not None and episode.outcomes == {"ok": 1}
    finally:
        for _ in range(CrewAIAdapter._instrument_count):
            adapter.uninstrument()
        monkeypatch.undo()
        for _ in range(count):
            adapter.instrument()
        agentgym.shutdown()
