"""The demo's small tool-calling model (it stands in for your production model).

* :mod:`~agentgym_runtime.demo.model.format` — prompt/completion format, parsing and scoring
  (``render_prompt``, ``parse_completion``, ``score_completion``); no torch needed.
* :mod:`~agentgym_runtime.demo.model.tiny` — the tiny causal LM: built from a config, tokenizer
  trained locally, warm-started on scenario data, cached under ``<home>/models/<scenario>-tiny``.
* :mod:`~agentgym_runtime.demo.model.serving` — ``DemoFormat``, the demo model's serving format: all
  it adds to the shared engine (:class:`~agentgym_runtime.models.engine.ChatEngine`), which serves it
  like any model (the pinned policy's LoRA adapter per call, loaded once; batches; streaming).
* :mod:`~agentgym_runtime.demo.model.chat` — ``TinyToolCallingChatModel``: the shared LangChain chat
  model (:class:`~agentgym_runtime.models.langchain.TransformersChatModel`) over the demo's engine.
* :mod:`~agentgym_runtime.demo.model.evaluate` — ``evaluate_model`` on held-out tasks.

Names are resolved on first access, so importing this package loads no torch.

Example:
    >>> from agentgym_runtime.demo.model import parse_completion
    >>> parse_completion('{"answer": "ok"}').kind
    'answer'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentgym_runtime.demo.model.chat import TinyToolCallingChatModel
    from agentgym_runtime.demo.model.evaluate import EvaluationResult, evaluate_model
    from agentgym_runtime.demo.model.format import (
        CompletionScore,
        ParsedCompletion,
        Step,
        delexicalize,
        parse_completion,
        relexicalize,
        render_call,
        render_prompt,
        score_completion,
    )
    from agentgym_runtime.demo.model.serving import DemoFormat
    from agentgym_runtime.demo.model.tiny import (
        DemoModel,
        TinyModelConfig,
        build_demo_model,
        load_demo_model,
        load_or_build_demo_model,
    )
    from agentgym_runtime.recording.policy import resolve_adapter_path

_EXPORTS: dict[str, str] = {
    "TinyToolCallingChatModel": "agentgym_runtime.demo.model.chat",
    "resolve_adapter_path": "agentgym_runtime.recording.policy",
    "EvaluationResult": "agentgym_runtime.demo.model.evaluate",
    "evaluate_model": "agentgym_runtime.demo.model.evaluate",
    "CompletionScore": "agentgym_runtime.demo.model.format",
    "ParsedCompletion": "agentgym_runtime.demo.model.format",
    "Step": "agentgym_runtime.demo.model.format",
    "delexicalize": "agentgym_runtime.demo.model.format",
    "relexicalize": "agentgym_runtime.demo.model.format",
    "parse_completion": "agentgym_runtime.demo.model.format",
    "render_call": "agentgym_runtime.demo.model.format",
    "render_prompt": "agentgym_runtime.demo.model.format",
    "score_completion": "agentgym_runtime.demo.model.format",
    "DemoFormat": "agentgym_runtime.demo.model.serving",
    "DemoModel": "agentgym_runtime.demo.model.tiny",
    "TinyModelConfig": "agentgym_runtime.demo.model.tiny",
    "build_demo_model": "agentgym_runtime.demo.model.tiny",
    "load_demo_model": "agentgym_runtime.demo.model.tiny",
    "load_or_build_demo_model": "agentgym_runtime.demo.model.tiny",
}

__all__ = [
    "CompletionScore",
    "DemoFormat",
    "DemoModel",
    "EvaluationResult",
    "ParsedCompletion",
    "Step",
    "TinyModelConfig",
    "TinyToolCallingChatModel",
    "build_demo_model",
    "delexicalize",
    "evaluate_model",
    "load_demo_model",
    "load_or_build_demo_model",
    "parse_completion",
    "relexicalize",
    "render_call",
    "render_prompt",
    "resolve_adapter_path",
    "score_completion",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentgym_runtime.demo.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
