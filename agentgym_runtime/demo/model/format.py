"""The demo model's text format, shared by the model, its evaluator and the GRPO trainer.

Nothing here imports torch: a prompt is plain text, a completion is one line of JSON.

Prompt::

    tools: get_order refund_order ...
    user: Hi, this is Ana. What is the status of order 1234?
    call: {"name": "get_order", "arguments": {"order_id": 1234}}
    result: {"order_id": 1234, "status": "shipped", ...}
    next:

Completion: ``{"name": TOOL, "arguments": {...}}`` (a tool call) or ``{"answer": TEXT}``.

Example:
    >>> from agentgym_runtime.demo.model.format import parse_completion
    >>> parse_completion('{"name": "get_order", "arguments": {"order_id": 7}}').arguments
    {'order_id': 7}
    >>> parse_completion('{"name": "get_order", "arguments": {"order_id": 7}').error
    'arguments are not valid JSON'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentgym_runtime.errors import ToolArgumentsError
from agentgym_runtime.scenarios.base import ExpectedCall, Scenario, Task
from agentgym_runtime.semconv import ToolOutcome
from agentgym_runtime.tools import Tool

#: Bump when the format changes: it is part of the demo model's cache key.
FORMAT_VERSION = 2
MAX_OBSERVATION_CHARS = 96


@dataclass(frozen=True)
class Step:
    """One earlier turn shown in a prompt: the model's completion and what came back.

    Attributes:
        completion: The completion text the model produced (a tool call).
        observation: The tool's result (JSON text) or the error message.
        error: Whether ``observation`` is an error.
    """

    completion: str
    observation: str
    error: bool = False


@dataclass(frozen=True)
class ParsedCompletion:
    """A completion, parsed.

    Attributes:
        kind: ``"tool_call"``, ``"answer"`` or ``"empty"`` (nothing usable).
        name: The tool name (tool calls; also for malformed ones when it can be read).
        arguments: Parsed arguments, ``None`` when they did not parse as a JSON object.
        raw_arguments: The arguments' text as written.
        answer: The final answer's text.
        error: Why the completion did not parse, if it did not.
    """

    kind: Literal["tool_call", "answer", "empty"]
    name: str | None = None
    arguments: dict[str, Any] | None = None
    raw_arguments: str = ""
    answer: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class CompletionScore:
    """How a single tool-call completion went, executed on a fresh world.

    Attributes:
        outcome: A :class:`~agentgym_runtime.semconv.ToolOutcome` value, or ``"no_call"``.
        matches_expected: The call equals the task's next expected call.
        reward: In ``[0, 1]``: 1 for the expected call succeeding, 0.5 for another successful call,
            0.2 for a tool error, 0.1 for invalid arguments, 0 otherwise.
        result: The tool's result when it ran.
        message: The error message, if any.
    """

    outcome: str
    matches_expected: bool
    reward: float
    result: Any = None
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _tool_name(item: Tool[..., Any] | Mapping[str, Any] | str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Tool):
        return item.name
    if "function" in item and isinstance(item["function"], Mapping):
        return str(item["function"]["name"])
    return str(item["name"])


def render_prompt(
    task: Task | str, tools: Sequence[Tool[..., Any] | Mapping[str, Any] | str], history: Sequence[Step] = ()
) -> str:
    """The prompt the demo model completes for ``task`` with ``tools`` after ``history``.

    Example:
        >>> print(render_prompt("hi", ["ping"]))
        tools: ping
        user: hi
        next:
    """
    text = task.prompt if isinstance(task, Task) else task
    lines = [f"tools: {' '.join(_tool_name(t) for t in tools)}", f"user: {' '.join(text.split())}"]
    for step in history:
        lines.append(f"call: {step.completion}")
        tag = "error" if step.error else "result"
        lines.append(f"{tag}: {_short(step.observation)}")
    lines.append("next:")
    return "\n".join(lines)


def _short(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_OBSERVATION_CHARS else flat[: MAX_OBSERVATION_CHARS - 3] + "..."


def render_call(name: str, arguments: Mapping[str, Any]) -> str:
    """A tool-call completion's text.

    Example:
        >>> render_call("get_order", {"order_id": 7})
        '{"name": "get_order", "arguments": {"order_id": 7}}'
    """
    return json.dumps({"name": name, "arguments": dict(arguments)})


def render_answer(answer: str) -> str:
    """A final-answer completion's text."""
    return json.dumps({"answer": answer})


def render_observation(result: Any) -> str:
    """A tool result as the prompt shows it."""
    try:
        return json.dumps(result, default=str)
    except (TypeError, ValueError):
        return str(result)


_ENTITY = re.compile(
    r"(?P<s><[enpw]\d+>)"  # a slot already: left as it is (delexicalising twice changes nothing)
    r"|(?P<p>[A-Za-z_][\w.-]*(?:/[\w.-]*\w)+)"  # file paths (a slash inside a word): billing/tax.py
    r"|(?P<e>[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})"  # emails
    r"|(?P<n>\d+)"  # numbers (digit runs)
    r"|(?<=[a-z,\"] )(?P<w>[A-Z][a-z]+)"  # capitalised words inside a sentence: names
    r"|(?<=\")(?P<q>[A-Z][a-z]+)"  # capitalised JSON strings: names in tool results
)
_SLOT = re.compile(r"<([enpw])(\d+)>")


def delexicalize(text: str, slots: dict[str, str] | None = None, *, grow: bool = True) -> tuple[str, dict[str, str]]:
    """Replace entities (numbers, emails, file paths, capitalised names) with slot tokens like ``<n1>``.

    The demo model reads and writes slots instead of copying digits and names character by
    character (a tiny model learns structure fast but copying slowly); :func:`relexicalize`
    puts the values back. ``slots`` maps slot token to value and is extended in place.

    Example:
        >>> delexicalize("Hi, this is Ana. Where is order 1234? Mail ana@example.com")[0]
        'Hi, this is <w1>. Where is order <n1>? Mail <e1>'
        >>> delexicalize("order <n1>")
        ('order <n1>', {})
    """
    slots = {} if slots is None else slots
    by_value = {v: k for k, v in slots.items()}
    counts = {kind: sum(1 for k in slots if k[1] == kind) for kind in "enpw"}

    def replace(match: re.Match[str]) -> str:
        kind = match.lastgroup or "w"
        kind = "w" if kind == "q" else kind
        value = match.group(0)
        if kind == "s":
            return value
        token = by_value.get(value)
        if token is None:
            if not grow:
                return value
            counts[kind] += 1
            token = f"<{kind}{counts[kind]}>"
            slots[token] = value
            by_value[value] = token
        return token

    return _ENTITY.sub(replace, text), slots


def relexicalize(text: str, slots: dict[str, str]) -> str:
    """Put the values of :func:`delexicalize`'s slots back (unknown slots stay as written).

    Example:
        >>> relexicalize('{"order_id": <n1>}', {"<n1>": "1234"})
        '{"order_id": 1234}'
    """
    return _SLOT.sub(lambda m: slots.get(m.group(0), m.group(0)), text)


_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')
_ARGS = re.compile(r'"arguments"\s*:\s*(.*)$', re.S)


def parse_completion(text: str) -> ParsedCompletion:
    """Parse a completion into a tool call or an answer; malformed calls keep their raw arguments.

    Example:
        >>> parse_completion('{"answer": "shipped"}').answer
        'shipped'
    """
    stripped = text.strip()
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        if "answer" in data and "name" not in data:
            return ParsedCompletion(kind="answer", answer=str(data["answer"]))
        name = data.get("name")
        if isinstance(name, str) and name:
            arguments = data.get("arguments", {})
            raw = json.dumps(arguments)
            if isinstance(arguments, dict):
                return ParsedCompletion(kind="tool_call", name=name, arguments=arguments, raw_arguments=raw)
            return ParsedCompletion(
                kind="tool_call", name=name, raw_arguments=raw, error="arguments are not a JSON object"
            )
    name_match = _NAME.search(stripped)
    if name_match and name_match.group(1):
        args_match = _ARGS.search(stripped)
        raw = args_match.group(1) if args_match else ""
        return ParsedCompletion(
            kind="tool_call", name=name_match.group(1), raw_arguments=raw, error="arguments are not valid JSON"
        )
    return ParsedCompletion(kind="empty", error="no tool call or answer in the completion")


def execute_call(parsed: ParsedCompletion, tools: Sequence[Tool[..., Any]]) -> tuple[str, Any, str | None]:
    """Run a parsed tool call against ``tools`` without recording: ``(outcome, result, message)``.

    The outcome is a :class:`~agentgym_runtime.semconv.ToolOutcome` value (``"no_call"`` for answers).
    """
    if parsed.kind != "tool_call" or parsed.name is None:
        return "no_call", None, parsed.error
    by_name = {t.name: t for t in tools}
    found = by_name.get(parsed.name)
    if found is None:
        return (
            str(ToolOutcome.UNKNOWN_TOOL),
            None,
            f"unknown tool {parsed.name!r}; available tools: " + ", ".join(sorted(by_name)),
        )
    if parsed.arguments is None:
        return str(ToolOutcome.INVALID_ARGUMENTS), None, f"invalid arguments for tool {parsed.name!r}: {parsed.error}"
    try:
        validated = found.validate(parsed.arguments)
    except ToolArgumentsError as exc:
        return str(ToolOutcome.INVALID_ARGUMENTS), None, str(exc)
    try:
        result = found.fn(**validated)
    except Exception as exc:
        return str(ToolOutcome.TOOL_ERROR), None, f"{type(exc).__name__}: {exc}"
    return str(ToolOutcome.OK), result, None


def _same_call(parsed: ParsedCompletion, expected: ExpectedCall | None) -> bool:
    return (
        expected is not None
        and parsed.name == expected.name
        and parsed.arguments is not None
        and json.dumps(parsed.arguments, sort_keys=True) == json.dumps(expected.arguments, sort_keys=True)
    )


_REWARDS = {
    str(ToolOutcome.OK): 0.5,
    str(ToolOutcome.TOOL_ERROR): 0.2,
    str(ToolOutcome.INVALID_ARGUMENTS): 0.1,
}


def score_completion(
    task: Task,
    completion: str | ParsedCompletion,
    tools: Sequence[Tool[..., Any]] | None = None,
    *,
    step: int = 0,
    scenario: Scenario | None = None,
) -> CompletionScore:
    """Score the completion of ``task``'s tool-call step ``step`` by executing it on a fresh world.

    The completion may be the model's raw output with slot tokens (``<n1>``): they are filled
    from the task's first-step prompt (:func:`delexicalize` of :func:`render_prompt`).

    Args:
        task: The task.
        completion: The completion text (or its parse).
        tools: The tools to run it with; default: the task scenario's tools on ``new_world(task.world_seed)``.
        step: Which expected call the completion should make.
        scenario: The task's scenario (default: looked up by ``task.scenario``).

    Example:
        >>> from agentgym_runtime.scenarios import get_scenario
        >>> task = get_scenario("customer_support").tasks("train", 1)[0]
        >>> good = render_call(task.expected_calls[0].name, task.expected_calls[0].arguments)
        >>> score_completion(task, good).reward, score_completion(task, '{"name": "nope"}').outcome
        (1.0, 'unknown_tool')
        >>> slotted = delexicalize(good, delexicalize(task.prompt)[1], grow=False)[0]
        >>> "<n1>" in slotted, score_completion(task, slotted).reward
        (True, 1.0)
    """
    if tools is None:
        if scenario is None:
            from agentgym_runtime.scenarios.registry import get_scenario

            scenario = get_scenario(task.scenario)
        tools = scenario.tools(scenario.new_world(task.world_seed))
    if isinstance(completion, str) and _SLOT.search(completion):
        # A completion sampled straight from the model (e.g. by the GRPO trainer) still holds slot
        # tokens: put back the values of the task's first-step prompt.
        completion = relexicalize(completion, delexicalize(render_prompt(task, tools))[1])
    parsed = parse_completion(completion) if isinstance(completion, str) else completion
    expected = task.expected_calls[step] if step < len(task.expected_calls) else None
    outcome, result, message = execute_call(parsed, tools)
    matches = outcome == str(ToolOutcome.OK) and _same_call(parsed, expected)
    reward = 1.0 if matches else _REWARDS.get(outcome, 0.0)
    return CompletionScore(outcome=outcome, matches_expected=matches, reward=reward, result=result, message=message)
