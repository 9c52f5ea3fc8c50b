"""AG2 requests and responses in one place: the policy on a request, tool definitions, requested calls.

AG2 classic already speaks OpenAI's chat format (its messages are OpenAI message dicts, its tools
``{"type": "function", "function": {...}}`` entries of the ``llm_config``), so the policy is applied
with the shared functions of :mod:`agentgym_runtime.policy.apply`, no conversion needed.

Example:
    >>> tool = {"type": "function", "function": {"name": "lookup", "description": "Find.", "parameters": {}}}
    >>> tool_definitions([tool])
    [{'name': 'lookup', 'description': 'Find.', 'parameters': {}}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentgym_runtime.policy.apply import apply_to_messages, apply_to_tool_definitions
from agentgym_runtime.recording.context import RequestedToolCall
from agentgym_runtime.recording.policy import Policy


def _field(item: Any, name: str) -> Any:
    """``item.name`` or ``item[name]``: responses of custom model clients may be objects or dicts."""
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def tool_definitions(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """``{"name", "description", "parameters"}`` for OpenAI-style tool entries (or plain definitions).

    Example:
        >>> tool_definitions([{"name": "f", "parameters": {"type": "object"}}])
        [{'name': 'f', 'description': None, 'parameters': {'type': 'object'}}]
    """
    result = []
    for tool in tools or ():
        nested = tool.get("function")
        function: Mapping[str, Any] = nested if isinstance(nested, Mapping) else tool
        result.append(
            {
                "name": str(function.get("name")),
                "description": function.get("description"),
                "parameters": function.get("parameters"),
            }
        )
    return result


def apply_policy(policy: Policy, request: Mapping[str, Any]) -> dict[str, Any]:
    """``{"messages": [...], "tools": [...]}`` (OpenAI form) with ``policy`` applied (a new dict).

    The one place an AG2 request gets a policy: the ``OpenAIWrapper.create`` hook and
    :meth:`AG2Adapter.apply_policy` both call it. Parts the policy leaves alone are kept as they are.

    Example:
        >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
        >>> apply_policy(p, {"messages": [{"role": "system", "content": "old"}], "tools": []})["messages"]
        [{'role': 'system', 'content': 'Be exact.'}]
    """
    result = dict(request)
    messages = request.get("messages") or []
    tools = request.get("tools") or []
    if policy.system_prompt is not None or policy.demonstrations:
        result["messages"] = apply_to_messages(policy, messages)
    if policy.tool_descriptions and tools:
        result["tools"] = apply_to_tool_definitions(policy, tools)
    return result


def response_message(response: Any) -> Any:
    """The first choice's message of a ``create`` response (``None`` when there is none)."""
    choices = _field(response, "choices") or []
    return _field(choices[0], "message") if choices else None


def output_messages(response: Any) -> tuple[list[dict[str, Any]], list[RequestedToolCall]]:
    """The response as OpenAI assistant messages, and the tool calls the model requested.

    Example:
        >>> call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
        >>> messages, requested = output_messages({"choices": [{"message": {"tool_calls": [call]}}]})
        >>> messages[0]["tool_calls"], requested[0].arguments
        ([{'id': 'c1', 'name': 'f', 'arguments': '{"x": 1}'}], {'x': 1})
    """
    message = response_message(response)
    if message is None:
        return [], []
    requested: list[RequestedToolCall] = []
    calls: list[dict[str, Any]] = []
    for call in _field(message, "tool_calls") or []:
        function = _field(call, "function")
        name, arguments, call_id = _field(function, "name"), _field(function, "arguments"), _field(call, "id")
        requested.append(RequestedToolCall.from_raw(str(name), call_id, arguments))
        calls.append({"id": call_id, "name": name, "arguments": arguments})
    output: dict[str, Any] = {"role": "assistant", "content": _field(message, "content")}
    if calls:
        output["tool_calls"] = calls
    return [output], requested


def usage(response: Any) -> tuple[int | None, int | None]:
    """``(input_tokens, output_tokens)`` of a response, where it says."""
    counts = _field(response, "usage")
    if counts is None:
        return None, None
    return _field(counts, "prompt_tokens"), _field(counts, "completion_tokens")


__all__ = ["apply_policy", "output_messages", "response_message", "tool_definitions", "usage"]
