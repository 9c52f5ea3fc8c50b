"""The demo agent's LangChain tools judge a call as the offline evaluator does.

The final table measures every version with the offline evaluator; the live agent is LangChain's
``create_agent`` over the same scenario tools. Where the two disagreed, the gate compared versions
on calls the table counted as failures: a call with an argument the tool does not take ran live
(LangChain's inferred schema dropped it) and failed offline.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import StructuredTool

import agentgym_runtime as agentgym
from agentgym_runtime.demo.loop import _langchain_tool
from agentgym_runtime.demo.model.format import execute_call, parse_completion, render_call
from agentgym_runtime.demo.model.serving import error_observation
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.scenarios import get_scenario
from agentgym_runtime.testing import Recorded
from tests.adapters.test_langchain import ScriptedChatModel

SCENARIO = "customer_support"


def _calls() -> list[tuple[str, dict[str, Any]]]:
    """One right call per tool of a held-out world (its expected arguments), then each with one argument too many."""
    scenario = get_scenario(SCENARIO)
    seen: dict[str, dict[str, Any]] = {}
    for task in scenario.tasks("heldout", 60, seed=3):
        call = task.expected_calls[0]
        seen.setdefault(call.name, dict(call.arguments))
    assert len(seen) == 5
    extra = {"cancel_order": "reason", "get_order": "priority", "open_ticket": "reason"}
    return list(seen.items()) + [(name, {**args, extra.get(name, "note"): "other"}) for name, args in seen.items()]


def test_a_call_with_an_argument_the_tool_does_not_take_fails_live_and_offline_alike(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    scenario = get_scenario(SCENARIO)
    calls = _calls()

    # Offline: the evaluator's verdict and message for each call, each on a fresh world.
    offline = [
        execute_call(parse_completion(render_call(name, args)), scenario.tools(scenario.new_world(3)))
        for name, args in calls
    ]
    assert [outcome for outcome, _, _ in offline] == ["ok"] * 5 + ["invalid_arguments"] * 5

    # Live: the demo's agent over one world, every call in one model turn.
    world = scenario.new_world(3)
    before = {order_id: order.status for order_id, order in world.orders.items()}

    def script(turn: int, question: str) -> AIMessage:
        if turn == 0:
            return AIMessage(
                "",
                tool_calls=[
                    {"name": name, "args": args, "id": f"c{i}", "type": "tool_call"}
                    for i, (name, args) in enumerate(calls[5:])
                ],
            )
        return AIMessage("done")

    tools = [_langchain_tool(t, StructuredTool) for t in scenario.tools(world)]
    agent = agentgym.train_online(create_agent(ScriptedChatModel(script=script), tools), name="support")
    result = agent.invoke({"messages": [HumanMessage("help")]})

    messages = [m for m in result["messages"] if m.type == "tool"]
    assert [m.status for m in messages] == ["error"] * 5
    # The model reads the same error line it reads offline.
    assert [error_observation(str(m.content)) for m in messages] == [message for _, _, message in offline[5:]]
    assert all("Extra inputs are not permitted" in str(m.content) for m in messages)
    # No call ran: no order refunded, cancelled or ticketed.
    assert {order_id: order.status for order_id, order in world.orders.items()} == before
    assert world.refunds == {} and world.tickets == {}
    (row,) = recorded.episodes("support")
    assert recorded.outcomes(row["episode_id"]) == {"invalid_arguments": 5}
