"""Exceptions raised by agentgym-runtime.

All derive from :class:`AgentGymError`, so a host application can catch the
whole family in one clause. Errors from the middleware's own machinery never
reach the host's agent calls (they are logged and counted); these are raised
only where the caller asked for something that cannot be done.

Example:
    >>> from agentgym_runtime.errors import MissingExtraError
    >>> str(MissingExtraError("crewai", "crewai"))
    "the 'crewai' adapter needs the optional dependency 'crewai': pip install 'agentgym-runtime[crewai]'"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class AgentGymError(Exception):
    """Base class of every error agentgym-runtime raises on purpose."""


class ConfigurationError(AgentGymError, ValueError):
    """A setting or argument has a value that cannot work; the message names it."""


class MissingExtraError(AgentGymError, ImportError):
    """An optional dependency group is not installed.

    Args:
        feature: What needed it (an adapter or trainer name).
        extra: The extra to install, as in ``pip install 'agentgym-runtime[extra]'``.
        module: The module that failed to import, if different from ``feature``.
    """

    def __init__(self, feature: str, extra: str, module: str | None = None) -> None:
        self.feature = feature
        self.extra = extra
        self.module = module or feature
        super().__init__(
            f"the {feature!r} adapter needs the optional dependency {self.module!r}: "
            f"pip install 'agentgym-runtime[{extra}]'"
        )


class ToolArgumentsError(AgentGymError, ValueError):
    """A tool was called with arguments that fail its schema; the tool did not run.

    Attributes:
        tool: The tool's name.
        errors: One entry per problem: ``{"argument": ..., "message": ..., "type": ...}``.
    """

    def __init__(self, tool: str, errors: Sequence[dict[str, Any]]) -> None:
        self.tool = tool
        self.errors = list(errors)
        details = "; ".join(f"{e['argument']}: {e['message']}" for e in self.errors)
        super().__init__(f"invalid arguments for tool {tool!r}: {details}")


class UnknownToolError(AgentGymError, LookupError):
    """A tool name that no registered tool has.

    Attributes:
        tool: The requested name.
        available: The names that do exist.
    """

    def __init__(self, tool: str, available: Sequence[str]) -> None:
        self.tool = tool
        self.available = sorted(available)
        super().__init__(f"unknown tool {tool!r}; available tools: {', '.join(self.available) or '(none)'}")


class EpisodeNotFoundError(AgentGymError, LookupError):
    """An episode id that the store does not hold."""


class StoreUnavailableError(AgentGymError, RuntimeError):
    """The trace store cannot be opened for the requested operation."""
