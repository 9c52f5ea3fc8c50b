"""LangChain capture: one callback handler that turns LangChain callbacks into agentgym spans.

While the adapter is instrumented, a LangChain configure hook
(``langchain_core.tracers.context.register_configure_hook``) adds :class:`AgentGymCallbackHandler`
to every callback manager LangChain configures *while an agentgym episode is current*; outside
episodes the hook adds nothing.

Example:
    >>> AgentGymCallbackHandler().run_inline
    True
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from pydantic import ValidationError
from pydantic.v1 import ValidationError as ValidationErrorV1

from agentgym_runtime.adapters.checking import CheckedToolCall, fill_known_tools, start_checked_tool_call
from agentgym_runtime.adapters.langchain.messages import to_openai_messages, tool_definitions
from agentgym_runtime.recording.capture import LlmCall, ToolCall, start_llm_call
from agentgym_runtime.recording.context import RequestedToolCall, current_episode_var
from agentgym_runtime.recording.runtime import get_runtime
from agentgym_runtime.semconv import ToolOutcome

FRAMEWORK = "langchain"


def _model_name(params: Mapping[str, Any], metadata: Mapping[str, Any] | None, serialized: Any) -> str | None:
    for key in ("model", "model_name", "model_id", "deployment_name"):
        value = params.get(key)
        if isinstance(value, str) and value:
            return value
    if metadata:
        value = metadata.get("ls_model_name")
        if isinstance(value, str) and value:
            return value
    value = params.get("_type")
    if isinstance(value, str) and value:
        return value
    if isinstance(serialized, Mapping):
        ident = serialized.get("id")
        if isinstance(ident, list) and ident:
            return str(ident[-1])
    return None


def _requested_calls(message: AIMessage) -> list[RequestedToolCall]:
    requested = [
        RequestedToolCall.from_raw(str(call.get("name") or ""), call.get("id"), call.get("args"))
        for call in message.tool_calls
    ]
    for invalid in message.invalid_tool_calls:
        request = RequestedToolCall.from_raw(str(invalid.get("name") or ""), invalid.get("id"), invalid.get("args"))
        if request.parse_error is None:
            request.parse_error = str(invalid.get("error") or "the model produced an invalid tool call")
        requested.append(request)
    return requested


def _token_usage(message: BaseMessage | None, response: LLMResult) -> tuple[int | None, int | None]:
    usage = getattr(message, "usage_metadata", None)
    if usage:
        return usage.get("input_tokens"), usage.get("output_tokens")
    token_usage = (response.llm_output or {}).get("token_usage") or {}
    if isinstance(token_usage, Mapping) and token_usage:
        return token_usage.get("prompt_tokens"), token_usage.get("completion_tokens")
    return None, None


class AgentGymCallbackHandler(BaseCallbackHandler):
    """Translate LangChain callbacks into agentgym GenAI spans and tool outcomes.

    Thread-safe: in-flight calls are kept per LangChain ``run_id`` under a lock, never in
    thread-local state. Runs inline (also under async managers) so a call's start and end
    happen in the same context. Installed by :class:`LangChainAdapter`; add it yourself with
    ``config={"callbacks": [handler]}`` only if you bypass the configure hook.

    Example:
        >>> AgentGymCallbackHandler().run_inline
        True
    """

    run_inline: bool = True
    ignore_chain: bool = True
    ignore_retriever: bool = True
    ignore_retry: bool = True
    ignore_custom_event: bool = True

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._llm_calls: dict[UUID, LlmCall] = {}
        self._tool_calls: dict[UUID, ToolCall | CheckedToolCall] = {}

    @property
    def raise_error(self) -> bool:  # type: ignore[override]
        """Let LangChain re-raise our errors only under a strict runtime (tests)."""
        return get_runtime().settings.strict

    @property
    def in_flight(self) -> int:
        """LLM and tool calls started and not yet finished."""
        with self._lock:
            return len(self._llm_calls) + len(self._tool_calls)

    # --- LLM calls ---------------------------------------------------------------------------
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open the ``chat`` span with the messages and tools the model receives."""
        if current_episode_var.get() is None:
            return
        try:
            params = kwargs.get("invocation_params") or {}
            tools = tool_definitions(params.get("tools"))
            if tools is None:
                fill_known_tools()  # the model wrapper hides its tools: the agent's own set decides
            self._start_llm(
                run_id,
                model=_model_name(params, metadata, serialized),
                provider=(metadata or {}).get("ls_provider"),
                input_messages=to_openai_messages(messages[0]) if messages else [],
                tools=tools,
            )
        except Exception as exc:
            get_runtime().internal_error("langchain on_chat_model_start", exc)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open the ``chat`` span of a completion-style (string prompt) LLM."""
        if current_episode_var.get() is None:
            return
        try:
            params = kwargs.get("invocation_params") or {}
            self._start_llm(
                run_id,
                model=_model_name(params, metadata, serialized),
                provider=(metadata or {}).get("ls_provider"),
                input_messages=[{"role": "user", "content": p} for p in prompts[:1]],
                tools=None,
            )
        except Exception as exc:
            get_runtime().internal_error("langchain on_llm_start", exc)

    def _start_llm(
        self,
        run_id: UUID,
        *,
        model: str | None,
        provider: Any,
        input_messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
    ) -> None:
        call = start_llm_call(
            model=model,
            provider=provider if isinstance(provider, str) else None,
            input_messages=input_messages,
            tools=tools,
            framework=FRAMEWORK,
            make_current=False,
        )
        with self._lock:
            self._llm_calls[run_id] = call

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Close the ``chat`` span: output, requested tool calls (valid and malformed), tokens."""
        with self._lock:
            call = self._llm_calls.pop(run_id, None)
        if call is None:
            return
        try:
            generation = response.generations[0][0] if response.generations and response.generations[0] else None
            message = generation.message if isinstance(generation, ChatGeneration) else None
            requested: list[RequestedToolCall] = []
            output: Any = None
            response_model: str | None = None
            finish: list[str] | None = None
            if isinstance(message, AIMessage):
                requested = _requested_calls(message)
                output = to_openai_messages([message])
                meta = message.response_metadata or {}
                name = meta.get("model_name") or meta.get("model")
                response_model = name if isinstance(name, str) else None
                reason = meta.get("finish_reason") or meta.get("stop_reason")
                finish = [reason] if isinstance(reason, str) else None
            elif generation is not None:
                output = [{"role": "assistant", "content": generation.text}]
            input_tokens, output_tokens = _token_usage(message, response)
        except Exception as exc:
            call.finish()  # the model answered; only reading its answer failed (our bug, not the host's)
            get_runtime().internal_error("langchain on_llm_end", exc)
            return
        call.finish(
            output_messages=output,
            requested=requested,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            response_model=response_model,
            finish_reasons=finish,
        )

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Close the ``chat`` span as failed."""
        with self._lock:
            call = self._llm_calls.pop(run_id, None)
        if call is not None:
            call.fail(error)

    # --- tool calls --------------------------------------------------------------------------
    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open the ``execute_tool`` span; it claims the model's request with the same call id."""
        if current_episode_var.get() is None:
            return
        try:
            name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
            call_id = kwargs.get("tool_call_id")
            call = start_checked_tool_call(
                str(name),
                call_id=call_id if isinstance(call_id, str) else None,
                arguments=inputs if inputs is not None else input_str,
                description=(serialized or {}).get("description"),
                framework=FRAMEWORK,
            )
        except Exception as exc:
            get_runtime().internal_error("langchain on_tool_start", exc)
            return
        with self._lock:
            self._tool_calls[run_id] = call

    def on_tool_end(self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        """Close the ``execute_tool`` span: ``ok``, or ``error_result`` for an error ToolMessage."""
        with self._lock:
            call = self._tool_calls.pop(run_id, None)
        if call is None:
            return
        if isinstance(output, ToolMessage):
            if output.status == "error":
                call.error_result(output.content, message=str(output.content))
            else:
                call.succeed(output.content if output.artifact is None else output)
        else:
            call.succeed(output)

    def on_tool_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Close the ``execute_tool`` span: ``invalid_arguments`` for a schema error, else ``tool_error``."""
        with self._lock:
            call = self._tool_calls.pop(run_id, None)
        if call is None:
            return
        if isinstance(error, ValidationError | ValidationErrorV1):
            call.fail(ToolOutcome.INVALID_ARGUMENTS, error=error)
        else:
            call.fail(ToolOutcome.TOOL_ERROR, error=error)


class EpisodeHandlerVar:
    """Stands in for the ``ContextVar`` of a LangChain configure hook.

    LangChain reads ``var.get()`` each time it configures a callback manager; this returns the
    handler only while an agentgym episode is current, so the handler follows the episode
    context (threads and tasks that inherit it included) without setting anything per run.
    """

    __slots__ = ("active", "handler")

    def __init__(self, handler: AgentGymCallbackHandler) -> None:
        self.handler = handler
        self.active = True

    def get(self, default: Any = None) -> AgentGymCallbackHandler | None:
        """The handler while an agentgym episode is current, else ``None``."""
        if self.active and current_episode_var.get() is not None:
            return self.handler
        return None


__all__ = ["FRAMEWORK", "AgentGymCallbackHandler", "EpisodeHandlerVar"]
