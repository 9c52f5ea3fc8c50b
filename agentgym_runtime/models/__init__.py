"""Real open-weight models: chat templates, tool-call formats and in-process serving.

* :mod:`~agentgym_runtime.models.chat_format` — recorded messages and tools rendered with the model's
  own chat template; completions parsed into tool calls (Hermes/Qwen, Llama 3, Mistral, plain JSON).
  No transformers import.
* :mod:`~agentgym_runtime.models.engine` — one transformers engine per base model serving the pinned
  policy version's LoRA adapter per call (base model and adapters loaded once, adapters cached by digest).
* :mod:`~agentgym_runtime.models.formats` — the seam a model plugs into the engine: a ``ServingFormat``
  (render, encode, stop strings, decode, parse, stream filter); ``TemplateFormat`` for chat-template
  models. A model with a prompt format of its own (the demo's, your fine-tune) brings one and is served
  with ``ChatEngine.for_model``. No transformers import.
* Framework chat models over that engine: :mod:`~agentgym_runtime.models.langchain`,
  :mod:`~agentgym_runtime.models.autogen`, :mod:`~agentgym_runtime.models.crewai`.

Names are resolved on first access, so importing this package loads no torch nor transformers.

Example:
    >>> from agentgym_runtime.models import parse_completion
    >>> parse_completion('{"name": "ping", "parameters": {}}', "llama3").tool_calls[0].name
    'ping'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentgym_runtime.models.chat_format import (
        TOOL_CALL_FORMATS,
        ChatTemplateError,
        InvalidToolCall,
        PadTokenError,
        ParsedCompletion,
        ToolCall,
        ToolCallFormat,
        detect_format,
        parse_completion,
        render_chat,
        render_tool_calls,
        require_chat_template,
        require_pad_token,
        split_prompt_completion,
        supports_tools,
        tool_block,
    )
    from agentgym_runtime.models.engine import AdapterError, ChatEngine, Generation
    from agentgym_runtime.models.formats import EncodedPrompt, ServingFormat, TemplateFormat

_ENGINE = ("AdapterError", "ChatEngine", "Generation")
_FORMATS = ("EncodedPrompt", "ServingFormat", "TemplateFormat")

__all__ = [
    "TOOL_CALL_FORMATS",
    "AdapterError",
    "ChatEngine",
    "Generation",
    "EncodedPrompt",
    "ServingFormat",
    "TemplateFormat",
    "ChatTemplateError",
    "InvalidToolCall",
    "PadTokenError",
    "ParsedCompletion",
    "ToolCall",
    "ToolCallFormat",
    "detect_format",
    "parse_completion",
    "render_chat",
    "render_tool_calls",
    "require_chat_template",
    "require_pad_token",
    "split_prompt_completion",
    "supports_tools",
    "tool_block",
]

_LAZY: dict[str, str] = {
    name: "agentgym_runtime.models."
    + ("engine" if name in _ENGINE else "formats" if name in _FORMATS else "chat_format")
    for name in __all__
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
