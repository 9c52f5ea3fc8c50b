"""LangChain hooks: the policy at the chat-model call boundary, tools in a replay's sandbox, install.

``BaseChatModel.invoke`` / ``ainvoke`` / ``stream`` / ``astream`` are wrapped (reversibly, through
the shared :class:`~agentgym_runtime.adapters.patches.PatchTable`) so that each call takes the
adapters' one per-call policy path (:mod:`agentgym_runtime.adapters.seeding`): the effective
policy, :func:`~agentgym_runtime.adapters.langchain.messages.apply_policy` on the call's messages
and tools, the routed model (:mod:`agentgym_runtime.adapters.routing`) and the fallback to the
incumbent (:mod:`agentgym_runtime.adapters.fallback`; streams only before the first chunk).
Nothing shared is mutated, so concurrent calls on different policy versions never see each
other's policy.

Inside a training replay (:func:`agentgym_runtime.recording.sandbox.use_sandbox`) the wrapped
``BaseTool.run`` / ``arun`` hand each tool call to the replay's sandbox instead of the tool,
and return its answer in the form LangChain expects (a ``ToolMessage`` for an agent's call).

Example:
    >>> PATCHES.name
    'langchain'
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, ToolException
from langchain_core.tracers import context as tracer_context

from agentgym_runtime.adapters import mcp as mcp_patches
from agentgym_runtime.adapters.fallback import (
    acall_with_fallback,
    astream_with_fallback,
    call_with_fallback,
    stream_with_fallback,
)
from agentgym_runtime.adapters.langchain.callbacks import FRAMEWORK, AgentGymCallbackHandler, EpisodeHandlerVar
from agentgym_runtime.adapters.langchain.messages import apply_policy
from agentgym_runtime.adapters.patches import PatchSpec, PatchTable
from agentgym_runtime.adapters.routing import routed_model
from agentgym_runtime.adapters.seeding import effective_policy
from agentgym_runtime.adapters.streams import aiterate_within, iterate_within
from agentgym_runtime.errors import AgentGymError
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.runtime import get_runtime
from agentgym_runtime.recording.sandbox import current_sandbox, sandboxed_result

_MakeWrapper = Callable[[Callable[..., Any], str], Callable[..., Any]]

#: The LangChain adapter's patches (chat-model policy wrappers, sandboxed tools, configure hook).
PATCHES = PatchTable(FRAMEWORK)
#: The process-wide callback handler the configure hook adds inside episodes.
HANDLER = AgentGymCallbackHandler()

#: Set while a chat model call already carries an applied policy (no second application by
#: the inner ``invoke`` that ``stream`` falls back to, or by a routed model).
_policy_applied_var: ContextVar[bool] = ContextVar("agentgym_langchain_policy_applied", default=False)


@contextmanager
def _applied() -> Iterator[None]:
    token = _policy_applied_var.set(True)
    try:
        yield
    finally:
        _policy_applied_var.reset(token)


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
    request = apply_policy(policy, {**kwargs, "messages": instance._convert_input(model_input).to_messages()})
    messages = request.pop("messages")
    routed = routed_model(FRAMEWORK, policy.llm) if policy.llm is not None else None
    return _PreparedCall(routed if routed is not None else instance, (messages, *rest), request)


def _plan(
    instance: BaseChatModel, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Policy, _PreparedCall] | None:
    """The policy this call serves and the call prepared for it, or ``None``: call as the host did."""
    if _policy_applied_var.get() or not PATCHES.active:
        return None
    policy = effective_policy()
    if policy is None:
        return None
    try:
        return policy, _prepare(policy, instance, args, kwargs)
    except Exception as exc:
        get_runtime().internal_error("langchain apply policy", exc)
        return None


def _serving(
    serving: Policy,
    plan: tuple[Policy, _PreparedCall],
    instance: BaseChatModel,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> _PreparedCall:
    """The call serving ``serving``: the planned one, the host's (baseline), or one prepared for a fallback."""
    policy, prepared = plan
    if serving is policy:
        return prepared
    if serving.is_baseline:
        return _PreparedCall(instance, args, kwargs)
    try:
        return _prepare(serving, instance, args, kwargs)
    except Exception as exc:
        get_runtime().internal_error("langchain apply policy", exc)
        return _PreparedCall(instance, args, kwargs)


def _target(
    call: _PreparedCall, original: Callable[..., Any], instance: BaseChatModel, name: str
) -> Callable[..., Any]:
    if call.model is instance:
        return lambda *a, **k: original(instance, *a, **k)
    return cast(Callable[..., Any], getattr(call.model, name))


def _wrap_invoke(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    def invoke(self: BaseChatModel, *args: Any, **kwargs: Any) -> Any:
        plan = _plan(self, args, kwargs)
        if plan is None:
            return original(self, *args, **kwargs)

        def attempt(serving: Policy) -> Any:
            call = _serving(serving, plan, self, args, kwargs)
            with _applied():
                return _target(call, original, self, name)(*call.args, **call.kwargs)

        return call_with_fallback(plan[0], attempt)

    return invoke


def _wrap_ainvoke(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    async def ainvoke(self: BaseChatModel, *args: Any, **kwargs: Any) -> Any:
        plan = _plan(self, args, kwargs)
        if plan is None:
            return await original(self, *args, **kwargs)

        async def attempt(serving: Policy) -> Any:
            call = _serving(serving, plan, self, args, kwargs)
            with _applied():
                return await _target(call, original, self, name)(*call.args, **call.kwargs)

        return await acall_with_fallback(plan[0], attempt)

    return ainvoke


def _wrap_stream(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    def stream(self: BaseChatModel, *args: Any, **kwargs: Any) -> Iterator[Any]:
        plan = _plan(self, args, kwargs)
        if plan is None:
            yield from original(self, *args, **kwargs)
            return

        def attempt(serving: Policy) -> Iterator[Any]:
            call = _serving(serving, plan, self, args, kwargs)
            return iterate_within(_applied, iter(_target(call, original, self, name)(*call.args, **call.kwargs)))

        yield from stream_with_fallback(plan[0], attempt)

    return stream


def _wrap_astream(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    async def astream(self: BaseChatModel, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        plan = _plan(self, args, kwargs)
        if plan is None:
            async for item in original(self, *args, **kwargs):
                yield item
            return

        def attempt(serving: Policy) -> AsyncIterator[Any]:
            call = _serving(serving, plan, self, args, kwargs)
            chunks = _target(call, original, self, name)(*call.args, **call.kwargs).__aiter__()
            return aiterate_within(cast(Callable[[], AbstractContextManager[Any]], _applied), chunks)

        async for item in astream_with_fallback(plan[0], attempt):
            yield item

    return astream


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
        if current_sandbox.get() is None or not PATCHES.active:
            return original(self, tool_input, *args, **kwargs)
        return _sandboxed_tool_run(self, tool_input, kwargs.get("tool_call_id"))

    return run


def _tool_wrapper_async(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def arun(self: BaseTool, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        if current_sandbox.get() is None or not PATCHES.active:
            return await original(self, tool_input, *args, **kwargs)
        return _sandboxed_tool_run(self, tool_input, kwargs.get("tool_call_id"))

    return arun


#: ``BaseTool`` methods wrapped while instrumented: inside a training replay the sandbox answers.
_TOOL_WRAPPERS: dict[str, Callable[[Callable[..., Any], str], Callable[..., Any]]] = {
    "run": _tool_wrapper_sync,
    "arun": _tool_wrapper_async,
}


def _specs(
    owner: type, wrappers: Mapping[str, Callable[[Callable[..., Any], str], Callable[..., Any]]]
) -> list[PatchSpec]:
    return [(owner, method, functools.partial(_bind_name, make, method)) for method, make in wrappers.items()]


def _bind_name(make: _MakeWrapper, name: str, original: Any) -> Any:
    return make(original, name)


_MODEL_WRAPPERS: dict[str, Callable[[Callable[..., Any], str], Callable[..., Any]]] = {
    "invoke": _wrap_invoke,
    "ainvoke": _wrap_ainvoke,
    "stream": _wrap_stream,
    "astream": _wrap_astream,
}


def install() -> None:
    """Install the chat-model wrappers, the sandboxed tools and the configure hook (once)."""
    if PATCHES.active:
        return
    PATCHES.install([*_specs(BaseChatModel, _MODEL_WRAPPERS), *_specs(BaseTool, _TOOL_WRAPPERS)])
    hook = EpisodeHandlerVar(HANDLER)
    tracer_context.register_configure_hook(cast(ContextVar[Any], hook), inheritable=True)

    def unregister() -> None:
        hook.active = False
        tracer_context._configure_hooks[:] = [
            entry for entry in tracer_context._configure_hooks if entry[0] is not cast(Any, hook)
        ]

    PATCHES.on_remove(unregister)
    PATCHES.on_remove(mcp_patches.acquire())


def remove() -> None:
    """Undo :func:`install`."""
    PATCHES.remove()


__all__ = ["HANDLER", "PATCHES", "install", "remove"]
