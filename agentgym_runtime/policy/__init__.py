"""Policies: versioned bundles of prompt, tool descriptions, demonstrations and model routing."""

from agentgym_runtime.policy.apply import apply_to_messages, apply_to_tool_definitions, demonstration_messages
from agentgym_runtime.recording.policy import Demonstration, LLMConfig, Policy, ToolCallExample

__all__ = [
    "Demonstration",
    "LLMConfig",
    "Policy",
    "ToolCallExample",
    "apply_to_messages",
    "apply_to_tool_definitions",
    "demonstration_messages",
]
