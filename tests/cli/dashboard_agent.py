"""A real agent for the dashboard and listing tests: ``@agentgym.tool`` tools, a scripted model, real recording.

The scripted model makes the mistakes real ones make, but only under the incumbent policy v0:
on every odd order it asks for a refund over the limit (``tool_error``), and on every fourth it
asks for a tool that does not exist (``unknown_tool``). A trained candidate (v1 and later) makes
none. Every count the tests assert follows from these two rules.
"""

from __future__ import annotations

import json
from typing import Any

import agentgym_runtime as agentgym

#: Long on purpose: listings at 80 columns must still show it whole.
AGENT = "customer-support-eu-west-escalations"
REFUND_LIMIT = 100.0


@agentgym.tool
def get_order(order_id: int) -> dict[str, Any]:
    """Look up an order."""
    return {"id": order_id, "status": "shipped"}


@agentgym.tool
def refund(order_id: int, amount: float) -> str:
    """Refund part of an order (at most 100)."""
    if amount > REFUND_LIMIT:
        raise ValueError(f"refund of {amount:g} is over the limit of {REFUND_LIMIT:g}")
    return f"refunded {amount:g} on order {order_id}"


TOOLBOX = agentgym.Toolbox([get_order, refund])


def plan(order_id: int, version: int) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls the scripted model requests for ``order_id`` under policy ``version``."""
    mistaken = version == 0
    calls: list[tuple[str, dict[str, Any]]] = [("get_order", {"order_id": order_id})]
    amount = 500.0 if mistaken and order_id % 2 else 20.0
    calls.append(("refund", {"order_id": order_id, "amount": amount}))
    if mistaken and order_id % 4 == 0:
        calls.append(("cancel_everything", {"order_id": order_id}))
    return calls


def expected_outcomes(order_id: int, version: int) -> dict[str, list[str]]:
    """Tool name → the outcome of each of its calls in one episode (what the store must hold)."""
    outcomes: dict[str, list[str]] = {}
    for name, arguments in plan(order_id, version):
        if name == "cancel_everything":
            outcome = "unknown_tool"
        elif name == "refund" and arguments["amount"] > REFUND_LIMIT:
            outcome = "tool_error"
        else:
            outcome = "ok"
        outcomes.setdefault(name, []).append(outcome)
    return outcomes


def support(order_id: int, session_id: str) -> int:
    """One episode of the agent; returns the policy version it ran under."""
    with agentgym.episode(agent=AGENT, session_id=session_id):
        policy = agentgym.current_policy()
        version = policy.version if policy is not None else 0
        calls = plan(order_id, version)
        with agentgym.llm_call(
            model="scripted", tools=TOOLBOX.definitions(), input_messages=[{"role": "user", "content": "refund"}]
        ) as llm:
            llm.finish(
                requested=[
                    agentgym.RequestedToolCall.from_raw(name, f"c{k}", json.dumps(arguments))
                    for k, (name, arguments) in enumerate(calls)
                ]
            )
        for k, (name, arguments) in enumerate(calls):
            try:
                TOOLBOX.call(name, arguments, call_id=f"c{k}")
            except Exception:  # the model's mistake: recorded by the toolbox, the agent goes on
                continue
        return version
