"""LangChain <-> OpenAI-style conversions and the policy applied to a LangChain request, in one place.

Example:
    >>> from langchain_core.messages import HumanMessage
    >>> to_openai_messages([HumanMessage("hi")])
    [{'role': 'user', 'content': 'hi'}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.messages import convert_to_openai_messages as _to_openai

from agentgym_runtime.policy.apply import apply_to_messages, apply_to_tool_definitions
from agentgym_runtime.recording.policy import Policy

_INDEX_KEY = "__agentgym_index__"
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool", "function": "function"}


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI chat dicts (what spans record and policies operate on).

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> to_openai_messages([HumanMessage("hi")])
        [{'role': 'user', 'content': 'hi'}]
    """
    return _to_openai(list(messages))


def tool_definitions(tools: Any) -> list[dict[str, Any]] | None:
    """``{name, description, parameters}`` from the tools a model was bound with (any provider shape).

    Example:
        >>> tool_definitions([{"type": "function", "function": {"name": "f", "parameters": {}}}])
        [{'name': 'f', 'description': None, 'parameters': {}}]
    """
    if not isinstance(tools, Sequence) or isinstance(tools, str | bytes):
        return None
    result: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, Mapping):
            spec = tool.get("function") if isinstance(tool.get("function"), Mapping) else tool
            assert isinstance(spec, Mapping)
            name = spec.get("name")
            if not name:
                continue
            parameters = spec.get("parameters", spec.get("input_schema", spec.get("args_schema")))
            result.append({"name": str(name), "description": spec.get("description"), "parameters": parameters})
        else:
            name = getattr(tool, "name", None)
            if isinstance(name, str):
                schema = getattr(tool, "tool_call_schema", None)
                parameters = None
                if schema is not None and hasattr(schema, "model_json_schema"):
                    parameters = schema.model_json_schema()
                result.append(
                    {"name": name, "description": getattr(tool, "description", None), "parameters": parameters}
                )
    return result


def apply_policy_to_messages(policy: Policy, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``messages`` with ``policy``'s system prompt and demonstrations (``policy/apply.py`` rules).

    Messages the policy leaves alone are returned as the same objects; only the system message
    is copied with the new content, and demonstrations are built as new messages.

    Example:
        >>> from langchain_core.messages import HumanMessage, SystemMessage
        >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
        >>> [m.content for m in apply_policy_to_messages(p, [SystemMessage("old"), HumanMessage("hi")])]
        ['Be exact.', 'hi']
    """
    stand_ins = [
        {"role": _ROLES.get(m.type, m.type), "content": m.content, _INDEX_KEY: i} for i, m in enumerate(messages)
    ]
    result: list[BaseMessage] = []
    for item in apply_to_messages(policy, stand_ins):
        index = item.get(_INDEX_KEY)
        if index is None:
            result.extend(convert_to_messages([item]))
            continue
        original = messages[index]
        if item["content"] is stand_ins[index]["content"]:
            result.append(original)
        else:
            result.append(original.model_copy(update={"content": item["content"]}))
    return result


def _apply_to_tools(policy: Policy, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    tools = kwargs.get("tools")
    if not policy.tool_descriptions or not isinstance(tools, Sequence) or isinstance(tools, str):
        return dict(kwargs)
    if not all(isinstance(t, Mapping) for t in tools):
        return dict(kwargs)
    return {**kwargs, "tools": apply_to_tool_definitions(policy, tools)}


def apply_policy(policy: Policy, request: Any) -> Any:
    """``request`` with ``policy`` applied: a message list, or ``{"messages", "tools", ...}`` (a new dict).

    The one place a LangChain request gets a policy: the chat-model hook and
    :meth:`LangChainAdapter.apply_policy` both call it. Tools are changed only when they are
    OpenAI-style dicts (what ``bind_tools`` hands the model); other keys are kept.

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
        >>> [m.type for m in apply_policy(p, [HumanMessage("hi")])]
        ['system', 'human']
    """
    if isinstance(request, Mapping):
        result = _apply_to_tools(policy, request)
        if "messages" in result:
            result["messages"] = apply_policy_to_messages(policy, convert_to_messages(result["messages"]))
        return result
    return apply_policy_to_messages(policy, convert_to_messages(request))
