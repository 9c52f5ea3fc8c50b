r"""The demo model's serving format: what the shared engine needs to know of it, and nothing more.

The demo model is served like any model, by :class:`~agentgym_runtime.models.engine.ChatEngine`
(per-call LoRA adapter of the pinned policy, loaded once, batches, streaming) and the framework chat
models over it. :class:`DemoFormat` is the one thing it brings of its own
(:class:`~agentgym_runtime.models.formats.ServingFormat`): the conversation becomes its plain-text
prompt (:func:`~agentgym_runtime.demo.model.format.render_prompt`, entities delexicalised into slots
and the prompt cut from the left to fit the context), its completion is decoded up to its eos with
the slots filled back in, and parsed as one JSON call or answer
(:func:`~agentgym_runtime.demo.model.format.parse_completion`).

Framework tool errors are shown in the model's own error lines (:func:`error_observation`): LangGraph's
``ToolNode`` wraps them in its own sentences, the demo model learnt the compact lines agentgym's tools
write, and the offline evaluator shows those too, so live traffic and the evaluation see the same prompts.
Nothing here imports torch or a framework.

Example:
    >>> fmt = DemoFormat(tokenizer=None, context=256)
    >>> print(fmt.render([{"role": "user", "content": "Where is order 7?"}], [{"name": "get_order"}]))
    tools: get_order
    user: Where is order 7?
    next:
    >>> fmt.parse('{"name": "get_order", "arguments": {"order_id": 7}}').tool_calls[0].arguments
    {'order_id': 7}
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agentgym_runtime.demo.model.format import (
    Step,
    delexicalize,
    parse_completion,
    relexicalize,
    render_call,
    render_prompt,
)
from agentgym_runtime.models.chat_format import InvalidToolCall, ParsedCompletion, ToolCall
from agentgym_runtime.models.formats import EncodedPrompt, HeldContent, StreamFilter

# LangGraph's ToolNode wraps tool errors in its own sentences (langgraph.prebuilt.tool_node's
# INVALID_TOOL_NAME_ERROR_TEMPLATE and TOOL_INVOCATION_ERROR_TEMPLATE).
_UNKNOWN_TOOL = re.compile(r"^Error: (?P<name>.+?) is not a valid tool, try one of \[(?P<tools>.*)\]\.?\s*$", re.S)
_INVALID_ARGUMENTS = re.compile(
    r"^Error invoking tool '(?P<name>[^']*)' with kwargs .*? with error:\n (?P<error>.*?)\n"
    r" Please fix the error and try again\.?\s*$",
    re.S,
)


def error_observation(content: str) -> str:
    r"""A framework's tool-error text in the demo model's own error format (other text unchanged).

    Example:
        >>> error_observation("Error: refund is not a valid tool, try one of [get_order, cancel_order].")
        "unknown tool 'refund'; available tools: cancel_order, get_order"
        >>> error_observation("Error invoking tool 'get_order' with kwargs {} with error:\n order_id: Field required"
        ...                   "\n Please fix the error and try again.")
        "invalid arguments for tool 'get_order': order_id: Field required"
    """
    unknown = _UNKNOWN_TOOL.match(content)
    if unknown:
        available = sorted(t.strip() for t in unknown["tools"].split(",") if t.strip())
        return f"unknown tool {unknown['name']!r}; available tools: {', '.join(available)}"
    invalid = _INVALID_ARGUMENTS.match(content)
    if invalid:
        details = "; ".join(line.strip() for line in invalid["error"].splitlines() if line.strip())
        return f"invalid arguments for tool {invalid['name']!r}: {details}"
    return content


def _observation(content: Any, *, error: bool = False) -> str:
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    if error:
        return error_observation(text)
    try:
        value = ast.literal_eval(text)  # LangChain renders dict results with repr(); show them as JSON
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return text


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # content parts
        return "".join(str(p.get("text") or "") if isinstance(p, Mapping) else str(p) for p in content)
    return "" if content is None else str(content)


def _call_text(call: Mapping[str, Any]) -> str:
    """A readable call as the model wrote it (arguments re-read from the OpenAI message's JSON text)."""
    function = call.get("function")
    spec: Mapping[str, Any] = function if isinstance(function, Mapping) else call
    raw = spec.get("arguments", {})
    arguments = json.loads(raw) if isinstance(raw, str) else raw
    return render_call(str(spec.get("name")), arguments if isinstance(arguments, Mapping) else {})


def _tool_name(tool: Any) -> str | None:
    if isinstance(tool, Mapping):
        if isinstance(tool.get("function"), Mapping):
            return str(tool["function"].get("name"))
        return str(tool.get("name")) if tool.get("name") else None
    return getattr(tool, "name", None)


def render_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None) -> str:
    """The demo model's prompt for a conversation in OpenAI's style (the first user message is the task).

    Each tool result is paired with the call it answers (by id, else the oldest unanswered one); a call
    that could not be read is shown as the model wrote it.

    Example:
        >>> print(render_messages([{"role": "user", "content": "hi"}], [{"name": "ping"}]))
        tools: ping
        user: hi
        next:
    """
    task = next((m for m in messages if m.get("role") == "user"), None)
    history: list[Step] = []
    pending: dict[str, str] = {}
    for message in messages:
        if message.get("role") == "assistant":
            for call in message.get("tool_calls") or ():
                pending[call.get("id") or ""] = _call_text(call)
            for bad in message.get("invalid_tool_calls") or ():
                pending[bad.get("id") or ""] = (
                    json.dumps({"name": bad.get("name")})[:-1] + f', "arguments": {bad.get("arguments")}'
                )
        elif message.get("role") == "tool":
            completion = pending.pop(message.get("tool_call_id") or "", None) or next(iter(pending.values()), "")
            failed = message.get("status") == "error"
            history.append(Step(completion, _observation(message.get("content"), error=failed), error=failed))
    names = [t for t in (_tool_name(t) for t in tools or ()) if t]
    return render_prompt(_text(task.get("content")) if task is not None else "", names, history)


class DemoFormat:
    """The demo model's :class:`~agentgym_runtime.models.formats.ServingFormat` (module docstring).

    Args:
        tokenizer: The demo model's tokenizer (eos ends a completion).
        context: Tokens a prompt may take (the model's positions less the completion budget); longer
            prompts keep their end.

    Example:
        >>> DemoFormat(tokenizer=None, context=216).parse('{"answer": "shipped"}').content
        'shipped'
    """

    def __init__(self, tokenizer: Any, context: int) -> None:
        self.tokenizer = tokenizer
        self.context = context

    def render(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None) -> str:
        """The plain-text prompt (:func:`render_messages`)."""
        return render_messages(messages, tools)

    def encode(self, prompt: str) -> EncodedPrompt:
        """The delexicalised prompt's last ``context`` ids; the slot table is kept for decoding."""
        text, slots = delexicalize(prompt)
        return EncodedPrompt(self.tokenizer.encode(text)[-self.context :], slots)

    def stop_strings(self, stop: Sequence[str] | None) -> tuple[str, ...]:
        """None: the model ends its completion with eos (caller's stop strings are not used)."""
        return ()

    def decode(self, new: Sequence[int], prompt: EncodedPrompt, stop: Sequence[str] | None) -> tuple[str, int]:
        """The text before eos with the slots filled in; billed: the tokens before eos, and the eos."""
        tokens = list(new)
        eos = self.tokenizer.eos_token_id
        if eos in tokens:
            tokens = tokens[: tokens.index(eos)]
        # The eos is billed even when the budget ran out before it: the demo's cost numbers always counted so.
        text = relexicalize(self.tokenizer.decode(tokens, skip_special_tokens=True), prompt.state or {})
        return text.strip(), len(tokens) + 1

    def parse(self, text: str) -> ParsedCompletion:
        """One call (readable or not) or an answer; anything else is content as written."""
        parsed = parse_completion(text)
        if parsed.kind == "tool_call" and parsed.arguments is not None:
            return ParsedCompletion("", tool_calls=(ToolCall(parsed.name or "", parsed.arguments),))
        if parsed.kind == "tool_call":
            invalid = InvalidToolCall(parsed.raw_arguments, parsed.error or "unreadable call", parsed.name)
            return ParsedCompletion("", invalid_tool_calls=(invalid,))
        if parsed.kind == "answer" and parsed.answer is not None:
            return ParsedCompletion(parsed.answer)
        return ParsedCompletion(text)

    def content_filter(self, stop: Sequence[str] | None) -> StreamFilter:
        """Everything held to the end: streamed pieces still hold slot tokens."""
        return HeldContent()


__all__ = ["DemoFormat", "error_observation", "render_messages"]
