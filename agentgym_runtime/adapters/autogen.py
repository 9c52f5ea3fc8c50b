"""AutoGen adapter (autogen-agentchat / autogen-core 0.7.x): capture, per-call policy, seeding.

What it records, and where from:

* **Episodes**: the proxy that :func:`agentgym_runtime.train_online` returns for an
  ``AssistantAgent`` (any ``BaseChatAgent``) or a team (``RoundRobinGroupChat``,
  ``SelectorGroupChat``, any ``BaseGroupChat``) runs ``run`` / ``run_stream`` /
  ``on_messages`` / ``on_messages_stream`` as one episode.
* **LLM calls**: AutoGen makes no LLM span of its own for arbitrary clients, so every
  ``AssistantAgent`` model call inside an episode goes through :class:`PolicyModelClient`, a
  delegating ``ChatCompletionClient`` substituted *per call* for the agent's client (the
  ``model_client`` argument of ``AssistantAgent._call_llm`` / ``_process_model_result``); the
  agent object is never changed. The same wrapper applies the pinned policy; a policy whose
  ``llm`` routes the call to its own client falls back to the incumbent policy, once, when that
  client cannot be reached (:mod:`agentgym_runtime.adapters.fallback`).
* **Tool calls**: ``BaseTool.run_json`` (and ``BaseStreamTool.run_json_stream``) run inside our
  ``execute_tool`` span, which knows the exact failure (a pydantic ``ValidationError`` of the
  tool's argument model → ``invalid_arguments``; anything else raised → ``tool_error``).
  AutoGen's own ``execute_tool`` span for that call (``autogen_core.tools._base.trace_tool_span``)
  is folded into ours while inside an episode, so the store holds exactly one ``execute_tool``
  span per requested call, with the same name, ``gen_ai.tool.name``, ``gen_ai.tool.call.id``,
  ``error.type`` and ERROR status AutoGen would have set. Outside episodes AutoGen's spans are
  untouched. Unknown tool names and malformed JSON never reach a tool (AutoGen answers them with
  ``FunctionExecutionResult(is_error=True)``); reconciliation records them as ``unknown_tool`` /
  ``invalid_arguments`` (at the end of a team participant's turn, or at episode end). Tools that
  do not go through ``BaseTool.run_json`` (e.g. ``McpWorkbench``) are not seen executing: their
  calls are reconciled as ``not_executed``. Inside a training replay
  (:func:`agentgym_runtime.recording.sandbox.use_sandbox`) the same hook hands the call to the replay's
  sandbox instead of the tool.
* **Teams**: each ``AssistantAgent`` participant's turn is a turn of that agent inside the
  team's episode (a child ``invoke_agent`` span, its own pinned policy), so its LLM and tool
  spans carry its ``gen_ai.agent.name``.

The hooks above are class-level wraps installed by :meth:`AutoGenAdapter.instrument` (done by
``train_online``) and removed by the last :meth:`AutoGenAdapter.uninstrument`. Outside an
episode they only delegate. A decorated function that runs an AutoGen agent it did not wrap
is captured the same way once the adapter is instrumented
(``agentgym_runtime.adapters.load_adapter("autogen").instrument()``).

Example:
    >>> import agentgym_runtime as agentgym
    >>> from autogen_agentchat.agents import AssistantAgent
    >>> from autogen_ext.models.replay import ReplayChatCompletionClient
    >>> client = ReplayChatCompletionClient(["hello"])
    >>> agent = agentgym.train_online(AssistantAgent("helper", model_client=client), name="helper")
    >>> isinstance(agent, AssistantAgent), agent.name
    (True, 'helper')
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, cast

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage
from autogen_agentchat.teams import BaseGroupChat
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import BaseStreamTool, BaseTool, Tool, ToolSchema
from autogen_core.tools import _base as autogen_tools_base
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from agentgym_runtime.adapters.base import Adapter
from agentgym_runtime.adapters.fallback import acall_with_fallback, astream_with_fallback, resume_fallback
from agentgym_runtime.api import current_policy
from agentgym_runtime.policy.apply import apply_to_messages, apply_to_tool_definitions
from agentgym_runtime.recording.capture import (
    LlmCall,
    ToolCall,
    current_agent_name,
    reconcile,
    start_llm_call,
    start_tool_call,
)
from agentgym_runtime.recording.context import RequestedToolCall, current_episode_var
from agentgym_runtime.recording.episodes import AgentOptions
from agentgym_runtime.recording.policy import LLMConfig, Policy
from agentgym_runtime.recording.runtime import get_runtime
from agentgym_runtime.recording.sandbox import current_sandbox, sandboxed_result
from agentgym_runtime.recording.wrapping import CallKind, iterate_async
from agentgym_runtime.semconv import ToolOutcome

FRAMEWORK = "autogen"

ClientFactory = Callable[[LLMConfig], ChatCompletionClient]
"""``(LLMConfig) -> ChatCompletionClient``: builds the client a policy's ``llm`` routes to."""

_client_factory: ClientFactory | None = None
_routed_clients: dict[str, ChatCompletionClient] = {}
_routed_lock = threading.Lock()

#: Participants of teams that ran (or were wrapped); their turns get their own agent scope.
_team_members: weakref.WeakSet[Any] = weakref.WeakSet()
#: Agent objects wrapped by ``train_online`` -> the name they are recorded under.
_recorded_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

_ORIGINAL_KEY = "_agentgym_autogen_message"
"""Private key tying a converted OpenAI message back to the AutoGen message it came from."""


def register_client_factory(factory: ClientFactory | None) -> None:
    """Route LLM calls of policies that set ``llm`` to clients built by ``factory``.

    Without a factory (or with ``None``) such policies keep the agent's own client.
    Clients are built once per policy ``llm`` configuration and reused.

    Example:
        >>> from autogen_ext.models.replay import ReplayChatCompletionClient
        >>> register_client_factory(lambda llm: ReplayChatCompletionClient(["routed"]))
        >>> register_client_factory(None)
    """
    global _client_factory
    with _routed_lock:
        _client_factory = factory
        _routed_clients.clear()


def _routed_client(llm: LLMConfig) -> ChatCompletionClient | None:
    factory = _client_factory
    if factory is None:
        return None
    key = llm.model_dump_json()
    with _routed_lock:
        client = _routed_clients.get(key)
        if client is None:
            client = factory(llm)
            _routed_clients[key] = client
        return client


# --- message and tool conversion (AutoGen <-> OpenAI-style), in one place -----------------------
def _content_text(content: Any) -> Any:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return [item if isinstance(item, str) else {"type": type(item).__name__} for item in content]
    return str(content)


def messages_to_openai(messages: Sequence[LLMMessage], *, keep_originals: bool = False) -> list[dict[str, Any]]:
    """AutoGen ``LLMMessage`` objects as OpenAI chat messages.

    With ``keep_originals`` each dict remembers the message it came from (under a private key),
    so :func:`messages_from_openai` can give back the very same objects for unchanged messages.

    Example:
        >>> messages_to_openai([SystemMessage(content="Be brief."), UserMessage(content="hi", source="user")])
        [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'hi'}]
    """
    result: list[dict[str, Any]] = []
    for message in messages:
        converted: list[dict[str, Any]]
        if isinstance(message, SystemMessage):
            converted = [{"role": "system", "content": message.content}]
        elif isinstance(message, UserMessage):
            converted = [{"role": "user", "content": _content_text(message.content)}]
        elif isinstance(message, AssistantMessage):
            if isinstance(message.content, str):
                converted = [{"role": "assistant", "content": message.content}]
            else:
                calls = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in message.content
                ]
                converted = [{"role": "assistant", "content": message.thought, "tool_calls": calls}]
        else:  # FunctionExecutionResultMessage (LLMMessage is a closed union)
            converted = [{"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in message.content]
        if keep_originals:
            for item in converted:
                item[_ORIGINAL_KEY] = message
        result.extend(converted)
    return result


def messages_from_openai(messages: Sequence[Mapping[str, Any]], *, source: str = "demonstration") -> list[LLMMessage]:
    """OpenAI chat messages as AutoGen ``LLMMessage`` objects (inverse of :func:`messages_to_openai`).

    Example:
        >>> messages_from_openai([{"role": "user", "content": "hi"}])
        [UserMessage(content='hi', source='demonstration', type='UserMessage')]
    """
    result: list[LLMMessage] = []
    call_names: dict[str, str] = {}
    pending_results: list[FunctionExecutionResult] = []

    def flush_results() -> None:
        if pending_results:
            result.append(FunctionExecutionResultMessage(content=list(pending_results)))
            pending_results.clear()

    for item in messages:
        original = item.get(_ORIGINAL_KEY)
        role = item.get("role")
        if original is not None and not (role == "system" and item.get("content") != original.content):
            flush_results()
            if not result or result[-1] is not original:
                result.append(original)
            continue
        if role == "tool":
            call_id = str(item.get("tool_call_id"))
            pending_results.append(
                FunctionExecutionResult(
                    content=_as_text(item.get("content")),
                    call_id=call_id,
                    name=call_names.get(call_id, ""),
                    is_error=False,
                )
            )
            continue
        flush_results()
        if role == "system":
            result.append(SystemMessage(content=_as_text(item.get("content"))))
        elif role == "assistant" and item.get("tool_calls"):
            calls = []
            for call in item["tool_calls"]:
                function = call.get("function", {})
                call_names[str(call.get("id"))] = str(function.get("name"))
                calls.append(
                    FunctionCall(
                        id=str(call.get("id")),
                        name=str(function.get("name")),
                        arguments=function.get("arguments", "{}"),
                    )
                )
            result.append(AssistantMessage(content=calls, source=source))
        elif role == "assistant":
            result.append(AssistantMessage(content=_as_text(item.get("content")), source=source))
        else:
            result.append(UserMessage(content=_as_text(item.get("content")), source=source))
    flush_results()
    return result


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def tool_definitions(tools: Sequence[Tool | ToolSchema]) -> list[dict[str, Any]]:
    """``{"name", "description", "parameters"}`` for the tools passed to ``create``.

    Example:
        >>> tool_definitions([{"name": "lookup", "description": "Find.", "parameters": {"type": "object"}}])
        [{'name': 'lookup', 'description': 'Find.', 'parameters': {'type': 'object'}}]
    """
    result = []
    for tool in tools:
        schema: Mapping[str, Any] = tool.schema if isinstance(tool, Tool) else tool
        result.append(
            {"name": schema["name"], "description": schema.get("description"), "parameters": schema.get("parameters")}
        )
    return result


def apply_policy_to_tools(policy: Policy, tools: Sequence[Tool | ToolSchema]) -> list[Tool | ToolSchema]:
    """The tools with the policy's descriptions; only the overridden ones are replaced (by schemas).

    Example:
        >>> p = Policy(agent="a", version=1, tool_descriptions={"lookup": "Look an order up by id."})
        >>> apply_policy_to_tools(p, [{"name": "lookup", "description": "Find."}])[0]["description"]
        'Look an order up by id.'
    """
    overrides = policy.tool_descriptions
    if not overrides:
        return list(tools)
    result: list[Tool | ToolSchema] = []
    for tool in tools:
        schema: Mapping[str, Any] = tool.schema if isinstance(tool, Tool) else tool
        if schema.get("name") in overrides:
            (updated,) = apply_to_tool_definitions(policy, [schema])
            result.append(updated)  # type: ignore[arg-type]
        else:
            result.append(tool)
    return result


def apply_policy_to_messages(policy: Policy, messages: Sequence[LLMMessage]) -> list[LLMMessage]:
    """``messages`` with the policy's system prompt and demonstrations (unchanged messages are kept as is).

    Example:
        >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
        >>> apply_policy_to_messages(p, [SystemMessage(content="old")])[0].content
        'Be exact.'
    """
    applied = apply_to_messages(policy, messages_to_openai(messages, keep_originals=True))
    return messages_from_openai(applied)


# --- the model client wrapper --------------------------------------------------------------------
_PROVIDERS = (
    ("AzureOpenAI", "azure.ai.openai"),
    ("OpenAI", "openai"),
    ("Anthropic", "anthropic"),
    ("Ollama", "ollama"),
    ("Gemini", "gcp.gemini"),
    ("Replay", "replay"),
)


def _model_name(client: ChatCompletionClient) -> str | None:
    raw = getattr(client, "_raw_config", None)
    if isinstance(raw, Mapping) and isinstance(raw.get("model"), str):
        return str(raw["model"])
    for attribute in ("model", "_model", "_model_name"):
        value = getattr(client, attribute, None)
        if isinstance(value, str):
            return value
    try:
        family = client.model_info.get("family")
    except Exception:
        return None
    return str(family) if family and family != "unknown" else None


def _provider_name(client: ChatCompletionClient) -> str:
    name = type(client).__name__
    return next((provider for marker, provider in _PROVIDERS if marker in name), name)


class PolicyModelClient(ChatCompletionClient):
    """A delegating ``ChatCompletionClient``: records each call and applies the policy to it.

    Inside an episode each ``create`` / ``create_stream`` is one ``chat`` span with the
    requested tool calls and token usage. The policy is ``fixed_policy`` when given (a seeded
    agent), else the one pinned for the agent acting now (:func:`agentgym_runtime.current_policy`);
    a baseline policy changes nothing. Everything else is delegated to ``inner``.

    Args:
        inner: The agent's own client.
        fixed_policy: Apply this policy to every call instead of the pinned one.

    Example:
        >>> from autogen_ext.models.replay import ReplayChatCompletionClient
        >>> client = PolicyModelClient(ReplayChatCompletionClient(["ok"]))
        >>> client.inner.__class__.__name__
        'ReplayChatCompletionClient'
    """

    component_type = "model"

    def __init__(self, inner: ChatCompletionClient, fixed_policy: Policy | None = None) -> None:
        self.inner = inner
        self.fixed_policy = fixed_policy

    # -- policy ---------------------------------------------------------------------------
    def _policy(self) -> Policy | None:
        if self.fixed_policy is not None:
            return None if self.fixed_policy.is_baseline else self.fixed_policy
        policy = current_policy()
        if policy is not None and policy.llm is not None:
            policy = resume_fallback(policy)  # a routed policy this episode already fell back from
        return None if policy is None or policy.is_baseline else policy

    def _falls_back(self, policy: Policy | None) -> bool:
        """Whether a failed call under ``policy`` may fall back: a routed, pinned (not seeded) policy."""
        return policy is not None and policy.llm is not None and self.fixed_policy is None

    def _prepare(
        self, policy: Policy | None, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]
    ) -> tuple[ChatCompletionClient, Sequence[LLMMessage], Sequence[Tool | ToolSchema]]:
        if policy is None or policy.is_baseline:
            return self.inner, messages, tools
        client = self.inner
        if policy.llm is not None:
            client = _routed_client(policy.llm) or client
        if policy.system_prompt is not None or policy.demonstrations:
            messages = apply_policy_to_messages(policy, messages)
        if policy.tool_descriptions:
            tools = apply_policy_to_tools(policy, tools)
        return client, messages, tools

    def _start(
        self, client: ChatCompletionClient, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]
    ) -> LlmCall:
        runtime = get_runtime()
        capture = runtime.settings.capture_content
        converted = messages_to_openai(messages) if capture else None
        system = [m["content"] for m in converted if m["role"] == "system"] if converted else None
        return start_llm_call(
            model=_model_name(client),
            provider=_provider_name(client),
            input_messages=[m for m in converted if m["role"] != "system"] if converted else None,
            system_instructions=system or None,
            tools=tool_definitions(tools),
            framework=FRAMEWORK,
            runtime=runtime,
        )

    # -- ChatCompletionClient ---------------------------------------------------------------
    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Any = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """Create one completion (recorded, with the policy applied; a routed one falls back)."""
        kwargs: dict[str, Any] = {"json_output": json_output, "extra_create_args": extra_create_args}
        if tool_choice != "auto":
            kwargs["tool_choice"] = tool_choice
        policy = self._policy()

        async def attempt(serving: Policy | None) -> CreateResult:
            client, call, sent, offered = self._begin(serving, messages, tools)
            try:
                result = await client.create(sent, tools=offered, cancellation_token=cancellation_token, **kwargs)
            except BaseException as exc:
                if call is not None:
                    _fail_llm_call(call, exc)
                raise
            if call is not None:
                _finish_llm_call(call, result)
            return result

        if policy is None or not self._falls_back(policy):
            return await attempt(policy)
        return await acall_with_fallback(policy, attempt)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Any = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
        **more: Any,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Stream one completion (recorded when the final ``CreateResult`` arrives).

        A routed policy falls back only if its stream fails before the first chunk.
        """
        kwargs: dict[str, Any] = {"json_output": json_output, "extra_create_args": extra_create_args}
        if tool_choice != "auto":
            kwargs["tool_choice"] = tool_choice
        kwargs.update(more)
        policy = self._policy()

        async def attempt(serving: Policy | None) -> AsyncGenerator[str | CreateResult, None]:
            client, call, sent, offered = self._begin(serving, messages, tools)
            try:
                async with aclosing(
                    client.create_stream(sent, tools=offered, cancellation_token=cancellation_token, **kwargs)
                ) as stream:
                    async for chunk in stream:
                        if isinstance(chunk, CreateResult) and call is not None:
                            _finish_llm_call(call, chunk)
                            call = None
                        yield chunk
            except BaseException as exc:
                if call is not None:
                    _fail_llm_call(call, exc)
                raise
            if call is not None:  # the stream ended without a final result
                _fail_llm_call(call, RuntimeError("no final CreateResult in the stream"))

        chunks = (
            attempt(policy)
            if policy is None or not self._falls_back(policy)
            else astream_with_fallback(policy, attempt)
        )
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    def _begin(
        self, policy: Policy | None, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]
    ) -> tuple[ChatCompletionClient, LlmCall | None, Sequence[LLMMessage], Sequence[Tool | ToolSchema]]:
        client: ChatCompletionClient = self.inner
        call: LlmCall | None = None
        try:
            client, messages, tools = self._prepare(policy, messages, tools)
            if current_episode_var.get() is not None:
                call = self._start(client, messages, tools)
        except Exception as exc:
            get_runtime().internal_error("autogen llm call start", exc)
        return client, call, messages, tools

    async def close(self) -> None:
        """Close the wrapped client."""
        await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        """Usage of the wrapped client's last call."""
        return self.inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        """Total usage of the wrapped client."""
        return self.inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Delegated to the wrapped client."""
        return self.inner.count_tokens(messages, tools=tools)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Delegated to the wrapped client."""
        return self.inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        """The wrapped client's capabilities."""
        return self.inner.capabilities

    @property
    def model_info(self) -> ModelInfo:
        """The wrapped client's model info (AutoGen checks ``function_calling`` on it)."""
        return self.inner.model_info

    def dump_component(self) -> Any:
        """The wrapped client's component (a seeded agent still serializes its own client)."""
        return self.inner.dump_component()

    def __getattr__(self, name: str) -> Any:
        # Anything else the host reads from its client (e.g. ReplayChatCompletionClient.create_calls).
        if name in ("inner", "fixed_policy"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def _finish_llm_call(call: LlmCall, result: CreateResult) -> None:
    try:
        requested: list[RequestedToolCall] = []
        output: list[dict[str, Any]]
        if isinstance(result.content, list):
            requested = [RequestedToolCall.from_raw(c.name, c.id, c.arguments) for c in result.content]
            calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in result.content]
            output = [{"role": "assistant", "tool_calls": calls}]
        else:
            output = [{"role": "assistant", "content": result.content}]
        usage = result.usage
        call.finish(
            output_messages=output,
            requested=requested,
            input_tokens=usage.prompt_tokens if usage is not None else None,
            output_tokens=usage.completion_tokens if usage is not None else None,
            finish_reasons=[str(result.finish_reason)] if result.finish_reason else None,
        )
    except Exception as exc:
        get_runtime().internal_error("autogen llm call end", exc)


def _fail_llm_call(call: LlmCall, error: BaseException) -> None:
    try:
        call.fail(error)
    except Exception as exc:
        get_runtime().internal_error("autogen llm call end", exc)


def _recording_client(client: Any) -> Any:
    if isinstance(client, PolicyModelClient) or current_episode_var.get() is None:
        return client
    return PolicyModelClient(client)


# --- class-level hooks (installed by instrument(), removed by the last uninstrument()) ------------
def _hook_call_llm(original: Any) -> Any:
    async def _call_llm(cls: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        if "model_client" in kwargs:
            kwargs["model_client"] = _recording_client(kwargs["model_client"])
        async with aclosing(original.__func__(cls, *args, **kwargs)) as stream:
            async for item in stream:
                yield item

    return classmethod(_call_llm)


def _hook_on_messages_stream(original: Any) -> Any:
    async def on_messages_stream(self: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        if current_episode_var.get() is None or self not in _team_members:
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

    on_messages_stream.__wrapped__ = original  # type: ignore[attr-defined]
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

    run_stream.__wrapped__ = original  # type: ignore[attr-defined]
    return run_stream


def _is_argument_error(tool: BaseTool[Any, Any], exc: BaseException) -> bool:
    # AutoGen validates the arguments with the tool's own pydantic model before running it.
    return isinstance(exc, ValidationError) and exc.title == tool.args_type().__name__


def _start_tool(tool: BaseTool[Any, Any], args: Mapping[str, Any], call_id: str | None) -> ToolCall | None:
    if current_episode_var.get() is None:
        return None
    try:
        return start_tool_call(
            tool.name, call_id=call_id, arguments=dict(args), description=tool.description, framework=FRAMEWORK
        )
    except Exception as exc:
        get_runtime().internal_error("autogen tool start", exc)
        return None


def _end_tool(tool: BaseTool[Any, Any], call: ToolCall, result: Any = None, error: BaseException | None = None) -> None:
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

    trace_tool_span.__wrapped__ = original  # type: ignore[attr-defined]
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

    run_json.__wrapped__ = original  # type: ignore[attr-defined]
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

    run_json_stream.__wrapped__ = original  # type: ignore[attr-defined]
    return run_json_stream


_HOOKS: tuple[tuple[Any, str, Callable[[Any], Any]], ...] = (
    (autogen_tools_base, "trace_tool_span", _hook_trace_tool_span),
    (AssistantAgent, "_call_llm", _hook_call_llm),
    (AssistantAgent, "_process_model_result", _hook_call_llm),
    (AssistantAgent, "on_messages_stream", _hook_on_messages_stream),
    (BaseGroupChat, "run_stream", _hook_group_run_stream),
    (BaseTool, "run_json", _hook_run_json),
    (BaseStreamTool, "run_json_stream", _hook_run_json_stream),
)


# --- the adapter ---------------------------------------------------------------------------------
class AutoGenAdapter(Adapter):
    """Episodes, LLM/tool capture and per-call policies for AutoGen agents and teams.

    Example:
        >>> from agentgym_runtime.adapters import load_adapter
        >>> load_adapter("autogen").framework
        'autogen'
    """

    framework: ClassVar[str] = FRAMEWORK
    extra: ClassVar[str | None] = "autogen"
    module_prefixes: ClassVar[tuple[str, ...]] = ("autogen_agentchat", "autogen_core", "autogen_ext")
    entry_points: ClassVar[Mapping[str, CallKind | None]] = {
        "run": CallKind.ASYNC,
        "run_stream": CallKind.ASYNC_GENERATOR,
        "on_messages": CallKind.ASYNC,
        "on_messages_stream": CallKind.ASYNC_GENERATOR,
    }

    _instrument_lock: ClassVar[threading.Lock] = threading.Lock()
    _instrument_count: ClassVar[int] = 0
    _originals: ClassVar[list[tuple[Any, str, Any]]] = []

    def _install(self) -> None:
        originals: list[tuple[Any, str, Any]] = []
        for owner, name, hook in _HOOKS:
            original = vars(owner)[name]
            originals.append((owner, name, original))
            setattr(owner, name, hook(original))
        type(self)._originals = originals

    def _remove(self) -> None:
        for owner, name, original in reversed(type(self)._originals):
            setattr(owner, name, original)
        type(self)._originals = []

    @property
    def instrumented(self) -> bool:
        """Whether the class-level hooks are installed now."""
        return type(self)._instrument_count > 0

    def wrap(self, obj: Any, options: AgentOptions) -> Any:
        """Proxy ``obj``; remember its recorded name and, for a team, its participants."""
        if isinstance(obj, BaseGroupChat):
            for participant in getattr(obj, "_participants", ()):
                _team_members.add(participant)
        else:
            try:
                _recorded_names[obj] = options.name
            except TypeError:
                pass
        return super().wrap(obj, options)

    def call_input(self, target: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The task (``run``/``run_stream``) or the messages (``on_messages*``), as text where possible."""
        value = kwargs.get("task") if method in ("run", "run_stream") else (args[0] if args else kwargs.get("messages"))
        return _message_text(value)

    def apply_policy(self, policy: Policy, request: Any) -> Any:
        """Apply ``policy`` to a request ``{"messages": [LLMMessage...], "tools": [...]}`` (a new dict)."""
        messages = request.get("messages", [])
        tools = request.get("tools", [])
        return {
            **request,
            "messages": apply_policy_to_messages(policy, messages),
            "tools": apply_policy_to_tools(policy, tools),
        }

    def seed(self, agent: Any, policy: Policy) -> Any:
        """Apply ``policy`` permanently to a fresh ``AssistantAgent`` and return it.

        AutoGen has no public way to swap an agent's client, so this replaces the private
        ``_model_client`` attribute (read by ``AssistantAgent.on_messages_stream`` on every call)
        with a :class:`PolicyModelClient` fixed to ``policy``.

        Raises:
            TypeError: ``agent`` is not an ``AssistantAgent``.
        """
        target = getattr(agent, "__wrapped__", agent)
        if not isinstance(target, AssistantAgent):
            raise TypeError(f"the autogen adapter seeds AssistantAgent objects, got {type(target).__name__}")
        inner = target._model_client
        if isinstance(inner, PolicyModelClient):
            inner = inner.inner
        target._model_client = PolicyModelClient(inner, fixed_policy=policy)
        return agent


def _message_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, BaseChatMessage):
        return value.to_text()
    if isinstance(value, Sequence):
        return [_message_text(v) for v in value]
    if isinstance(value, TaskResult):
        return [_message_text(m) for m in value.messages]
    return value


__all__ = [
    "AutoGenAdapter",
    "ClientFactory",
    "PolicyModelClient",
    "apply_policy_to_messages",
    "apply_policy_to_tools",
    "messages_from_openai",
    "messages_to_openai",
    "register_client_factory",
    "tool_definitions",
]
