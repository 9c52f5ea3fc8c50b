"""Scripted plain-callable traffic for the policy tests (real recording API, no framework)."""

from __future__ import annotations

import random
from collections.abc import Mapping

import agentgym_runtime as agentgym
from agentgym_runtime.recording.capture import start_llm_call, start_tool_call
from agentgym_runtime.recording.context import RequestedToolCall
from agentgym_runtime.semconv import ToolOutcome

TOOLS = [{"name": "get_order", "description": "Fetch an order.", "parameters": {"type": "object"}}]


def scripted_episode(
    agent: str,
    session_id: str | None,
    reliability: Mapping[int, float],
    rng: random.Random,
    calls: int | Mapping[int, int] = 2,
) -> int:
    """One episode: an LLM call requesting ``calls`` tool calls (or ``calls[version]``), each succeeding
    with the pinned version's reliability. Returns the version the episode ran under."""
    with agentgym.episode(agent=agent, session_id=session_id):
        policy = agentgym.current_policy()
        assert policy is not None
        if not isinstance(calls, int):
            calls = calls[policy.version]
        llm = start_llm_call(model="scripted", tools=TOOLS, input_messages=[{"role": "user", "content": "where?"}])
        llm.finish(requested=[RequestedToolCall.from_raw("get_order", f"c{i}", {"id": i}) for i in range(calls)])
        for i in range(calls):
            tool = start_tool_call("get_order", call_id=f"c{i}", arguments={"id": i})
            if rng.random() < reliability[policy.version]:
                tool.succeed({"status": "shipped"})
            else:
                tool.fail(ToolOutcome.TOOL_ERROR, message="backend timeout")
        return policy.version
