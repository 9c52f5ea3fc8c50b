"""LangChain adapter: record ``create_agent`` graphs, LCEL chains and any runnable; apply policies.

Capture needs no change to the agent and does not depend on the proxy. While the adapter is
instrumented, a LangChain configure hook
(``langchain_core.tracers.context.register_configure_hook``) adds one callback handler to
every callback manager that LangChain configures *while an agentgym episode is current*; the
handler translates ``on_chat_model_start`` / ``on_llm_end`` / ``on_tool_start`` / ... into
:mod:`agentgym_runtime.recording.capture` calls. Outside episodes the hook adds nothing.

Policies are applied at the LLM-call boundary: ``BaseChatModel.invoke`` / ``ainvoke`` /
``stream`` / ``astream`` are wrapped (reversibly) so that, when the policy pinned for the
running agent (:func:`agentgym_runtime.current_policy`) is not the baseline, the messages and
tool definitions the model receives carry the policy's system prompt, demonstrations and tool
descriptions. Nothing shared is mutated, so concurrent calls on different policy versions never
see each other's policy. A policy with ``llm`` is routed to the chat model returned by the
factory registered with :func:`register_model_factory`. When such a routed call fails to reach
its endpoint (connection, timeout, HTTP 5xx / 429 / 404 ...), the call is retried once under the
incumbent policy (:mod:`agentgym_runtime.adapters.fallback`), for streams only before the first
chunk.

Inside a training replay (:func:`agentgym_runtime.recording.sandbox.use_sandbox`) the wrapped
``BaseTool.run`` / ``arun`` hand each tool call to the replay's sandbox instead of the tool,
and return its answer in the form LangChain expects (a ``ToolMessage`` for an agent's call).

Three ways in:

* ``agent = agentgym.train_online(create_agent(...), name="support")``: a proxy whose
  ``invoke`` / ``ainvoke`` / ``stream`` / ``astream`` / ``batch`` / ``abatch`` run as episodes
  (``batch``: one episode per input);
* ``@agentgym.train_online`` on a function that runs a LangChain agent: call
  :func:`instrument_langchain` once at start-up (wrapping any LangChain agent does it too);
* ``agentgym.episode()`` blocks around LangChain code, once instrumented.

Example:
    >>> import agentgym_runtime as agentgym
    >>> from langchain_core.runnables import RunnableLambda
    >>> chain = agentgym.train_online(RunnableLambda(lambda x: x + 1), name="adder")
    >>> chain.invoke(1), isinstance(chain, RunnableLambda)
    (2, True)
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from contextvars import ContextVar
from typing import Any, ClassVar, cast
from uuid import UUID

import wrapt
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage, convert_to_messages
from langchain_core.messages import convert_to_openai_messages as _to_openai
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables.config import get_config_list, get_executor_for_config
from langchain_core.tools import BaseTool, ToolException
from langchain_core.tracers import context as tracer_context
from pydantic import ValidationError
from pydantic.v1 import ValidationError as ValidationErrorV1

from agentgym_runtime.adapters.base import Adapter
from agentgym_runtime.adapters.fallback import (
    acall_with_fallback,
    astream_with_fallback,
    call_with_fallback,
    resume_fallback,
    stream_with_fallback,
)
from agentgym_runtime.api import current_policy
from agentgym_runtime.errors import AgentGymError
from agentgym_runtime.policy.apply import apply_to_messages, apply_to_tool_definitions
from agentgym_runtime.recording.capture import LlmCall, ToolCall, start_llm_call, start_tool_call
from agentgym_runtime.recording.context import RequestedToolCall, current_episode_var
from agentgym_runtime.recording.episodes import AgentOptions
from agentgym_runtime.recording.policy import LLMConfig, Policy
from agentgym_runtime.recording.runtime import get_runtime
from agentgym_runtime.recording.sandbox import current_sandbox, sandboxed_result
from agentgym_runtime.recording.wrapping import CallKind, call_async, call_sync, run_kind
from agentgym_runtime.semconv import ToolOutcome

FRAMEWORK = "langchain"

ModelFactory = Callable[[LLMConfig], BaseChatModel]
"""Builds the chat model that serves a policy's ``llm`` (endpoint, model, LoRA adapter)."""

_model_factory: ModelFactory | None = None
_model_factory_lock = threading.Lock()

#: Set while a chat model call already carries an applied policy (no second application by
#: the inner ``invoke`` that ``stream`` falls back to, or by a routed model).
_policy_applied_var: ContextVar[bool] = ContextVar("agentgym_langchain_policy_applied", default=False)
#: The fixed policy of an agent returned by :meth:`LangChainAdapter.seed`, while it runs.
_seeded_policy_var: ContextVar[Policy | None] = ContextVar("agentgym_langchain_seeded_policy", default=None)

_INDEX_KEY = "__agentgym_index__"
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool", "function": "function"}


def register_model_factory(factory: ModelFactory | None) -> None:
    """Route the LLM calls of policies that set ``llm`` to the chat model ``factory`` returns.

    The factory gets the policy's :class:`~agentgym_runtime.recording.policy.LLMConfig` (endpoint,
    model, sampling, LoRA adapter path) and returns a LangChain chat model, e.g. a
    ``ChatOpenAI(base_url=config.endpoint, model=config.model)`` served by vLLM with the
    adapter loaded. It is called once per routed LLM call, so cache models in it if they are
    expensive to build. Without a factory, a policy's ``llm`` is ignored by this adapter
    (prompt, demonstrations and tool descriptions still apply). ``None`` unregisters.

    Example:
        >>> from langchain_core.language_models import GenericFakeChatModel
        >>> register_model_factory(lambda cfg: GenericFakeChatModel(messages=iter(["routed"])))
        >>> register_model_factory(None)
    """
    global _model_factory
    with _model_factory_lock:
        _model_factory = factory


def instrument_langchain() -> LangChainAdapter:
    """Record LangChain calls made inside any agentgym episode (function decorator, ``episode()``).

    Call it once at start-up when ``@agentgym.train_online`` decorates a *function* that runs a
    LangChain agent (wrapping a LangChain object with ``train_online`` instruments already).
    Reference counted: undo with :func:`uninstrument_langchain`.

    Returns:
        The shared adapter instance.

    Example:
        >>> adapter = instrument_langchain()
        >>> adapter.installed
        True
        >>> uninstrument_langchain()
    """
    from agentgym_runtime.adapters import load_adapter

    adapter = cast(LangChainAdapter, load_adapter(FRAMEWORK))
    adapter.instrument()
    return adapter


def uninstrument_langchain() -> None:
    """Release one :func:`instrument_langchain` (the hooks go with the last release).

    Example:
        >>> _ = instrument_langchain()
        >>> uninstrument_langchain()
    """
    from agentgym_runtime.adapters import load_adapter

    load_adapter(FRAMEWORK).uninstrument()


# --- conversions (LangChain <-> OpenAI-style), in one place ---------------------------------------
def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI chat dicts (what spans record and policies operate on).

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> to_openai_messages([HumanMessage("hi")])
        [{'role': 'user', 'content': 'hi'}]
    """
    return _to_openai(list(messages))


def tool_definitions(tools: Any) -> list[dict[str, Any]] | None:
    """``{name, description, parameters}`` from the tools a model was bound with (any provider shape).

    Example:
        >>> tool_definitions([{"type": "function", "function": {"name": "f", "parameters": {}}}])
        [{'name': 'f', 'description': None, 'parameters': {}}]
    """
    if not isinstance(tools, Sequence) or isinstance(tools, str | bytes):
        return None
    result: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, Mapping):
            spec = tool.get("function") if isinstance(tool.get("function"), Mapping) else tool
            assert isinstance(spec, Mapping)
            name = spec.get("name")
            if not name:
                continue
            parameters = spec.get("parameters", spec.get("input_schema", spec.get("args_schema")))
            result.append({"name": str(name), "description": spec.get("description"), "parameters": parameters})
        else:
            name = getattr(tool, "name", None)
            if isinstance(name, str):
                schema = getattr(tool, "tool_call_schema", None)
                parameters = None
                if schema is not None and hasattr(schema, "model_json_schema"):
                    parameters = schema.model_json_schema()
                result.append(
                    {"name": name, "description": getattr(tool, "description", None), "parameters": parameters}
                )
    return result


def apply_policy_to_messages(policy: Policy, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``messages`` with ``policy``'s system prompt and demonstrations (``policy/apply.py`` rules).

    Messages the policy leaves alone are returned as the same objects; only the system message
    is copied with the new content, and demonstrations are built as new messages.

    Example:
        >>> from langchain_core.messages import HumanMessage, SystemMessage
        >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
        >>> [m.content for m in apply_policy_to_messages(p, [SystemMessage("old"), HumanMessage("hi")])]
        ['Be exact.', 'hi']
    """
    stand_ins = [
        {"role": _ROLES.get(m.type, m.type), "content": m.content, _INDEX_KEY: i} for i, m in enumerate(messages)
    ]
    result: list[BaseMessage] = []
    for item in apply_to_messages(policy, stand_ins):
        index = item.get(_INDEX_KEY)
        if index is None:
            result.extend(convert_to_messages([item]))
            continue
        original = messages[index]
        if item["content"] is stand_ins[index]["content"]:
            result.append(original)
        else:
            result.append(original.model_copy(update={"content": item["content"]}))
    return result


def _apply_to_tools(policy: Policy, kwargs: dict[str, Any]) -> dict[str, Any]:
    tools = kwargs.get("tools")
    if not policy.tool_descriptions or not isinstance(tools, Sequence) or isinstance(tools, str):
        return kwargs
    if not all(isinstance(t, Mapping) for t in tools):
        return kwargs
    return {**kwargs, "tools": apply_to_tool_definitions(policy, tools)}


# --- capture: the callback handler ------------------------------------------------------------
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
        self._tool_calls: dict[UUID, ToolCall] = {}

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
            call = start_tool_call(
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


class _EpisodeHandlerVar:
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
        if self.active and current_episode_var.get() is not None:
            return self.handler
        return None


# --- policy at the LLM-call boundary -------------------------------------------------------------
def _effective_policy() -> Policy | None:
    pinned = current_policy()
    if pinned is not None and not pinned.is_baseline:
        if pinned.llm is None:
            return pinned
        pinned = resume_fallback(pinned)  # a routed policy this episode already fell back from
        if not pinned.is_baseline:
            return pinned
    seeded = _seeded_policy_var.get()
    if seeded is not None and not seeded.is_baseline:
        return seeded
    return None


def _routed_model(policy: Policy) -> BaseChatModel | None:
    factory = _model_factory
    if policy.llm is None or factory is None:
        return None
    return factory(policy.llm)


class _PreparedCall:
    __slots__ = ("args", "kwargs", "model")

    def __init__(self, model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.model = model
        self.args = args
        self.kwargs = kwargs


def _prepare(policy: Policy, instance: BaseChatModel, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _PreparedCall:
    """The call (model, input, kwargs) that serves ``policy``; the caller's objects stay untouched."""
    kwargs = dict(kwargs)
    if args:
        model_input, rest = args[0], args[1:]
    else:
        model_input, rest = kwargs.pop("input"), ()
    messages = instance._convert_input(model_input).to_messages()
    new_args = (apply_policy_to_messages(policy, messages), *rest)
    new_kwargs = _apply_to_tools(policy, kwargs)
    routed = _routed_model(policy)
    return _PreparedCall(routed if routed is not None else instance, new_args, new_kwargs)


def _prepared_for(
    policy: Policy, instance: BaseChatModel, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> _PreparedCall:
    """The call serving a fallback's ``policy``: the call as made for the baseline, else prepared."""
    if policy.is_baseline:
        return _PreparedCall(instance, args, kwargs)
    try:
        return _prepare(policy, instance, args, kwargs)
    except Exception as exc:
        get_runtime().internal_error("langchain apply policy", exc)
        return _PreparedCall(instance, args, kwargs)


def _policy_wrapper_sync(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def invoke(self: BaseChatModel, *args: Any, **kwargs: Any) -> Any:
        if _policy_applied_var.get():
            return original(self, *args, **kwargs)
        policy = _effective_policy()
        if policy is None:
            return original(self, *args, **kwargs)
        try:
            prepared = _prepare(policy, self, args, kwargs)
        except Exception as exc:
            get_runtime().internal_error("langchain apply policy", exc)
            return original(self, *args, **kwargs)

        def attempt(serving: Policy) -> Any:
            call = prepared if serving is policy else _prepared_for(serving, self, args, kwargs)
            token = _policy_applied_var.set(True)
            try:
                if call.model is self:
                    return original(self, *call.args, **call.kwargs)
                return getattr(call.model, name)(*call.args, **call.kwargs)
            finally:
                _policy_applied_var.reset(token)

        if policy.llm is None:  # nothing routed: nothing to fall back from
            return attempt(policy)
        return call_with_fallback(policy, attempt)

    invoke.__agentgym_original__ = original  # type: ignore[attr-defined]
    return invoke


def _policy_wrapper_async(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def ainvoke(self: BaseChatModel, *args: Any, **kwargs: Any) -> Any:
        if _policy_applied_var.get():
            return await original(self, *args, **kwargs)
        policy = _effective_policy()
        if policy is None:
            return await original(self, *args, **kwargs)
        try:
            prepared = _prepare(policy, self, args, kwargs)
        except Exception as exc:
            get_runtime().internal_error("langchain apply policy", exc)
            return await original(self, *args, **kwargs)

        async def attempt(serving: Policy) -> Any:
            call = prepared if serving is policy else _prepared_for(serving, self, args, kwargs)
            token = _policy_applied_var.set(True)
            try:
                if call.model is self:
                    return await original(self, *call.args, **call.kwargs)
                return await getattr(call.model, name)(*call.args, **call.kwargs)
            finally:
                _policy_applied_var.reset(token)

        if policy.llm is None:
            return await attempt(policy)
        return await acall_with_fallback(policy, attempt)

    ainvoke.__agentgym_original__ = original  # type: ignore[attr-defined]
    return ainvoke


def _policy_wrapper_stream(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def stream(self: BaseChatModel, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if _policy_applied_var.get():
            yield from original(self, *args, **kwargs)
            return
        policy = _effective_policy()
        if policy is None:
            yield from original(self, *args, **kwargs)
            return
        try:
            prepared = _prepare(policy, self, args, kwargs)
        except Exception as exc:
            get_runtime().internal_error("langchain apply policy", exc)
            yield from original(self, *args, **kwargs)
            return

        def attempt(serving: Policy) -> Iterator[Any]:
            call = prepared if serving is policy else _prepared_for(serving, self, args, kwargs)
            if call.model is self:
                iterator = iter(original(self, *call.args, **call.kwargs))
            else:
                iterator = iter(getattr(call.model, name)(*call.args, **call.kwargs))
            while True:
                # Bound per step: a context variable must not stay set across ``yield``.
                token = _policy_applied_var.set(True)
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    _policy_applied_var.reset(token)
                yield item

        if policy.llm is None:
            yield from attempt(policy)
        else:
            yield from stream_with_fallback(policy, attempt)

    stream.__agentgym_original__ = original  # type: ignore[attr-defined]
    return stream


def _policy_wrapper_astream(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def astream(self: BaseChatModel, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        policy = None if _policy_applied_var.get() else _effective_policy()
        prepared: _PreparedCall | None = None
        if policy is not None:
            try:
                prepared = _prepare(policy, self, args, kwargs)
            except Exception as exc:
                get_runtime().internal_error("langchain apply policy", exc)
        if policy is None or prepared is None:
            async for item in original(self, *args, **kwargs):
                yield item
            return
        first_call = prepared

        async def attempt(serving: Policy) -> AsyncGenerator[Any, None]:
            call = first_call if serving is policy else _prepared_for(serving, self, args, kwargs)
            if call.model is self:
                iterator = original(self, *call.args, **call.kwargs).__aiter__()
            else:
                iterator = getattr(call.model, name)(*call.args, **call.kwargs).__aiter__()
            while True:
                token = _policy_applied_var.set(True)
                try:
                    item = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    _policy_applied_var.reset(token)
                yield item

        chunks = attempt(policy) if policy.llm is None else astream_with_fallback(policy, attempt)
        async with aclosing(chunks):
            async for item in chunks:
                yield item

    astream.__agentgym_original__ = original  # type: ignore[attr-defined]
    return astream


_MODEL_WRAPPERS: dict[str, Callable[[Callable[..., Any], str], Callable[..., Any]]] = {
    "invoke": _policy_wrapper_sync,
    "ainvoke": _policy_wrapper_async,
    "stream": _policy_wrapper_stream,
    "astream": _policy_wrapper_astream,
}


# --- tools in a training replay's sandbox ---------------------------------------------------------
def _sandbox_arguments(tool: BaseTool, tool_input: Any) -> Any:
    """The keyword arguments a ``BaseTool.run`` input stands for (a string goes to the only argument)."""
    if isinstance(tool_input, Mapping):
        # Arguments the tool node injects (state, runtime, ...) are not the model's arguments.
        strip = getattr(tool, "_filter_injected_args", None)
        return dict(strip(dict(tool_input)) if callable(strip) else tool_input)
    names = list(tool.args)
    if len(names) == 1:
        return {names[0]: tool_input}
    return {"input": tool_input}


def _sandboxed_tool_run(tool: BaseTool, tool_input: Any, tool_call_id: str | None) -> Any:
    """What ``run`` returns when the active sandbox answers for ``tool``.

    With a ``tool_call_id`` (an agent's tool call) that is a ``ToolMessage``, ``status="error"`` for a
    call the sandbox refused (as ``create_agent``'s tool node answers a schema error); without one,
    the content, and a refused call raises ``ToolException``. A fake's own exception propagates,
    as the real tool's would.
    """
    try:
        content = sandboxed_result(tool.name, _sandbox_arguments(tool, tool_input))
        status = "success"
    except AgentGymError as exc:  # refused by the sandbox: unknown tool, invalid arguments
        if tool_call_id is None:
            raise ToolException(str(exc)) from exc
        content, status = f"Error: {exc}", "error"
    if tool_call_id is None:
        return content
    if not isinstance(content, str | list):
        content = json.dumps(content, ensure_ascii=False, default=str)
    return ToolMessage(content=content, tool_call_id=tool_call_id, name=tool.name, status=status)


def _tool_wrapper_sync(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def run(self: BaseTool, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        if current_sandbox.get() is None:
            return original(self, tool_input, *args, **kwargs)
        return _sandboxed_tool_run(self, tool_input, kwargs.get("tool_call_id"))

    run.__agentgym_original__ = original  # type: ignore[attr-defined]
    return run


def _tool_wrapper_async(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def arun(self: BaseTool, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        if current_sandbox.get() is None:
            return await original(self, tool_input, *args, **kwargs)
        return _sandboxed_tool_run(self, tool_input, kwargs.get("tool_call_id"))

    arun.__agentgym_original__ = original  # type: ignore[attr-defined]
    return arun


#: ``BaseTool`` methods wrapped while instrumented: inside a training replay the sandbox answers.
_TOOL_WRAPPERS: dict[str, Callable[[Callable[..., Any], str], Callable[..., Any]]] = {
    "run": _tool_wrapper_sync,
    "arun": _tool_wrapper_async,
}


# --- seeded agents --------------------------------------------------------------------------------
class SeededAgent(wrapt.ObjectProxy):  # type: ignore[misc]
    """An agent with a fixed policy: every chat model call it makes sees ``policy``.

    Returned by :meth:`LangChainAdapter.seed`; behaves like the agent (isinstance, attributes).
    A non-baseline policy pinned by the runtime (registry, canary) takes precedence.
    """

    def __init__(self, wrapped: Any, policy: Policy) -> None:
        super().__init__(wrapped)
        self._self_policy = policy

    @property
    def agentgym_policy(self) -> Policy:
        """The policy this agent was seeded with."""
        return self._self_policy

    def invoke(self, *args: Any, **kwargs: Any) -> Any:
        """``invoke`` with the seeded policy."""
        token = _seeded_policy_var.set(self._self_policy)
        try:
            return self.__wrapped__.invoke(*args, **kwargs)
        finally:
            _seeded_policy_var.reset(token)

    async def ainvoke(self, *args: Any, **kwargs: Any) -> Any:
        """``ainvoke`` with the seeded policy."""
        token = _seeded_policy_var.set(self._self_policy)
        try:
            return await self.__wrapped__.ainvoke(*args, **kwargs)
        finally:
            _seeded_policy_var.reset(token)

    def batch(self, *args: Any, **kwargs: Any) -> Any:
        """``batch`` with the seeded policy (LangChain copies the context to its workers)."""
        token = _seeded_policy_var.set(self._self_policy)
        try:
            return self.__wrapped__.batch(*args, **kwargs)
        finally:
            _seeded_policy_var.reset(token)

    async def abatch(self, *args: Any, **kwargs: Any) -> Any:
        """``abatch`` with the seeded policy."""
        token = _seeded_policy_var.set(self._self_policy)
        try:
            return await self.__wrapped__.abatch(*args, **kwargs)
        finally:
            _seeded_policy_var.reset(token)

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """``stream`` with the seeded policy (bound around each step)."""
        token = _seeded_policy_var.set(self._self_policy)
        try:
            iterator = iter(self.__wrapped__.stream(*args, **kwargs))
        finally:
            _seeded_policy_var.reset(token)
        while True:
            token = _seeded_policy_var.set(self._self_policy)
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                _seeded_policy_var.reset(token)
            yield item

    async def astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """``astream`` with the seeded policy (bound around each step)."""
        token = _seeded_policy_var.set(self._self_policy)
        try:
            iterator = self.__wrapped__.astream(*args, **kwargs).__aiter__()
        finally:
            _seeded_policy_var.reset(token)
        while True:
            token = _seeded_policy_var.set(self._self_policy)
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                return
            finally:
                _seeded_policy_var.reset(token)
            yield item

    def __repr__(self) -> str:
        return f"<agentgym seeded {self._self_policy.ref} {self.__wrapped__!r}>"


class _Installation:
    """What instrumenting puts in place, once per process (the adapter's refcount guards it)."""

    def __init__(self) -> None:
        self.handler = AgentGymCallbackHandler()
        self.hook: _EpisodeHandlerVar | None = None
        self.originals: dict[str, Any] = {}
        self.tool_originals: dict[str, Any] = {}

    def install(self) -> None:
        if self.hook is not None:
            return
        hook = _EpisodeHandlerVar(self.handler)
        tracer_context.register_configure_hook(cast(ContextVar[Any], hook), inheritable=True)
        self.hook = hook
        for method, make in _MODEL_WRAPPERS.items():
            original = BaseChatModel.__dict__[method]
            self.originals[method] = original
            setattr(BaseChatModel, method, make(original, method))
        for method, make in _TOOL_WRAPPERS.items():
            original = BaseTool.__dict__[method]
            self.tool_originals[method] = original
            setattr(BaseTool, method, make(original, method))

    def remove(self) -> None:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook.active = False
            tracer_context._configure_hooks[:] = [
                entry for entry in tracer_context._configure_hooks if entry[0] is not cast(Any, hook)
            ]
        for method, original in self.originals.items():
            setattr(BaseChatModel, method, original)
        self.originals.clear()
        for method, original in self.tool_originals.items():
            setattr(BaseTool, method, original)
        self.tool_originals.clear()


_installation = _Installation()


# --- the adapter --------------------------------------------------------------------------------
class LangChainAdapter(Adapter):
    """Episodes for LangChain runnables (``create_agent`` graphs, LCEL chains, ``AgentExecutor``).

    Example:
        >>> from langchain_core.runnables import RunnableLambda
        >>> LangChainAdapter.detects(RunnableLambda(str)), LangChainAdapter.detects(len)
        (True, False)
    """

    framework: ClassVar[str] = FRAMEWORK
    extra: ClassVar[str | None] = "langchain"
    module_prefixes: ClassVar[tuple[str, ...]] = ("langchain", "langchain_core", "langgraph", "langchain_classic")
    entry_points: ClassVar[Mapping[str, CallKind | None]] = {
        "invoke": CallKind.SYNC,
        "ainvoke": CallKind.ASYNC,
        "stream": CallKind.GENERATOR,
        "astream": CallKind.ASYNC_GENERATOR,
        "batch": CallKind.SYNC,
        "abatch": CallKind.ASYNC,
    }

    @property
    def handler(self) -> AgentGymCallbackHandler:
        """The process-wide callback handler the configure hook adds inside episodes."""
        return _installation.handler

    @property
    def installed(self) -> bool:
        """Whether the callback hook and the chat-model policy wrappers are in place."""
        return _installation.hook is not None

    def _install(self) -> None:
        _installation.install()

    def _remove(self) -> None:
        _installation.remove()

    # --- per call ----------------------------------------------------------------------------
    def call_input(self, target: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The runnable's input (the config, with its callbacks, is not recorded)."""
        if args:
            return args[0]
        return kwargs.get("input", kwargs.get("inputs"))

    def run(
        self,
        target: Any,
        method: str,
        kind: CallKind | None,
        options: AgentOptions,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run one entry point as an episode; ``batch`` / ``abatch`` run one episode per input."""
        if method == "batch":
            return self._batch(target, options, *args, **kwargs)
        if method == "abatch":
            return self._abatch(target, options, *args, **kwargs)
        bound = getattr(target, method)
        return run_kind(
            kind or CallKind.of(bound), options, bound, args, kwargs, self.call_input(target, method, args, kwargs)
        )

    def _batch(
        self,
        target: Any,
        options: AgentOptions,
        inputs: list[Any],
        config: Any = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))

        def invoke_one(item: Any, item_config: Any) -> Any:
            try:
                return call_sync(options, target.invoke, (item, item_config), kwargs, item)
            except Exception as exc:
                if return_exceptions:
                    return exc
                raise

        if len(inputs) == 1:
            return [invoke_one(inputs[0], configs[0])]
        with get_executor_for_config(configs[0]) as executor:
            return list(executor.map(invoke_one, inputs, configs))

    async def _abatch(
        self,
        target: Any,
        options: AgentOptions,
        inputs: list[Any],
        config: Any = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        limit = configs[0].get("max_concurrency")
        semaphore = asyncio.Semaphore(limit) if limit else None

        async def invoke_one(item: Any, item_config: Any) -> Any:
            try:
                if semaphore is None:
                    return await call_async(options, target.ainvoke, (item, item_config), kwargs, item)
                async with semaphore:
                    return await call_async(options, target.ainvoke, (item, item_config), kwargs, item)
            except Exception as exc:
                if return_exceptions:
                    return exc
                raise

        return list(await asyncio.gather(*(invoke_one(i, c) for i, c in zip(inputs, configs, strict=True))))

    # --- policies ----------------------------------------------------------------------------
    def apply_policy(self, policy: Policy, request: Any) -> Any:
        """``request`` with ``policy`` applied: a message list, or ``{"messages", "tools"}``.

        Example:
            >>> from langchain_core.messages import HumanMessage
            >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
            >>> [m.type for m in LangChainAdapter().apply_policy(p, [HumanMessage("hi")])]
            ['system', 'human']
        """
        if isinstance(request, Mapping):
            result = dict(request)
            if "messages" in result:
                result["messages"] = apply_policy_to_messages(policy, convert_to_messages(result["messages"]))
            if isinstance(result.get("tools"), Sequence):
                result["tools"] = apply_to_tool_definitions(policy, result["tools"])
            return result
        return apply_policy_to_messages(policy, convert_to_messages(request))

    def seed(self, agent: Any, policy: Policy) -> Any:
        """``agent`` with ``policy`` fixed: a :class:`SeededAgent` proxy (hooks are instrumented).

        Example:
            >>> from langchain_core.runnables import RunnableLambda
            >>> seeded = LangChainAdapter().seed(RunnableLambda(str), Policy(agent="a", version=3))
            >>> seeded.agentgym_policy.version, seeded.invoke(5)
            (3, '5')
            >>> LangChainAdapter().uninstrument()
        """
        self.instrument()
        return SeededAgent(agent, policy)


__all__ = [
    "AgentGymCallbackHandler",
    "LangChainAdapter",
    "ModelFactory",
    "SeededAgent",
    "apply_policy_to_messages",
    "instrument_langchain",
    "register_model_factory",
    "tool_definitions",
    "to_openai_messages",
    "uninstrument_langchain",
]
