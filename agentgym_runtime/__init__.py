"""agentgym-runtime: make production AI agents better at using their tools, while they serve.

Add one decorator to an agent you already run; every run is recorded as an
OpenTelemetry episode in an embedded DuckDB file, rewarded, and (with training
configured) used to improve the agent's policy.

Example:
    >>> import agentgym_runtime as agentgym
    >>> @agentgym.tool
    ... def lookup(order_id: int) -> str:
    ...     return "shipped"
    >>> @agentgym.train_online(name="support")
    ... def support(question: str) -> str:
    ...     return lookup(order_id=1)
    >>> support("where is my order?")
    'shipped'
    >>> agentgym.last_episode().tool_reliability
    1.0

Importing this package loads no agent framework, torch or Agent Lightning: names
are resolved on first access.
"""

from __future__ import annotations

import importlib

from agentgym_runtime._version import __version__

# Not `typing.TYPE_CHECKING`: `agentgym --version` and `agentgym status` import this package, and
# importing `typing` is a measurable share of their start-up; type checkers honour the name alone.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from agentgym_runtime.api import (
        configure,
        current_episode,
        episode,
        export,
        feedback,
        flush,
        last_episode,
        llm_call,
        load_policy,
        policies,
        promote,
        register_policy,
        reliability,
        rollback,
        served_model,
        shutdown,
        sql,
        stats,
    )
    from agentgym_runtime.config import Settings
    from agentgym_runtime.decorator import train_online
    from agentgym_runtime.errors import (
        AgentGymError,
        ConfigurationError,
        EpisodeNotFoundError,
        MissingExtraError,
        StoreUnavailableError,
        ToolArgumentsError,
        UnknownToolError,
    )
    from agentgym_runtime.policy.errors import (
        InferenceServerError,
        PolicyArtifactError,
        PolicyConflictError,
        PolicyError,
        PolicyNotFoundError,
    )
    from agentgym_runtime.policy.trained import TrainedPolicy
    from agentgym_runtime.recording.context import Episode, RequestedToolCall, current_policy
    from agentgym_runtime.recording.policy import Policy
    from agentgym_runtime.semconv import ToolOutcome
    from agentgym_runtime.tools import Tool, Toolbox, tool

_EXPORTS: dict[str, str] = {
    "configure": "agentgym_runtime.api",
    "current_episode": "agentgym_runtime.api",
    "current_policy": "agentgym_runtime.recording.context",
    "episode": "agentgym_runtime.api",
    "export": "agentgym_runtime.api",
    "feedback": "agentgym_runtime.api",
    "flush": "agentgym_runtime.api",
    "last_episode": "agentgym_runtime.api",
    "llm_call": "agentgym_runtime.api",
    "reliability": "agentgym_runtime.api",
    "RequestedToolCall": "agentgym_runtime.recording.context",
    "load_policy": "agentgym_runtime.api",
    "policies": "agentgym_runtime.api",
    "promote": "agentgym_runtime.api",
    "register_policy": "agentgym_runtime.api",
    "rollback": "agentgym_runtime.api",
    "served_model": "agentgym_runtime.api",
    "shutdown": "agentgym_runtime.api",
    "sql": "agentgym_runtime.api",
    "stats": "agentgym_runtime.api",
    "Settings": "agentgym_runtime.config",
    "Episode": "agentgym_runtime.recording.context",
    "train_online": "agentgym_runtime.decorator",
    "AgentGymError": "agentgym_runtime.errors",
    "ConfigurationError": "agentgym_runtime.errors",
    "EpisodeNotFoundError": "agentgym_runtime.errors",
    "MissingExtraError": "agentgym_runtime.errors",
    "StoreUnavailableError": "agentgym_runtime.errors",
    "ToolArgumentsError": "agentgym_runtime.errors",
    "UnknownToolError": "agentgym_runtime.errors",
    "ToolOutcome": "agentgym_runtime.semconv",
    "Policy": "agentgym_runtime.recording.policy",
    "InferenceServerError": "agentgym_runtime.policy.errors",
    "PolicyArtifactError": "agentgym_runtime.policy.errors",
    "PolicyConflictError": "agentgym_runtime.policy.errors",
    "PolicyError": "agentgym_runtime.policy.errors",
    "PolicyNotFoundError": "agentgym_runtime.policy.errors",
    "TrainedPolicy": "agentgym_runtime.policy.trained",
    "Tool": "agentgym_runtime.tools",
    "Toolbox": "agentgym_runtime.tools",
    "tool": "agentgym_runtime.tools",
}

__all__ = [
    "AgentGymError",
    "ConfigurationError",
    "Episode",
    "EpisodeNotFoundError",
    "InferenceServerError",
    "MissingExtraError",
    "Policy",
    "PolicyArtifactError",
    "PolicyConflictError",
    "PolicyError",
    "PolicyNotFoundError",
    "RequestedToolCall",
    "Settings",
    "StoreUnavailableError",
    "Tool",
    "ToolArgumentsError",
    "ToolOutcome",
    "TrainedPolicy",
    "Toolbox",
    "UnknownToolError",
    "__version__",
    "configure",
    "current_episode",
    "current_policy",
    "episode",
    "export",
    "feedback",
    "flush",
    "last_episode",
    "llm_call",
    "load_policy",
    "policies",
    "promote",
    "register_policy",
    "reliability",
    "rollback",
    "served_model",
    "shutdown",
    "sql",
    "stats",
    "tool",
    "train_online",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentgym_runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
