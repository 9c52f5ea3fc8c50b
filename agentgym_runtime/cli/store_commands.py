"""``agentgym status | traces | reliability | export``: what the store holds."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from agentgym_runtime.cli.common import (
    HomeOption,
    StoreOption,
    console,
    err_console,
    fmt_ratio,
    reading_store,
    settings_for,
)
from agentgym_runtime.collectors.reliability import GROUPS as _BY
from agentgym_runtime.collectors.reliability import reliability_rows
from agentgym_runtime.errors import ConfigurationError


def register(app: typer.Typer) -> None:
    """Add the store commands to ``app``."""
    app.command("status")(status)
    app.command("traces")(traces)
    app.command("reliability")(reliability)
    app.command("export")(export)


def status(home: Path | None = HomeOption, store: str | None = StoreOption) -> None:
    """Show the recording pipeline's counters and what the store holds."""
    settings = settings_for(home, store)
    table = Table(title="agentgym status", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("home", str(settings.home))
    table.add_row("store", settings.store_path)
    status_file = settings.status_path
    if status_file.exists():
        published = json.loads(status_file.read_text())
        stats = published.get("stats", {})
        updated = datetime.fromtimestamp(published.get("updated_at", 0)).isoformat(timespec="seconds")
        table.add_row("process", f"pid {published.get('pid')} ({published.get('service_name')}), updated {updated}")
        for key in (
            "spans_enqueued",
            "spans_written",
            "episodes_written",
            "feedback_written",
            "pending_rows",
            "spans_lost",
            "rows_dropped",
            "rows_quarantined",
            "write_failures",
            "internal_errors",
        ):
            value = stats.get(key, 0)
            style = (
                "red"
                if key in ("spans_lost", "rows_dropped", "rows_quarantined", "write_failures", "internal_errors")
                and value
                else ""
            )
            table.add_row(key.replace("_", " "), f"[{style}]{value}[/{style}]" if style else str(value))
        if stats.get("last_error"):
            table.add_row("last error", f"[red]{stats['last_error']}[/red]")
    else:
        table.add_row("process", "[dim]no status published yet[/dim]")
    try:
        with reading_store(settings) as reader:
            counts = reader.query(
                "SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM episodes), "
                "(SELECT count(*) FROM feedback), (SELECT count(DISTINCT agent) FROM episodes)"
            )[0]
            table.add_row("spans stored", str(counts[0]))
            table.add_row("episodes stored", str(counts[1]))
            table.add_row("feedback stored", str(counts[2]))
            table.add_row("agents", str(counts[3]))
    except typer.Exit:
        table.add_row("store", "[yellow]not readable (see above)[/yellow]")
    console.print(table)


def traces(
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
    agent: str | None = typer.Option(None, "--agent", "-a", help="Only this agent's episodes."),
    limit: int = typer.Option(10, "--limit", "-n", min=1, help="How many recent episodes."),
) -> None:
    """List recent episodes with their tool calls."""
    settings = settings_for(home, store)
    with reading_store(settings) as reader:
        where, params = ("WHERE agent = ?", [agent]) if agent else ("", [])
        episodes = reader.query_dicts(
            f"SELECT * FROM episodes {where} ORDER BY started_at DESC LIMIT ?", [*params, limit]
        )
        if not episodes:
            console.print("[dim]no episodes recorded[/dim]")
            return
        for episode in episodes:
            calls = reader.query_dicts(
                "SELECT tool_name, call_id, outcome, duration_ms, arguments FROM tool_calls "
                "WHERE episode_id = ? ORDER BY started_at",
                [episode["episode_id"]],
            )
            title = (
                f"{episode['agent']} v{episode['policy_version']} · {episode['episode_id'][:12]} · "
                f"{episode['status']} · reliability {fmt_ratio(episode['tool_reliability'])} · "
                f"reward {episode['reward'] if episode['reward'] is not None else '—'}"
            )
            table = Table(title=title, title_justify="left")
            table.add_column("tool")
            table.add_column("call id")
            table.add_column("outcome")
            table.add_column("ms", justify="right")
            table.add_column("arguments", overflow="fold")
            for call in calls:
                colour = "green" if call["outcome"] == "ok" else "red"
                table.add_row(
                    call["tool_name"],
                    call["call_id"] or "",
                    f"[{colour}]{call['outcome']}[/{colour}]",
                    f"{call['duration_ms']:.1f}",
                    (call["arguments"] or "")[:120],
                )
            console.print(table)


def render_reliability(rows: list[dict[str, Any]], by: str) -> Table:
    """A Rich table of :func:`reliability_rows`."""
    table = Table(title=f"tool reliability by {_BY[by][1]}")
    for header, justify in (
        ("agent", "left"),
        (_BY[by][1], "left"),
        ("calls", "right"),
        ("ok", "right"),
        ("unknown tool", "right"),
        ("invalid args", "right"),
        ("tool error", "right"),
        ("error result", "right"),
        ("not executed", "right"),
        ("reliability", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        share = row["successes"] / row["calls"] if row["calls"] else None
        colour = "green" if share is not None and share >= 0.95 else "yellow" if share and share >= 0.8 else "red"
        table.add_row(
            str(row["agent"]),
            str(row["key"]),
            str(row["calls"]),
            str(row["successes"]),
            str(row["unknown_tool"]),
            str(row["invalid_arguments"]),
            str(row["tool_error"]),
            str(row["error_result"]),
            str(row["not_executed"]),
            f"[{colour}]{fmt_ratio(share)}[/{colour}]",
        )
    return table


def reliability(
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
    agent: str | None = typer.Option(None, "--agent", "-a", help="Only this agent."),
    by: str = typer.Option("tool", "--by", help="Group by: tool, policy or day."),
) -> None:
    """Print tool reliability per agent, grouped by tool, policy version or day."""
    if by not in _BY:
        err_console.print(f"[red]--by must be one of: {', '.join(_BY)}; got {by!r}[/red]")
        raise typer.Exit(2)
    settings = settings_for(home, store)
    with reading_store(settings) as reader:
        rows = reliability_rows(reader, agent, by)
    if not rows:
        console.print("[dim]no tool calls recorded[/dim]")
        return
    console.print(render_reliability(rows, by))


def export(
    path: Path = typer.Argument(..., help="Output file (or directory for Parquet of every table)."),
    format: str = typer.Option("parquet", "--format", "-f", help="parquet, jsonl or otlp-json."),
    agent: str | None = typer.Option(None, "--agent", "-a", help="Only this agent's episodes."),
    since: str | None = typer.Option(None, "--since", help="ISO time or a duration like 6h, 7d."),
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
) -> None:
    """Export recorded traces for offline analysis."""
    from agentgym_runtime.collectors.export import export_store

    settings = settings_for(home, store)
    with reading_store(settings) as reader:
        try:
            result = export_store(reader, path, format, agent=agent, since=since)
        except ConfigurationError as exc:
            err_console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    counts = ", ".join(f"{n} {k}" for k, n in result.rows.items())
    console.print(f"wrote {counts} to {result.path} ({result.format})")
