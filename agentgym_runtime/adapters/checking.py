"""Check every executed tool call against the schema the model was shown, whatever the framework does.

Some frameworks validate a call's arguments before running the tool (AutoGen, CrewAI with a
pydantic model); others run whatever the model sent (a LangChain ``StructuredTool`` built from a
JSON-schema dict, what ``langchain-mcp-adapters`` builds for every MCP tool). So the adapters open
each tool span through :func:`start_checked_tool_call`: it checks the arguments against the
schema offered to the model in the agent's last LLM call (else the framework's own definition of
the tool) and, when they break it, records the call as ``invalid_arguments`` however the run then
ended, with ``agentgym.tool.executed_anyway`` / ``agentgym.tool.executed_outcome`` and the result on
the span. A schema that cannot be used (itself invalid, a recursive ``$ref``) leaves the call to the
framework's verdict and says why in ``agentgym.tool.schema_error``; nothing here raises into the host.

Example:
    >>> import agentgym_runtime as agentgym
    >>> schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    >>> with agentgym.episode(agent="doc") as ep:
    ...     start_checked_tool_call("count", arguments={}, schema=schema).succeed(3)
    >>> ep.outcomes
    {'invalid_arguments': 1}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from agentgym_runtime import semconv
from agentgym_runtime.adapters.mcp import take_verdict
from agentgym_runtime.recording.capture import ToolCall, current_agent_name, start_tool_call
from agentgym_runtime.recording.context import current_episode_var
from agentgym_runtime.recording.runtime import get_runtime
from agentgym_runtime.recording.validation import validate_arguments
from agentgym_runtime.semconv import ToolOutcome

#: Agent name -> its own tool set (name -> JSON schema), from the wrapped agent object. Used when
#: a model call carries no tool definitions (a model wrapper that does not expose them).
_agent_tools: dict[str, dict[str, Mapping[str, Any] | None]] = {}


def register_agent_tools(agent: str, tools: Mapping[str, Mapping[str, Any] | None]) -> None:
    """Remember ``agent``'s own tool set (what a wrapped agent object holds).

    Example:
        >>> register_agent_tools("doc", {"lookup": {"type": "object"}})
    """
    _agent_tools[agent] = dict(tools)


def fill_known_tools() -> None:
    """Inside an episode, give the acting agent its own tool set when no model call offered one.

    Reconciliation then tells an unknown tool (``unknown_tool``) from a call the framework
    skipped (``not_executed``) even when the model wrapper hides the tool definitions.

    Example:
        >>> fill_known_tools()  # outside an episode: nothing to do
    """
    episode = current_episode_var.get()
    if episode is None:
        return
    agent = current_agent_name() or episode.agent
    tools = _agent_tools.get(agent)
    if tools is not None and episode.known_tools.get(agent) is None:
        episode.known_tools[agent] = tools


def offered_schema(name: str) -> tuple[bool, Mapping[str, Any] | None]:
    """``(known, schema)``: the schema the current agent's model was shown for ``name``.

    ``known`` is false when the model call carried no tool definitions (then the framework's
    own definition decides).

    Example:
        >>> offered_schema("anything")
        (False, None)
    """
    episode = current_episode_var.get()
    if episode is None:
        return False, None
    tools = episode.known_tools.get(current_agent_name() or episode.agent)
    if not isinstance(tools, Mapping) or name not in tools:
        return False, None
    schema = tools[name]
    return True, schema if isinstance(schema, Mapping) else None


def schema_problems(schema: Mapping[str, Any] | None, arguments: Any) -> tuple[str | None, str | None]:
    """``(problems, schema_error)`` of ``arguments`` against ``schema`` (``None`` when fine / usable).

    Example:
        >>> schema_problems({"type": "object", "required": ["q"]}, {})
        ("q: 'q' is a required property", None)
        >>> schema_problems({"type": 12}, {})[1] is not None
        True
    """
    if schema is None:
        return None, None
    try:
        problems = validate_arguments(schema, arguments)
    except RecursionError:
        return None, "the tool's schema refers to itself without end (recursive $ref)"
    except Exception as exc:  # jsonschema's SchemaError, an unresolvable $ref, ...
        return None, f"the tool's schema is invalid: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    if not problems:
        return None, None
    return "; ".join(f"{p['argument']}: {p['message']}" for p in problems)[:2000], None


class CheckedToolCall:
    """A :class:`~agentgym_runtime.recording.capture.ToolCall` checked against its schema and its MCP server.

    When the arguments broke the schema (``problems``), every way the run can end is recorded as
    ``invalid_arguments``, with how it really ended. When the call reached an MCP server, the
    server's answer decides how it ended (``isError`` -> ``error_result``, a failed call ->
    ``tool_error``) whatever the framework made of it, and the server is named on the span.
    """

    __slots__ = ("_call", "_problems", "_span")

    def __init__(self, call: ToolCall, span: Any, problems: str | None) -> None:
        self._call = call
        self._span = span
        self._problems = problems

    @property
    def call_id(self) -> str | None:
        """The call id of the underlying call."""
        return self._call.call_id

    def _ran(self, outcome: ToolOutcome, result: Any) -> None:
        try:
            self._span.set_attribute(semconv.TOOL_EXECUTED_ANYWAY, outcome is not ToolOutcome.NOT_EXECUTED)
            self._span.set_attribute(semconv.TOOL_EXECUTED_OUTCOME, outcome.value)
            runtime = get_runtime()
            if result is not None and runtime.settings.capture_content:
                self._span.set_attribute(semconv.GEN_AI_TOOL_CALL_RESULT, runtime.serializer.to_json(result))
        except Exception as exc:
            get_runtime().internal_error("tool schema check", exc)

    def _end(self, outcome: ToolOutcome, result: Any, error: BaseException | None, message: str | None) -> None:
        try:
            verdict = take_verdict(self._span, self._call.name)
            if verdict is not None:
                self._span.set_attributes(verdict.server.attributes())
                if verdict.outcome is not None:
                    outcome, message = verdict.outcome, verdict.message
                    error = verdict.error or error
        except Exception as exc:
            get_runtime().internal_error("mcp verdict", exc)
        if self._problems is not None:
            if outcome is not ToolOutcome.INVALID_ARGUMENTS:
                self._ran(outcome, result)
            self._call.fail(ToolOutcome.INVALID_ARGUMENTS, error=error, message=self._problems)
        elif outcome is ToolOutcome.OK:
            self._call.succeed(result)
        elif outcome is ToolOutcome.ERROR_RESULT:
            self._call.error_result(result, message)
        else:
            self._call.fail(outcome, error=error, message=message)

    def succeed(self, result: Any = None) -> None:
        """The tool ran and returned ``result``."""
        self._end(ToolOutcome.OK, result, None, None)

    def error_result(self, result: Any = None, message: str | None = None) -> None:
        """The tool ran and the framework marked ``result`` as an error."""
        self._end(ToolOutcome.ERROR_RESULT, result, None, message)

    def fail(self, outcome: ToolOutcome, error: BaseException | None = None, message: str | None = None) -> None:
        """The call failed with ``outcome``; with arguments that broke the schema that is ``invalid_arguments``."""
        self._end(outcome, None, error, message)


def start_checked_tool_call(
    name: str,
    *,
    arguments: Any = None,
    schema: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> ToolCall | CheckedToolCall:
    """:func:`~agentgym_runtime.recording.capture.start_tool_call`, checked against the offered schema.

    Args:
        name: The tool's name.
        arguments: The arguments the tool is about to run with.
        schema: The framework's own JSON schema of the tool, used when the model call carried no
            tool definitions.
        **kwargs: Passed on to ``start_tool_call``.
    """
    known, offered = offered_schema(name)
    call = start_tool_call(name, arguments=arguments, **kwargs)
    # start_tool_call made the tool's span current: keep it to annotate at the end.
    span = trace.get_current_span()
    problems: str | None = None
    try:
        problems, schema_error = schema_problems(offered if known else schema, arguments)
        if schema_error is not None:
            span.set_attribute(semconv.TOOL_SCHEMA_ERROR, schema_error)
    except Exception as exc:
        get_runtime().internal_error("tool schema check", exc)
    return CheckedToolCall(call, span, problems)


__all__ = [
    "CheckedToolCall",
    "fill_known_tools",
    "register_agent_tools",
    "offered_schema",
    "schema_problems",
    "start_checked_tool_call",
]
