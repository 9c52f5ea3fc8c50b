"""The seam between :class:`~agentgym_runtime.models.engine.ChatEngine` and a model: its serving format.

The engine owns everything that is the same for every model: loading, the per-call LoRA adapter
(resolved from the pinned policy, checked against the base model, loaded once, activated per call
under a lock), batching with left padding, greedy or sampled generation, streaming. What differs
between models is how a conversation becomes a prompt and a completion becomes tool calls; that is
a :class:`ServingFormat`:

* :meth:`~ServingFormat.render` — OpenAI-style messages and tool definitions to the prompt text;
* :meth:`~ServingFormat.encode` — the prompt to token ids (plus any state decoding needs back);
* :meth:`~ServingFormat.stop_strings` — strings that end the completion (besides the eos token);
* :meth:`~ServingFormat.decode` — the generated ids to the completion's text and its billed tokens;
* :meth:`~ServingFormat.parse` — the text to content and tool calls
  (:class:`~agentgym_runtime.models.chat_format.ParsedCompletion`);
* :meth:`~ServingFormat.content_filter` — what of a streamed completion may be shown as it comes.

:class:`TemplateFormat` is the format of a Hugging Face chat model (its own chat template and
tool-call family, see :mod:`~agentgym_runtime.models.chat_format`). A model with a prompt format of
its own — the demo's tiny model, or your own fine-tuned one — brings a class with these six methods
and serves through ``ChatEngine.for_model(model, tokenizer, fmt, model_path=...)``, with every
framework chat model over it. Messages may carry two keys beyond OpenAI's, which the LangChain chat
model fills in (a template ignores them): ``"status": "error"`` on a tool message whose tool failed,
and ``"invalid_tool_calls"`` (``id``, ``name``, ``arguments`` text, ``error``) on an assistant message.

Example:
    >>> HeldContent().feed('{"answer": "shipped"}'), HeldContent().finish("shipped")
    ('', 'shipped')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agentgym_runtime.models.chat_format import (
    ParsedCompletion,
    ToolCallFormat,
    end_of_turn_markers,
    parse_completion,
    render_chat,
    strip_end_of_turn,
)


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt as token ids, with what decoding its completion needs back.

    Attributes:
        ids: The prompt's token ids (what the model reads; their count is the call's input tokens).
        state: Anything the format's :meth:`~ServingFormat.decode` needs (the demo: its slot table).

    Example:
        >>> EncodedPrompt([5, 7]).state is None
        True
    """

    ids: list[int]
    state: Any = None


class StreamFilter(Protocol):
    """Turns pieces of a streamed completion into pieces of its content (see :class:`ContentFilter`)."""

    def feed(self, piece: str) -> str:
        """The content ``piece`` lets through (possibly none)."""

    def finish(self, content: str) -> str:
        """The rest of ``content`` (the parsed completion's) after what was let through."""


class ServingFormat(Protocol):
    """How one model's prompts and completions look (module docstring); the engine does the rest."""

    def render(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None) -> str:
        """The prompt text of ``messages`` (OpenAI style) with ``tools`` (OpenAI tool definitions) offered."""

    def encode(self, prompt: str) -> EncodedPrompt:
        """The token ids the model reads for ``prompt``."""

    def stop_strings(self, stop: Sequence[str] | None) -> tuple[str, ...]:
        """Strings that end generation besides the eos token (``stop``: the caller's own), none for none."""

    def decode(self, new: Sequence[int], prompt: EncodedPrompt, stop: Sequence[str] | None) -> tuple[str, int]:
        """The completion's text and its billed output tokens, from the generated ids (cut after an eos)."""

    def parse(self, text: str) -> ParsedCompletion:
        """The completion split into content and tool calls."""

    def content_filter(self, stop: Sequence[str] | None) -> StreamFilter:
        """A fresh filter for one streamed completion."""


class HeldContent:
    """A stream filter that shows nothing until the completion is whole, then its whole content.

    For formats whose streamed text is not yet what the user sees (the demo model writes slot
    tokens that are filled in only once the completion is decoded).

    Example:
        >>> held = HeldContent()
        >>> held.feed("order <n1>"), held.finish("order 1234")
        ('', 'order 1234')
    """

    def feed(self, piece: str) -> str:
        """Nothing: every piece is held back."""
        return ""

    def finish(self, content: str) -> str:
        """The whole content."""
        return content


_CALL_MARKERS: dict[ToolCallFormat, tuple[str, ...]] = {"hermes": ("<tool_call>",), "mistral": ("[TOOL_CALLS]",)}
#: How a completion that is a tool call starts in the bare-JSON formats (after whitespace).
_JSON_STARTS = ("{", "[", "<|python_tag|>", "```")


class ContentFilter:
    """Turns pieces of a completion's text into pieces of its content (what is not a tool call).

    Content is let through as soon as it cannot be part of a tool call or an end-of-turn marker; the
    rest waits for :meth:`finish`, which completes it to the parsed completion's content.

    Example:
        >>> f = ContentFilter("hermes", ("<|im_end|>",))
        >>> [f.feed(p) for p in ["  Sure", ", calling <tool", "_call>{...}"]]
        ['Sure', ', calling', '']
        >>> f.finish("Sure, calling")
        ''
    """

    def __init__(self, fmt: ToolCallFormat, end_markers: Sequence[str]) -> None:
        self._fmt = fmt
        self._held = (*_CALL_MARKERS.get(fmt, ()), *(m for m in end_markers if m))
        self._text = ""
        self._sent = ""
        self._closed = False

    def _safe(self) -> str:
        text = self._text.lstrip()
        if self._fmt not in _CALL_MARKERS and any(s.startswith(text) or text.startswith(s) for s in _JSON_STARTS):
            return ""  # may be (or become) a bare JSON tool call: wait for the whole completion
        cut = len(text)
        for marker in self._held:
            found = text.find(marker)
            if found >= 0:
                cut = min(cut, found)
                self._closed = True
            else:  # hold back a tail that could be the start of the marker
                for size in range(min(len(marker) - 1, len(text)), 0, -1):
                    if text.endswith(marker[:size]):
                        cut = min(cut, len(text) - size)
                        break
        return text[:cut].rstrip()

    def feed(self, piece: str) -> str:
        """The content ``piece`` lets through (possibly none)."""
        if self._closed:
            return ""
        self._text += piece
        safe = self._safe()
        if not safe.startswith(self._sent) or len(safe) <= len(self._sent):
            return ""
        delta, self._sent = safe[len(self._sent) :], safe
        return delta

    def finish(self, content: str) -> str:
        """The rest of ``content`` (the parsed completion's) after what was let through."""
        # What was let through is always a prefix of the parsed content (text before any tool call,
        # with surrounding whitespace held back); if a tokenizer's incremental decoding ever differed,
        # the remainder still completes the parsed content.
        return content[len(self._sent) :] if content.startswith(self._sent) else ""


class TemplateFormat:
    """The serving format of a Hugging Face chat model: its chat template and its tool-call family.

    Args:
        tokenizer: The model's tokenizer (with a chat template).
        fmt: The tool-call format its completions use.

    Example:
        >>> TemplateFormat(None, "hermes").fmt
        'hermes'
    """

    def __init__(self, tokenizer: Any, fmt: ToolCallFormat) -> None:
        self.tokenizer = tokenizer
        self.fmt: ToolCallFormat = fmt

    def render(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None) -> str:
        """The conversation in the model's own chat template (:func:`~.chat_format.render_chat`)."""
        return render_chat(self.tokenizer, messages, tools, fmt=self.fmt)

    def encode(self, prompt: str) -> EncodedPrompt:
        """The prompt's ids; the template already holds every special token."""
        return EncodedPrompt(list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]))

    def stop_strings(self, stop: Sequence[str] | None) -> tuple[str, ...]:
        """The end-of-turn markers of the tokenizer, then ``stop``."""
        return (*end_of_turn_markers(self.tokenizer), *(stop or ()))

    def decode(self, new: Sequence[int], prompt: EncodedPrompt, stop: Sequence[str] | None) -> tuple[str, int]:
        """The text up to the first end-of-turn marker; every generated token is billed."""
        text = self.tokenizer.decode(list(new), skip_special_tokens=False)
        return strip_end_of_turn(text, self.stop_strings(stop)), len(new)

    def parse(self, text: str) -> ParsedCompletion:
        """Tool calls in the model family's format (:func:`~.chat_format.parse_completion`)."""
        return parse_completion(text, self.fmt)

    def content_filter(self, stop: Sequence[str] | None) -> StreamFilter:
        """Lets prose through as it comes, holding back tool calls and end-of-turn markers."""
        return ContentFilter(self.fmt, self.stop_strings(stop))


__all__ = ["ContentFilter", "EncodedPrompt", "HeldContent", "ServingFormat", "StreamFilter", "TemplateFormat"]
