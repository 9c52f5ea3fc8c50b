"""The public API covers a hand-written agent loop: LLM calls with requested tool calls, reliability as data."""

from __future__ import annotations

import json

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime import services
from agentgym_runtime.scenarios.registry import list_scenarios
from agentgym_runtime.services import Services
from agentgym_runtime.testing import Recorded


@agentgym.tool
def get_order(order_id: int) -> str:
    """Look up an order."""
    return f"order {order_id}: shipped"


TOOLS = agentgym.Toolbox([get_order])


def _turn(question: str, requested: list[tuple[str, str, str]]) -> str:
    """One turn of a hand-written loop: the model asks for tool calls, the agent runs some."""
    with agentgym.llm_call(
        model="scripted", provider="test", input_messages=[question], tools=TOOLS.definitions()
    ) as call:
        call.finish(
            requested=[agentgym.RequestedToolCall.from_raw(n, c, a) for c, n, a in requested],
            input_tokens=3,
            output_tokens=5,
        )
    answers = []
    for call_id, name, arguments in requested[:2]:  # the third request is never executed
        try:
            answers.append(TOOLS.call(name, arguments, call_id=call_id))
        except (agentgym.UnknownToolError, agentgym.ToolArgumentsError) as exc:
            answers.append(type(exc).__name__)
    return "; ".join(answers)


def test_llm_call_records_requested_tool_calls_and_reliability_is_data(
    agentgym_runtime: Services, recorded: Recorded
) -> None:
    requested = [
        ("c1", "get_order", '{"order_id": 7}'),
        ("c2", "get_order", '{"order_id": "x"}'),
        ("c3", "get_order", '{"order_id": 9}'),
    ]
    with agentgym.episode(agent="loop") as ep:
        assert _turn("where is 7?", requested) == "order 7: shipped; ToolArgumentsError"
    assert (ep.llm_calls, ep.input_tokens, ep.output_tokens) == (1, 3, 5)
    assert ep.outcomes == {"ok": 1, "invalid_arguments": 1, "not_executed": 1}
    chat = recorded.query("SELECT attributes FROM spans WHERE operation = 'chat'")
    assert len(chat) == 1
    offered = json.loads(json.loads(chat[0]["attributes"])["gen_ai.tool.definitions"])
    assert [t["name"] for t in offered] == ["get_order"]
    rows = agentgym.reliability("loop")
    assert [
        (r["agent"], r["key"], r["calls"], r["successes"], r["invalid_arguments"], r["not_executed"]) for r in rows
    ] == [("loop", "get_order", 3, 1, 1, 1)]
    assert rows[0]["reliability"] == pytest.approx(1 / 3)
    assert [(r["key"], r["calls"]) for r in agentgym.reliability("loop", by="policy")] == [(0, 3)]
    with pytest.raises(agentgym.ConfigurationError, match="--by must be one of: tool, policy, day; got 'week'"):
        agentgym.reliability(by="week")


def test_an_llm_call_that_raises_is_recorded_failed_and_the_error_passes(
    agentgym_runtime: Services, recorded: Recorded
) -> None:
    with (
        agentgym.episode(agent="loop") as ep,
        pytest.raises(TimeoutError, match="model timed out"),
        agentgym.llm_call(model="scripted"),
    ):
        raise TimeoutError("model timed out")
    assert ep.llm_calls == 1
    rows = recorded.query("SELECT status_code, error_type FROM spans WHERE operation = 'chat'")
    assert [(r["status_code"], r["error_type"]) for r in rows] == [("ERROR", "TimeoutError")]


def test_a_mistyped_scenario_is_refused_with_the_known_ones() -> None:
    known = list_scenarios()  # the built-ins, and any a test registered earlier in this process
    assert {"code_review", "customer_support", "qa_testing"} <= set(known)
    with pytest.raises(agentgym.ConfigurationError) as caught:
        agentgym.train_online(lambda question: question, scenario="customer-support")
    assert str(caught.value) == f"unknown scenario 'customer-support'; choose one of: {', '.join(known)}"


def test_configure_returns_the_services_whose_router_pins_policies(agentgym_runtime: Services) -> None:
    assert services.current() is agentgym_runtime
    agentgym.promote("bot", agentgym.register_policy("bot", system_prompt="Look it up.").version)
    with agentgym.episode(agent="bot"):
        policy = agentgym.current_policy()
        assert policy is not None
        assert (policy.version, policy.system_prompt) == (1, "Look it up.")
    assert not agentgym_runtime.has_scheduler  # nothing trains: the scheduler is never built
