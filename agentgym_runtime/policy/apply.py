"""Framework-neutral policy application on OpenAI-style messages and tool definitions.

Adapters convert their framework's request to these shapes (or call the
pieces they need), so what a policy *means* is defined once:

* ``system_prompt`` replaces the first system message (or is inserted first);
* ``demonstrations`` become user / assistant(tool_calls) / tool / assistant
  messages right after the system message;
* ``tool_descriptions`` replace the description of the named tools.

Example:
    >>> from agentgym_runtime.recording.policy import Policy
    >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
    >>> apply_to_messages(p, [{"role": "user", "content": "hi"}])
    [{'role': 'system', 'content': 'Be exact.'}, {'role': 'user', 'content': 'hi'}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agentgym_runtime.recording.policy import Demonstration, Policy


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def demonstration_messages(demonstrations: Sequence[Demonstration]) -> list[dict[str, Any]]:
    """Few-shot examples as OpenAI chat messages (ids ``demo{i}_{j}``)."""
    messages: list[dict[str, Any]] = []
    for i, demo in enumerate(demonstrations):
        messages.append({"role": "user", "content": _text(demo.input)})
        if demo.tool_calls:
            calls = [
                {
                    "id": f"demo{i}_{j}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
                }
                for j, call in enumerate(demo.tool_calls)
            ]
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            for j, call in enumerate(demo.tool_calls):
                messages.append({"role": "tool", "tool_call_id": f"demo{i}_{j}", "content": _text(call.result)})
        if demo.output is not None:
            messages.append({"role": "assistant", "content": _text(demo.output)})
    return messages


def apply_to_messages(policy: Policy | None, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return ``messages`` with the policy's system prompt and demonstrations applied."""
    result = [dict(m) for m in messages]
    if policy is None or policy.is_baseline:
        return result
    system_index = next((i for i, m in enumerate(result) if m.get("role") == "system"), None)
    if policy.system_prompt is not None:
        if system_index is None:
            result.insert(0, {"role": "system", "content": policy.system_prompt})
            system_index = 0
        else:
            result[system_index] = {**result[system_index], "content": policy.system_prompt}
    if policy.demonstrations:
        at = 0 if system_index is None else system_index + 1
        result[at:at] = demonstration_messages(policy.demonstrations)
    return result


def apply_to_tool_definitions(policy: Policy | None, tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return tool definitions with the policy's descriptions applied.

    Accepts ``{"name", "description", "parameters"}`` and OpenAI's
    ``{"type": "function", "function": {...}}`` forms.
    """
    result = []
    overrides = policy.tool_descriptions if policy is not None else {}
    for tool in tools:
        item = dict(tool)
        if "function" in item and isinstance(item["function"], Mapping):
            function = dict(item["function"])
            if function.get("name") in overrides:
                function["description"] = overrides[function["name"]]
            item["function"] = function
        elif item.get("name") in overrides:
            item["description"] = overrides[item["name"]]
        result.append(item)
    return result
