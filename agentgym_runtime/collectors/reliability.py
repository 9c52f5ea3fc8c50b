"""Tool reliability read from the store as data: one row per agent and tool, policy version or day.

Shared by ``agentgym reliability`` (which renders it) and :func:`agentgym_runtime.reliability`
(which returns it).

Example:
    >>> from agentgym_runtime.collectors.store import TraceStore
    >>> reliability_rows(TraceStore(":memory:"), None, "tool")
    []
"""

from __future__ import annotations

from typing import Any

from agentgym_runtime.errors import ConfigurationError

#: ``by`` -> (the ``tool_calls`` column grouped on, its name in a table header)
GROUPS: dict[str, tuple[str, str]] = {
    "tool": ("tool_name", "tool"),
    "policy": ("policy_version", "policy version"),
    "day": ("CAST(started_at AS DATE)", "day"),
}


def reliability_rows(reader: Any, agent: str | None, by: str) -> list[dict[str, Any]]:
    """Tool reliability per agent and ``by`` (``tool``, ``policy`` or ``day``).

    Each row holds ``agent``, ``key`` (the tool, version or day), ``calls``, ``successes`` and
    the count of each failure outcome (``unknown_tool``, ``invalid_arguments``, ``tool_error``,
    ``error_result``, ``not_executed``).

    Raises:
        ConfigurationError: ``by`` is not one of the groupings (the message lists them).
    """
    if by not in GROUPS:
        raise ConfigurationError(f"--by must be one of: {', '.join(GROUPS)}; got {by!r}")
    column, _ = GROUPS[by]
    where, params = ("WHERE agent = ?", [agent]) if agent else ("", [])
    rows: list[dict[str, Any]] = reader.query_dicts(
        f"SELECT agent, {column} AS key, count(*) AS calls, "
        "count(*) FILTER (WHERE outcome = 'ok') AS successes, "
        "count(*) FILTER (WHERE outcome = 'unknown_tool') AS unknown_tool, "
        "count(*) FILTER (WHERE outcome = 'invalid_arguments') AS invalid_arguments, "
        "count(*) FILTER (WHERE outcome = 'tool_error') AS tool_error, "
        "count(*) FILTER (WHERE outcome = 'error_result') AS error_result, "
        "count(*) FILTER (WHERE outcome = 'not_executed') AS not_executed "
        f"FROM tool_calls {where} GROUP BY ALL ORDER BY agent, key",
        params,
    )
    return rows
