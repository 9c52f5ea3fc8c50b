"""MCP tools, first class: what the MCP server answered decides the tool call's outcome.

Every framework's MCP path (``langchain-mcp-adapters``, AutoGen's ``McpWorkbench``, CrewAI's native
``mcps``) ends in ``mcp.ClientSession.call_tool``. This module patches the ``mcp`` client once for
all of them (rows of a :class:`~agentgym_runtime.adapters.patches.PatchTable`):

- the transport clients (``stdio_client``, ``streamable_http_client`` / ``streamablehttp_client``,
  ``sse_client``) note which transport and target (command or URL) a session is opened over,
  including the references the frameworks imported into their own modules;
- ``ClientSession.initialize`` keeps the server's own name (``serverInfo.name``);
- ``ClientSession.call_tool`` records a verdict: an ``isError`` result is ``error_result``, a call
  that raised (server down, timeout, broken pipe) is ``tool_error``.

The verdict is taken by the tool call it belongs to (:func:`take_verdict`, used by
:mod:`~agentgym_runtime.adapters.checking` when a tool span ends): by the ``execute_tool`` span
current while the MCP call ran, else by tool name (AutoGen runs its MCP session in its own task).
Frameworks report MCP errors differently (LangChain raises ``ToolException``, AutoGen returns
``is_error``, CrewAI returns the text); the verdict makes the outcome the same in all three, and
puts the server and transport on the span (``agentgym.mcp.*``).

Example:
    >>> verdict = McpVerdict(tool="lookup", server=McpServer("orders", "stdio", "python srv.py"))
    >>> verdict.outcome is None
    True
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from agentgym_runtime import semconv
from agentgym_runtime.adapters.patches import PatchSpec, PatchTable
from agentgym_runtime.recording.runtime import get_runtime
from agentgym_runtime.semconv import ToolOutcome

PATCHES = PatchTable("mcp")

#: How many undelivered verdicts are kept (calls no tool span took: a direct ``call_tool``).
_MAX_PENDING = 256


@dataclass(frozen=True, slots=True)
class McpServer:
    """The MCP server a session talks to: its name, the transport and the target (command or URL)."""

    name: str | None
    transport: str | None
    target: str | None

    def attributes(self) -> dict[str, str]:
        """The span attributes naming this server (only those known)."""
        pairs = (
            (semconv.MCP_SERVER_NAME, self.name),
            (semconv.MCP_TRANSPORT, self.transport),
            (semconv.MCP_SERVER_TARGET, self.target),
        )
        return {key: value for key, value in pairs if value}


@dataclass(slots=True, eq=False)
class McpVerdict:
    """What the MCP server made of one ``tools/call``: ``outcome`` is ``None`` when it succeeded."""

    tool: str
    server: McpServer
    outcome: ToolOutcome | None = None
    message: str | None = None
    error: BaseException | None = field(default=None, repr=False)


_opening: ContextVar[tuple[str, str | None] | None] = ContextVar("agentgym_mcp_transport", default=None)
"""(transport, target) while a transport client's block is open: the session made in it takes it."""

_lock = threading.Lock()
_by_span: OrderedDict[int, McpVerdict] = OrderedDict()
_by_tool: dict[str, deque[McpVerdict]] = {}


def _remember(span_id: int | None, verdict: McpVerdict) -> None:
    # Kept under both keys: the span current during the MCP call may be another library's
    # execute_tool span (AutoGen opens its own in the session's task), so by-name is the fallback.
    with _lock:
        if span_id is not None:
            _by_span[span_id] = verdict
            while len(_by_span) > _MAX_PENDING:
                _by_span.popitem(last=False)
        _by_tool.setdefault(verdict.tool, deque(maxlen=_MAX_PENDING)).append(verdict)


def take_verdict(span: Any, tool: str) -> McpVerdict | None:
    """The MCP verdict of the tool call whose span is ``span`` (``None`` when it was no MCP call).

    Example:
        >>> take_verdict(None, "never-called") is None
        True
    """
    span_id = _span_id(span)
    with _lock:
        queue = _by_tool.get(tool)
        if queue is None:
            # CrewAI names an MCP tool "<server>_<tool>": the server knows it as "<tool>".
            queue = next((q for name, q in _by_tool.items() if q and tool.endswith("_" + name)), None)
        verdict = _by_span.pop(span_id, None) if span_id is not None else None
        if verdict is None and queue:
            verdict = queue[0]
        if verdict is None:
            return None
        if queue is not None and verdict in queue:
            queue.remove(verdict)
        for key in [key for key, value in _by_span.items() if value is verdict]:
            del _by_span[key]
        return verdict


def _span_id(span: Any) -> int | None:
    try:
        context = span.get_span_context()
    except Exception:
        return None
    return context.span_id if context.is_valid else None


def _target(transport: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    first = args[0] if args else kwargs.get("server", kwargs.get("url"))
    if transport == "stdio" and first is not None:
        command = getattr(first, "command", None)
        return " ".join([str(command), *map(str, getattr(first, "args", None) or [])]) if command else None
    return str(first) if first is not None else None


def _wrap_transport(transport: str) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        @contextlib.asynccontextmanager
        async def client(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            if not PATCHES.active:
                async with original(*args, **kwargs) as streams:
                    yield streams
                return
            async with original(*args, **kwargs) as streams:
                previous = _opening.set((transport, _target(transport, args, kwargs)))
                try:
                    yield streams
                finally:
                    # The block may end in another context (a task group's cancel scope): never
                    # let resetting the variable raise into the host's shutdown.
                    with contextlib.suppress(ValueError):
                        _opening.reset(previous)

        return client

    return make


def _wrap_session_init(original: Any) -> Any:
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        opening = _opening.get()
        self._agentgym_mcp_transport = opening  # None: a session over streams we did not see opened

    init.__name__ = "__init__"
    return init


def _wrap_initialize(original: Any) -> Any:
    async def initialize(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        try:
            self._agentgym_mcp_name = result.serverInfo.name
        except Exception:  # a server that does not name itself: the span leaves the name out
            self._agentgym_mcp_name = None
        return result

    return initialize


def server_of(session: Any) -> McpServer:
    """The :class:`McpServer` a ``ClientSession`` talks to, as far as it is known.

    Example:
        >>> server_of(object())
        McpServer(name=None, transport=None, target=None)
    """
    transport, target = getattr(session, "_agentgym_mcp_transport", None) or (None, None)
    return McpServer(getattr(session, "_agentgym_mcp_name", None), transport, target)


def _error_text(result: Any) -> str:
    parts = [getattr(item, "text", None) for item in getattr(result, "content", None) or []]
    return "; ".join(part for part in parts if part) or "the MCP server answered isError"


def _wrap_call_tool(original: Any) -> Any:
    async def call_tool(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if not PATCHES.active:
            return await original(self, name, *args, **kwargs)
        span = trace.get_current_span()
        span_id = _span_id(span) if _is_tool_span(span) else None
        verdict = McpVerdict(tool=name, server=server_of(self))
        try:
            result = await original(self, name, *args, **kwargs)
        except BaseException as exc:
            verdict.outcome, verdict.error = ToolOutcome.TOOL_ERROR, exc
            verdict.message = f"MCP server {verdict.server.name or '?'} failed: {type(exc).__name__}: {exc}"
            _deliver(span_id, verdict)
            raise
        if getattr(result, "isError", False):
            verdict.outcome, verdict.message = ToolOutcome.ERROR_RESULT, _error_text(result)
        _deliver(span_id, verdict)
        return result

    return call_tool


def _is_tool_span(span: Any) -> bool:
    attributes = getattr(span, "attributes", None) or {}
    return bool(attributes.get(semconv.GEN_AI_OPERATION_NAME) == semconv.OP_EXECUTE_TOOL)


def _deliver(span_id: int | None, verdict: McpVerdict) -> None:
    try:
        _remember(span_id, verdict)
    except Exception as exc:  # never into the host: the call's result passes through unchanged
        get_runtime().internal_error("mcp verdict", exc)


def _specs() -> Iterable[PatchSpec]:
    import importlib

    from mcp.client.session import ClientSession

    yield (ClientSession, "__init__", _wrap_session_init)
    yield (ClientSession, "initialize", _wrap_initialize)
    yield (ClientSession, "call_tool", _wrap_call_tool)
    transports = {
        "stdio_client": "stdio",
        "sse_client": "sse",
        "streamable_http_client": "streamable_http",
        "streamablehttp_client": "streamable_http",
    }
    # The source modules, and the frameworks' modules that imported the clients by name.
    modules = (
        "mcp.client.stdio",
        "mcp.client.sse",
        "mcp.client.streamable_http",
        "langchain_mcp_adapters.sessions",
        "autogen_ext.tools.mcp._session",
    )
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # that framework's MCP path is not installed (or does not import)
            continue
        for attribute, transport in transports.items():
            if callable(getattr(module, attribute, None)):
                yield (module, attribute, _wrap_transport(transport))


def install() -> bool:
    """Patch the ``mcp`` client once for every framework; ``False`` when ``mcp`` is not installed.

    Example:
        >>> install() in (True, False)
        True
    """
    if PATCHES.active:
        return True
    try:
        specs = list(_specs())
    except ImportError:
        return False
    PATCHES.install(specs)
    return True


def remove() -> None:
    """Undo :func:`install`.

    Example:
        >>> remove()
    """
    PATCHES.remove()


_users = 0


def acquire() -> Callable[[], None]:
    """Install the ``mcp`` patches for one framework adapter; the returned callable releases them.

    Several adapters share the one patch table: it goes away when the last of them is removed.

    Example:
        >>> release = acquire()
        >>> release()
    """
    global _users
    with _lock:
        _users += 1
    try:
        install()
    except Exception as exc:  # an mcp version we cannot patch: the framework adapter still works
        get_runtime().internal_error("mcp install", exc)
    released = False

    def release() -> None:
        global _users
        nonlocal released
        with _lock:
            if released:
                return
            released = True
            _users -= 1
            last = _users == 0
        if last:
            remove()

    return release


__all__ = ["PATCHES", "McpServer", "McpVerdict", "acquire", "install", "remove", "server_of", "take_verdict"]
