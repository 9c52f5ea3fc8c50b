"""An AutoGen ``ChatCompletionClient`` over transformers that serves the pinned policy version's LoRA adapter per call.

A thin user of :class:`~agentgym_runtime.models.engine.ChatEngine`, like the LangChain chat model:
AutoGen's messages become OpenAI-style dicts, the engine renders, generates and parses, and the result
comes back as a ``CreateResult`` (``FunctionCall`` list for tool calls). Generation runs on a worker
thread so the event loop is never blocked.

Example:
    >>> from agentgym_runtime.models.autogen import TransformersChatCompletionClient  # doctest: +SKIP
    >>> client = TransformersChatCompletionClient("/models/Qwen2.5-0.5B-Instruct")  # doctest: +SKIP
    >>> agent = AssistantAgent("support", model_client=client, tools=[get_order])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from agentgym_runtime.errors import MissingExtraError
from agentgym_runtime.models.engine import ChatEngine, Generation, serving_adapter

try:
    from autogen_core import CancellationToken, FunctionCall
    from autogen_core.models import (
        AssistantMessage,
        ChatCompletionClient,
        CreateResult,
        FunctionExecutionResultMessage,
        LLMMessage,
        ModelInfo,
        RequestUsage,
        SystemMessage,
        UserMessage,
    )
    from autogen_core.tools import Tool, ToolSchema
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("in-process AutoGen model client", "autogen", exc.name or "autogen_core") from exc


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part for part in content if isinstance(part, str))  # images are not served


def openai_messages(messages: Sequence[LLMMessage]) -> list[dict[str, Any]]:
    """AutoGen's messages as the OpenAI-style dicts the engine renders.

    Example:
        >>> openai_messages([UserMessage(content="hi", source="user")])
        [{'role': 'user', 'content': 'hi'}]
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            out.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            out.append({"role": "user", "content": _text(message.content)})
        elif isinstance(message, AssistantMessage):
            if isinstance(message.content, str):
                out.append({"role": "assistant", "content": message.content})
            else:
                calls = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in message.content
                ]
                out.append({"role": "assistant", "content": message.thought or "", "tool_calls": calls})
        elif isinstance(message, FunctionExecutionResultMessage):
            out += [{"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in message.content]
    return out


def _schemas(tools: Sequence[Tool | ToolSchema]) -> list[Mapping[str, Any]]:
    return [dict(t.schema) if isinstance(t, Tool) else dict(t) for t in tools]


class TransformersChatCompletionClient(ChatCompletionClient):
    """AutoGen model client over a local transformers model, with tool calls, streaming and per-policy LoRA.

    Args:
        model_path: A local Hugging Face model directory.
        adapter: Always serve this LoRA adapter (default: the pinned policy's ``llm.adapter``).
        home: Where relative adapter paths of policies resolve.
        max_new_tokens: Completion budget per call.
        temperature: 0 (the default) decodes greedily.
        engine: An engine of your own (default: the process's shared one for ``model_path``).
    """

    def __init__(
        self,
        model_path: str,
        *,
        adapter: str | None = None,
        home: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        engine: ChatEngine | None = None,
    ) -> None:
        self.model_path = model_path
        self.adapter = adapter
        self.home = home
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.engine = engine or ChatEngine.shared(model_path)
        self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._last = RequestUsage(prompt_tokens=0, completion_tokens=0)

    def _request(self, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]) -> dict[str, Any]:
        return {
            "messages": openai_messages(messages),
            "tools": _schemas(tools) or None,
            "adapter": serving_adapter(self.adapter, self.home),
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }

    def _result(self, generation: Generation) -> CreateResult:
        usage = RequestUsage(prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens)
        self._last = usage
        self._usage = RequestUsage(
            prompt_tokens=self._usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._usage.completion_tokens + usage.completion_tokens,
        )
        parsed = generation.parsed
        if parsed.is_tool_call:
            # Unreadable calls too: AutoGen reports the broken arguments back to the model.
            calls = [FunctionCall(id=c.id, name=c.name, arguments=c.arguments) for c in generation.calls()]
            return CreateResult(
                finish_reason="function_calls", content=calls, usage=usage, cached=False, thought=parsed.content or None
            )
        return CreateResult(finish_reason="stop", content=parsed.content, usage=usage, cached=False)

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Any = "auto",
        json_output: Any = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """One completion (generated on a worker thread); tool calls as ``FunctionCall`` content."""
        request = self._request(messages, tools)  # here: the pinned policy is read in the caller's context
        generation = await asyncio.to_thread(self.engine.generate, **request)
        return self._result(generation)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Any = "auto",
        json_output: Any = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
        include_usage: bool | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Content pieces as they are generated, then the ``CreateResult``."""
        stream = self.engine.stream(**self._request(messages, tools))
        done = object()
        while True:
            piece = await asyncio.to_thread(next, stream, done)
            if piece is done:
                break
            yield str(piece)
        assert stream.result is not None
        yield self._result(stream.result)

    async def close(self) -> None:
        """Nothing to release: the engine is shared by the process."""

    def actual_usage(self) -> RequestUsage:
        """Usage of the last call."""
        return self._last

    def total_usage(self) -> RequestUsage:
        """Usage of every call so far."""
        return self._usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Tokens of the rendered prompt."""
        prompt = self.engine.prompt(openai_messages(messages), _schemas(tools) or None)
        return len(self.engine.tokenizer.encode(prompt, add_special_tokens=False))

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Tokens left in the model's context after the prompt."""
        limit = int(getattr(self.engine.model.config, "max_position_embeddings", 0) or 0)
        return max(0, limit - self.count_tokens(messages, tools=tools))

    @property
    def capabilities(self) -> Any:
        """The model info (AutoGen's deprecated name, still abstract)."""
        return self.model_info

    @property
    def model_info(self) -> ModelInfo:
        """Tool calling, no vision, no JSON mode."""
        return ModelInfo(
            vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False
        )


__all__ = ["TransformersChatCompletionClient", "openai_messages"]
