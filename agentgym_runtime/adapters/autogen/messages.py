"""AutoGen <-> OpenAI-style conversions and the policy applied to an AutoGen request, in one place.

Example:
    >>> messages_to_openai([UserMessage(content="hi", source="user")])
    [{'role': 'user', 'content': 'hi'}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema

from agentgym_runtime.policy.apply import apply_to_messages, apply_to_tool_definitions
from agentgym_runtime.recording.policy import Policy

_ORIGINAL_KEY = "_agentgym_autogen_message"
"""Private key tying a converted OpenAI message back to the AutoGen message it came from."""


def _content_text(content: Any) -> Any:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return [item if isinstance(item, str) else {"type": type(item).__name__} for item in content]
    return str(content)


def messages_to_openai(messages: Sequence[LLMMessage], *, keep_originals: bool = False) -> list[dict[str, Any]]:
    """AutoGen ``LLMMessage`` objects as OpenAI chat messages.

    With ``keep_originals`` each dict remembers the message it came from (under a private key),
    so :func:`messages_from_openai` can give back the very same objects for unchanged messages.

    Example:
        >>> messages_to_openai([SystemMessage(content="Be brief."), UserMessage(content="hi", source="user")])
        [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'hi'}]
    """
    result: list[dict[str, Any]] = []
    for message in messages:
        converted: list[dict[str, Any]]
        if isinstance(message, SystemMessage):
            converted = [{"role": "system", "content": message.content}]
        elif isinstance(message, UserMessage):
            converted = [{"role": "user", "content": _content_text(message.content)}]
        elif isinstance(message, AssistantMessage):
            if isinstance(message.content, str):
                converted = [{"role": "assistant", "content": message.content}]
            else:
                calls = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in message.content
                ]
                converted = [{"role": "assistant", "content": message.thought, "tool_calls": calls}]
        else:  # FunctionExecutionResultMessage (LLMMessage is a closed union)
            converted = [{"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in message.content]
        if keep_originals:
            for item in converted:
                item[_ORIGINAL_KEY] = message
        result.extend(converted)
    return result


def messages_from_openai(messages: Sequence[Mapping[str, Any]], *, source: str = "demonstration") -> list[LLMMessage]:
    """OpenAI chat messages as AutoGen ``LLMMessage`` objects (inverse of :func:`messages_to_openai`).

    Example:
        >>> messages_from_openai([{"role": "user", "content": "hi"}])
        [UserMessage(content='hi', source='demonstration', type='UserMessage')]
    """
    result: list[LLMMessage] = []
    call_names: dict[str, str] = {}
    pending_results: list[FunctionExecutionResult] = []

    def flush_results() -> None:
        if pending_results:
            result.append(FunctionExecutionResultMessage(content=list(pending_results)))
            pending_results.clear()

    for item in messages:
        original = item.get(_ORIGINAL_KEY)
        role = item.get("role")
        if original is not None and not (role == "system" and item.get("content") != original.content):
            flush_results()
            if not result or result[-1] is not original:
                result.append(original)
            continue
        if role == "tool":
            call_id = str(item.get("tool_call_id"))
            pending_results.append(
                FunctionExecutionResult(
                    content=_as_text(item.get("content")),
                    call_id=call_id,
                    name=call_names.get(call_id, ""),
                    is_error=False,
                )
            )
            continue
        flush_results()
        if role == "system":
            result.append(SystemMessage(content=_as_text(item.get("content"))))
        elif role == "assistant" and item.get("tool_calls"):
            calls = []
            for call in item["tool_calls"]:
                function = call.get("function", {})
                call_names[str(call.get("id"))] = str(function.get("name"))
                calls.append(
                    FunctionCall(
                        id=str(call.get("id")),
                        name=str(function.get("name")),
                        arguments=function.get("arguments", "{}"),
                    )
                )
            result.append(AssistantMessage(content=calls, source=source))
        elif role == "assistant":
            result.append(AssistantMessage(content=_as_text(item.get("content")), source=source))
        else:
            result.append(UserMessage(content=_as_text(item.get("content")), source=source))
    flush_results()
    return result


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def tool_definitions(tools: Sequence[Tool | ToolSchema]) -> list[dict[str, Any]]:
    """``{"name", "description", "parameters"}`` for the tools passed to ``create``.

    Example:
        >>> tool_definitions([{"name": "lookup", "description": "Find.", "parameters": {"type": "object"}}])
        [{'name': 'lookup', 'description': 'Find.', 'parameters': {'type': 'object'}}]
    """
    result = []
    for tool in tools:
        schema: Mapping[str, Any] = tool.schema if isinstance(tool, Tool) else tool
        result.append(
            {"name": schema["name"], "description": schema.get("description"), "parameters": schema.get("parameters")}
        )
    return result


def apply_policy_to_tools(policy: Policy, tools: Sequence[Tool | ToolSchema]) -> list[Tool | ToolSchema]:
    """The tools with the policy's descriptions; only the overridden ones are replaced (by schemas).

    Example:
        >>> p = Policy(agent="a", version=1, tool_descriptions={"lookup": "Look an order up by id."})
        >>> apply_policy_to_tools(p, [{"name": "lookup", "description": "Find."}])[0]["description"]
        'Look an order up by id.'
    """
    overrides = policy.tool_descriptions
    if not overrides:
        return list(tools)
    result: list[Tool | ToolSchema] = []
    for tool in tools:
        schema: Mapping[str, Any] = tool.schema if isinstance(tool, Tool) else tool
        if schema.get("name") in overrides:
            (updated,) = apply_to_tool_definitions(policy, [schema])
            result.append(updated)  # type: ignore[arg-type]
        else:
            result.append(tool)
    return result


def apply_policy_to_messages(policy: Policy, messages: Sequence[LLMMessage]) -> list[LLMMessage]:
    """``messages`` with the policy's system prompt and demonstrations (unchanged messages are kept as is).

    Example:
        >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
        >>> apply_policy_to_messages(p, [SystemMessage(content="old")])[0].content
        'Be exact.'
    """
    applied = apply_to_messages(policy, messages_to_openai(messages, keep_originals=True))
    return messages_from_openai(applied)


def apply_policy(policy: Policy, request: Mapping[str, Any]) -> dict[str, Any]:
    """``{"messages": [LLMMessage...], "tools": [...]}`` with ``policy`` applied (a new dict).

    The one place an AutoGen request gets a policy: :class:`PolicyModelClient` and
    :meth:`AutoGenAdapter.apply_policy` both call it. Parts the policy leaves alone are kept as
    they are (the same objects).

    Example:
        >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
        >>> apply_policy(p, {"messages": [SystemMessage(content="old")], "tools": []})["messages"][0].content
        'Be exact.'
    """
    result = dict(request)
    messages = request.get("messages", [])
    tools = request.get("tools", [])
    result["messages"] = (
        apply_policy_to_messages(policy, messages)
        if policy.system_prompt is not None or policy.demonstrations
        else messages
    )
    result["tools"] = apply_policy_to_tools(policy, tools) if policy.tool_descriptions else tools
    return result
