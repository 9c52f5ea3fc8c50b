"""The trained policy the adapter tests apply per call: a system prompt, a tool description and a demonstration."""

from __future__ import annotations

from agentgym_runtime.recording.policy import Demonstration, Policy, ToolCallExample

SUPPORT_POLICY = Policy(
    agent="support",
    version=3,
    system_prompt="Always call get_order with an integer id.",
    tool_descriptions={"get_order": "Fetch one order; order_id is an integer."},
    demonstrations=(
        Demonstration(
            input="where is order 1?",
            tool_calls=(ToolCallExample(name="get_order", arguments={"order_id": 1}, result="shipped"),),
            output="Order 1 shipped.",
        ),
    ),
)
