"""Record LLM calls and tool calls as GenAI spans: the one capture API every adapter uses.

Adapters translate their framework's hooks into these calls; they never build
spans or count outcomes themselves, so the span shapes, the episode counters
and the reconciliation of *requested* with *executed* tool calls exist once.

Flow inside an episode::

    call = start_llm_call(model="gpt-x", tools=[...], input_messages=[...])
    call.finish(requested=[RequestedToolCall.from_raw("get_order", "c1", '{"id": 7}')])
    tool = start_tool_call("get_order", call_id="c1", arguments={"id": 7})
    tool.succeed({"status": "shipped"})
    reconcile()          # requested calls nobody executed become failures

Example:
    >>> import agentgym_runtime as agentgym
    >>> from agentgym_runtime.recording.capture import start_tool_call
    >>> with agentgym.episode(agent="doc") as ep:
    ...     start_tool_call("lookup", call_id="1", arguments={"q": "x"}).succeed("found")
    >>> ep.tool_reliability
    1.0
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agentgym_runtime import semconv
from agentgym_runtime.recording.context import Episode, RequestedToolCall, current_agent_var, current_episode_var
from agentgym_runtime.recording.runtime import Runtime, get_runtime
from agentgym_runtime.recording.serialization import safe_str, scrub_surrogates
from agentgym_runtime.recording.validation import validate_arguments
from agentgym_runtime.semconv import ToolOutcome

#: ``outcome.value`` without the enum property lookup on every tool call.
_OUTCOME_VALUES: dict[ToolOutcome, str] = {outcome: outcome.value for outcome in ToolOutcome}

ToolDefinition = Mapping[str, Any]
"""``{"name": ..., "description": ..., "parameters": <JSON schema>}`` as offered to the model."""


def _scope_attributes(runtime: Runtime, framework: str | None) -> tuple[Episode | None, dict[str, Any]]:
    episode = current_episode_var.get()
    attributes: dict[str, Any] = {}
    if episode is not None:
        scope = current_agent_var.get()
        attributes[semconv.EPISODE_ID] = episode.id
        attributes[semconv.GEN_AI_AGENT_NAME] = scope.name if scope else episode.agent
        attributes[semconv.POLICY_VERSION] = scope.policy_version if scope else episode.policy_version
    if framework:
        attributes[semconv.FRAMEWORK] = framework
    return episode, attributes


def current_agent_name() -> str | None:
    """The agent acting now inside the current episode, if any."""
    scope = current_agent_var.get()
    if scope is not None:
        return scope.name
    episode = current_episode_var.get()
    return episode.agent if episode is not None else None


class ToolCall:
    """An in-flight ``execute_tool`` span; finish it with exactly one of the outcome methods.

    The span is made current while the tool runs, so whatever the tool calls nests under it.
    """

    __slots__ = ("_done", "_episode", "_runtime", "_span", "_token", "call_id", "name")

    def __init__(self, runtime: Runtime, span: Span, episode: Episode | None, name: str, call_id: str | None) -> None:
        self._runtime = runtime
        self._span = span
        self._episode = episode
        self._token = otel_context.attach(trace.set_span_in_context(span))
        self.name = name
        self.call_id = call_id
        self._done = False

    def succeed(self, result: Any = None) -> None:
        """The tool ran and returned ``result``."""
        self._finish(ToolOutcome.OK, result=result)

    def error_result(self, result: Any = None, message: str | None = None) -> None:
        """The tool ran but the framework marked ``result`` as an error."""
        self._finish(ToolOutcome.ERROR_RESULT, result=result, message=message, error_type="error_result")

    def fail(self, outcome: ToolOutcome, error: BaseException | None = None, message: str | None = None) -> None:
        """The call failed with ``outcome`` (``tool_error`` when the tool raised ``error``)."""
        error_type = type(error).__qualname__ if error is not None else outcome.value
        if message is None and error is not None:
            message = safe_str(error)  # an exception whose __str__ raises must not replace it
        self._finish(outcome, message=message, error_type=error_type, error=error)

    def _finish(
        self,
        outcome: ToolOutcome,
        *,
        result: Any = None,
        message: str | None = None,
        error_type: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        if self._done:
            return
        self._done = True
        span = self._span
        try:
            span.set_attribute(semconv.TOOL_OUTCOME, _OUTCOME_VALUES[outcome])
            if result is not None and self._runtime.settings.capture_content:
                span.set_attribute(semconv.GEN_AI_TOOL_CALL_RESULT, self._runtime.serializer.to_json(result))
            if outcome is not ToolOutcome.OK:
                span.set_attribute(semconv.ERROR_TYPE, error_type or outcome.value)
                text = self._runtime.serializer.text(message) if message else None
                if text:
                    span.set_attribute(semconv.TOOL_ERROR_MESSAGE, text)
                if error is not None:
                    record_exception(span, error, self._runtime)
                span.set_status(Status(StatusCode.ERROR, text or outcome.value))
            if self._episode is not None:
                self._episode.record_outcome(outcome)
        finally:
            span.end()
            otel_context.detach(self._token)


def record_exception(span: Span, error: BaseException, runtime: Runtime) -> None:
    """Add the OTel ``exception`` event of ``error``, its message and stack trace redacted.

    ``Span.record_exception`` would store ``str(error)`` and the traceback as they are: a
    ``Bearer ...`` in a message would reach the store, and a raising ``__str__`` would escape.
    """
    serializer = runtime.serializer
    try:
        trace_text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except Exception:
        trace_text = f"{type(error).__qualname__}: (traceback unavailable)"
    span.add_event(
        "exception",
        {
            "exception.type": type(error).__qualname__,
            "exception.message": serializer.text(error),
            "exception.stacktrace": serializer.text(trace_text),
            "exception.escaped": "True",
        },
    )


def start_tool_call(
    name: str,
    *,
    call_id: str | None = None,
    arguments: Any = None,
    description: str | None = None,
    tool_type: str = "function",
    framework: str | None = None,
    attempt: int | None = None,
    runtime: Runtime | None = None,
) -> ToolCall:
    """Open the ``execute_tool {name}`` span of a tool call that is about to run.

    The call is matched with the model's request (by ``call_id``, else by name and order),
    so it is not counted again at reconciliation.
    """
    runtime = runtime or get_runtime()
    name = scrub_surrogates(name)  # the model chooses the name of an unknown tool
    episode, attributes = _scope_attributes(runtime, framework)
    attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OP_EXECUTE_TOOL
    attributes[semconv.GEN_AI_TOOL_NAME] = name
    attributes[semconv.GEN_AI_TOOL_TYPE] = tool_type
    if call_id is not None:
        attributes[semconv.GEN_AI_TOOL_CALL_ID] = call_id
    if description and runtime.settings.capture_content:
        attributes[semconv.GEN_AI_TOOL_DESCRIPTION] = runtime.serializer.truncate(description)
    if arguments is not None and runtime.settings.capture_content:
        attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS] = (
            runtime.serializer.text(arguments)  # raw text (unparsed JSON): secrets masked in place
            if isinstance(arguments, str)
            else runtime.serializer.to_json(arguments)
        )
    if attempt is not None:
        attributes[semconv.TOOL_ATTEMPT] = attempt
    if episode is not None:
        request = episode.claim_tool_call(name, call_id)
        if call_id is None and request is not None and request.call_id is not None:
            # Executed without an id (a direct call): it is the requested call, so it takes its id.
            call_id = request.call_id
            attributes[semconv.GEN_AI_TOOL_CALL_ID] = call_id
    span = runtime.tracer.start_span(semconv.tool_span_name(name), kind=SpanKind.INTERNAL, attributes=attributes)
    return ToolCall(runtime, span, episode, name, call_id)


def record_tool_failure(
    name: str,
    outcome: ToolOutcome,
    *,
    call_id: str | None = None,
    arguments: Any = None,
    message: str | None = None,
    framework: str | None = None,
    runtime: Runtime | None = None,
) -> None:
    """Record a tool call that failed before running (unknown tool, arguments that do not parse).

    Example:
        >>> import agentgym_runtime as agentgym
        >>> with agentgym.episode(agent="doc") as ep:
        ...     record_tool_failure("fly_to_moon", ToolOutcome.UNKNOWN_TOOL, call_id="9")
        >>> ep.outcomes
        {'unknown_tool': 1}
    """
    start_tool_call(name, call_id=call_id, arguments=arguments, framework=framework, runtime=runtime).fail(
        outcome, message=message
    )


def classify_unexecuted(
    request: RequestedToolCall, tools: Mapping[str, Mapping[str, Any] | None] | None
) -> tuple[ToolOutcome, str]:
    """Why a requested call never ran: unknown tool, bad arguments, or just not executed."""
    if tools is not None and request.name not in tools:
        available = ", ".join(sorted(tools)) or "(none)"
        return ToolOutcome.UNKNOWN_TOOL, f"tool {request.name!r} does not exist; available: {available}"
    if request.parse_error:
        return ToolOutcome.INVALID_ARGUMENTS, request.parse_error
    schema = tools.get(request.name) if tools is not None else None
    problems = validate_arguments(schema, request.arguments)
    if problems:
        return ToolOutcome.INVALID_ARGUMENTS, "; ".join(f"{p['argument']}: {p['message']}" for p in problems)
    return ToolOutcome.NOT_EXECUTED, "the framework did not execute this call"


def reconcile(
    episode: Episode | None = None,
    *,
    agent: str | None = None,
    framework: str | None = None,
    runtime: Runtime | None = None,
) -> int:
    """Record every requested-but-unexecuted tool call of ``episode`` as a failure.

    Adapters call this when the framework has had its chance to run the calls: before the
    next LLM call of the same agent, and when the episode ends. Returns how many were recorded.
    """
    episode = episode or current_episode_var.get()
    if episode is None:
        return 0
    pending = episode.take_unexecuted()
    keep = [r for r in pending if agent is not None and r.agent not in (None, agent)]
    if keep:
        episode.expect_tool_calls(keep)
    recorded = 0
    for request in pending:
        if request in keep:
            continue
        tools = episode.known_tools.get(request.agent or episode.agent)
        outcome, message = classify_unexecuted(request, tools if isinstance(tools, Mapping) else None)
        record_tool_failure(
            request.name,
            outcome,
            call_id=request.call_id,
            arguments=request.arguments,
            message=message,
            framework=framework,
            runtime=runtime,
        )
        recorded += 1
    return recorded


class LlmCall:
    """An in-flight ``chat {model}`` span; finish it with :meth:`finish` or :meth:`fail`."""

    __slots__ = ("_agent", "_done", "_episode", "_runtime", "_span", "_started", "_token", "_tools")

    def __init__(
        self,
        runtime: Runtime,
        span: Span,
        episode: Episode | None,
        agent: str | None,
        tools: dict[str, Mapping[str, Any] | None] | None,
        make_current: bool = True,
    ) -> None:
        self._runtime = runtime
        self._span = span
        self._episode = episode
        self._agent = agent
        self._tools = tools
        # Frameworks whose start and end hooks run in different contexts (LangChain's async
        # callbacks end LLM runs inside asyncio.gather tasks) must not make the span current.
        self._token = otel_context.attach(trace.set_span_in_context(span)) if make_current else None
        self._done = False
        self._started = time.perf_counter()

    @property
    def span(self) -> Span:
        """The underlying span (for framework-specific attributes)."""
        return self._span

    def finish(
        self,
        *,
        output_messages: Any = None,
        requested: Sequence[RequestedToolCall] = (),
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        response_model: str | None = None,
        finish_reasons: Sequence[str] | None = None,
    ) -> None:
        """The model answered; ``requested`` are the tool calls it asked for."""
        if self._done:
            return
        self._done = True
        span = self._span
        runtime = self._runtime
        try:
            if output_messages is not None and runtime.settings.capture_content:
                span.set_attribute(semconv.GEN_AI_OUTPUT_MESSAGES, runtime.serializer.to_json(output_messages))
            if requested:
                span.set_attribute(
                    semconv.TOOL_REQUESTED_CALLS,
                    runtime.serializer.to_json(
                        [{"name": r.name, "id": r.call_id, "arguments": r.arguments} for r in requested]
                    ),
                )
            if input_tokens is not None:
                span.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, int(input_tokens))
            if output_tokens is not None:
                span.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, int(output_tokens))
            if response_model:
                span.set_attribute(semconv.GEN_AI_RESPONSE_MODEL, response_model)
            if finish_reasons:
                span.set_attribute(semconv.GEN_AI_RESPONSE_FINISH_REASONS, list(finish_reasons))
            if self._episode is not None:
                self._episode.record_llm_call(input_tokens, output_tokens)
                for request in requested:
                    request.agent = request.agent or self._agent
                self._episode.expect_tool_calls(list(requested))
        finally:
            span.end()
            if self._token is not None:
                otel_context.detach(self._token)

    def fail(self, error: BaseException) -> None:
        """The LLM call raised ``error``."""
        if self._done:
            return
        self._done = True
        try:
            self._span.set_attribute(semconv.ERROR_TYPE, type(error).__qualname__)
            record_exception(self._span, error, self._runtime)
            self._span.set_status(Status(StatusCode.ERROR, self._runtime.serializer.text(error)))
            if self._episode is not None:
                self._episode.record_llm_call()
        finally:
            self._span.end()
            if self._token is not None:
                otel_context.detach(self._token)


def start_llm_call(
    *,
    model: str | None,
    provider: str | None = None,
    input_messages: Any = None,
    system_instructions: Any = None,
    tools: Sequence[ToolDefinition] | None = None,
    framework: str | None = None,
    runtime: Runtime | None = None,
    make_current: bool = True,
) -> LlmCall:
    """Open the ``chat {model}`` span of an LLM call that is about to be made.

    Requested tool calls left unexecuted by the previous turn of the same agent are
    reconciled first: the framework has had its chance to run them. ``make_current=False``
    leaves the current span alone (for hooks whose start and end run in different contexts).
    """
    runtime = runtime or get_runtime()
    episode, attributes = _scope_attributes(runtime, framework)
    agent = attributes.get(semconv.GEN_AI_AGENT_NAME)
    offered: dict[str, Mapping[str, Any] | None] | None = None
    if episode is not None:
        reconcile(episode, agent=agent, framework=framework, runtime=runtime)
        if tools is not None:
            offered = {str(t.get("name")): t.get("parameters") for t in tools}
            episode.known_tools[agent or episode.agent] = offered
    attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OP_CHAT
    if model:
        attributes[semconv.GEN_AI_REQUEST_MODEL] = model
    if provider:
        attributes[semconv.GEN_AI_PROVIDER_NAME] = provider
    if episode is not None and episode.session_id:
        attributes[semconv.GEN_AI_CONVERSATION_ID] = episode.session_id
    if runtime.settings.capture_content:
        if input_messages is not None:
            attributes[semconv.GEN_AI_INPUT_MESSAGES] = runtime.serializer.to_json(input_messages)
        if system_instructions is not None:
            attributes[semconv.GEN_AI_SYSTEM_INSTRUCTIONS] = runtime.serializer.to_json(system_instructions)
        if tools:
            attributes[semconv.GEN_AI_TOOL_DEFINITIONS] = runtime.serializer.to_json(list(tools))
    span = runtime.tracer.start_span(semconv.chat_span_name(model), kind=SpanKind.CLIENT, attributes=attributes)
    return LlmCall(runtime, span, episode, agent, offered, make_current)
