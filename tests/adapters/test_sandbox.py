"""The replay sandbox reaches framework tools by itself: real agents, scripted models, no real tool runs.

Inside ``use_sandbox`` every tool execution point (``@agentgym.tool`` / ``Toolbox``, LangChain
``BaseTool.run`` / ``arun``, AutoGen ``BaseTool.run_json``, CrewAI ``CrewStructuredTool.invoke``)
hands the call to the sandbox: the recorded result for identical arguments, a fake, or a refusal,
returned to the model in the framework's own form. Outside it the real tools run again.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.errors import ToolArgumentsError, UnknownToolError
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.recording.sandbox import NEUTRAL_OBSERVATION, ToolSandbox, current_sandbox, use_sandbox
from agentgym_runtime.trainers.dataset import RecordedToolCall

GET_ORDER = {
    "name": "get_order",
    "description": "Look up an order by its id.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "integer"}},
        "required": ["order_id"],
        "additionalProperties": False,
    },
}
REFUND = {
    "name": "refund",
    "description": "Refund an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]},
}
RECORDED = "order 7: left the depot on Monday (recorded)"


def sandbox_for_order_7() -> ToolSandbox:
    """The recorded episode called get_order(7); refund goes to a fake."""
    return ToolSandbox(
        tools=[GET_ORDER, REFUND],
        recorded=[RecordedToolCall(name="get_order", arguments={"order_id": 7}, result=RECORDED, outcome="ok")],
        fakes={"refund": lambda order_id: f"refund of order {order_id} queued (fake)"},
    )


def outcomes(sandbox: ToolSandbox) -> list[tuple[str, Any, str]]:
    return [(c["name"], c["arguments"], c["outcome"]) for c in sandbox.calls]


def outcomes_by_call(sandbox: ToolSandbox) -> list[tuple[str, Any, str]]:
    """The calls in a fixed order (frameworks may run one turn's tool calls concurrently)."""
    return sorted(outcomes(sandbox), key=lambda c: (c[0], json.dumps(c[1])))


# --- @agentgym.tool and Toolbox ------------------------------------------------------------------
def test_agentgym_tools_and_toolbox_are_answered_by_the_sandbox(agentgym_runtime: Runtime) -> None:
    real_calls: list[int] = []

    @agentgym.tool
    def get_order(order_id: int) -> str:
        """Look up an order by its id."""
        real_calls.append(order_id)
        return f"order {order_id}: live"

    @agentgym.tool
    async def refund(order_id: int) -> str:
        """Refund an order."""
        real_calls.append(-order_id)
        return "refunded for real"

    box = agentgym.Toolbox([get_order, refund])
    sandbox = sandbox_for_order_7()
    with use_sandbox(sandbox):
        assert get_order(order_id=7) == RECORDED
        assert box.call("get_order", '{"order_id": 8}') == NEUTRAL_OBSERVATION
        assert asyncio.run(box.acall("refund", {"order_id": 7})) == "refund of order 7 queued (fake)"
        with pytest.raises(ToolArgumentsError, match=r"invalid arguments for tool 'get_order': order_id"):
            get_order(order_id="seven")
    assert real_calls == []
    assert outcomes(sandbox) == [
        ("get_order", {"order_id": 7}, "ok"),
        ("get_order", {"order_id": 8}, "ok"),
        ("refund", {"order_id": 7}, "ok"),
        ("get_order", {"order_id": "seven"}, "invalid_arguments"),
    ]
    assert sandbox.reliability == 0.75
    assert current_sandbox.get() is None
    assert get_order(order_id=7) == "order 7: live"  # outside the replay the real tool runs
    assert real_calls == [7]


def test_a_tool_the_recording_never_offered_is_refused_and_live_tools_run_for_real(agentgym_runtime: Runtime) -> None:
    real_calls: list[int] = []

    @agentgym.tool
    def get_order(order_id: int) -> str:
        """Look up an order by its id."""
        real_calls.append(order_id)
        return f"order {order_id}: live"

    @agentgym.tool
    def cancel_order(order_id: int) -> str:
        """Cancel an order."""
        real_calls.append(-order_id)
        return "cancelled"

    # get_order is marked side-effect free: the real function runs, not routed back into the sandbox.
    sandbox = ToolSandbox(tools=[GET_ORDER], live={"get_order": get_order})
    with use_sandbox(sandbox):
        assert get_order(order_id=3) == "order 3: live"
        with pytest.raises(UnknownToolError, match="unknown tool 'cancel_order'; available tools: get_order"):
            cancel_order(order_id=3)
    assert real_calls == [3]
    assert outcomes(sandbox) == [
        ("get_order", {"order_id": 3}, "ok"),
        ("cancel_order", {"order_id": 3}, "unknown_tool"),
    ]


# --- LangChain create_agent ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_langchain_create_agent_gets_the_sandbox_answers(agentgym_runtime: Runtime, mode: str) -> None:
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage
    from langchain_core.tools import BaseTool, tool

    from tests.adapters.test_langchain import ScriptedChatModel

    real_calls: list[Any] = []

    @tool
    def get_order(order_id: int) -> str:
        """Look up an order by its id."""
        real_calls.append(order_id)
        return f"order {order_id}: live"

    @tool
    def refund(order_id: int) -> str:
        """Refund an order."""
        real_calls.append(("refund", order_id))
        return "refunded for real"

    def script(turn: int, question: str) -> AIMessage:
        if turn == 0:
            return AIMessage(
                "",
                tool_calls=[
                    {"name": "get_order", "args": {"order_id": 7}, "id": "c1", "type": "tool_call"},
                    {"name": "refund", "args": {"order_id": 7}, "id": "c2", "type": "tool_call"},
                    {"name": "get_order", "args": {"order_id": "seven"}, "id": "c3", "type": "tool_call"},
                ],
            )
        return AIMessage("order 7 left the depot; refund queued")

    model = ScriptedChatModel(script=script)
    agent = create_agent(model, [get_order, refund], system_prompt="You help customers.")
    run_before, arun_before = BaseTool.__dict__["run"], BaseTool.__dict__["arun"]
    sandbox = sandbox_for_order_7()
    with use_sandbox(sandbox):
        request = {"messages": [{"role": "user", "content": "where is order 7?"}]}
        result = agent.invoke(request) if mode == "invoke" else asyncio.run(agent.ainvoke(request))

    assert real_calls == []
    assert result["messages"][-1].content == "order 7 left the depot; refund queued"
    # The model's second call saw the sandbox's answers as the tool messages of its calls.
    answers = {m.tool_call_id: m for m in model.seen[1]["messages"] if m.type == "tool"}
    assert (answers["c1"].content, answers["c1"].status, answers["c1"].name) == (RECORDED, "success", "get_order")
    assert (answers["c2"].content, answers["c2"].status) == ("refund of order 7 queued (fake)", "success")
    assert answers["c3"].status == "error"
    assert answers["c3"].content.startswith("Error: invalid arguments for tool 'get_order': order_id")
    assert outcomes_by_call(sandbox) == [
        ("get_order", {"order_id": "seven"}, "invalid_arguments"),
        ("get_order", {"order_id": 7}, "ok"),
        ("refund", {"order_id": 7}, "ok"),
    ]
    # The hooks go with the sandbox (unless someone else instrumented LangChain), and the tool is real again.
    assert (BaseTool.__dict__["run"], BaseTool.__dict__["arun"]) == (run_before, arun_before)
    assert get_order.invoke({"order_id": 1}) == "order 1: live"
    assert real_calls == [1]


# --- AutoGen AssistantAgent -------------------------------------------------------------------------
def test_autogen_assistant_gets_the_sandbox_answers(agentgym_runtime: Runtime) -> None:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core.models import FunctionExecutionResultMessage

    from tests.adapters.test_autogen import RecordingClient, calls_result

    real_calls: list[Any] = []

    def get_order(order_id: int) -> str:
        """Look up an order by its id."""
        real_calls.append(order_id)
        return f"order {order_id}: live"

    def refund(order_id: int) -> str:
        """Refund an order."""
        real_calls.append(("refund", order_id))
        return "refunded for real"

    client = RecordingClient(
        [
            calls_result(
                ("c1", "get_order", '{"order_id": 7}'),
                ("c2", "refund", '{"order_id": 7}'),
                ("c3", "get_order", '{"order_id": "seven"}'),
            ),
            "order 7 left the depot; refund queued",
        ]
    )
    agent = AssistantAgent(
        "support", model_client=client, tools=[get_order, refund], reflect_on_tool_use=True, system_message="Help."
    )
    sandbox = sandbox_for_order_7()
    with use_sandbox(sandbox):
        result = asyncio.run(agent.run(task="where is order 7?"))

    assert real_calls == []
    assert result.messages[-1].content == "order 7 left the depot; refund queued"
    (results_message,) = [m for m in client.received[1]["messages"] if isinstance(m, FunctionExecutionResultMessage)]
    answers = {r.call_id: r for r in results_message.content}
    assert (answers["c1"].content, answers["c1"].is_error) == (RECORDED, False)
    assert (answers["c2"].content, answers["c2"].is_error) == ("refund of order 7 queued (fake)", False)
    assert answers["c3"].is_error
    assert "invalid arguments for tool 'get_order': order_id" in answers["c3"].content
    assert outcomes_by_call(sandbox) == [
        ("get_order", {"order_id": "seven"}, "invalid_arguments"),
        ("get_order", {"order_id": 7}, "ok"),
        ("refund", {"order_id": 7}, "ok"),
    ]


# --- CrewAI crew --------------------------------------------------------------------------------------
def test_crewai_crew_gets_the_sandbox_answers(agentgym_runtime: Runtime) -> None:
    pytest.importorskip("crewai")
    from crewai import Agent, Crew, Task
    from crewai.tools import tool

    from tests.adapters.test_crewai import ScriptedLLM

    real_calls: list[Any] = []

    @tool("get_order")
    def get_order(order_id: int) -> str:
        """Look up an order by id."""
        real_calls.append(order_id)
        return f"order {order_id}: live"

    @tool("refund")
    def refund(order_id: int) -> str:
        """Refund an order."""
        real_calls.append(("refund", order_id))
        return "refunded for real"

    llm = ScriptedLLM(
        [
            'Thought: look it up\nAction: get_order\nAction Input: {"order_id": 7}',
            'Thought: refund it\nAction: refund\nAction Input: {"order_id": 7}',
            "Thought: I now know the final answer\nFinal Answer: order 7 left the depot; refund queued",
        ]
    )
    agent = Agent(
        role="support",
        goal="answer order questions",
        backstory="You help customers with orders.",
        llm=llm,
        tools=[get_order, refund],
        verbose=False,
        max_iter=5,
    )
    crew = Crew(
        agents=[agent],
        tasks=[Task(description="Where is order 7?", expected_output="the order status", agent=agent)],
        verbose=False,
    )
    sandbox = sandbox_for_order_7()
    with use_sandbox(sandbox):
        result = crew.kickoff()

    assert real_calls == []
    assert result.raw == "order 7 left the depot; refund queued"
    # Each observation the LLM got next is the sandbox's answer.
    assert RECORDED in json.dumps(llm.received[1])
    assert "refund of order 7 queued (fake)" in json.dumps(llm.received[2])
    assert outcomes(sandbox) == [("get_order", {"order_id": 7}, "ok"), ("refund", {"order_id": 7}, "ok")]
