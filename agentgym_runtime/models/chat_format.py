"""Chat prompts and tool calls in a model family's own format.

One module turns what a ``chat`` span recorded (OpenAI-style messages and tool definitions) into the
text a model sees, and a model's completion back into tool calls, so that training (``sft``/``grpo``)
and serving (the in-process chat models) agree on every byte:

* :func:`render_chat` renders messages with the tokenizer's **own chat template**. When the template
  supports tools (probed by rendering a tool and looking for it), the tool definitions go to the
  template (``apply_chat_template(tools=...)``) and assistant tool calls stay structured. When it does
  not (SmolLM2's plain ChatML, for one), the tools go into a **tool block** in the system message
  (:func:`tool_block`), an assistant's tool calls become its text (:func:`render_tool_calls`), and
  tool results become a user turn of ``<tool_response>`` blocks.
* :func:`parse_completion` reads tool calls in the four formats of :data:`TOOL_CALL_FORMATS`:

  ========  ================================================================
  hermes    ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Hermes, Qwen, ChatML)
  llama3    ``{"name": ..., "parameters": {...}}`` (Llama 3.x JSON tool calling)
  mistral   ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]`` (and ``[TOOL_CALLS]name[ARGS]{...}``)
  json      ``{"name": ..., "arguments": {...}}`` or a list of them, as the whole completion
  ========  ================================================================

  A completion that is not a tool call is returned as text (``content``), never an error; a call
  whose JSON is broken comes back in ``invalid_tool_calls`` with the reason.
* :func:`detect_format` picks the format from the template and vocabulary; every function takes an
  explicit ``fmt`` to override it.

Nothing here imports transformers: a tokenizer is any object with ``chat_template`` and
``apply_chat_template`` (a ``PreTrainedTokenizerBase``).

Example:
    >>> from agentgym_runtime.models.chat_format import ToolCall, parse_completion, render_tool_calls
    >>> text = render_tool_calls([ToolCall("get_order", {"order_id": 7})], "hermes")
    >>> print(text)
    <tool_call>
    {"name": "get_order", "arguments": {"order_id": 7}}
    </tool_call>
    >>> parse_completion(text, "hermes").tool_calls[0].arguments
    {'order_id': 7}
    >>> parse_completion("Your order has shipped.", "hermes").content
    'Your order has shipped.'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from agentgym_runtime.errors import ConfigurationError

ToolCallFormat = Literal["hermes", "llama3", "mistral", "json"]
#: Every tool-call format :func:`parse_completion` and :func:`render_tool_calls` know.
TOOL_CALL_FORMATS: tuple[ToolCallFormat, ...] = get_args(ToolCallFormat)

_PROBE_TOOL = "agentgym_probe_tool"
_HERMES_OPEN, _HERMES_CLOSE = "<tool_call>", "</tool_call>"
_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.S)
_MISTRAL_TAG = "[TOOL_CALLS]"
_MISTRAL_ARGS = "[ARGS]"
_NAME = re.compile(r'"name"\s*:\s*"([^"\\]*)"')
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)

# What the template source says about its family, most specific first.
_FORMAT_MARKERS: tuple[tuple[ToolCallFormat, tuple[str, ...]], ...] = (
    ("hermes", ("<tool_call>",)),
    ("mistral", (_MISTRAL_TAG,)),
    ("llama3", ("<|python_tag|>", "<|eom_id|>", '"parameters"')),
)


class ChatTemplateError(ConfigurationError):
    """A model (tokenizer) has no chat template, or its template cannot render the conversation.

    Example:
        >>> str(ChatTemplateError("no template")).startswith("no template")
        True
    """


class PadTokenError(ConfigurationError):
    """A tokenizer has no pad token, so batches of prompts cannot be padded.

    Example:
        >>> issubclass(PadTokenError, ValueError)
        True
    """


@dataclass(frozen=True)
class ToolCall:
    """One tool call a model asked for.

    Attributes:
        name: The tool's name.
        arguments: The arguments, a JSON object.
        id: The call id, when the format or the conversation carries one.

    Example:
        >>> ToolCall("ping", {}).name
        'ping'
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class InvalidToolCall:
    """A tool call that could not be read (broken JSON, no name, arguments that are not an object).

    Attributes:
        text: The call's text as the model wrote it.
        error: Why it could not be read.
        name: The tool name, when it could still be read from the text.

    Example:
        >>> InvalidToolCall('{"name": "x"', "not valid JSON", "x").name
        'x'
    """

    text: str
    error: str
    name: str | None = None


@dataclass(frozen=True)
class ParsedCompletion:
    """A completion split into text and tool calls.

    Attributes:
        content: The text outside any tool call (the whole completion when it holds none), stripped.
        tool_calls: The tool calls, in order.
        invalid_tool_calls: Calls that were recognisably meant as tool calls but could not be read.

    Example:
        >>> ParsedCompletion("hello").is_tool_call
        False
    """

    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    invalid_tool_calls: tuple[InvalidToolCall, ...] = ()

    @property
    def is_tool_call(self) -> bool:
        """Whether the model asked for at least one tool (valid or not)."""
        return bool(self.tool_calls or self.invalid_tool_calls)


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer checks and format detection


def _model_name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def require_chat_template(tokenizer: Any, chat_template: str | None = None) -> str:
    """The chat template ``tokenizer`` renders with, or :class:`ChatTemplateError` naming the fix.

    Example:
        >>> class Bare:
        ...     name_or_path = "models/bare"
        ...     chat_template = None
        >>> require_chat_template(Bare())
        Traceback (most recent call last):
        ...
        agentgym_runtime.models.chat_format.ChatTemplateError: model 'models/bare' has no chat template ...
    """
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one renders chats
        template = template.get("default") or template.get("tool_use")
    if not isinstance(template, str) or not template.strip():
        raise ChatTemplateError(
            f"model {_model_name(tokenizer)!r} has no chat template ... (neither tokenizer_config.json's "
            "'chat_template' nor a chat_template.jinja file): use the model's instruct/chat variant, or set "
            "tokenizer.chat_template to a Jinja template (or pass chat_template=...)"
        )
    return template


def require_pad_token(tokenizer: Any) -> None:
    """Raise :class:`PadTokenError` (naming the fix) unless ``tokenizer`` has a pad token.

    Example:
        >>> class NoPad:
        ...     name_or_path = "models/nopad"
        ...     pad_token = None
        ...     eos_token = "</s>"
        >>> require_pad_token(NoPad())
        Traceback (most recent call last):
        ...
        agentgym_runtime.models.chat_format.PadTokenError: tokenizer of 'models/nopad' has no pad token ...
    """
    if getattr(tokenizer, "pad_token", None) is None:
        eos = getattr(tokenizer, "eos_token", None)
        fix = (
            f"set `tokenizer.pad_token = tokenizer.eos_token` ({eos!r})"
            if eos is not None
            else "add one with `tokenizer.add_special_tokens({'pad_token': '<pad>'})` and resize the embeddings"
        )
        raise PadTokenError(
            f"tokenizer of {_model_name(tokenizer)!r} has no pad token ... batched prompts cannot be padded: {fix}"
        )


_TOOL_SUPPORT: dict[str, bool] = {}


def supports_tools(tokenizer: Any, chat_template: str | None = None) -> bool:
    """Whether the chat template renders tool definitions passed as ``apply_chat_template(tools=...)``.

    Probed once per template: a conversation is rendered with one tool, and the template supports tools
    when the tool's name shows up in the text (a template that ignores ``tools`` drops it silently).

    Example:
        >>> class ChatML:
        ...     chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        ...     def apply_chat_template(self, messages, tools=None, **kwargs):
        ...         return "".join(m["content"] for m in messages)
        >>> supports_tools(ChatML())
        False
    """
    template = require_chat_template(tokenizer, chat_template)
    known = _TOOL_SUPPORT.get(template)
    if known is None:
        probe = {"type": "function", "function": {"name": _PROBE_TOOL, "description": "probe", "parameters": {}}}
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}],
                tools=[probe],
                chat_template=template,
                tokenize=False,
                add_generation_prompt=True,
            )
        except Exception:  # a template that fails on tools does not support them
            text = ""
        known = _TOOL_SUPPORT[template] = _PROBE_TOOL in str(text)
    return known


def detect_format(tokenizer: Any, chat_template: str | None = None) -> ToolCallFormat:
    """The tool-call format a model writes, read from its chat template and vocabulary.

    ``<tool_call>`` in the template means Hermes/Qwen; ``[TOOL_CALLS]`` in the template or vocabulary
    means Mistral; Llama 3's ``<|python_tag|>``/``"parameters"`` means Llama 3 JSON. A template with
    tool support but no marker gets plain ``json``; one without tool support (plain ChatML) gets
    ``hermes``, the format :func:`tool_block` then teaches it.

    Example:
        >>> class Qwen:
        ...     chat_template = "{% if tools %}<tool_call>{% endif %}"
        >>> detect_format(Qwen())
        'hermes'
    """
    template = require_chat_template(tokenizer, chat_template)
    for fmt, markers in _FORMAT_MARKERS:
        if any(marker in template for marker in markers):
            return fmt
    vocab = getattr(tokenizer, "get_vocab", None)
    if callable(vocab) and _MISTRAL_TAG in vocab():
        return "mistral"
    if hasattr(tokenizer, "apply_chat_template") and supports_tools(tokenizer, template):
        return "json"
    return "hermes"


def check_format(fmt: str) -> ToolCallFormat:
    """``fmt`` as a :data:`ToolCallFormat`, or :class:`ConfigurationError` listing the known ones.

    Example:
        >>> check_format("llama3")
        'llama3'
    """
    if fmt not in TOOL_CALL_FORMATS:
        raise ConfigurationError(f"unknown tool-call format {fmt!r}; known formats: {', '.join(TOOL_CALL_FORMATS)}")
    return fmt


# ---------------------------------------------------------------------------------------------------------------------
# Normalising recorded messages and tools


def normalize_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Tool definitions as chat templates expect them: ``{"type": "function", "function": {...}}``.

    Accepts recorded definitions (``{"name", "description", "parameters"}``) and OpenAI ones.

    Example:
        >>> normalize_tools([{"name": "ping", "parameters": {"type": "object"}}])[0]["function"]["name"]
        'ping'
    """
    out: list[dict[str, Any]] = []
    for tool in tools or ():
        spec = tool.get("function") if isinstance(tool.get("function"), Mapping) else tool
        assert isinstance(spec, Mapping)
        if not spec.get("name"):
            raise ConfigurationError(f"a tool definition has no name: {dict(tool)!r}")
        function: dict[str, Any] = {
            "name": str(spec["name"]),
            "description": str(spec.get("description") or ""),
            "parameters": dict(spec.get("parameters") or {"type": "object", "properties": {}}),
        }
        out.append({"type": "function", "function": function})
    return out


def _arguments(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, Mapping):
        raise ValueError(f"tool-call arguments are not a JSON object: {value!r}")
    return dict(value)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # OpenAI content parts
        return "".join(
            str(p.get("text") or p.get("content") or "") if isinstance(p, Mapping) else str(p) for p in content
        )
    return json.dumps(content, ensure_ascii=False)


def message_tool_calls(message: Mapping[str, Any]) -> list[ToolCall]:
    """The tool calls of a recorded assistant message (OpenAI ``tool_calls`` or flat ``{name, args}``).

    Example:
        >>> message_tool_calls({"role": "assistant", "tool_calls": [
        ...     {"id": "c1", "type": "function", "function": {"name": "ping", "arguments": "{}"}}]})
        [ToolCall(name='ping', arguments={}, id='c1')]
    """
    calls = []
    for call in message.get("tool_calls") or ():
        spec = call.get("function") if isinstance(call.get("function"), Mapping) else call
        raw = spec.get("arguments", spec.get("args", spec.get("parameters", {})))
        calls.append(ToolCall(str(spec["name"]), _arguments(raw), call.get("id")))
    return calls


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Recorded messages as chat templates expect them (text content, tool-call arguments as objects).

    Example:
        >>> normalize_messages([{"role": "assistant", "content": None, "tool_calls": [
        ...     {"id": "c1", "function": {"name": "ping", "arguments": '{"n": 1}'}}]}])[0]["tool_calls"]
        [{'id': 'c1', 'type': 'function', 'function': {'name': 'ping', 'arguments': {'n': 1}}}]
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        role = str(message.get("role") or "user")
        item: dict[str, Any] = {"role": role, "content": _text(message.get("content"))}
        calls = message_tool_calls(message) if role == "assistant" else []
        if calls:
            item["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
            ]
        for key in ("tool_call_id", "name"):
            if message.get(key) is not None:
                item[key] = message[key]
        out.append(item)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Rendering


_BLOCK_INSTRUCTIONS: dict[ToolCallFormat, str] = {
    "hermes": (
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    ),
    "llama3": (
        "To call a function, respond with only a JSON object of the form "
        '{"name": <function-name>, "parameters": <args-json-object>}.'
    ),
    "mistral": (
        "To call functions, respond with [TOOL_CALLS] followed by a JSON list of the form "
        '[{"name": <function-name>, "arguments": <args-json-object>}].'
    ),
    "json": (
        "To call a function, respond with only a JSON object of the form "
        '{"name": <function-name>, "arguments": <args-json-object>}.'
    ),
}


def tool_block(tools: Sequence[Mapping[str, Any]], fmt: ToolCallFormat = "hermes") -> str:
    """The system-message block that describes ``tools`` to a model whose template has no tool support.

    Its wording follows Qwen's own tool prompt, with the call syntax of ``fmt``; models of the ChatML
    family have seen it in training.

    Example:
        >>> print(tool_block([{"name": "ping"}]).splitlines()[0])
        # Tools
    """
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in normalize_tools(tools))
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{lines}\n</tools>\n\n"
        + _BLOCK_INSTRUCTIONS[check_format(fmt)]
    )


def render_tool_calls(calls: Sequence[ToolCall], fmt: ToolCallFormat) -> str:
    """The text a model of format ``fmt`` writes to ask for ``calls`` (what :func:`parse_completion` reads).

    Example:
        >>> render_tool_calls([ToolCall("ping", {"n": 1})], "mistral")
        '[TOOL_CALLS][{"name": "ping", "arguments": {"n": 1}}]'
        >>> render_tool_calls([ToolCall("ping", {"n": 1})], "llama3")
        '{"name": "ping", "parameters": {"n": 1}}'
    """
    fmt = check_format(fmt)

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    if fmt == "hermes":
        return "\n".join(
            f"<tool_call>\n{dump({'name': c.name, 'arguments': c.arguments})}\n</tool_call>" for c in calls
        )
    if fmt == "llama3":
        return "\n".join(dump({"name": c.name, "parameters": c.arguments}) for c in calls)
    objects = [{"name": c.name, "arguments": c.arguments} for c in calls]
    if fmt == "mistral":
        return _MISTRAL_TAG + dump(objects)
    return dump(objects[0]) if len(objects) == 1 else dump(objects)


def _without_tool_support(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], fmt: ToolCallFormat
) -> list[dict[str, Any]]:
    """Messages for a template without tool support: tools in the system text, calls and results as text."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = message_tool_calls(message)
            text = "\n".join(part for part in (message["content"].strip(), render_tool_calls(calls, fmt)) if part)
            out.append({"role": "assistant", "content": text})
        elif message["role"] == "tool":
            block = f"<tool_response>\n{message['content']}\n</tool_response>"
            # Results of one turn's calls share one user turn: templates that insist on alternating
            # user/assistant turns would refuse two user turns in a row.
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
        else:
            out.append({"role": message["role"], "content": message["content"]})
    if tools:
        block = tool_block([t["function"] for t in tools], fmt)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content'].rstrip()}\n\n{block}".lstrip()}
        else:
            out.insert(0, {"role": "system", "content": block})
    for message in out:
        message.pop("_tool_results", None)
    return out


def render_chat(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    fmt: ToolCallFormat | None = None,
    add_generation_prompt: bool = True,
    chat_template: str | None = None,
) -> str:
    r"""The prompt text of ``messages`` (and ``tools``) in the model's own chat template.

    Args:
        tokenizer: A transformers tokenizer (anything with ``apply_chat_template``).
        messages: Recorded messages (OpenAI style: ``role``, ``content``, ``tool_calls``, ``tool_call_id``).
        tools: Tool definitions, recorded (``{"name", "description", "parameters"}``) or OpenAI style.
        fmt: The tool-call format for templates without tool support; default :func:`detect_format`.
        add_generation_prompt: End with the assistant turn's opening, ready for generation.
        chat_template: A template overriding the tokenizer's.

    Raises:
        ChatTemplateError: The tokenizer has no chat template, or the template refused the conversation.

    Example:
        >>> from agentgym_runtime.models.chat_format import render_chat  # doctest: +SKIP
        >>> render_chat(tokenizer, [{"role": "user", "content": "hi"}], [{"name": "ping"}])  # doctest: +SKIP
        '<|im_start|>system\n# Tools ...'
    """
    template = require_chat_template(tokenizer, chat_template)
    fmt = check_format(fmt) if fmt is not None else detect_format(tokenizer, template)
    normalized = normalize_messages(messages)
    definitions = normalize_tools(tools)
    kwargs: dict[str, Any] = {}
    if supports_tools(tokenizer, template):
        if definitions:
            kwargs["tools"] = definitions
    else:
        normalized = _without_tool_support(normalized, definitions, fmt)
    try:
        text = tokenizer.apply_chat_template(
            normalized,
            chat_template=template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **kwargs,
        )
    except Exception as exc:  # jinja2's TemplateError or the template's own raise_exception
        raise ChatTemplateError(
            f"the chat template of {_model_name(tokenizer)!r} refused the conversation: {exc}"
        ) from exc
    return str(text)


def split_prompt_completion(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    fmt: ToolCallFormat | None = None,
    chat_template: str | None = None,
) -> tuple[str, str]:
    """``(prompt, completion)`` for training on the last (assistant) message of ``messages``.

    The prompt renders every earlier message with the generation prompt; the completion is what the
    template appends for the last message (its text or tool calls and the end-of-turn token), so the
    model learns to stop too.

    Raises:
        ChatTemplateError: No template, or the last message is not the assistant's.

    Example:
        >>> prompt, completion = split_prompt_completion(tokenizer, messages, tools)  # doctest: +SKIP
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise ChatTemplateError("the last message must be the assistant's turn to train on")
    template = require_chat_template(tokenizer, chat_template)
    fmt = check_format(fmt) if fmt is not None else detect_format(tokenizer, template)
    prompt = render_chat(tokenizer, messages[:-1], tools, fmt=fmt, add_generation_prompt=True, chat_template=template)
    full = render_chat(tokenizer, messages, tools, fmt=fmt, add_generation_prompt=False, chat_template=template)
    if full.startswith(prompt):
        return prompt, full[len(prompt) :]
    # Templates that rewrite earlier turns once a later one exists (e.g. dropping reasoning): fall back
    # to the assistant text in the model's format followed by its end-of-sequence token.
    last = normalize_messages(messages[-1:])[0]
    calls = message_tool_calls(last)
    body = "\n".join(p for p in (last["content"].strip(), render_tool_calls(calls, fmt) if calls else "") if p)
    return prompt, body + str(getattr(tokenizer, "eos_token", None) or "")


#: End-of-turn markers of the main families (besides the tokenizer's own eos token).
END_OF_TURN_MARKERS: tuple[str, ...] = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "</s>")


def end_of_turn_markers(tokenizer: Any) -> tuple[str, ...]:
    """The strings that end an assistant turn for ``tokenizer``: its eos token and the known markers it has.

    Example:
        >>> class Tok:
        ...     eos_token = "<|endoftext|>"
        ...     def get_vocab(self):
        ...         return {"<|im_end|>": 2}
        >>> end_of_turn_markers(Tok())
        ('<|endoftext|>', '<|im_end|>')
    """
    vocab = tokenizer.get_vocab() if callable(getattr(tokenizer, "get_vocab", None)) else {}
    eos = getattr(tokenizer, "eos_token", None)
    found = [str(eos)] if eos else []
    found += [m for m in END_OF_TURN_MARKERS if m in vocab and m not in found]
    return tuple(found)


def control_strings(tokenizer: Any) -> tuple[str, ...]:
    """The text of ``tokenizer``'s special tokens: spelled inside a message, each is read as that token.

    A recorded argument or answer that spells one (``"<|im_end|>"`` in a Qwen model's data) cannot be
    rendered for training: tokenized, it becomes the control token (the turn would end in the middle
    of the call), and the end-of-turn cut of the rendered target stops there.

    Example:
        >>> class Tok:
        ...     all_special_tokens = ["<|endoftext|>", "<|im_end|>"]
        ...     eos_token = "<|endoftext|>"
        >>> control_strings(Tok())
        ('<|endoftext|>', '<|im_end|>')
    """
    found = {str(token) for token in getattr(tokenizer, "all_special_tokens", None) or ()}
    decoder = getattr(tokenizer, "added_tokens_decoder", None)
    if isinstance(decoder, Mapping):
        found |= {str(token.content) for token in decoder.values() if getattr(token, "special", False)}
    found |= set(end_of_turn_markers(tokenizer))
    return tuple(sorted(text for text in found if text))


def strip_end_of_turn(text: str, markers: Sequence[str]) -> str:
    r"""``text`` cut at the first end-of-turn marker (what a model generates past its turn is not its answer).

    Example:
        >>> strip_end_of_turn("done<|im_end|>\n<|im_start|>user", ["<|im_end|>"])
        'done'
    """
    cut = min((i for i in (text.find(m) for m in markers if m) if i >= 0), default=len(text))
    return text[:cut]


# ---------------------------------------------------------------------------------------------------------------------
# Parsing


def _call(value: Any, text: str) -> ToolCall | InvalidToolCall:
    if not isinstance(value, Mapping):
        return InvalidToolCall(text, "a tool call must be a JSON object")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return InvalidToolCall(text, "the tool call has no 'name'")
    raw = value.get("arguments", value.get("parameters", {}))
    try:
        arguments = _arguments(raw)
    except (ValueError, json.JSONDecodeError) as exc:
        return InvalidToolCall(text, f"arguments of {name!r} are not a JSON object: {exc}", name)
    call_id = value.get("id")
    return ToolCall(name, arguments, str(call_id) if call_id is not None else None)


def _invalid(text: str, exc: Exception) -> InvalidToolCall:
    name = _NAME.search(text)
    return InvalidToolCall(text, f"the tool call is not valid JSON: {exc}", name[1] if name else None)


def _parse_json_calls(body: str) -> tuple[list[ToolCall | InvalidToolCall], str]:
    """JSON values at the start of ``body`` (separated by whitespace or ``;``), and the text after them."""
    decoder = json.JSONDecoder()
    items: list[ToolCall | InvalidToolCall] = []
    position = 0
    while True:
        while position < len(body) and body[position] in " \t\r\n;":
            position += 1
        if position >= len(body) or body[position] not in "[{":
            return items, body[position:]
        try:
            value, end = decoder.raw_decode(body, position)
        except json.JSONDecodeError as exc:
            items.append(_invalid(body[position:], exc))
            return items, ""
        for element in value if isinstance(value, list) else [value]:
            items.append(_call(element, json.dumps(element, ensure_ascii=False)))
        position = end


def _looks_like_call(text: str) -> bool:
    return text.startswith(("{", "[")) and _NAME.search(text) is not None


def _result(content: str, items: Sequence[ToolCall | InvalidToolCall]) -> ParsedCompletion:
    return ParsedCompletion(
        content.strip(),
        tuple(i for i in items if isinstance(i, ToolCall)),
        tuple(i for i in items if isinstance(i, InvalidToolCall)),
    )


def _parse_hermes(text: str) -> ParsedCompletion:
    items: list[ToolCall | InvalidToolCall] = []
    content: list[str] = []
    position = 0
    while (start := text.find(_HERMES_OPEN, position)) >= 0:
        content.append(text[position:start])
        body_start = start + len(_HERMES_OPEN)
        # The closing tag outside JSON strings first: an argument may spell "</tool_call>".
        end = _find_outside_strings(text, _HERMES_CLOSE, body_start)
        body = text[body_start : len(text) if end < 0 else end].strip()
        try:
            items.append(_call(json.loads(body), body))
            position = len(text) if end < 0 else end + len(_HERMES_CLOSE)
            continue
        except json.JSONDecodeError:
            pass
        # Broken JSON (an unterminated string hides every later tag): up to the first closing tag.
        match = _HERMES_CALL.match(text, start)
        assert match is not None  # the pattern matches at any opening tag
        try:
            items.append(_call(json.loads(match[1]), match[1]))
        except json.JSONDecodeError as exc:
            items.append(_invalid(match[1], exc))
        position = match.end()
    content.append(text[position:])
    return _result("".join(content), items)


def _find_outside_strings(text: str, tag: str, start: int) -> int:
    """The index of the first ``tag`` in ``text`` from ``start`` that is not inside a JSON string, or -1.

    Example:
        >>> _find_outside_strings('{"a": "</tool_call>"}</tool_call>', "</tool_call>", 0)
        21
    """
    inside = False
    i = start
    while i < len(text):
        char = text[i]
        if inside:
            if char == "\\":
                i += 2
                continue
            if char == '"':
                inside = False
        elif char == '"':
            inside = True
        elif text.startswith(tag, i):
            return i
        i += 1
    return -1


def _split_outside_strings(text: str, tag: str) -> list[str]:
    """``text`` split at every ``tag`` that is not inside a JSON string.

    Example:
        >>> _split_outside_strings('[{"a": "x[TOOL_CALLS]"}][TOOL_CALLS][]', "[TOOL_CALLS]")
        ['[{"a": "x[TOOL_CALLS]"}]', '[]']
    """
    parts: list[str] = []
    start = 0
    while (end := _find_outside_strings(text, tag, start)) >= 0:
        parts.append(text[start:end])
        start = end + len(tag)
    parts.append(text[start:])
    return parts


def _parse_mistral(text: str) -> ParsedCompletion:
    if _MISTRAL_TAG not in text:
        return ParsedCompletion(text.strip())
    content, _, rest = text.partition(_MISTRAL_TAG)
    # Split at the tags outside JSON strings (an argument may spell "[TOOL_CALLS]"); where that
    # leaves a broken call (an unterminated string hides the later tags), at every tag, as before.
    parsed = _mistral_chunks(content, _split_outside_strings(rest, _MISTRAL_TAG))
    if parsed.invalid_tool_calls:
        return _mistral_chunks(content, rest.split(_MISTRAL_TAG))
    return parsed


def _mistral_chunks(content: str, chunks: Sequence[str]) -> ParsedCompletion:
    items: list[ToolCall | InvalidToolCall] = []
    for chunk in chunks:
        chunk = chunk.strip()
        # The v11 tokenizer's ``name[ARGS]{json}`` (a JSON call may spell "[ARGS]" in a string).
        if _MISTRAL_ARGS in chunk and not chunk.startswith(("[", "{")):
            name, _, raw = chunk.partition(_MISTRAL_ARGS)
            try:
                items.append(_call({"name": name.strip(), "arguments": json.loads(raw)}, chunk))
            except json.JSONDecodeError as exc:
                items.append(InvalidToolCall(chunk, f"the tool call is not valid JSON: {exc}", name.strip() or None))
        elif chunk:
            parsed, tail = _parse_json_calls(chunk)
            items.extend(parsed or [InvalidToolCall(chunk, "no JSON tool call follows [TOOL_CALLS]")])
            content += tail
    return _result(content, items)


def _parse_bare_json(text: str, *, python_tag: bool) -> ParsedCompletion:
    body = text.strip()
    if python_tag and body.startswith("<|python_tag|>"):
        body = body[len("<|python_tag|>") :].lstrip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced[1]
    if not _looks_like_call(body):
        return ParsedCompletion(text.strip())
    items, tail = _parse_json_calls(body)
    if items and all(isinstance(i, InvalidToolCall) and i.name is None for i in items):
        # JSON that names no tool (say, an answer given as an object) is text, not a failed call.
        return ParsedCompletion(text.strip())
    return _result(tail, items)


def parse_completion(text: str, fmt: ToolCallFormat) -> ParsedCompletion:
    """``text`` (a model's completion) split into prose and the tool calls it asks for, in format ``fmt``.

    Text that holds no tool call comes back as ``content``, never as an error; calls whose JSON is
    broken come back in ``invalid_tool_calls`` with the reason (and the tool name if it can be read).

    Example:
        >>> parse_completion('[TOOL_CALLS][{"name": "ping", "arguments": {}}]', "mistral").tool_calls
        (ToolCall(name='ping', arguments={}, id=None),)
        >>> broken = parse_completion('<tool_call>{"name": "ping", "arguments": {</tool_call>', "hermes")
        >>> broken.invalid_tool_calls[0].name
        'ping'
    """
    fmt = check_format(fmt)
    if fmt == "hermes":
        return _parse_hermes(text)
    if fmt == "mistral":
        return _parse_mistral(text)
    return _parse_bare_json(text, python_tag=fmt == "llama3")
