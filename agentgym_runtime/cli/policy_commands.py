"""``agentgym policies list | show | diff | evaluate | promote | canary | rollback | pin | unpin``.

These commands work on the policies directory (``<home>/policies``), which every process
shares: a promotion made here reaches the serving processes within a second. The per-version
metrics of ``show`` are read from the trace store (read-only, or a snapshot copy while a
serving process holds it). ``list`` and ``show`` give the gate's last decision about each agent
and why; ``evaluate`` runs the gate once now (the serving process also runs it by itself every
``AGENTGYM_CANARY_EVALUATE_EVERY`` canary episodes). Every reading command has ``--json``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from agentgym_runtime.cli.common import (
    HomeOption,
    StoreOption,
    console,
    err_console,
    fmt_ratio,
    number_column,
    reading_store,
    settings_for,
    text_column,
    typed_column,
)
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.policy.errors import PolicyError
from agentgym_runtime.policy.gate import decision_z
from agentgym_runtime.policy.registry import PolicyEvent, PolicyRegistry, PolicyState, PolicyStatus, default_actor
from agentgym_runtime.recording.policy import Policy

JsonOption = typer.Option(False, "--json", help="Print JSON instead of tables.")

_STATUS_COLOURS = {
    PolicyStatus.LIVE: "green",
    PolicyStatus.CANARY: "yellow",
    PolicyStatus.CANDIDATE: "cyan",
    PolicyStatus.RETIRED: "dim",
    PolicyStatus.REJECTED: "red",
    PolicyStatus.ROLLED_BACK: "red",
}


def register(app: typer.Typer) -> None:
    """Add the ``policies`` command group to ``app``."""
    group = typer.Typer(
        name="policies", help="List, compare, promote and roll back policy versions.", no_args_is_help=True
    )
    group.command("list")(list_policies)
    group.command("show")(show)
    group.command("diff")(diff)
    group.command("evaluate")(evaluate)
    group.command("promote")(promote)
    group.command("canary")(canary_command)
    group.command("rollback")(rollback)
    group.command("pin")(pin)
    group.command("unpin")(unpin)
    app.add_typer(group, name="policies")


def _registry(home: Path | None) -> PolicyRegistry:
    from agentgym_runtime.policy.inference_server import ServerAdapters

    settings = settings_for(home)
    # With AGENTGYM_INFERENCE_SERVER_URL set, a promotion from the shell loads the adapter first.
    server = ServerAdapters.from_settings(settings)
    return PolicyRegistry(settings.policies_dir, actor=f"cli:{default_actor()}", server=server)


def _fail(exc: Exception) -> typer.Exit:
    err_console.print(f"[red]{exc}[/red]")
    return typer.Exit(1)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def _short(text: str | None, width: int = 60) -> str:
    if text is None:
        return "—"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _echo_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


def _decision_json(event: PolicyEvent | None) -> dict[str, Any] | None:
    if event is None:
        return None
    details = event.details
    sequential = details.get("sequential") if isinstance(details.get("sequential"), dict) else None
    look = sequential.get("look") if sequential else None
    return {
        "version": event.version,
        "action": details.get("decision", event.to_status),
        "to_status": event.to_status,
        "actor": event.actor,
        "reason": event.reason,
        "at": _when(event.occurred_at),
        "z": decision_z(details),
        "boundary_z": look.get("boundary_z") if isinstance(look, dict) else None,
        "alpha_spent": look.get("alpha_spent") if isinstance(look, dict) else None,
        "candidate_tool_calls": (details.get("candidate") or {}).get("tool_calls"),
        "incumbent_tool_calls": (details.get("incumbent") or {}).get("tool_calls"),
    }


def _decision_line(event: PolicyEvent | None) -> str:
    if event is None:
        return "last decision: none yet"
    return f"last decision ({_when(event.occurred_at)}, v{event.version} by {event.actor}): {event.reason}"


def _state_json(state: PolicyState) -> dict[str, Any]:
    return {
        "live": state.live,
        "canary": state.canary,
        "canary_share": state.canary_share,
        "canary_since": None if state.canary_since is None else _when(state.canary_since),
        "pinned": state.pinned,
        "sequence": state.sequence,
    }


def _pointer_note(state: PolicyState, version: int) -> str:
    notes = []
    if state.live == version:
        notes.append("live")
    if state.canary == version:
        notes.append(f"canary {state.canary_share * 100:.0f}%")
    if state.pinned == version:
        notes.append("pinned")
    return ", ".join(notes)


def list_policies(
    agent: str | None = typer.Option(None, "--agent", "-a", help="Only this agent."),
    home: Path | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """List every agent's policy versions with their status and the gate's last decision."""
    registry = _registry(home)
    agents = [agent] if agent else registry.agents()
    if not agents:
        if as_json:
            _echo_json([])
            return
        console.print(f"[dim]no policies registered under {registry.root}[/dim]")
        return
    listing: list[dict[str, Any]] = []
    for name in agents:
        try:
            state = registry.state(name)
            infos = registry.policies(name)
            last = registry.last_decision(name)
        except PolicyError as exc:
            raise _fail(exc) from None
        if as_json:
            listing.append(
                {
                    "agent": name,
                    **_state_json(state),
                    "last_decision": _decision_json(last),
                    "versions": [
                        {
                            "version": info.version,
                            "status": info.status.value,
                            "serving": _pointer_note(state, info.version),
                            "trainer": info.policy.trainer if info.policy else None,
                            "parent": info.policy.parent_version if info.policy else None,
                            "created": _when(info.created_at),
                            "error": info.error,
                        }
                        for info in infos
                    ],
                }
            )
            continue
        table = Table(title=Text(f"{name} · live v{state.live} · sequence {state.sequence}"), title_justify="left")
        for header in ("version", "status", "trainer", "parent"):
            typed_column(table, header)
        for header in ("serving", "created", "system prompt"):
            text_column(table, header)
        for info in infos:
            colour = _STATUS_COLOURS[info.status]
            policy = info.policy
            table.add_row(
                f"v{info.version}",
                f"[{colour}]{info.status.value}[/{colour}]",
                Text((policy.trainer or "—") if policy else "—"),
                "—" if policy is None or policy.parent_version is None else f"v{policy.parent_version}",
                _pointer_note(state, info.version) or "—",
                _when(info.created_at),
                _short(policy.system_prompt) if policy else f"[red]refused: {info.error}[/red]",
            )
        console.print(table)
        console.print(_decision_line(last), markup=False)
    if as_json:
        _echo_json(listing)


def _store_metrics(home: Path | None, store: str | None, agent: str) -> list[dict[str, Any]] | None:
    settings = settings_for(home, store)
    try:
        with reading_store(settings) as reader:
            return reader.query_dicts(
                "SELECT policy_version, count(*) AS episodes, sum(tool_calls) AS tool_calls, "
                "sum(tool_calls - tool_failures) AS successes, count(*) FILTER (WHERE status = 'error') AS errors, "
                "avg(reward) AS reward, min(started_at) AS first_at, max(started_at) AS last_at "
                "FROM episodes WHERE agent = ? GROUP BY policy_version ORDER BY policy_version",
                [agent],
            )
    except typer.Exit:
        return None


def show(
    agent: str = typer.Argument(..., help="The agent."),
    version: str = typer.Argument("live", help="A version (3, v3), 'live' or 'canary'."),
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Show one version's policy, the gate's last decision and the metrics of every version."""
    registry = _registry(home)
    try:
        number = registry.resolve_ref(agent, version)
        policy = registry.load(agent, number)
        state = registry.state(agent)
        last = registry.last_decision(agent)
    except (PolicyError, ConfigurationError) as exc:
        raise _fail(exc) from None
    if as_json:
        _echo_json(
            {
                "agent": agent,
                "version": number,
                "status": state.status_of(number).value,
                **{f"pointers_{k}": v for k, v in _state_json(state).items()},
                "policy": policy.model_dump(mode="json"),
                "artifact": str(registry.artifact_path(agent, number)) if number else None,
                "last_decision": _decision_json(last),
                "metrics": _store_metrics(home, store, agent),
            }
        )
        return
    details = Table(title=f"{policy.ref} · {state.status_of(number).value}", show_header=False, title_justify="left")
    details.add_column("field", style="bold")
    details.add_column("value", overflow="fold")
    details.add_row("system prompt", policy.system_prompt or "— (the agent's own)")
    for tool, description in sorted(policy.tool_descriptions.items()):
        details.add_row(f"tool {tool}", description)
    details.add_row("demonstrations", str(len(policy.demonstrations)))
    details.add_row("llm", policy.llm.model_dump_json(exclude_none=True) if policy.llm else "— (the agent's own)")
    details.add_row("trainer", policy.trainer or "—")
    details.add_row("parent", "—" if policy.parent_version is None else f"v{policy.parent_version}")
    details.add_row("training metrics", json.dumps(policy.metrics, default=str) if policy.metrics else "—")
    details.add_row("metadata", json.dumps(policy.metadata, default=str) if policy.metadata else "—")
    if number:
        details.add_row("artifact", str(registry.artifact_path(agent, number)))
    details.add_row("last decision", _decision_line(last).removeprefix("last decision "))
    console.print(details)
    rows = _store_metrics(home, store, agent)
    if rows is None:
        return
    metrics = Table(title=Text(f"{agent}: live metrics per version"), title_justify="left")
    typed_column(metrics, "version")
    typed_column(metrics, "status")
    for header in ("episodes", "calls", "reliability", "errors", "reward"):
        number_column(metrics, header)
    text_column(metrics, "last episode")
    for row in rows:
        v = int(row["policy_version"])
        calls = int(row["tool_calls"] or 0)
        status = state.versions[v].status.value if v in state.versions else "unregistered"
        metrics.add_row(
            f"v{v}",
            status,
            str(row["episodes"]),
            str(calls),
            fmt_ratio(int(row["successes"] or 0) / calls if calls else None),
            str(row["errors"]),
            "—" if row["reward"] is None else f"{row['reward']:.3f}",
            str(row["last_at"])[:19],
        )
    if not rows:
        console.print(f"[dim]no episodes of {agent} recorded yet[/dim]")
    else:
        console.print(metrics)


def _fields(policy: Policy) -> dict[str, str]:
    fields = {
        "system_prompt": policy.system_prompt or "",
        "demonstrations": json.dumps([d.model_dump() for d in policy.demonstrations], default=str),
        "llm": policy.llm.model_dump_json() if policy.llm else "",
        "trainer": policy.trainer or "",
        "parent_version": "" if policy.parent_version is None else str(policy.parent_version),
        "metrics": json.dumps(policy.metrics, sort_keys=True, default=str),
        "metadata": json.dumps(policy.metadata, sort_keys=True, default=str),
    }
    for tool, description in policy.tool_descriptions.items():
        fields[f"tool {tool}"] = description
    return fields


def diff(
    agent: str = typer.Argument(..., help="The agent."),
    old: str = typer.Argument(..., help="A version (3, v3), 'live' or 'canary'."),
    new: str = typer.Argument(..., help="Another version."),
    home: Path | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Show what differs between two versions."""
    registry = _registry(home)
    try:
        a = registry.load(agent, registry.resolve_ref(agent, old))
        b = registry.load(agent, registry.resolve_ref(agent, new))
    except (PolicyError, ConfigurationError) as exc:
        raise _fail(exc) from None
    left, right = _fields(a), _fields(b)
    if as_json:
        keys = [k for k in sorted(set(left) | set(right)) if left.get(k, "") != right.get(k, "")]
        _echo_json(
            {
                "agent": agent,
                "old": a.version,
                "new": b.version,
                "changed": {k: [left.get(k), right.get(k)] for k in keys},
            }
        )
        return
    table = Table(title=f"{agent}: v{a.version} → v{b.version}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column(f"v{a.version}", overflow="fold")
    table.add_column(f"v{b.version}", overflow="fold")
    changed = [k for k in sorted(set(left) | set(right)) if left.get(k, "") != right.get(k, "")]
    for key in changed:
        table.add_row(key, f"[red]{left.get(key) or '—'}[/red]", f"[green]{right.get(key) or '—'}[/green]")
    if not changed:
        console.print(f"[dim]v{a.version} and v{b.version} do not differ[/dim]")
        return
    console.print(table)


def promote(
    agent: str = typer.Argument(..., help="The agent."),
    version: str = typer.Argument(..., help="The version to promote (3 or v3)."),
    canary: float | None = typer.Option(None, "--canary", help="Serve it to this share of sessions (0-1) instead."),
    reason: str | None = typer.Option(None, "--reason", help="Why (logged with the transition)."),
    home: Path | None = HomeOption,
) -> None:
    """Make a version live (or start a canary of it); serving processes pick it up within a second."""
    registry = _registry(home)
    try:
        expected = registry.state(agent).sequence
        if canary is not None:
            state = registry.start_canary(
                agent, version, canary, reason=reason or "cli canary", expected_sequence=expected
            )
            console.print(f"[yellow]{agent}@v{state.canary}[/yellow] is the canary for {canary * 100:.0f}% of sessions")
        else:
            state = registry.promote(agent, version, reason=reason or "cli promotion", expected_sequence=expected)
            console.print(f"[green]{agent}@v{state.live}[/green] is live")
    except (PolicyError, ConfigurationError) as exc:
        raise _fail(exc) from None


def evaluate(
    agent: str = typer.Argument(..., help="The agent whose canary to judge."),
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Run the gate on the agent's canary now: promote, roll back or hold, and say why.

    The decision is logged like the serving process's own (one look of the same sequential
    test), so a serving process sees a promotion or rollback made here within a second.
    """
    from agentgym_runtime.services import build_router

    settings = settings_for(home, store)
    registry = _registry(home)
    try:
        registry.state(agent)  # unknown agents fail here, listing the known ones
        with reading_store(settings) as reader:
            router = build_router(registry, settings, store=reader)
            decision = router.evaluate(agent)
    except (PolicyError, ConfigurationError) as exc:
        raise _fail(exc) from None
    if as_json:
        _echo_json({"agent": agent, "action": decision.action, "reason": decision.reason, "numbers": decision.numbers})
        return
    colour = {"promote": "green", "rollback": "red"}.get(decision.action, "yellow")
    # One Text, so the line wraps at the terminal's width (the reason is data, never markup).
    console.print(Text.assemble((decision.action, colour), f" {agent}: {decision.reason}"))


def canary_command(
    agent: str = typer.Argument(..., help="The agent."),
    version: str = typer.Argument(..., help="The version to canary (3 or v3)."),
    share: float = typer.Option(0.1, "--share", help="Share of sessions (0-1) it serves."),
    reason: str | None = typer.Option(None, "--reason", help="Why (logged with the transition)."),
    home: Path | None = HomeOption,
) -> None:
    """Serve a version to a share of sessions; the serving process's gate then promotes or rolls it back."""
    registry = _registry(home)
    try:
        expected = registry.state(agent).sequence
        state = registry.start_canary(agent, version, share, reason=reason or "cli canary", expected_sequence=expected)
    except (PolicyError, ConfigurationError) as exc:
        raise _fail(exc) from None
    console.print(f"[yellow]{agent}@v{state.canary}[/yellow] is the canary for {share * 100:.0f}% of sessions")


def rollback(
    agent: str = typer.Argument(..., help="The agent."),
    reason: str | None = typer.Option(None, "--reason", help="Why (logged with the transition)."),
    home: Path | None = HomeOption,
) -> None:
    """Roll back the canary if there is one, else the live version."""
    registry = _registry(home)
    try:
        before = registry.state(agent)
        state = registry.rollback(agent, reason=reason or "cli rollback", expected_sequence=before.sequence)
    except (PolicyError, ConfigurationError) as exc:
        raise _fail(exc) from None
    if before.canary is not None and state.canary is None:
        console.print(f"rolled back canary [red]v{before.canary}[/red]; live stays [green]v{state.live}[/green]")
    else:
        console.print(f"rolled back [red]v{before.live}[/red]; live is now [green]v{state.live}[/green]")


def pin(
    agent: str = typer.Argument(..., help="The agent."),
    version: str = typer.Argument(..., help="The version every call should use (3 or v3)."),
    reason: str | None = typer.Option(None, "--reason", help="Why."),
    home: Path | None = HomeOption,
) -> None:
    """Serve one version to every call (overrides live and canary) until unpinned."""
    registry = _registry(home)
    try:
        state = registry.pin(agent, version, reason=reason)
    except (PolicyError, ConfigurationError) as exc:
        raise _fail(exc) from None
    console.print(f"{agent} pinned to [bold]v{state.pinned}[/bold]")


def unpin(
    agent: str = typer.Argument(..., help="The agent."),
    home: Path | None = HomeOption,
) -> None:
    """Remove the pin: live and canary apply again."""
    registry = _registry(home)
    try:
        state = registry.unpin(agent)
    except (PolicyError, ConfigurationError) as exc:
        raise _fail(exc) from None
    console.print(f"{agent} unpinned; live is [green]v{state.live}[/green]")
