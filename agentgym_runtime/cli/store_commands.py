"""``agentgym status | traces | reliability | export``: what the store holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from agentgym_runtime.cli.common import (
    HomeOption,
    JsonOption,
    StoreOption,
    console,
    fail,
    fmt_ratio,
    number_column,
    print_json,
    reading_store,
    settings_for,
    text_column,
    typed_column,
)
from agentgym_runtime.cli.format import fmt_number, fmt_time
from agentgym_runtime.collectors.reliability import GROUPS as _BY
from agentgym_runtime.collectors.reliability import reliability_rows
from agentgym_runtime.errors import ConfigurationError


def register(app: typer.Typer) -> None:
    """Add the store commands to ``app``."""
    app.command("status")(status)
    app.command("traces")(traces)
    app.command("reliability")(reliability)
    app.command("export")(export)


def status(
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Show the recording process (running or exited), its counters and what the store holds."""
    from agentgym_runtime.cli.status import run

    # Usually answered by the fast path in agentgym_runtime.cli.main before Typer loads; this is
    # the same code, reached with --help-style parsing (e.g. `agentgym status --home=x --json`).
    run(None if home is None else str(home), store, as_json)


def known_agents(reader: Any) -> list[str]:
    """The agents with recorded episodes, sorted."""
    return [str(row[0]) for row in reader.query("SELECT DISTINCT agent FROM episodes ORDER BY 1")]


def check_agent(reader: Any, agent: str | None) -> None:
    """Refuse an agent with no recorded episodes, listing the ones that have some.

    Raises:
        typer.Exit: Code 2, after printing the known agents.
    """
    if agent is None:
        return
    agents = known_agents(reader)
    if agent not in agents:
        raise fail(f"unknown agent {agent!r}; agents with recorded episodes: {', '.join(agents) or '(none)'}")


def traces(
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
    agent: str | None = typer.Option(None, "--agent", "-a", help="Only this agent's episodes."),
    limit: int = typer.Option(10, "--limit", "-n", min=1, help="How many recent episodes."),
    as_json: bool = JsonOption,
) -> None:
    """List recent episodes with their tool calls."""
    settings = settings_for(home, store)
    with reading_store(settings) as reader:
        check_agent(reader, agent)
        where, params = ("WHERE agent = ?", [agent]) if agent else ("", [])
        episodes = reader.query_dicts(
            f"SELECT * FROM episodes {where} ORDER BY started_at DESC LIMIT ?", [*params, limit]
        )
        calls_of = {
            episode["episode_id"]: reader.query_dicts(
                "SELECT tool_name, call_id, outcome, duration_ms, arguments, error_type FROM tool_calls "
                "WHERE episode_id = ? ORDER BY started_at",
                [episode["episode_id"]],
            )
            for episode in episodes
        }
    if as_json:
        print_json([{**episode, "calls": calls_of[episode["episode_id"]]} for episode in episodes])
        return
    if not episodes:
        console.print("[dim]no episodes recorded[/dim]")
        return
    for episode in episodes:
        calls = calls_of[episode["episode_id"]]
        title = (
            f"{episode['agent']} v{episode['policy_version']} · {episode['episode_id']} · "
            f"{episode['status']} · {fmt_time(episode['started_at'])} · "
            f"reliability {fmt_ratio(episode['tool_reliability'])} · "
            f"reward {fmt_number(episode['reward'], 3)}"
        )
        table = Table(title=Text(title), title_justify="left")
        typed_column(table, "tool")
        typed_column(table, "call id")
        typed_column(table, "outcome")
        number_column(table, "ms")
        text_column(table, "arguments")
        for call in calls:
            colour = "green" if call["outcome"] == "ok" else "red"
            table.add_row(
                Text(call["tool_name"] or ""),
                Text(call["call_id"] or ""),
                Text(call["outcome"], style=colour),
                fmt_number(call["duration_ms"], 1),
                Text((call["arguments"] or "")[:240]),
            )
        console.print(table)


_OUTCOMES = (
    ("unknown_tool", "unknown tool"),
    ("invalid_arguments", "invalid args"),
    ("tool_error", "tool error"),
    ("error_result", "error result"),
    ("not_executed", "not run"),
)


def render_reliability(rows: list[dict[str, Any]], by: str) -> RenderableType:
    """Rich tables of :func:`reliability_rows`, one per agent (its name whole in the title).

    The failures by outcome share one wrapping column, so each table fits 80 columns with the
    agent and tool names whole (they are what users type into ``--agent`` and ``--by``).
    """
    tables: list[Table] = []
    for agent in dict.fromkeys(str(row["agent"]) for row in rows):
        table = Table(title=Text(f"tool reliability by {_BY[by][1]} · {agent}"), title_justify="left")
        typed_column(table, _BY[by][1])
        number_column(table, "calls")
        text_column(table, "failures")
        typed_column(table, "reliability", justify="right")
        for row in rows:
            if str(row["agent"]) != agent:
                continue
            share = row["successes"] / row["calls"] if row["calls"] else None
            colour = "green" if share is not None and share >= 0.95 else "yellow" if share and share >= 0.8 else "red"
            key = row["key"]
            failures = " · ".join(f"{label} {fmt_number(row[name])}" for name, label in _OUTCOMES if row[name])
            table.add_row(
                Text(f"v{key}" if by == "policy" else str(key)),
                fmt_number(row["calls"]),
                Text(failures or "—"),
                Text(fmt_ratio(share), style=colour),
            )
        tables.append(table)
    return Group(*tables)


def reliability(
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
    agent: str | None = typer.Option(None, "--agent", "-a", help="Only this agent."),
    by: str = typer.Option("tool", "--by", help="Group by: tool, policy or day."),
    as_json: bool = JsonOption,
) -> None:
    """Print tool reliability per agent, grouped by tool, policy version or day."""
    if by not in _BY:
        raise fail(f"--by must be one of: {', '.join(_BY)}; got {by!r}")
    settings = settings_for(home, store)
    with reading_store(settings) as reader:
        check_agent(reader, agent)
        rows = reliability_rows(reader, agent, by)
    if as_json:
        print_json([{**row, "reliability": row["successes"] / row["calls"] if row["calls"] else None} for row in rows])
        return
    if not rows:
        console.print("[dim]no tool calls recorded[/dim]")
        return
    console.print(render_reliability(rows, by))


#: Output formats by file extension, when ``--format`` is not given.
_EXTENSIONS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "otlp-json"}


def export_format(path: Path, format: str | None) -> str:
    """The export format: ``--format`` if given, else from ``path``'s extension (none: Parquet directory).

    Raises:
        ConfigurationError: An extension that names no supported format (``y.csv``).

    Example:
        >>> export_format(Path("out.jsonl"), None), export_format(Path("dump"), None)
        ('jsonl', 'parquet')
    """
    from agentgym_runtime.collectors.export import FORMATS

    if format is not None:
        if format not in FORMATS:
            raise ConfigurationError(f"unknown export format {format!r}; supported formats: {', '.join(FORMATS)}")
        return format
    suffix = path.suffix.lower()
    if not suffix:
        return "parquet"
    if suffix not in _EXTENSIONS:
        known = ", ".join(f"{ext} ({name})" for ext, name in _EXTENSIONS.items())
        raise ConfigurationError(
            f"cannot tell the export format of {path.name!r}; supported formats: {', '.join(FORMATS)} "
            f"(by extension: {known}; a path without one is a directory of Parquet files), or pass --format"
        )
    return _EXTENSIONS[suffix]


def export(
    path: Path = typer.Argument(..., help="Output file (.parquet, .jsonl, .json) or a directory for Parquet tables."),
    format: str | None = typer.Option(
        None, "--format", "-f", help="parquet, jsonl or otlp-json (default: from the file's extension)."
    ),
    agent: str | None = typer.Option(None, "--agent", "-a", help="Only this agent's episodes."),
    since: str | None = typer.Option(None, "--since", help="ISO time or a duration like 6h, 7d."),
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
) -> None:
    """Export recorded traces for offline analysis."""
    from agentgym_runtime.collectors.export import export_store

    try:
        chosen = export_format(path, format)
    except ConfigurationError as exc:
        raise fail(str(exc)) from None
    settings = settings_for(home, store)
    with reading_store(settings) as reader:
        check_agent(reader, agent)
        try:
            result = export_store(reader, path, chosen, agent=agent, since=since)
        except ConfigurationError as exc:
            raise fail(str(exc)) from None
    counts = ", ".join(f"{fmt_number(n)} {k}" for k, n in result.rows.items())
    console.print(f"wrote {counts} to {result.path} ({result.format})", highlight=False)
