"""CrewAI hooks: one reversible patch table around ``get_llm_response``, the event bus, turns and tools.

See the package docstring for what each hook records.

Example:
    >>> PATCHES.name
    'crewai'
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.metadata
import inspect
import json
import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from types import ModuleType
from typing import Any

from crewai import Agent, Task
from crewai.agents.parser import AgentAction, OutputParserError, parse
from crewai.events import crewai_event_bus
from crewai.events.types.tool_usage_events import (
    ToolSelectionErrorEvent,
    ToolUsageErrorEvent,
    ToolUsageFinishedEvent,
    ToolUsageStartedEvent,
    ToolValidateInputErrorEvent,
)
from crewai.hooks import register_after_tool_call_hook, unregister_after_tool_call_hook
from crewai.llms.base_llm import BaseLLM
from crewai.tools.structured_tool import CrewStructuredTool

from agentgym_runtime.adapters import mcp as mcp_patches
from agentgym_runtime.adapters.checking import CheckedToolCall, start_checked_tool_call
from agentgym_runtime.adapters.crewai.llms import FRAMEWORK, routed_llm
from agentgym_runtime.adapters.crewai.messages import CrewAIRequest, policy_messages, restore_messages
from agentgym_runtime.adapters.fallback import call_with_fallback
from agentgym_runtime.adapters.patches import PatchTable
from agentgym_runtime.adapters.seeding import effective_policy
from agentgym_runtime.errors import ToolArgumentsError
from agentgym_runtime.models.crewai import tool_definitions
from agentgym_runtime.recording.capture import LlmCall, ToolCall, record_tool_failure, start_llm_call
from agentgym_runtime.recording.context import RequestedToolCall, current_agent_var, current_episode_var
from agentgym_runtime.recording.episodes import AgentOptions
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.runtime import get_runtime, peek_runtime
from agentgym_runtime.recording.sandbox import current_sandbox, sandboxed_result
from agentgym_runtime.recording.wrapping import call_sync
from agentgym_runtime.semconv import ToolOutcome

logger = logging.getLogger("agentgym_runtime.adapters")

#: The CrewAI adapter's patches.
PATCHES = PatchTable(FRAMEWORK)

#: The modules whose executors call ``get_llm_response`` (each imports it by name, so it is patched
#: where they look it up): ``CrewAgentExecutor`` (crewai 1.6; the module is gone by 1.15), the
#: flow-based ``AgentExecutor`` that replaced it (crewai 1.15), and ``LiteAgent`` (``Agent.kickoff``).
LLM_RESPONSE_MODULES = ("crewai.agents.crew_agent_executor", "crewai.agents.agent_executor", "crewai.lite_agent")


def _llm_response_modules() -> list[ModuleType]:
    """The modules of :data:`LLM_RESPONSE_MODULES` this crewai has that look ``get_llm_response`` up."""
    found = []
    for name in LLM_RESPONSE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if callable(getattr(module, "get_llm_response", None)):
            found.append(module)
    return found


def crewai_version() -> str:
    """The installed crewai's version (``"unknown"`` if it does not say)."""
    try:
        return importlib.metadata.version("crewai")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


#: What the last :func:`install` could not hook on this crewai (empty when everything is captured).
MISSING: list[str] = []


def _requested_calls(answer: Any) -> list[RequestedToolCall]:
    if not isinstance(answer, str):
        return []
    try:
        action = parse(answer)
    except OutputParserError:
        return []
    if not isinstance(action, AgentAction):
        return []
    return [RequestedToolCall.from_raw(action.tool, None, action.tool_input)]


def _tokens(llm: Any) -> tuple[int, int] | None:
    usage = getattr(llm, "_token_usage", None)
    if not isinstance(usage, Mapping):
        return None
    return int(usage.get("prompt_tokens", 0) or 0), int(usage.get("completion_tokens", 0) or 0)


def _model_arguments(arguments: Any) -> Any:
    """The arguments as the model sent them: CrewAI adds its own ``security_context`` before running."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    if isinstance(arguments, dict) and "security_context" in arguments:
        return {key: value for key, value in arguments.items() if key != "security_context"}
    return arguments


def _invalid_arguments(error: Any) -> bool:
    """Whether a tool error is CrewAI's own argument parsing/validation (not the tool raising)."""
    if not isinstance(error, ValueError):
        return False
    message = str(error)
    return message.startswith(("Arguments validation failed", "Failed to parse arguments"))


def _sandboxed_invoke(tool: Any, input: str | dict[str, Any]) -> Any:
    """``CrewStructuredTool.invoke`` inside a training replay: the sandbox answers instead of the tool.

    A call the sandbox finds invalid raises the ``ValueError`` CrewAI's own argument check raises,
    so CrewAI retries and reports it exactly as for the real tool.
    """
    arguments: Any = input
    if isinstance(input, str):
        try:
            arguments = json.loads(input)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Failed to parse arguments as JSON: {exc}") from exc
    fields = getattr(getattr(tool, "args_schema", None), "model_fields", None)
    if isinstance(arguments, dict) and fields:
        # CrewAI adds its own keys (``security_context``) and its schema check drops what the tool
        # does not declare: the sandbox sees what the tool function would have received.
        arguments = {key: value for key, value in arguments.items() if key in fields}
    try:
        return sandboxed_result(tool.name, arguments)
    except ToolArgumentsError as exc:
        raise ValueError(f"Arguments validation failed: {exc}") from exc


def _wrap_tool_invoke(original: Callable[..., Any]) -> Callable[..., Any]:
    def invoke(tool: Any, input: str | dict[str, Any], config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if current_sandbox.get() is None or not PATCHES.active:
            return original(tool, input, config, **kwargs)
        return _sandboxed_invoke(tool, input)

    return invoke


def _wrap_tool_ainvoke(original: Callable[..., Any]) -> Callable[..., Any]:
    async def ainvoke(
        tool: Any, input: str | dict[str, Any], config: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        if current_sandbox.get() is None or not PATCHES.active:
            return await original(tool, input, config, **kwargs)
        return _sandboxed_invoke(tool, input)

    return ainvoke


#: crewai 1.15's ``ToolFailureReason`` values (a finished call that did not succeed) as outcomes; any
#: other reason (``usage_limit``, ``tool_reported``, ``mcp_error``, ``repeated_call``) is ``error_result``.
_FAILURE_OUTCOMES: dict[str, ToolOutcome] = {
    "exception": ToolOutcome.TOOL_ERROR,
    "invalid_input": ToolOutcome.INVALID_ARGUMENTS,
    "unknown_tool": ToolOutcome.UNKNOWN_TOOL,
}


#: ``CrewStructuredTool`` methods wrapped while instrumented: inside a training replay the sandbox answers.
_TOOL_WRAPPERS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "invoke": _wrap_tool_invoke,
    "ainvoke": _wrap_tool_ainvoke,
}


# --- the instrumentation (installed once, undone by uninstrument) ------------------------------


class _Instrumentation:
    """The reversible patches, installed once and undone together.

    ``get_llm_response`` (both executors), the bus's ``emit``, ``Agent.execute_task``,
    ``Task.execute_async``, one global ``after_tool_call`` hook, and ``CrewStructuredTool.invoke`` /
    ``ainvoke`` (for the replay sandbox).
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._reported: weakref.WeakSet[Any] = weakref.WeakSet()
        self._handlers: dict[type, Callable[[Any, Any], None]] = {
            ToolUsageStartedEvent: self._tool_started,
            ToolUsageFinishedEvent: self._tool_finished,
            ToolUsageErrorEvent: self._tool_error,
            ToolSelectionErrorEvent: self._tool_unknown,
            ToolValidateInputErrorEvent: self._tool_bad_input,
        }

    # install / remove ----------------------------------------------------------------------
    def install(self) -> None:
        # The executors import get_llm_response by name: patch it where they look it up.
        modules = _llm_response_modules()
        PATCHES.install(
            [
                *((module, "get_llm_response", self._wrap_get_llm_response) for module in modules),
                (crewai_event_bus, "emit", self._wrap_emit),
                (Agent, "execute_task", self._wrap_execute_task),
                (Task, "execute_async", self._wrap_execute_async),
                *((CrewStructuredTool, method, wrap) for method, wrap in _TOOL_WRAPPERS.items()),
            ]
        )
        register_after_tool_call_hook(self._after_tool_call)

        def unregister() -> None:
            unregister_after_tool_call_hook(self._after_tool_call)

        PATCHES.on_remove(unregister)
        PATCHES.on_remove(mcp_patches.acquire())

    @property
    def active(self) -> bool:
        """Whether the patches are installed (wrappers someone wrapped over pass through when not)."""
        return PATCHES.active

    # agent turns ---------------------------------------------------------------------------
    def _wrap_execute_task(self, original: Callable[..., Any]) -> Callable[..., Any]:
        instrumentation = self

        def execute_task(agent: Any, *args: Any, **kwargs: Any) -> Any:
            if not instrumentation.active or current_episode_var.get() is None:
                return original(agent, *args, **kwargs)
            role = getattr(agent, "role", None)
            scope = current_agent_var.get()
            if not isinstance(role, str) or not role.strip() or (scope is not None and scope.name == role):
                return original(agent, *args, **kwargs)
            task = args[0] if args else kwargs.get("task")
            options = AgentOptions(name=role, framework=FRAMEWORK)
            call_input = getattr(task, "description", None)
            return call_sync(options, original, (agent, *args), kwargs, call_input)

        return execute_task

    def _wrap_execute_async(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """``async_execution`` tasks run on a bare thread; inside an episode, run it in the caller's context."""
        instrumentation = self

        def execute_async(task: Any, agent: Any = None, context: Any = None, tools: Any = None) -> Any:
            runner = getattr(task, "_execute_task_async", None)
            if not instrumentation.active or current_episode_var.get() is None or runner is None:
                return original(task, agent, context, tools)
            # crewai 1.6's own body, with the thread started in a copy of this context.
            future: Future[Any] = Future()
            run_in_context = contextvars.copy_context().run
            threading.Thread(daemon=True, target=run_in_context, args=(runner, agent, context, tools, future)).start()
            return future

        return execute_async

    # LLM calls -----------------------------------------------------------------------------
    def _wrap_get_llm_response(self, original: Callable[..., Any]) -> Callable[..., Any]:
        instrumentation = self
        signature = inspect.signature(original)

        def get_llm_response(*args: Any, **kwargs: Any) -> Any:
            if not instrumentation.active or current_episode_var.get() is None:
                return original(*args, **kwargs)
            runtime = get_runtime()
            try:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                call_args = bound.arguments
                policy = effective_policy()  # the adapters' one per-call path
                # The call as the host made it, kept for a fallback retry (the first attempt changes
                # ``llm`` and ``messages`` in call_args; executor messages are restored in place).
                pristine = dict(call_args) if policy is not None and policy.llm is not None else None
                prepared = instrumentation._llm_start(call_args, policy)
            except Exception as exc:
                runtime.internal_error("crewai llm start", exc)
                return original(*args, **kwargs)
            if policy is None or pristine is None:
                return instrumentation._llm_call(runtime, original, call_args, prepared)

            def attempt(serving: Policy) -> Any:
                if serving is policy:
                    return instrumentation._llm_call(runtime, original, call_args, prepared)
                retry_args = dict(pristine)
                try:
                    retry = instrumentation._llm_start(retry_args, serving)
                except Exception as exc:
                    runtime.internal_error("crewai llm start", exc)
                    return original(**pristine)
                return instrumentation._llm_call(runtime, original, retry_args, retry)

            return call_with_fallback(policy, attempt)

        return get_llm_response

    def _llm_call(
        self,
        runtime: Any,
        original: Callable[..., Any],
        call_args: dict[str, Any],
        prepared: tuple[LlmCall, tuple[int, int] | None, Callable[[], None] | None],
    ) -> Any:
        """Make the LLM call prepared by :meth:`_llm_start` and record how it ended."""
        call, before, restore = prepared
        try:
            answer = original(**call_args)
        except BaseException as exc:
            self._llm_end(runtime, call, call_args, before, restore, error=exc)
            raise
        self._llm_end(runtime, call, call_args, before, restore, answer=answer)
        return answer

    def _llm_start(
        self, call_args: dict[str, Any], policy: Policy | None
    ) -> tuple[LlmCall, tuple[int, int] | None, Callable[[], None] | None]:
        llm = call_args.get("llm")
        executor = call_args.get("executor_context")
        agent = call_args.get("from_agent")
        messages = executor.messages if executor is not None else call_args.get("messages")
        tools = getattr(executor, "tools", None) if executor is not None else getattr(agent, "_parsed_tools", None)
        applied: list[Any] | None = None
        origin: dict[int, Any] = {}
        if policy is not None and not policy.is_baseline:
            if isinstance(messages, list):
                original_agent = getattr(agent, "original_agent", None) or agent
                request = CrewAIRequest(
                    messages=messages,
                    backstory=getattr(original_agent, "backstory", None),
                    tool_names=tuple(str(getattr(t, "name", "")) for t in tools or ()),
                )
                applied, origin = policy_messages(policy, request)
            if policy.llm is not None and isinstance(llm, BaseLLM):
                llm = routed_llm(policy.llm, llm)
        definitions = tool_definitions(tools)
        if definitions is not None and policy is not None and policy.tool_descriptions:
            for definition in definitions:
                if definition["name"] in policy.tool_descriptions:
                    definition["description"] = policy.tool_descriptions[definition["name"]]
        sent = applied if applied is not None else messages
        call = start_llm_call(
            model=getattr(llm, "model", None),
            provider=getattr(llm, "provider", None),
            input_messages=list(sent) if isinstance(sent, list) else sent,
            tools=definitions,
            framework=FRAMEWORK,
        )
        # Change the host's call only once nothing here can fail any more.
        call_args["llm"] = llm
        restore: Callable[[], None] | None = None
        if applied is not None and isinstance(messages, list):
            if executor is not None:
                messages[:] = applied  # get_llm_response re-reads executor.messages after the hooks
                target = messages

                def restore() -> None:
                    restore_messages(target, origin)

            else:
                call_args["messages"] = applied
        return call, _tokens(llm), restore

    def _llm_end(
        self,
        runtime: Any,
        call: LlmCall,
        call_args: Mapping[str, Any],
        before: tuple[int, int] | None,
        restore: Callable[[], None] | None,
        *,
        answer: Any = None,
        error: BaseException | None = None,
    ) -> None:
        if restore is not None:
            try:
                restore()
            except Exception as exc:
                runtime.internal_error("crewai policy undo", exc)
        try:
            if error is not None:
                call.fail(error)
                return
            after = _tokens(call_args.get("llm"))
            input_tokens = output_tokens = None
            if before is not None and after is not None and after != before:
                input_tokens, output_tokens = after[0] - before[0], after[1] - before[1]
            call.finish(
                output_messages=[{"role": "assistant", "content": answer}],
                requested=_requested_calls(answer),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                response_model=getattr(call_args.get("llm"), "model", None),
            )
        except Exception as exc:
            runtime.internal_error("crewai llm end", exc)

    # tool events ---------------------------------------------------------------------------
    def _wrap_emit(self, original: Callable[..., Any]) -> Callable[..., Any]:
        instrumentation = self
        handlers = self._handlers

        def emit(source: Any, event: Any) -> Any:
            # Called for every CrewAI event: only tool events inside an episode do any work.
            handler = handlers.get(type(event))
            if handler is not None and instrumentation.active and current_episode_var.get() is not None:
                try:
                    handler(source, event)
                except Exception as exc:
                    get_runtime().internal_error("crewai tool event", exc)
            return original(source, event)

        return emit

    def _open_calls(self) -> dict[int, ToolCall | CheckedToolCall]:
        calls: dict[int, ToolCall | CheckedToolCall] | None = getattr(self._local, "calls", None)
        if calls is None:
            calls = {}
            self._local.calls = calls
        return calls

    def _tool_started(self, source: Any, event: Any) -> None:
        calls = self._open_calls()
        stale = calls.pop(id(source), None)
        if stale is not None:  # never finished by CrewAI: close it rather than leak its context
            stale.error_result(None, "CrewAI started the tool call again without finishing it")
        attempt = getattr(source, "_run_attempts", None)
        calls[id(source)] = start_checked_tool_call(
            str(event.tool_name),
            arguments=_model_arguments(event.tool_args),
            framework=FRAMEWORK,
            attempt=attempt if isinstance(attempt, int) else None,
        )

    def _tool_finished(self, source: Any, event: Any) -> None:
        call = self._open_calls().pop(id(source), None)
        if call is None:
            return
        # crewai 1.15 marks a call that ran but did not succeed (a spent usage limit, a tool returning
        # a ``ToolFailure``) on the finished event itself; crewai 1.6 has no such field.
        failure = getattr(event, "failure", None)
        if failure is None:
            call.succeed(event.output)
            return
        reason = str(getattr(getattr(failure, "reason", None), "value", "") or "")
        message = str(getattr(failure, "message", "") or "") or None
        outcome = _FAILURE_OUTCOMES.get(reason, ToolOutcome.ERROR_RESULT)
        if outcome is ToolOutcome.ERROR_RESULT:
            call.error_result(event.output, message)
        else:
            call.fail(outcome, message=message)

    def _tool_error(self, source: Any, event: Any) -> None:
        call = self._open_calls().pop(id(source), None)
        if call is None:
            return
        error = event.error
        outcome = ToolOutcome.INVALID_ARGUMENTS if _invalid_arguments(error) else ToolOutcome.TOOL_ERROR
        if isinstance(error, BaseException):
            call.fail(outcome, error=error)
        else:
            call.fail(outcome, message=str(error))

    def _first_report(self, source: Any) -> bool:
        # CrewAI re-parses the same Action text several times and emits an event each time.
        try:
            if source in self._reported:
                return False
            self._reported.add(source)
        except TypeError:  # not weak-referenceable: count every event
            return True
        return True

    def _tool_unknown(self, source: Any, event: Any) -> None:
        if self._first_report(source):
            action = getattr(source, "action", None)
            record_tool_failure(
                str(event.tool_name or ""),
                ToolOutcome.UNKNOWN_TOOL,
                arguments=getattr(action, "tool_input", None),
                message=str(event.error),
                framework=FRAMEWORK,
            )

    def _tool_bad_input(self, source: Any, event: Any) -> None:
        if self._first_report(source):
            record_tool_failure(
                str(event.tool_name),
                ToolOutcome.INVALID_ARGUMENTS,
                arguments=event.tool_args,
                message=str(event.error),
                framework=FRAMEWORK,
            )

    def _after_tool_call(self, context: Any) -> None:
        """Close a span CrewAI started but never finished (e.g. the tool's usage limit)."""
        if not self.active:
            return
        calls = self._open_calls()
        while calls:
            _, call = calls.popitem()
            try:
                call.error_result(context.tool_result, "CrewAI returned without finishing the tool call")
            except Exception as exc:
                get_runtime().internal_error("crewai after tool", exc)
        return


_instrumentation: _Instrumentation | None = None


def install() -> None:
    """Install the patches and the ``after_tool_call`` hook (once).

    A crewai without the function LLM calls go through (:data:`LLM_RESPONSE_MODULES`) still runs
    unchanged, and tool calls and turns are still recorded: the gap is named in :data:`MISSING`,
    logged as a warning and counted as an internal error of the runtime (raised under ``strict``).
    """
    global _instrumentation
    if PATCHES.active:
        return
    MISSING[:] = [] if _llm_response_modules() else [f"get_llm_response in any of {', '.join(LLM_RESPONSE_MODULES)}"]
    if MISSING:
        problem = RuntimeError(
            f"agentgym crewai adapter: crewai {crewai_version()} has no {'; no '.join(MISSING)}: "
            "its LLM calls are not recorded and policies do not reach them"
        )
        logger.warning("%s", problem)
        runtime = peek_runtime()
        if runtime is not None:
            runtime.internal_error("crewai hooks", problem)  # raises under ``strict``: nothing installed yet
    _instrumentation = _Instrumentation()
    _instrumentation.install()


def remove() -> None:
    """Undo :func:`install` (originals come back where the patches are still ours)."""
    global _instrumentation
    PATCHES.remove()
    _instrumentation = None


__all__ = ["LLM_RESPONSE_MODULES", "MISSING", "PATCHES", "crewai_version", "install", "remove"]
