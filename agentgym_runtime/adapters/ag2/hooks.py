"""AG2 hooks: one reversible patch table around the model wrapper, function execution and chats.

* ``OpenAIWrapper.create``: every LLM call of every ``ConversableAgent`` (any model client, custom
  ones registered with ``register_model_client`` included) is one ``chat`` span with the requested
  tool calls and usage; the per-call policy path of :mod:`agentgym_runtime.adapters.seeding` runs
  here (messages and tool descriptions of *this* call only, the routed wrapper, the fallback).
* ``ConversableAgent.execute_function`` / ``a_execute_function``: the ``execute_tool`` span of each
  call, with its outcome. AG2 catches everything itself, so the hook decides from what it sees:
  a name missing from the executing agent's ``function_map`` is ``unknown_tool``, arguments that
  are not JSON are ``invalid_arguments``, arguments that break the schema the model was shown are
  ``invalid_arguments`` (AG2 does not validate them; the span says the tool ran anyway), a failed
  execution is ``tool_error``. Inside a training replay the sandbox answers instead of the function.
* ``a_generate_oai_reply`` runs the model call on an executor thread and ``_run_async_in_thread``
  runs async functions on a new thread: both lose context variables, so the hooks carry the
  episode's context across.
* ``initiate_chat`` / ``a_initiate_chat``: a chat started *with* an agent wrapped by
  ``train_online`` (as recipient) is one episode of that agent, as when it starts the chat itself.

Example:
    >>> PATCHES.name
    'ag2'
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import json
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from autogen import ConversableAgent, OpenAIWrapper
from autogen.tools.function_utils import serialize_to_str

from agentgym_runtime.adapters.ag2.messages import apply_policy, output_messages, tool_definitions, usage
from agentgym_runtime.adapters.checking import CheckedToolCall, start_checked_tool_call
from agentgym_runtime.adapters.fallback import call_with_fallback
from agentgym_runtime.adapters.patches import PatchSpec, PatchTable
from agentgym_runtime.adapters.routing import registrar, routed_model
from agentgym_runtime.adapters.seeding import effective_policy
from agentgym_runtime.recording.capture import LlmCall, ToolCall, start_llm_call, start_tool_call
from agentgym_runtime.recording.context import current_episode_var
from agentgym_runtime.recording.episodes import AgentOptions
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.runtime import get_runtime
from agentgym_runtime.recording.sandbox import current_sandbox, sandboxed_result
from agentgym_runtime.recording.wrapping import CallKind, run_kind
from agentgym_runtime.semconv import ToolOutcome

FRAMEWORK = "ag2"

#: The AG2 adapter's patches.
PATCHES = PatchTable(FRAMEWORK)

#: Route AG2 LLM calls of policies that set ``llm`` to ``OpenAIWrapper`` objects a factory builds
#: (built once per ``LLMConfig``; ``None`` unregisters): the shared registry under AG2's name.
register_client_factory = registrar(FRAMEWORK)

#: Agents wrapped by ``train_online`` -> the name they are recorded under.
recorded_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
#: Agents seeded with a policy (``AG2Adapter.seed`` / ``TrainedPolicy.to_ag2``) -> that policy.
seeded_policies: weakref.WeakKeyDictionary[Any, Policy] = weakref.WeakKeyDictionary()

#: Private keyword that carries the caller's context to ``generate_oai_reply`` on AG2's executor thread.
_CONTEXT_KEY = "_agentgym_context"

_Call = ToolCall | CheckedToolCall


# --- LLM calls ------------------------------------------------------------------------------------
def _tools(wrapper: Any) -> list[dict[str, Any]]:
    configs = getattr(wrapper, "_config_list", None) or [{}]
    return list(configs[0].get("tools") or [])


def _model(wrapper: Any) -> str | None:
    configs = getattr(wrapper, "_config_list", None) or [{}]
    model = configs[0].get("model")
    return str(model) if model else None


def _provider(wrapper: Any) -> str:
    configs = getattr(wrapper, "_config_list", None) or [{}]
    custom = configs[0].get("model_client_cls")
    return str(custom or configs[0].get("api_type") or "openai")


def _with_tools(wrapper: Any, tools: list[dict[str, Any]]) -> Any:
    """A per-call view of ``wrapper`` offering ``tools`` (the agent's own wrapper is never changed)."""
    view = copy.copy(wrapper)
    view._config_list = [{**config, "tools": tools} if tools else config for config in wrapper._config_list]
    return view


def _prepare(wrapper: Any, policy: Policy | None, config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    if policy is None:
        return wrapper, config
    tools = _tools(wrapper)
    request = apply_policy(policy, {"messages": config.get("messages"), "tools": tools})
    sent = {**config, "messages": request["messages"]} if config.get("messages") is not None else config
    serving = routed_model(FRAMEWORK, policy.llm) if policy.llm is not None else None
    if serving is not None:
        return _with_tools(serving, request["tools"]), sent  # the routed model is offered the agent's tools
    if request["tools"] is not tools:
        return _with_tools(wrapper, request["tools"]), sent
    return wrapper, sent


def _start(wrapper: Any, config: Mapping[str, Any]) -> LlmCall:
    runtime = get_runtime()
    messages = config.get("messages") or []
    capture = runtime.settings.capture_content
    system = [m.get("content") for m in messages if isinstance(m, Mapping) and m.get("role") == "system"]
    return start_llm_call(
        model=_model(wrapper),
        provider=_provider(wrapper),
        input_messages=[m for m in messages if not (isinstance(m, Mapping) and m.get("role") == "system")]
        if capture
        else None,
        system_instructions=(system or None) if capture else None,
        tools=tool_definitions(_tools(wrapper)),
        framework=FRAMEWORK,
        runtime=runtime,
    )


def _finish(call: LlmCall, response: Any) -> None:
    try:
        output, requested = output_messages(response)
        input_tokens, output_tokens = usage(response)
        model = getattr(response, "model", None)
        call.finish(
            output_messages=output,
            requested=requested,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            response_model=model if isinstance(model, str) else None,
        )
    except Exception as exc:
        get_runtime().internal_error("ag2 llm call end", exc)


def _hook_create(original: Any) -> Any:
    def create(self: Any, **config: Any) -> Any:
        if not PATCHES.active:
            return original(self, **config)
        policy: Policy | None = None
        try:
            agent = config.get("agent")
            policy = effective_policy(seeded_policies.get(agent) if agent is not None else None)
        except Exception as exc:
            get_runtime().internal_error("ag2 policy", exc)

        def attempt(serving: Policy | None) -> Any:
            wrapper, sent, call = self, config, None
            try:
                wrapper, sent = _prepare(self, serving, config)
                if current_episode_var.get() is not None:
                    call = _start(wrapper, sent)
            except Exception as exc:
                get_runtime().internal_error("ag2 llm call start", exc)
            try:
                response = original(wrapper, **sent)
            except BaseException as exc:
                if call is not None:
                    call.fail(exc)
                raise
            finally:
                if wrapper is not self and getattr(wrapper, "_clients", None) is getattr(self, "_clients", None):
                    # A view of the agent's own wrapper: its usage counts are the agent's.
                    self.total_usage_summary = wrapper.total_usage_summary
                    self.actual_usage_summary = wrapper.actual_usage_summary
            if call is not None:
                _finish(call, response)
            return response

        if policy is None:
            return attempt(None)
        return call_with_fallback(policy, attempt)

    return create


def _hook_generate_oai_reply(original: Any) -> Any:
    def generate_oai_reply(self: Any, *args: Any, **kwargs: Any) -> Any:
        context = kwargs.pop(_CONTEXT_KEY, None)  # always taken out: it must never reach the model
        if isinstance(context, contextvars.Context) and current_episode_var.get() is None:
            return context.run(original, self, *args, **kwargs)
        return original(self, *args, **kwargs)

    return generate_oai_reply


def _hook_a_generate_oai_reply(original: Any) -> Any:
    async def a_generate_oai_reply(self: Any, *args: Any, **kwargs: Any) -> Any:
        if PATCHES.active and current_episode_var.get() is not None:
            # AG2 runs the sync reply on an executor thread, which starts with an empty context.
            kwargs[_CONTEXT_KEY] = contextvars.copy_context()
        return await original(self, *args, **kwargs)

    return a_generate_oai_reply


# --- tool calls -----------------------------------------------------------------------------------
def _own_schema(agent: Any, name: str) -> tuple[Mapping[str, Any] | None, str | None]:
    """The schema and description of ``name`` the agent's own ``llm_config`` declares, if it does."""
    try:
        for definition in tool_definitions(_tools(getattr(agent, "client", None))):
            if definition["name"] == name:
                return definition["parameters"], definition["description"]
    except Exception as exc:
        get_runtime().internal_error("ag2 tool schema", exc)
    return None, None


def _parse(agent: Any, raw: Any) -> tuple[Any, str | None]:
    """The arguments as AG2 parses them (``json.loads`` of its cleaned string), or why not."""
    if isinstance(raw, Mapping):
        return dict(raw), None
    try:
        return json.loads(agent._format_json_str(raw if raw is not None else "{}")), None
    except (json.JSONDecodeError, TypeError) as exc:
        return raw, f"the arguments are not JSON: {exc}"


def _start_tool(agent: Any, func_call: Mapping[str, Any], call_id: str | None) -> _Call | None:
    if current_episode_var.get() is None or not PATCHES.active:
        return None
    try:
        name = str(func_call.get("name", ""))
        arguments, parse_error = _parse(agent, func_call.get("arguments", "{}"))
        if name not in agent._function_map:
            call = start_tool_call(name, call_id=call_id, arguments=arguments, framework=FRAMEWORK)
            available = ", ".join(sorted(agent._function_map)) or "(none)"
            call.fail(ToolOutcome.UNKNOWN_TOOL, message=f"tool {name!r} does not exist; available: {available}")
            return None
        if parse_error is not None:
            call = start_tool_call(name, call_id=call_id, arguments=arguments, framework=FRAMEWORK)
            call.fail(ToolOutcome.INVALID_ARGUMENTS, message=parse_error)
            return None
        schema, description = _own_schema(agent, name)
        return start_checked_tool_call(
            name, call_id=call_id, arguments=arguments, schema=schema, description=description, framework=FRAMEWORK
        )
    except Exception as exc:
        get_runtime().internal_error("ag2 tool start", exc)
        return None


def _end_tool(call: _Call, outcome: tuple[bool, dict[str, Any]] | None, error: BaseException | None = None) -> None:
    try:
        if error is not None:
            kind = ToolOutcome.NOT_EXECUTED if isinstance(error, asyncio.CancelledError) else ToolOutcome.TOOL_ERROR
            call.fail(kind, error=error)
        elif outcome is not None and outcome[0]:
            call.succeed(outcome[1].get("content"))
        else:
            content = outcome[1].get("content") if outcome is not None else None
            call.fail(ToolOutcome.TOOL_ERROR, message=str(content) if content is not None else None)
    except Exception as exc:
        get_runtime().internal_error("ag2 tool end", exc)


def _sandboxed(agent: Any, func_call: Mapping[str, Any]) -> tuple[bool, dict[str, Any]] | None:
    """The replay sandbox's answer in AG2's own result shape (``None``: let AG2 answer the call itself)."""
    name = str(func_call.get("name", ""))
    arguments, parse_error = _parse(agent, func_call.get("arguments", "{}"))
    if name not in agent._function_map or parse_error is not None:
        return None  # AG2 answers unknown names and non-JSON arguments without running anything
    try:
        content: Any = serialize_to_str(sandboxed_result(name, arguments))
        success = True
    except Exception as exc:
        content, success = f"Error: {exc}", False
    return success, {"name": name, "role": "function", "content": content}


def _hook_execute_function(original: Any) -> Any:
    def execute_function(
        self: Any, func_call: dict[str, Any], call_id: str | None = None, verbose: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        call = _start_tool(self, func_call, call_id)
        sandboxed = _sandboxed(self, func_call) if PATCHES.active and current_sandbox.get() is not None else None
        if call is None:
            return sandboxed if sandboxed is not None else original(self, func_call, call_id=call_id, verbose=verbose)
        try:
            result = sandboxed if sandboxed is not None else original(self, func_call, call_id=call_id, verbose=verbose)
        except BaseException as exc:
            _end_tool(call, None, exc)
            raise
        _end_tool(call, result)
        return result

    return execute_function


def _hook_a_execute_function(original: Any) -> Any:
    # Not an ``async def``: the caller's context is taken when the coroutine is made, because AG2's
    # sync path runs that coroutine on a thread of its own (``_run_async_in_thread``).
    def a_execute_function(
        self: Any, func_call: dict[str, Any], call_id: str | None = None, verbose: bool = False
    ) -> Any:
        context = contextvars.copy_context()

        async def execute() -> tuple[bool, dict[str, Any]]:
            call = _start_tool(self, func_call, call_id)
            sandboxed = _sandboxed(self, func_call) if PATCHES.active and current_sandbox.get() is not None else None
            if sandboxed is not None and call is None:
                return sandboxed
            try:
                result = sandboxed or await original(self, func_call, call_id=call_id, verbose=verbose)
            except BaseException as exc:
                if call is not None:
                    _end_tool(call, None, exc)
                raise
            if call is not None:
                _end_tool(call, result)
            return result

        async def run() -> tuple[bool, dict[str, Any]]:
            if current_episode_var.get() is None and context.get(current_episode_var, None) is not None:
                return await asyncio.get_running_loop().create_task(execute(), context=context)
            return await execute()

        return run()

    return a_execute_function


# --- chats started with a wrapped agent -----------------------------------------------------------
def _hook_initiate_chat(kind: CallKind) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        def initiate_chat(self: Any, recipient: Any, *args: Any, **kwargs: Any) -> Any:
            name = None
            if PATCHES.active and current_episode_var.get() is None:
                name = recorded_names.get(getattr(recipient, "__wrapped__", recipient))
            if name is None:
                return original(self, recipient, *args, **kwargs)
            options = AgentOptions(name=name, framework=FRAMEWORK)
            return run_kind(kind, options, original, (self, recipient, *args), kwargs, kwargs.get("message"))

        return initiate_chat

    return make


_HOOKS: tuple[PatchSpec, ...] = (
    (OpenAIWrapper, "create", _hook_create),
    (ConversableAgent, "generate_oai_reply", _hook_generate_oai_reply),
    (ConversableAgent, "a_generate_oai_reply", _hook_a_generate_oai_reply),
    (ConversableAgent, "execute_function", _hook_execute_function),
    (ConversableAgent, "a_execute_function", _hook_a_execute_function),
    (ConversableAgent, "initiate_chat", _hook_initiate_chat(CallKind.SYNC)),
    (ConversableAgent, "a_initiate_chat", _hook_initiate_chat(CallKind.ASYNC)),
)


def install() -> None:
    """Install the hooks (once)."""
    if PATCHES.active:
        return
    PATCHES.install(_HOOKS)


def remove() -> None:
    """Undo :func:`install` (originals come back where the hooks are still ours)."""
    PATCHES.remove()


__all__ = [
    "FRAMEWORK",
    "PATCHES",
    "install",
    "recorded_names",
    "register_client_factory",
    "remove",
    "seeded_policies",
]
