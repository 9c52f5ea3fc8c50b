"""AutoGen hooks: class-level patches (one reversible table) that capture turns, LLM calls and tools.

See the package docstring for what each hook records. Outside an episode every hook only
delegates; after :func:`remove` a hook someone wrapped over passes straight through.

Example:
    >>> PATCHES.name
    'autogen'
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import aclosing, contextmanager
from contextvars import ContextVar
from typing import Any, cast

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.teams import BaseGroupChat
from autogen_core import CancellationToken
from autogen_core.tools import BaseStreamTool, BaseTool
from autogen_core.tools import _base as autogen_tools_base
from opentelemetry import trace
from pydantic import ValidationError

from agentgym_runtime.adapters import mcp as mcp_patches
from agentgym_runtime.adapters.autogen.client import FRAMEWORK, recording_client
from agentgym_runtime.adapters.checking import CheckedToolCall, start_checked_tool_call
from agentgym_runtime.adapters.patches import PatchSpec, PatchTable
from agentgym_runtime.recording.capture import ToolCall, current_agent_name, reconcile
from agentgym_runtime.recording.context import current_episode_var
from agentgym_runtime.recording.episodes import AgentOptions
from agentgym_runtime.recording.runtime import get_runtime
from agentgym_runtime.recording.sandbox import current_sandbox, sandboxed_result
from agentgym_runtime.recording.wrapping import iterate_async
from agentgym_runtime.semconv import ToolOutcome

_Call = ToolCall | CheckedToolCall

#: The AutoGen adapter's patches.
PATCHES = PatchTable(FRAMEWORK)

#: Participants of teams that ran (or were wrapped); their turns get their own agent scope.
team_members: weakref.WeakSet[Any] = weakref.WeakSet()
#: Agent objects wrapped by ``train_online`` -> the name they are recorded under.
recorded_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_team_members = team_members
_recorded_names = recorded_names


def _hook_call_llm(original: Any) -> Any:
    async def _call_llm(cls: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        if "model_client" in kwargs and PATCHES.active:
            kwargs["model_client"] = recording_client(kwargs["model_client"])
        async with aclosing(original.__func__(cls, *args, **kwargs)) as stream:
            async for item in stream:
                yield item

    return classmethod(_call_llm)


def _hook_on_messages_stream(original: Any) -> Any:
    async def on_messages_stream(self: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        if not PATCHES.active or current_episode_var.get() is None or self not in _team_members:
            async with aclosing(original(self, *args, **kwargs)) as stream:
                async for item in stream:
                    yield item
            return
        name = _recorded_names.get(self) or self.name
        if name == current_agent_name():
            async with aclosing(original(self, *args, **kwargs)) as stream:
                async for item in stream:
                    yield item
            return

        # A participant's turn inside a team's episode: its own agent scope and pinned policy.
        async def turn() -> AsyncGenerator[Any, None]:
            async with aclosing(original(self, *args, **kwargs)) as inner:
                async for item in inner:
                    yield item
            # The turn is over: its requested calls that never ran are this agent's failures.
            try:
                reconcile(agent=name, framework=FRAMEWORK)
            except Exception as exc:
                get_runtime().internal_error("autogen turn reconcile", exc)

        options = AgentOptions(name=name, framework=FRAMEWORK)
        run = cast(AsyncGenerator[Any, None], iterate_async(options, turn, (), {}, None))
        async with aclosing(run) as stream:
            async for item in stream:
                yield item

    return on_messages_stream


def _hook_group_run_stream(original: Any) -> Any:
    async def run_stream(self: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        try:
            for participant in getattr(self, "_participants", ()):
                _team_members.add(participant)
        except Exception as exc:
            get_runtime().internal_error("autogen team members", exc)
        async with aclosing(original(self, *args, **kwargs)) as stream:
            async for item in stream:
                yield item

    return run_stream


def _is_argument_error(tool: BaseTool[Any, Any], exc: BaseException) -> bool:
    # AutoGen validates the arguments with the tool's own pydantic model before running it.
    return isinstance(exc, ValidationError) and exc.title == tool.args_type().__name__


def _start_tool(tool: BaseTool[Any, Any], args: Mapping[str, Any], call_id: str | None) -> _Call | None:
    if current_episode_var.get() is None or not PATCHES.active:
        return None
    try:
        return start_checked_tool_call(
            tool.name,
            call_id=call_id,
            arguments=dict(args),
            schema=tool.schema.get("parameters"),
            description=tool.description,
            framework=FRAMEWORK,
        )
    except Exception as exc:
        get_runtime().internal_error("autogen tool start", exc)
        return None


def _end_tool(tool: BaseTool[Any, Any], call: _Call, result: Any = None, error: BaseException | None = None) -> None:
    try:
        if error is None:
            call.succeed(tool.return_value_as_string(result))
        elif isinstance(error, asyncio.CancelledError):
            call.fail(ToolOutcome.NOT_EXECUTED, error=error, message="the tool call was cancelled")
        elif _is_argument_error(tool, error):
            call.fail(ToolOutcome.INVALID_ARGUMENTS, error=error)
        else:
            call.fail(ToolOutcome.TOOL_ERROR, error=error)
    except Exception as exc:
        get_runtime().internal_error("autogen tool end", exc)


_own_tool_span: ContextVar[tuple[str, str | None] | None] = ContextVar("agentgym_autogen_tool", default=None)
"""Set while a tool runs inside our ``execute_tool`` span: AutoGen's own span for it is folded into ours."""


def _hook_trace_tool_span(original: Any) -> Any:
    @contextmanager
    def trace_tool_span(tool_name: str, **kwargs: Any) -> Iterator[Any]:
        if _own_tool_span.get() == (tool_name, kwargs.get("tool_call_id")):
            # Our span for this very call is current and records the outcome (and the error,
            # which propagates to the run_json hook): a second execute_tool span would duplicate it.
            yield trace.get_current_span()
            return
        with original(tool_name, **kwargs) as span:
            yield span

    return trace_tool_span


async def _sandboxed_run_json(
    tool: Any, args: Mapping[str, Any], cancellation_token: CancellationToken, call_id: str | None = None
) -> Any:
    """``run_json`` inside a training replay: the sandbox answers; a refused call raises, as a schema error does.

    AutoGen turns the raised error into ``FunctionExecutionResult(is_error=True)`` and the result
    into text with the tool's ``return_value_as_string``, exactly as for the real tool.
    """
    return sandboxed_result(tool.name, dict(args))


def _hook_run_json(original: Any) -> Any:
    async def run_json(
        self: Any, args: Mapping[str, Any], cancellation_token: CancellationToken, call_id: str | None = None
    ) -> Any:
        if not PATCHES.active:
            return await original(self, args, cancellation_token, call_id=call_id)
        execute = original if current_sandbox.get() is None else _sandboxed_run_json
        call = _start_tool(self, args, call_id)
        if call is None:
            return await execute(self, args, cancellation_token, call_id=call_id)
        token = _own_tool_span.set((self.name, call_id))
        try:
            result = await execute(self, args, cancellation_token, call_id=call_id)
        except BaseException as exc:
            _end_tool(self, call, error=exc)
            raise
        finally:
            _own_tool_span.reset(token)
        _end_tool(self, call, result=result)
        return result

    return run_json


def _hook_run_json_stream(original: Any) -> Any:
    async def run_json_stream(
        self: Any, args: Mapping[str, Any], cancellation_token: CancellationToken, call_id: str | None = None
    ) -> AsyncGenerator[Any, None]:
        call = _start_tool(self, args, call_id)
        key = (self.name, call_id) if call is not None else None
        last: Any = None
        try:
            async with aclosing(original(self, args, cancellation_token, call_id=call_id)) as stream:
                while True:
                    # bound per step: the generator's steps may run in different contexts
                    token = _own_tool_span.set(key)
                    try:
                        item = await stream.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        _own_tool_span.reset(token)
                    last = item
                    yield item
        except BaseException as exc:
            if call is not None:
                _end_tool(self, call, error=exc)
            raise
        if call is not None:
            _end_tool(self, call, result=last)

    return run_json_stream


def _hook_workbench_call_tool(original: Any) -> Any:
    """``McpWorkbench.call_tool``: AutoGen's MCP tools run here, not through ``BaseTool.run_json``.

    The workbench turns both an ``isError`` answer and a failed call into ``is_error``; the
    ``mcp`` client's verdict (:mod:`agentgym_runtime.adapters.mcp`) tells them apart, and an
    ``is_error`` with no MCP answer at all (the server never came up) is ``tool_error``.
    """

    async def call_tool(
        self: Any, name: str, arguments: Mapping[str, Any] | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        if current_episode_var.get() is None or not PATCHES.active:
            return await original(self, name, arguments, *args, **kwargs)
        call: _Call | None = None
        try:
            call = start_checked_tool_call(
                name, call_id=kwargs.get("call_id"), arguments=dict(arguments or {}), framework=FRAMEWORK
            )
        except Exception as exc:
            get_runtime().internal_error("autogen mcp tool start", exc)
        # AutoGen's own execute_tool span for this call is folded into ours (as for run_json).
        token = _own_tool_span.set((name, kwargs.get("call_id")) if call is not None else None)
        try:
            result = await original(self, name, arguments, *args, **kwargs)
        except BaseException as exc:
            if call is not None:
                outcome = (
                    ToolOutcome.NOT_EXECUTED if isinstance(exc, asyncio.CancelledError) else ToolOutcome.TOOL_ERROR
                )
                call.fail(outcome, error=exc)
            raise
        finally:
            _own_tool_span.reset(token)
        if call is not None:
            try:
                text = result.to_text()
                if result.is_error:
                    call.fail(ToolOutcome.TOOL_ERROR, message=text)
                else:
                    call.succeed(text)
            except Exception as exc:
                get_runtime().internal_error("autogen mcp tool end", exc)
        return result

    return call_tool


def _mcp_hooks() -> tuple[PatchSpec, ...]:
    try:
        from autogen_ext.tools.mcp import McpWorkbench
        from autogen_ext.tools.mcp import _workbench as mcp_workbench_module
    except Exception:  # autogen-ext without its mcp extra, or an mcp it cannot import
        return ()
    return (
        (McpWorkbench, "call_tool", _hook_workbench_call_tool),
        # The workbench imported trace_tool_span by name: fold its span where it looks it up.
        (mcp_workbench_module, "trace_tool_span", _hook_trace_tool_span),
    )


_HOOKS: tuple[PatchSpec, ...] = (
    (autogen_tools_base, "trace_tool_span", _hook_trace_tool_span),
    (AssistantAgent, "_call_llm", _hook_call_llm),
    (AssistantAgent, "_process_model_result", _hook_call_llm),
    (AssistantAgent, "on_messages_stream", _hook_on_messages_stream),
    (BaseGroupChat, "run_stream", _hook_group_run_stream),
    (BaseTool, "run_json", _hook_run_json),
    (BaseStreamTool, "run_json_stream", _hook_run_json_stream),
)


def install() -> None:
    """Install the class-level hooks and the shared ``mcp`` client patches (once)."""
    if PATCHES.active:
        return
    PATCHES.install([*_HOOKS, *_mcp_hooks()])
    PATCHES.on_remove(mcp_patches.acquire())


def remove() -> None:
    """Undo :func:`install` (originals come back where the hooks are still ours)."""
    PATCHES.remove()


__all__ = ["PATCHES", "install", "recorded_names", "remove", "team_members"]
