"""AutoGen's LLM calls: :class:`PolicyModelClient`, the delegating client that records and applies policies.

Example:
    >>> from autogen_ext.models.replay import ReplayChatCompletionClient
    >>> PolicyModelClient(ReplayChatCompletionClient(["ok"])).inner.__class__.__name__
    'ReplayChatCompletionClient'
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from agentgym_runtime.adapters import routing
from agentgym_runtime.adapters.autogen.messages import apply_policy, messages_to_openai, tool_definitions
from agentgym_runtime.adapters.fallback import acall_with_fallback, astream_with_fallback
from agentgym_runtime.adapters.routing import routed_model
from agentgym_runtime.adapters.seeding import effective_policy
from agentgym_runtime.recording.capture import LlmCall, start_llm_call
from agentgym_runtime.recording.context import RequestedToolCall, current_episode_var
from agentgym_runtime.recording.policy import LLMConfig, Policy
from agentgym_runtime.recording.runtime import get_runtime

FRAMEWORK = "autogen"

_PROVIDERS = (
    ("AzureOpenAI", "azure.ai.openai"),
    ("OpenAI", "openai"),
    ("Anthropic", "anthropic"),
    ("Ollama", "ollama"),
    ("Gemini", "gcp.gemini"),
    ("Replay", "replay"),
)

#: The factory type register_client_factory takes.
ClientFactory = Callable[[LLMConfig], ChatCompletionClient]


#: Route AutoGen LLM calls of policies that set ``llm`` to clients built by a factory (built once
#: per ``LLMConfig`` and reused; ``None`` unregisters): the shared registry of
#: :mod:`agentgym_runtime.adapters.routing` under AutoGen's name.
register_client_factory = routing.registrar(FRAMEWORK)


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
        # The adapters' one rule: a fixed (seeded) policy wins, else the pinned one.
        return effective_policy(self.fixed_policy)

    def _prepare(
        self, policy: Policy | None, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]
    ) -> tuple[ChatCompletionClient, Sequence[LLMMessage], Sequence[Tool | ToolSchema]]:
        if policy is None or policy.is_baseline:
            return self.inner, messages, tools
        request = apply_policy(policy, {"messages": messages, "tools": tools})
        routed = routed_model(FRAMEWORK, policy.llm) if policy.llm is not None else None
        return routed if routed is not None else self.inner, request["messages"], request["tools"]

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

        if policy is None:
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

        chunks = attempt(policy) if policy is None else astream_with_fallback(policy, attempt)
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


def recording_client(client: Any) -> Any:
    """``client`` wrapped in a :class:`PolicyModelClient` inside an episode (else as it is)."""
    if isinstance(client, PolicyModelClient) or current_episode_var.get() is None:
        return client
    return PolicyModelClient(client)


__all__ = ["ClientFactory", "register_client_factory", "FRAMEWORK", "PolicyModelClient", "recording_client"]
