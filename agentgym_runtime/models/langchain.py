"""A LangChain chat model over transformers that serves the pinned policy version's LoRA adapter per call.

:class:`TransformersChatModel` is a ``BaseChatModel`` with tool calling (``bind_tools``) and streaming.
Each call renders the conversation and the bound tools with the model's own chat template, runs the
process's :class:`~agentgym_runtime.models.engine.ChatEngine` for the base model, and returns an
``AIMessage`` with ``tool_calls`` (``invalid_tool_calls`` for calls whose JSON is broken, as LangChain's
own parsers do) or with the answer as content. The adapter is the one of the policy pinned for the
running agent (:func:`agentgym_runtime.current_policy`): a promoted version serves from its first call,
a rollback from the next, with no restart; outside an episode, or for a policy without an adapter, the
base model answers.

A model with a prompt format of its own is served the same way: build its engine with
:meth:`ChatEngine.for_model <agentgym_runtime.models.engine.ChatEngine.for_model>` and wrap it with
:meth:`TransformersChatModel.from_engine` (the demo's ``TinyToolCallingChatModel`` does just that).

Example:
    >>> from agentgym_runtime.models.langchain import TransformersChatModel  # doctest: +SKIP
    >>> from langchain.agents import create_agent  # doctest: +SKIP
    >>> llm = TransformersChatModel(model_path="/models/Qwen2.5-0.5B-Instruct")  # doctest: +SKIP
    >>> agent = agentgym.train_online(name="support")(create_agent(llm, tools=[get_order]))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from agentgym_runtime.errors import MissingExtraError
from agentgym_runtime.models.chat_format import ToolCallFormat
from agentgym_runtime.models.engine import ChatEngine, Generation, serving_adapter

try:
    from langchain_core.callbacks import CallbackManagerForLLMRun
    from langchain_core.language_models import BaseChatModel, LanguageModelInput
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage, convert_to_openai_messages
    from langchain_core.messages.ai import UsageMetadata
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.runnables import Runnable
    from langchain_core.tools import BaseTool
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from pydantic import ConfigDict, PrivateAttr
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("in-process LangChain chat model", "langchain", exc.name or "langchain_core") from exc


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages in OpenAI's style, keeping what a serving format may need that OpenAI's drops.

    A tool message whose tool failed gets ``"status": "error"``; an assistant message's calls that could
    not be read get ``"invalid_tool_calls"`` (``id``, ``name``, ``arguments`` as written, ``error``).
    Chat templates ignore both keys (see :mod:`~agentgym_runtime.models.formats`).

    Example:
        >>> from langchain_core.messages import ToolMessage
        >>> to_openai_messages([ToolMessage("boom", tool_call_id="c1", status="error")])[0]["status"]
        'error'
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        converted = convert_to_openai_messages([message])
        if converted and isinstance(message, ToolMessage) and message.status == "error":
            converted[0]["status"] = "error"
        if converted and isinstance(message, AIMessage) and message.invalid_tool_calls:
            converted[0]["invalid_tool_calls"] = [
                {"id": c.get("id"), "name": c.get("name"), "arguments": c.get("args"), "error": c.get("error")}
                for c in message.invalid_tool_calls
            ]
        out += converted
    return out


def _usage(generation: Generation) -> UsageMetadata:
    n_in, n_out = generation.prompt_tokens, generation.completion_tokens
    return UsageMetadata(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out)


class TransformersChatModel(BaseChatModel):
    """LangChain chat model over a local transformers model, with tool calls, streaming and per-policy LoRA.

    Attributes:
        model_path: A local Hugging Face model directory (or one holding a single GGUF file).
        adapter: Always serve this LoRA adapter (default: the pinned policy's ``llm.adapter``).
        home: Where relative adapter paths of policies resolve (default: the settings' home).
        tool_format: The tool-call format (default: read from the chat template).
        chat_template: A template overriding the tokenizer's.
        pad_token: A pad token for tokenizers that ship none (``"eos"``: the eos token).
        max_new_tokens: Completion budget per call (default: the engine's).
        temperature: 0 (the default) decodes greedily.

    Example:
        >>> llm = TransformersChatModel(model_path="/models/qwen", max_new_tokens=64)
        >>> llm.max_new_tokens
        64
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_path: str
    adapter: str | None = None
    home: str | None = None
    tool_format: ToolCallFormat | None = None
    chat_template: str | None = None
    pad_token: str | None = None
    max_new_tokens: int | None = None
    temperature: float = 0.0
    _engine: ChatEngine | None = PrivateAttr(default=None)

    @classmethod
    def from_engine(cls, engine: ChatEngine, **kwargs: Any) -> TransformersChatModel:
        """A chat model over an engine of your own (say, one loaded with other settings)."""
        chat = cls(model_path=engine.model_path, **kwargs)
        chat._engine = engine
        return chat

    @property
    def engine(self) -> ChatEngine:
        """The engine of the base model (the process's shared one unless given)."""
        if self._engine is None:
            self._engine = ChatEngine.shared(
                self.model_path, fmt=self.tool_format, chat_template=self.chat_template, pad_token=self.pad_token
            )
        return self._engine

    @property
    def _llm_type(self) -> str:
        return "agentgym-transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "adapter": self.adapter, "temperature": self.temperature}

    def active_adapter(self) -> Path | None:
        """The LoRA adapter this call serves: the fixed one, else the pinned policy's, else none."""
        return serving_adapter(self.adapter, self.home)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the model (OpenAI tool format). ``tool_choice`` is accepted and not enforced."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> dict[str, Any]:
        return {
            "messages": to_openai_messages(messages),
            "tools": kwargs.get("tools") or None,
            "adapter": self.active_adapter(),
            "max_new_tokens": kwargs.get("max_new_tokens", self.max_new_tokens),
            "temperature": kwargs.get("temperature", self.temperature),
            "stop": stop,
        }

    def _metadata(self, generation: Generation) -> dict[str, Any]:
        return {
            "model_name": self.engine.model_name,
            "adapter": generation.adapter,
            "finish_reason": "tool_calls" if generation.parsed.tool_calls else "stop",
        }

    def _message(self, generation: Generation) -> AIMessage:
        calls = generation.calls()
        return AIMessage(
            content=generation.parsed.content,
            tool_calls=[
                {"name": c.name, "args": c.args, "id": c.id, "type": "tool_call"} for c in calls if c.args is not None
            ],
            invalid_tool_calls=[
                {"name": c.name or None, "args": c.arguments, "id": c.id, "error": c.error, "type": "invalid_tool_call"}
                for c in calls
                if not c.valid
            ],
            usage_metadata=_usage(generation),
            response_metadata=self._metadata(generation),
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        generation = self.engine.generate(**self._request(messages, stop, **kwargs))
        message = self._message(generation)
        usage = {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        }
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"token_usage": usage, "model_name": self.engine.model_name},
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stream = self.engine.stream(**self._request(messages, stop, **kwargs))
        for piece in stream:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        generation = stream.result
        assert generation is not None  # set once the stream is exhausted
        calls = [
            {"name": c.name or None, "args": c.arguments, "id": c.id, "index": i}
            for i, c in enumerate(generation.calls())
        ]
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=calls,  # type: ignore[arg-type]
                usage_metadata=_usage(generation),
                response_metadata=self._metadata(generation),
                chunk_position="last",
            )
        )


__all__ = ["TransformersChatModel", "to_openai_messages"]
