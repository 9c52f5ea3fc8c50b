"""The policy on CrewAI's messages: ReAct demonstrations, backstory and tool-description swaps, undo.

Example:
    >>> r = CrewAIRequest([{"role": "user", "content": "hi"}], backstory="You help.")
    >>> r.backstory
    'You help.'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentgym_runtime.policy.apply import demonstration_messages
from agentgym_runtime.recording.policy import Policy


@dataclass(frozen=True, slots=True)
class CrewAIRequest:
    """What one CrewAI LLM call sends: OpenAI-style messages plus what identifies the agent.

    Attributes:
        messages: The call's messages (``{"role", "content"}`` dicts).
        backstory: The agent's backstory as rendered in the system prompt (replaced by
            ``Policy.system_prompt``).
        tool_names: Names of the tools rendered in the prompt.

    Example:
        >>> r = CrewAIRequest([{"role": "user", "content": "hi"}], backstory="You help.")
        >>> r.backstory
        'You help.'
    """

    messages: list[dict[str, Any]]
    backstory: str | None = None
    tool_names: tuple[str, ...] = field(default_factory=tuple)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def react_demonstrations(policy: Policy) -> list[dict[str, Any]]:
    """The policy's demonstrations as CrewAI ReAct-format chat messages.

    Built from :func:`agentgym_runtime.policy.apply.demonstration_messages`; each tool call
    becomes an assistant ``Thought/Action/Action Input/Observation`` step (CrewAI keeps the
    observation in the assistant message), the answer a ``Final Answer`` step.

    Example:
        >>> from agentgym_runtime.recording.policy import Demonstration, Policy, ToolCallExample
        >>> demo = Demonstration(input="order 7?", tool_calls=(ToolCallExample(name="get_order",
        ...     arguments={"order_id": 7}, result="shipped"),), output="shipped")
        >>> [m["role"] for m in react_demonstrations(Policy(agent="a", version=1, demonstrations=(demo,)))]
        ['user', 'assistant', 'assistant']
    """
    result: list[dict[str, Any]] = []
    pending: dict[str, dict[str, Any]] = {}
    for message in demonstration_messages(policy.demonstrations):
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                pending[call["id"]] = call["function"]
        elif role == "tool":
            function = pending.pop(message["tool_call_id"], {})
            name = function.get("name", "")
            result.append(
                {
                    "role": "assistant",
                    "content": (
                        f"Thought: I should use the {name} tool.\nAction: {name}\n"
                        f"Action Input: {function.get('arguments', '{}')}\nObservation: {_text(message['content'])}"
                    ),
                }
            )
        elif role == "assistant":
            result.append(
                {
                    "role": "assistant",
                    "content": f"Thought: I now know the final answer\nFinal Answer: {_text(message['content'])}",
                }
            )
        else:
            result.append({"role": role, "content": _text(message["content"])})
    return result


def replace_tool_description(text: str, name: str, description: str) -> str:
    r"""Replace ``name``'s description in CrewAI's rendered tool list (``Tool Name/Arguments/Description``).

    The arguments are one line in crewai 1.6 and an indented JSON schema over many lines in 1.15.

    Example:
        >>> rendered = 'Tool Name: a\nTool Arguments: {\n  "x": 1\n}\nTool Description: Old.\nTool Name: b'
        >>> replace_tool_description(rendered, "a", "New.").splitlines()[-2:]
        ['Tool Description: New.', 'Tool Name: b']
    """
    pattern = re.compile(
        r"(Tool Name: "
        + re.escape(name)
        + r"\nTool Arguments: (?:(?!\nTool Name: ).)*?\nTool Description: )(.*?)(?=\nTool Name: |\n\n|$)",
        re.DOTALL,
    )
    return pattern.sub(lambda m: m.group(1) + description, text, count=1)


def policy_messages(policy: Policy, request: CrewAIRequest) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    """The policy-applied messages, and per changed/inserted item (by id) its original (``None``: inserted).

    Unchanged messages stay the same objects, so the change can be undone in place.
    """
    messages = list(request.messages)
    origin: dict[int, Any] = {}
    system_index = next((i for i, m in enumerate(messages) if m.get("role") == "system"), None)
    # Without a system prompt CrewAI renders role, backstory and tools into the first user message.
    prompt_index = system_index if system_index is not None else (0 if messages else None)
    prompt_placed = policy.system_prompt is None
    if prompt_index is not None and (policy.system_prompt is not None or policy.tool_descriptions):
        original = messages[prompt_index]
        content = original.get("content")
        if isinstance(content, str):
            new_content = content
            backstory = request.backstory
            if policy.system_prompt is not None and backstory and backstory in new_content:
                new_content = new_content.replace(backstory, policy.system_prompt, 1)
                prompt_placed = True
            elif policy.system_prompt is not None and system_index is not None:
                new_content = f"{policy.system_prompt}\n{new_content}"
                prompt_placed = True
            for name, description in policy.tool_descriptions.items():
                new_content = replace_tool_description(new_content, name, description)
            if new_content != content:
                changed = {**original, "content": new_content}
                messages[prompt_index] = changed
                origin[id(changed)] = original
    if not prompt_placed:
        system = {"role": "system", "content": policy.system_prompt}
        messages.insert(0, system)
        origin[id(system)] = None
        system_index = 0
    if policy.demonstrations:
        at = 0 if system_index is None else system_index + 1
        demos = react_demonstrations(policy)
        for demo in demos:
            origin[id(demo)] = None
        messages[at:at] = demos
    return messages, origin


def restore_messages(messages: list[Any], origin: Mapping[int, Any]) -> None:
    """Undo :func:`_policy_messages` in place, keeping whatever CrewAI appended meanwhile."""
    restored: list[Any] = []
    for item in messages:
        if id(item) in origin:
            original = origin[id(item)]
            if original is not None:
                restored.append(original)
        else:
            restored.append(item)
    messages[:] = restored


__all__ = ["CrewAIRequest", "policy_messages", "react_demonstrations", "replace_tool_description", "restore_messages"]
