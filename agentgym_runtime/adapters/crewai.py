"""CrewAI adapter (crewai 1.6): episodes for ``Crew``/``Agent`` kickoffs, inline capture, per-call policy.

What is captured, and where (everything inline, on the thread that runs the agent, so
nothing arrives after the episode closed):

* **Agent turns** — ``Agent.execute_task`` runs as a turn of that agent (``gen_ai.agent.name`` =
  the agent's ``role``) inside the current episode, so a crew's agents are attributed separately
  even though the crew holds the original (unwrapped) agent objects. ``async_execution`` tasks,
  which CrewAI runs on a bare thread, are started in a copy of the caller's context so that
  their calls belong to the episode too.
* **LLM calls** — ``get_llm_response`` (the one function both ``CrewAgentExecutor`` and
  ``LiteAgent``/``Agent.kickoff`` call) is wrapped: CrewAI's global ``before/after_llm_call``
  hooks are only run by the crew executor (not by ``Agent.kickoff``) and the after hook is
  skipped when the LLM raises, so they cannot record every call. The requested tool call is
  parsed from the ReAct text (``Action:`` / ``Action Input:``) with CrewAI's own parser; tokens
  are the difference of the LLM's usage counters.
* **Tool calls** — CrewAI's event bus ``emit`` is wrapped so its tool events are seen inline
  (its own handlers still run on its thread pool, unchanged): ``ToolUsageStartedEvent`` opens an
  ``execute_tool`` span (one per CrewAI attempt, ``attempt=``), ``ToolUsageFinishedEvent`` /
  ``ToolUsageErrorEvent`` close it (``ok`` / ``invalid_arguments`` / ``tool_error``);
  ``ToolSelectionErrorEvent`` (unknown tool) and ``ToolValidateInputErrorEvent`` (malformed
  ``Action Input``) become one failure per requested call (CrewAI re-parses the same text
  several times; only real execution attempts count separately). A span CrewAI opened but
  never finished (tool usage limit) is closed by a global ``after_tool_call`` hook.
  Inside a training replay (:func:`agentgym_runtime.recording.sandbox.use_sandbox`) the wrapped
  ``CrewStructuredTool.invoke`` / ``ainvoke`` hand each call to the replay's sandbox instead
  of the tool.
* **Policy** — applied to the messages of one LLM call and undone right after (the executor's
  message list is restored), never to the shared agent: ``system_prompt`` replaces the agent's
  backstory in the system message, ``tool_descriptions`` replace the rendered tool descriptions,
  demonstrations are inserted after the system message in CrewAI's ReAct text format, and
  ``llm`` routes the call to an LLM built by :func:`register_llm_factory` (default: ``crewai.LLM``).
  A routed call that cannot reach its endpoint is retried once under the incumbent policy
  (:mod:`agentgym_runtime.adapters.fallback`).

Every patch is undone by :meth:`CrewAIAdapter.uninstrument`. Wrapping a ``Crew``/``Agent`` installs
them; for a decorated function that builds and runs a crew itself, use
``@agentgym.train_online(framework="crewai")`` (or ``load_adapter("crewai").instrument()`` once).

Example:
    >>> import agentgym_runtime as agentgym  # doctest: +SKIP
    >>> crew = agentgym.train_online(Crew(agents=[...], tasks=[...]), name="support-crew")  # doctest: +SKIP
    >>> crew.kickoff(inputs={"question": "where is order 7?"})  # doctest: +SKIP
"""

from __future__ import annotations

import contextvars
import inspect
import json
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, ClassVar

from crewai import Agent, Task
from crewai import lite_agent as _lite_agent_module
from crewai.agents import crew_agent_executor as _executor_module
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

from agentgym_runtime.adapters.base import Adapter
from agentgym_runtime.adapters.fallback import call_with_fallback, resume_fallback
from agentgym_runtime.errors import ToolArgumentsError
from agentgym_runtime.policy.apply import demonstration_messages
from agentgym_runtime.recording.capture import LlmCall, ToolCall, record_tool_failure, start_llm_call, start_tool_call
from agentgym_runtime.recording.context import RequestedToolCall, current_agent_var, current_episode_var
from agentgym_runtime.recording.episodes import AgentOptions
from agentgym_runtime.recording.policy import LLMConfig, Policy
from agentgym_runtime.recording.runtime import get_runtime
from agentgym_runtime.recording.sandbox import current_sandbox, sandboxed_result
from agentgym_runtime.recording.wrapping import CallKind, call_sync
from agentgym_runtime.semconv import ToolOutcome

FRAMEWORK = "crewai"

LlmFactory = Callable[[LLMConfig], BaseLLM]
"""Builds the LLM a policy's :class:`~agentgym_runtime.recording.policy.LLMConfig` routes calls to."""

_llm_factory: LlmFactory | None = None
_routed_llms: dict[str, BaseLLM] = {}
_routed_lock = threading.Lock()


def register_llm_factory(factory: LlmFactory | None) -> None:
    """Set how a policy's ``llm`` config becomes a CrewAI LLM (``None``: back to ``crewai.LLM``).

    LLMs are built once per distinct config and reused.

    Example:
        >>> from agentgym_runtime.adapters.crewai import register_llm_factory  # doctest: +SKIP
        >>> register_llm_factory(lambda cfg: MyLLM(model=cfg.model))  # doctest: +SKIP
    """
    global _llm_factory
    with _routed_lock:
        _llm_factory = factory
        _routed_llms.clear()


def _default_llm_factory(config: LLMConfig) -> BaseLLM:
    from crewai import LLM

    kwargs: dict[str, Any] = dict(config.sampling)
    if config.endpoint:
        kwargs["base_url"] = config.endpoint
    if config.api_key_env:
        kwargs["api_key"] = os.environ.get(config.api_key_env)
    llm: BaseLLM = LLM(model=config.model or "gpt-4o-mini", **kwargs)
    return llm


def routed_llm(config: LLMConfig, original: BaseLLM | None = None) -> BaseLLM:
    """The LLM serving calls under ``config`` (built by the registered factory, cached).

    Stop words of ``original`` (CrewAI's ``Observation:`` stop) are carried over when the
    routed LLM has none, so the ReAct loop keeps working.

    Example:
        >>> from agentgym_runtime.recording.policy import LLMConfig  # doctest: +SKIP
        >>> routed_llm(LLMConfig(model="gpt-4o-mini")).model  # doctest: +SKIP
        'gpt-4o-mini'
    """
    key = config.model_dump_json()
    with _routed_lock:
        llm = _routed_llms.get(key)
        if llm is None:
            llm = (_llm_factory or _default_llm_factory)(config)
            _routed_llms[key] = llm
    if original is not None and not getattr(llm, "stop", None):
        llm.stop = list(getattr(original, "stop", None) or [])
    return llm


# --- policy on CrewAI messages -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrewAIRequest:
    """What one CrewAI LLM call sends: OpenAI-style messages plus what identifies the agent.

    Attributes:
        messages: The call's messages (``{"role", "content"}`` dicts).
        backstory: The agent's backstory as rendered in the system prompt (replaced by
            ``Policy.system_prompt``).
        tool_names: Names of the tools rendered in the prompt.

    Example:
        >>> r = CrewAIRequest([{"role": "user", "content": "hi"}], backstory="You help.")
        >>> r.backstory
        'You help.'
    """

    messages: list[dict[str, Any]]
    backstory: str | None = None
    tool_names: tuple[str, ...] = field(default_factory=tuple)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def react_demonstrations(policy: Policy) -> list[dict[str, Any]]:
    """The policy's demonstrations as CrewAI ReAct-format chat messages.

    Built from :func:`agentgym_runtime.policy.apply.demonstration_messages`; each tool call
    becomes an assistant ``Thought/Action/Action Input/Observation`` step (CrewAI keeps the
    observation in the assistant message), the answer a ``Final Answer`` step.

    Example:
        >>> from agentgym_runtime.recording.policy import Demonstration, Policy, ToolCallExample
        >>> demo = Demonstration(input="order 7?", tool_calls=(ToolCallExample(name="get_order",
        ...     arguments={"order_id": 7}, result="shipped"),), output="shipped")
        >>> [m["role"] for m in react_demonstrations(Policy(agent="a", version=1, demonstrations=(demo,)))]
        ['user', 'assistant', 'assistant']
    """
    result: list[dict[str, Any]] = []
    pending: dict[str, dict[str, Any]] = {}
    for message in demonstration_messages(policy.demonstrations):
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                pending[call["id"]] = call["function"]
        elif role == "tool":
            function = pending.pop(message["tool_call_id"], {})
            name = function.get("name", "")
            result.append(
                {
                    "role": "assistant",
                    "content": (
                        f"Thought: I should use the {name} tool.\nAction: {name}\n"
                        f"Action Input: {function.get('arguments', '{}')}\nObservation: {_text(message['content'])}"
                    ),
                }
            )
        elif role == "assistant":
            result.append(
                {
                    "role": "assistant",
                    "content": f"Thought: I now know the final answer\nFinal Answer: {_text(message['content'])}",
                }
            )
        else:
            result.append({"role": role, "content": _text(message["content"])})
    return result


def _replace_tool_description(text: str, name: str, description: str) -> str:
    """Replace ``name``'s description in CrewAI's rendered tool list (``Tool Name/Arguments/Description``)."""
    pattern = re.compile(
        r"(Tool Name: "
        + re.escape(name)
        + r"\nTool Arguments: [^\n]*\nTool Description: )(.*?)(?=\nTool Name: |\n\n|$)",
        re.DOTALL,
    )
    return pattern.sub(lambda m: m.group(1) + description, text, count=1)


def _policy_messages(policy: Policy, request: CrewAIRequest) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    """The policy-applied messages, and per changed/inserted item (by id) its original (``None``: inserted).

    Unchanged messages stay the same objects, so the change can be undone in place.
    """
    messages = list(request.messages)
    origin: dict[int, Any] = {}
    system_index = next((i for i, m in enumerate(messages) if m.get("role") == "system"), None)
    # Without a system prompt CrewAI renders role, backstory and tools into the first user message.
    prompt_index = system_index if system_index is not None else (0 if messages else None)
    prompt_placed = policy.system_prompt is None
    if prompt_index is not None and (policy.system_prompt is not None or policy.tool_descriptions):
        original = messages[prompt_index]
        content = original.get("content")
        if isinstance(content, str):
            new_content = content
            backstory = request.backstory
            if policy.system_prompt is not None and backstory and backstory in new_content:
                new_content = new_content.replace(backstory, policy.system_prompt, 1)
                prompt_placed = True
            elif policy.system_prompt is not None and system_index is not None:
                new_content = f"{policy.system_prompt}\n{new_content}"
                prompt_placed = True
            for name, description in policy.tool_descriptions.items():
                new_content = _replace_tool_description(new_content, name, description)
            if new_content != content:
                changed = {**original, "content": new_content}
                messages[prompt_index] = changed
                origin[id(changed)] = original
    if not prompt_placed:
        system = {"role": "system", "content": policy.system_prompt}
        messages.insert(0, system)
        origin[id(system)] = None
        system_index = 0
    if policy.demonstrations:
        at = 0 if system_index is None else system_index + 1
        demos = react_demonstrations(policy)
        for demo in demos:
            origin[id(demo)] = None
        messages[at:at] = demos
    return messages, origin


def _restore(messages: list[Any], origin: Mapping[int, Any]) -> None:
    """Undo :func:`_policy_messages` in place, keeping whatever CrewAI appended meanwhile."""
    restored: list[Any] = []
    for item in messages:
        if id(item) in origin:
            original = origin[id(item)]
            if original is not None:
                restored.append(original)
        else:
            restored.append(item)
    messages[:] = restored


# --- tool metadata ---------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _schema_of(args_schema: type) -> Mapping[str, Any] | None:
    try:
        schema: Mapping[str, Any] = args_schema.model_json_schema()  # type: ignore[attr-defined]
        return schema
    except Exception:
        return None


def _raw_description(tool: Any) -> str:
    description = str(getattr(tool, "description", "") or "")
    marker = "Tool Description: "
    return description.split(marker, 1)[1] if marker in description else description


def _tool_definitions(tools: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    definitions = []
    for tool in tools:
        schema = getattr(tool, "args_schema", None)
        definitions.append(
            {
                "name": str(getattr(tool, "name", "")),
                "description": _raw_description(tool),
                "parameters": _schema_of(schema) if isinstance(schema, type) else None,
            }
        )
    return definitions


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
        if current_sandbox.get() is None:
            return original(tool, input, config, **kwargs)
        return _sandboxed_invoke(tool, input)

    invoke.__wrapped__ = original  # type: ignore[attr-defined]
    return invoke


def _wrap_tool_ainvoke(original: Callable[..., Any]) -> Callable[..., Any]:
    async def ainvoke(
        tool: Any, input: str | dict[str, Any], config: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        if current_sandbox.get() is None:
            return await original(tool, input, config, **kwargs)
        return _sandboxed_invoke(tool, input)

    ainvoke.__wrapped__ = original  # type: ignore[attr-defined]
    return ainvoke


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

    def __init__(self, adapter: CrewAIAdapter) -> None:
        self.adapter = adapter
        self.active = False
        self._local = threading.local()
        self._reported: weakref.WeakSet[Any] = weakref.WeakSet()
        self._original_get_llm_response: dict[Any, Any] = {}
        self._original_emit: Any = None
        self._original_execute_task: Any = None
        self._original_execute_async: Any = None
        self._execute_async_wrapper: Any = None
        self._get_llm_response_wrapper: Any = None
        self._emit_wrapper: Any = None
        self._execute_task_wrapper: Any = None
        self._tool_wrappers: dict[str, tuple[Any, Any]] = {}
        self._handlers: dict[type, Callable[[Any, Any], None]] = {
            ToolUsageStartedEvent: self._tool_started,
            ToolUsageFinishedEvent: self._tool_finished,
            ToolUsageErrorEvent: self._tool_error,
            ToolSelectionErrorEvent: self._tool_unknown,
            ToolValidateInputErrorEvent: self._tool_bad_input,
        }

    # install / remove ----------------------------------------------------------------------
    def install(self) -> None:
        self.active = True
        # Both executors import the function by name: patch it where they look it up.
        modules: tuple[Any, ...] = (_executor_module, _lite_agent_module)
        self._get_llm_response_wrapper = self._wrap_get_llm_response(modules[0].get_llm_response)
        for module in modules:
            self._original_get_llm_response[module] = module.get_llm_response
            module.get_llm_response = self._get_llm_response_wrapper

        bus = crewai_event_bus
        self._original_emit = bus.emit
        self._emit_wrapper = self._wrap_emit(bus.emit)
        bus.emit = self._emit_wrapper  # type: ignore[method-assign]

        self._original_execute_task = Agent.__dict__["execute_task"]
        self._execute_task_wrapper = self._wrap_execute_task(self._original_execute_task)
        type.__setattr__(Agent, "execute_task", self._execute_task_wrapper)

        self._original_execute_async = Task.__dict__["execute_async"]
        self._execute_async_wrapper = self._wrap_execute_async(self._original_execute_async)
        type.__setattr__(Task, "execute_async", self._execute_async_wrapper)

        register_after_tool_call_hook(self._after_tool_call)

        for method, wrap in _TOOL_WRAPPERS.items():
            original = CrewStructuredTool.__dict__[method]
            wrapper = wrap(original)
            self._tool_wrappers[method] = (original, wrapper)
            type.__setattr__(CrewStructuredTool, method, wrapper)

    def remove(self) -> None:
        self.active = False  # wrappers someone else wrapped over become pass-through
        for module, original in self._original_get_llm_response.items():
            if getattr(module, "get_llm_response", None) is self._get_llm_response_wrapper:
                module.get_llm_response = original
        self._original_get_llm_response.clear()
        bus = crewai_event_bus
        if bus.__dict__.get("emit") is self._emit_wrapper:
            del bus.__dict__["emit"]
        if Agent.__dict__.get("execute_task") is self._execute_task_wrapper:
            type.__setattr__(Agent, "execute_task", self._original_execute_task)
        if Task.__dict__.get("execute_async") is self._execute_async_wrapper:
            type.__setattr__(Task, "execute_async", self._original_execute_async)
        unregister_after_tool_call_hook(self._after_tool_call)
        for method, (original, wrapper) in self._tool_wrappers.items():
            if CrewStructuredTool.__dict__.get(method) is wrapper:
                type.__setattr__(CrewStructuredTool, method, original)
        self._tool_wrappers.clear()

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

        execute_task.__wrapped__ = original  # type: ignore[attr-defined]
        execute_task.__doc__ = original.__doc__
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

        execute_async.__wrapped__ = original  # type: ignore[attr-defined]
        execute_async.__doc__ = original.__doc__
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
                scope = current_agent_var.get()
                policy = scope.policy if scope is not None else None
                if policy is not None and policy.llm is not None:
                    policy = resume_fallback(policy)  # this episode already fell back from it
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

        get_llm_response.__wrapped__ = original  # type: ignore[attr-defined]
        get_llm_response.__doc__ = original.__doc__
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
                applied, origin = _policy_messages(policy, request)
            if policy.llm is not None and isinstance(llm, BaseLLM):
                llm = routed_llm(policy.llm, llm)
        definitions = _tool_definitions(tools)
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
                    _restore(target, origin)

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

        emit.__wrapped__ = original  # type: ignore[attr-defined]
        return emit

    def _open_calls(self) -> dict[int, ToolCall]:
        calls: dict[int, ToolCall] | None = getattr(self._local, "calls", None)
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
        calls[id(source)] = start_tool_call(
            str(event.tool_name),
            arguments=event.tool_args,
            framework=FRAMEWORK,
            attempt=attempt if isinstance(attempt, int) else None,
        )

    def _tool_finished(self, source: Any, event: Any) -> None:
        call = self._open_calls().pop(id(source), None)
        if call is not None:
            call.succeed(event.output)

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


class CrewAIAdapter(Adapter):
    """Episodes for CrewAI ``Crew`` and ``Agent`` (``kickoff``, ``kickoff_async``).

    Example:
        >>> from agentgym_runtime.adapters import load_adapter  # doctest: +SKIP
        >>> load_adapter("crewai").framework  # doctest: +SKIP
        'crewai'
    """

    framework: ClassVar[str] = FRAMEWORK
    extra: ClassVar[str | None] = "crewai"
    module_prefixes: ClassVar[tuple[str, ...]] = ("crewai",)
    entry_points: ClassVar[Mapping[str, CallKind | None]] = {
        "kickoff": CallKind.SYNC,
        "kickoff_async": CallKind.ASYNC,
    }
    _instrument_lock: ClassVar[threading.Lock] = threading.Lock()
    _instrument_count: ClassVar[int] = 0
    _instrumentation: ClassVar[_Instrumentation | None] = None

    def _install(self) -> None:
        instrumentation = _Instrumentation(self)
        instrumentation.install()
        type(self)._instrumentation = instrumentation

    def _remove(self) -> None:
        instrumentation = type(self)._instrumentation
        if instrumentation is not None:
            instrumentation.remove()
            type(self)._instrumentation = None

    def apply_policy(self, policy: Policy, request: Any) -> Any:
        """``request`` (a :class:`CrewAIRequest`) with ``policy`` applied, as a new request.

        Example:
            >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
            >>> r = CrewAIRequest([{"role": "system", "content": "You are a. Old story."}], backstory="Old story.")
            >>> CrewAIAdapter().apply_policy(p, r).messages[0]["content"]
            'You are a. Be exact.'
        """
        if not isinstance(request, CrewAIRequest):
            request = CrewAIRequest(messages=[dict(m) for m in request])
        messages, _ = _policy_messages(policy, request)
        return replace(request, messages=messages)

    def seed(self, agent: Any, policy: Policy) -> Any:
        """Apply ``policy`` permanently to a fresh CrewAI ``Agent`` and return it.

        ``system_prompt`` becomes the backstory, demonstrations are appended to it as ReAct
        examples, ``tool_descriptions`` replace the descriptions of copies of its tools, and
        ``llm`` sets its LLM (see :func:`register_llm_factory`).

        Example:
            >>> from crewai import Agent  # doctest: +SKIP
            >>> CrewAIAdapter().seed(Agent(role="r", goal="g", backstory="b"), policy).backstory  # doctest: +SKIP
        """
        if policy.system_prompt is not None:
            agent.backstory = policy.system_prompt
        if policy.demonstrations:
            examples = "\n\n".join(m["content"] for m in react_demonstrations(policy))
            agent.backstory = f"{agent.backstory}\n\nExamples of good work:\n{examples}"
        if policy.tool_descriptions and getattr(agent, "tools", None):
            tools = []
            for tool in agent.tools:
                name = str(getattr(tool, "name", ""))
                description = policy.tool_descriptions.get(name)
                if description is not None:
                    current = str(getattr(tool, "description", ""))
                    rendered = _replace_tool_description(current, name, description)
                    tool = tool.model_copy(update={"description": rendered if rendered != current else description})
                tools.append(tool)
            agent.tools = tools
        if policy.llm is not None:
            agent.llm = routed_llm(policy.llm, agent.llm if isinstance(agent.llm, BaseLLM) else None)
        return agent


__all__ = [
    "CrewAIAdapter",
    "CrewAIRequest",
    "react_demonstrations",
    "register_llm_factory",
    "routed_llm",
]
