"""The tool sandbox hook: while a replay sandbox is active, tool calls go to it, not to the real tool.

Training jobs replay recorded tasks through the user's own agent
(:class:`~agentgym_runtime.trainers.lightning.replay.ReplayAgent`). Its tools must not reach
production systems, so the replay activates a sandbox (:func:`use_sandbox`) and every tool
execution point consults :data:`current_sandbox` by itself: ``@agentgym.tool`` /
``Toolbox`` calls, LangChain ``BaseTool.run`` / ``arun``, AutoGen ``BaseTool.run_json`` and
CrewAI ``CrewStructuredTool.invoke`` / ``ainvoke``. Each of those calls :func:`sandboxed_result`
(or :func:`sandboxed_entry`) and returns what the framework expects from a tool; the
sandbox decides per tool whether the call is replayed, runs live, or goes to a fake
(:class:`ToolSandbox`, the one training replays use).

Outside a replay the cost at each execution point is one ``ContextVar.get``. Nothing heavy
is imported here, and nothing above the recording core: the adapters plug their framework
hooks in (:func:`set_framework_hooks`) when they are loaded.

Example:
    >>> class EchoSandbox:
    ...     def call(self, name, arguments):
    ...         return {"name": name, "arguments": arguments, "outcome": "ok", "result": f"{name}{arguments}"}
    >>> with use_sandbox(EchoSandbox(), hook_frameworks=False):
    ...     sandboxed_result("get_order", {"order_id": 7})
    "get_order{'order_id': 7}"
    >>> current_sandbox.get() is None
    True
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from agentgym_runtime.errors import AgentGymError, ToolArgumentsError, UnknownToolError
from agentgym_runtime.semconv import ToolOutcome

if TYPE_CHECKING:
    from agentgym_runtime.trainers.dataset import Task


@runtime_checkable
class Sandbox(Protocol):
    """What a tool sandbox offers: run one call, return its entry.

    The entry is ``{"name", "arguments", "outcome", "result", "message"}``, where ``outcome``
    is a :class:`~agentgym_runtime.semconv.ToolOutcome` value, plus optionally ``"problems"``
    (``invalid_arguments``: ``[{"argument", "message", "type"}]``), ``"error"`` (``tool_error``:
    the exception a fake or live tool raised) and ``"available"`` (``unknown_tool``: known names).
    """

    def call(self, name: str, arguments: Any) -> Mapping[str, Any]:
        """Run the tool call ``name(arguments)`` in the sandbox and return its entry."""


SandboxT = TypeVar("SandboxT", bound=Sandbox)

#: The sandbox of the replayed episode running in this context (``None``: tools run for real).
current_sandbox: contextvars.ContextVar[Sandbox | None] = contextvars.ContextVar(
    "agentgym_current_sandbox", default=None
)


class SandboxedToolError(AgentGymError, RuntimeError):
    """A sandboxed call failed with an outcome that has no more specific exception.

    Attributes:
        tool: The tool's name.
        outcome: The sandbox's outcome for the call (a ``ToolOutcome`` value).
    """

    def __init__(self, tool: str, outcome: str, message: str) -> None:
        self.tool = tool
        self.outcome = outcome
        super().__init__(message)


#: What a replayed tool returns when no recorded result matches its (valid) arguments.
NEUTRAL_OBSERVATION = {"status": "ok", "note": "replayed: no recorded result for these arguments"}


def _canonical(arguments: Any) -> str:
    return json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)


@dataclass
class ToolSandbox:
    """Tools for one replayed episode: recorded results, live tools, fakes; every call counted.

    Per tool: a fake (``fakes``) or a live tool (``live``, the user marked it side-effect free) runs,
    with the sandbox bypassed; otherwise the recorded result for identical arguments is returned,
    else the arguments are checked against the tool's JSON schema and :data:`NEUTRAL_OBSERVATION`
    comes back. Unknown names and schema failures are refused (and counted).

    Args:
        tools: Tool definitions offered (``{name, description, parameters}``).
        recorded: The task's recorded calls (results reused for identical arguments).
        live: Side-effect-free tools by name: the real function runs.
        fakes: User-supplied stand-ins by name.
        calls: Every call so far, as the entries :meth:`call` returns.

    Example:
        >>> sandbox = ToolSandbox(tools=[{"name": "get_order", "parameters": {"type": "object",
        ...     "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]}}])
        >>> sandbox.call("get_order", {"order_id": 7})["result"] == NEUTRAL_OBSERVATION
        True
        >>> sandbox.call("get_order", {})["outcome"], sandbox.reliability
        ('invalid_arguments', 0.5)
    """

    tools: Sequence[Mapping[str, Any]] = ()
    recorded: Sequence[Any] = ()
    live: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    fakes: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def for_task(
        cls,
        task: Task,
        *,
        live: Mapping[str, Callable[..., Any]] | None = None,
        fakes: Mapping[str, Callable[..., Any]] | None = None,
    ) -> ToolSandbox:
        """A sandbox with the task's tools and recorded calls."""
        return cls(tools=list(task.tools), recorded=list(task.tool_calls), live=live or {}, fakes=fakes or {})

    def mode(self, name: str) -> str:
        """``"fake"``, ``"live"`` or ``"replay"`` for this tool."""
        if name in self.fakes:
            return "fake"
        if name in self.live:
            return "live"
        return "replay"

    def _record(
        self, name: str, arguments: Any, outcome: str, result: Any, message: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        entry = {"name": name, "arguments": arguments, "outcome": outcome, "result": result, "message": message}
        entry.update(extra)
        self.calls.append(entry)
        return entry

    def call(self, name: str, arguments: Any) -> dict[str, Any]:
        """Run one tool call in the sandbox.

        Returns:
            ``{name, arguments, outcome, result, message}``, plus ``available`` (``unknown_tool``),
            ``problems`` (``invalid_arguments``) or ``error`` (``tool_error``: the exception raised),
            the form :func:`agentgym_runtime.recording.sandbox.entry_result` turns into a tool's answer.
        """
        definitions = {str(t.get("name")): t for t in self.tools}
        known = set(definitions) | set(self.live) | set(self.fakes)
        if name not in known:
            return self._record(
                name,
                arguments,
                ToolOutcome.UNKNOWN_TOOL.value,
                None,
                f"unknown tool {name!r}",
                available=sorted(known),
            )
        schema = definitions.get(name, {}).get("parameters")
        from agentgym_runtime.recording.validation import validate_arguments  # jsonschema: only when a replay runs

        problems = validate_arguments(schema, arguments)
        if problems:
            message = "; ".join(f"{p['argument']}: {p['message']}" for p in problems)
            return self._record(name, arguments, ToolOutcome.INVALID_ARGUMENTS.value, None, message, problems=problems)
        runner = self.fakes.get(name) or self.live.get(name)
        if runner is not None:
            try:
                # A live tool may itself be an @agentgym.tool or a framework tool: run it for real,
                # not back through this sandbox.
                with bypass():
                    result = runner(**arguments)
            except Exception as exc:
                return self._record(name, arguments, ToolOutcome.TOOL_ERROR.value, None, repr(exc), error=exc)
            return self._record(name, arguments, ToolOutcome.OK.value, result)
        wanted = _canonical(arguments)
        for recorded in self.recorded:
            if recorded.name == name and recorded.ok and _canonical(recorded.arguments) == wanted:
                return self._record(name, arguments, ToolOutcome.OK.value, recorded.result)
        return self._record(name, arguments, ToolOutcome.OK.value, dict(NEUTRAL_OBSERVATION))

    @property
    def reliability(self) -> float | None:
        """Share of calls that succeeded (``None``: no calls)."""
        if not self.calls:
            return None
        return float(sum(c["outcome"] == ToolOutcome.OK.value for c in self.calls) / len(self.calls))


@contextmanager
def use_sandbox(sandbox: SandboxT, *, hook_frameworks: bool = True) -> Iterator[SandboxT]:
    """Route the tool calls made in this context (and contexts copied from it) to ``sandbox``.

    Args:
        sandbox: Any object with ``call(name, arguments) -> entry`` (see :class:`Sandbox`).
        hook_frameworks: Instrument the adapters of the agent frameworks this process has already
            imported (LangChain, AutoGen, CrewAI) for the duration of the block, so their tool
            execution consults the sandbox even though no agentgym episode wraps the replayed
            agent (reference counted: hooks a user installed stay).

    Example:
        >>> with use_sandbox(object(), hook_frameworks=False) as box:  # doctest: +SKIP
        ...     run_the_agent()
    """
    release = _hook_frameworks() if hook_frameworks else None
    token = current_sandbox.set(sandbox)
    try:
        yield sandbox
    finally:
        current_sandbox.reset(token)
        if release is not None:
            release()


FrameworkHooks = Callable[[], Callable[[], None]]
"""Hooks the tool execution of every agent framework already imported; returns their release."""

_framework_hooks: FrameworkHooks | None = None


def set_framework_hooks(hooks: FrameworkHooks | None) -> None:
    """Install what ``use_sandbox(hook_frameworks=True)`` calls to hook the frameworks' tools.

    :mod:`agentgym_runtime.adapters` installs its own when it is loaded; the recording core
    never imports the adapters.
    """
    global _framework_hooks
    _framework_hooks = hooks


def _hook_frameworks() -> Callable[[], None]:
    if _framework_hooks is None:
        return lambda: None  # no adapter loaded: no framework tool is instrumented to reach
    return _framework_hooks()


@contextmanager
def bypass() -> Iterator[None]:
    """Run the real tools in this block even while a sandbox is active (its live tools and fakes).

    Without it a live tool that is itself an ``@agentgym.tool`` (or a framework tool) would be
    routed back into the sandbox that is running it.

    Example:
        >>> with bypass():
        ...     current_sandbox.get() is None
        True
    """
    token = current_sandbox.set(None)
    try:
        yield
    finally:
        current_sandbox.reset(token)


def sandboxed_entry(name: str, arguments: Any) -> Mapping[str, Any] | None:
    """The active sandbox's entry for the call ``name(arguments)``, or ``None`` when none is active.

    Example:
        >>> sandboxed_entry("get_order", {}) is None
        True
    """
    sandbox = current_sandbox.get()
    if sandbox is None:
        return None
    return sandbox.call(name, arguments)


def entry_result(entry: Mapping[str, Any]) -> Any:
    """A sandbox entry as a tool's return value, or the exception the real tool would raise.

    Raises:
        ToolArgumentsError: ``invalid_arguments`` (the tool did not run).
        UnknownToolError: ``unknown_tool``.
        BaseException: ``tool_error``: the exception the fake or live tool raised.
        SandboxedToolError: Any other non-``ok`` outcome.

    Example:
        >>> entry_result({"name": "t", "outcome": "ok", "result": 3})
        3
        >>> entry_result({"name": "t", "outcome": "unknown_tool", "available": ["u"]})
        Traceback (most recent call last):
        ...
        agentgym_runtime.errors.UnknownToolError: unknown tool 't'; available tools: u
    """
    outcome = str(entry.get("outcome"))
    if outcome == "ok":
        return entry.get("result")
    name = str(entry.get("name"))
    message = str(entry.get("message") or outcome)
    if outcome == "invalid_arguments":
        problems = entry.get("problems") or [{"argument": "(arguments)", "message": message, "type": "schema"}]
        raise ToolArgumentsError(name, list(problems))
    if outcome == "unknown_tool":
        raise UnknownToolError(name, list(entry.get("available") or ()))
    error = entry.get("error")
    if isinstance(error, BaseException):
        raise error
    raise SandboxedToolError(name, outcome, message)


def sandboxed_result(name: str, arguments: Any) -> Any:
    """Run ``name(arguments)`` in the active sandbox; its result, or the exception it stands for.

    Only call it when :data:`current_sandbox` holds a sandbox (the execution points check
    ``current_sandbox.get() is not None`` first, which is all they cost outside a replay).

    Raises:
        RuntimeError: No sandbox is active.
        ToolArgumentsError: See :func:`entry_result`.
        UnknownToolError: See :func:`entry_result`.
        SandboxedToolError: See :func:`entry_result`.

    Example:
        >>> sandboxed_result("get_order", {})
        Traceback (most recent call last):
        ...
        RuntimeError: no tool sandbox is active
    """
    entry = sandboxed_entry(name, arguments)
    if entry is None:
        raise RuntimeError("no tool sandbox is active")
    return entry_result(entry)


__all__ = [
    "NEUTRAL_OBSERVATION",
    "Sandbox",
    "SandboxedToolError",
    "ToolSandbox",
    "bypass",
    "current_sandbox",
    "entry_result",
    "sandboxed_entry",
    "sandboxed_result",
    "use_sandbox",
]
