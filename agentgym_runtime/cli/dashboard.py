"""``agentgym dashboard``: a live terminal view of a home (or any :class:`~agentgym_runtime.cli.sources.Source`).

Panels: agents and their pointers with a reliability sparkline per version; the reliability of
every tool per version (calls, successes, hourly trend); the canary and the gate (share, both
arms' calls, z against the boundary, alpha spent of alpha, the last decision and why); training
runs with progress, the last reward and the newest run's log tail; the failing tools of the
last hour with an example call. Keys ``p`` pin, ``P`` promote and ``r`` roll back the
selected agent's canary (or live version) after a confirmation, through the policy
registry; nothing else is written. Where a full terminal UI cannot run (not a terminal,
``--plain``), the same panels print once as Rich tables.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from agentgym_runtime.cli.common import number_column, text_column, typed_column
from agentgym_runtime.cli.format import (
    fmt_ago,
    fmt_eta,
    fmt_number,
    fmt_percent,
    fmt_probability,
    fmt_signed,
    fmt_version,
)
from agentgym_runtime.cli.sources import Snapshot, Source

_BLOCKS = "▁▂▃▄▅▆▇█"
FAILURE_WINDOW_S = 3600.0


def sparkline(values: list[float]) -> str:
    """Shares (0..1) as block characters.

    Example:
        >>> sparkline([0.0, 0.5, 1.0])
        '▁▅█'
    """
    return "".join(_BLOCKS[min(len(_BLOCKS) - 1, max(0, round(v * (len(_BLOCKS) - 1))))] for v in values)


def _series(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[tuple[int, int]]]:
    """``(calls, successes)`` per hour bucket, oldest first, grouped by ``keys``."""
    series: dict[tuple[Any, ...], list[tuple[int, int]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: float(r["bucket"])):
        series[tuple(row[k] for k in keys)].append((int(row["calls"]), int(row["successes"])))
    return series


def agents_table(snap: Snapshot) -> Table:
    """Agents, pointers and reliability over time per version."""
    series = _series(snap.reliability, "agent", "version")
    table = Table(title="agents", title_justify="left", expand=True)
    typed_column(table, "agent")
    for header in ("live", "canary", "pinned"):
        typed_column(table, header)
    text_column(table, "reliability per version (hourly)")
    for agent in snap.agents:
        name = str(agent["agent"])
        lines = [
            f"{fmt_version(int(v))} {sparkline([k / n for n, k in points])} {fmt_percent(last_k / last_n)}"
            for (a, v), points in sorted(series.items())
            for last_n, last_k in [points[-1]]
            if a == name
        ]
        canary = f"{fmt_version(agent['canary'])} ({fmt_percent(agent['canary_share'], 0)})" if agent["canary"] else "—"
        table.add_row(Text(name), fmt_version(agent["live"]), canary, fmt_version(agent["pinned"]), "\n".join(lines))
    return table


def tools_table(snap: Snapshot) -> Table:
    """Reliability of every tool per policy version: all calls, and the hourly trend."""
    table = Table(title="tool reliability per version", title_justify="left", expand=True)
    typed_column(table, "agent")
    typed_column(table, "tool")
    typed_column(table, "version")
    number_column(table, "calls")
    number_column(table, "ok")
    number_column(table, "reliability")
    text_column(table, "hourly")
    for (agent, tool, version), points in sorted(_series(snap.tool_reliability, "agent", "tool", "version").items()):
        calls, ok = sum(n for n, _ in points), sum(k for _, k in points)
        table.add_row(
            Text(str(agent)),
            Text(str(tool)),
            fmt_version(int(version)),
            fmt_number(calls),
            fmt_number(ok),
            fmt_percent(ok / calls if calls else None),
            sparkline([k / n for n, k in points]),
        )
    return table


def _gate_rows(snap: Snapshot) -> list[dict[str, Any]]:
    """Per agent with a canary or a decision: the version judged, its last look and the last decision."""
    last_look = {(lk["agent"], lk["version"]): lk for lk in snap.looks}
    last_decision: dict[str, dict[str, Any]] = {}
    last_judged: dict[tuple[str, int], dict[str, Any]] = {}  # the last gate decision with both arms' numbers
    for event in snap.decisions:
        if event["actor"] == "gate" and event.get("candidate"):
            last_judged[(str(event["agent"]), int(event["version"]))] = event
        if event["actor"] == "gate" or event["to_status"] in ("canary", "live", "rolled_back", "rejected"):
            last_decision[str(event["agent"])] = event
    rows = []
    for agent in snap.agents:
        name = str(agent["agent"])
        decision = last_decision.get(name)
        version = agent["canary"] if agent["canary"] is not None else decision["version"] if decision else None
        if version is None:
            continue
        look = last_look.get((name, version), {})
        if agent["canary"] is not None and float(look.get("at", 0.0)) < float(agent.get("canary_since") or 0.0):
            look = {}  # a look at an earlier canary of the same version
        judged = last_judged.get((name, int(version)))
        since = float(agent.get("canary_since") or 0.0) if agent["canary"] is not None else 0.0
        if judged is not None and judged["at"] < since:
            judged = None  # it judged an earlier canary of the same version
        rows.append(
            {
                "agent": name,
                "version": version,
                "share": agent["canary_share"] if agent["canary"] is not None else None,
                "candidate_calls": ((judged or {}).get("candidate") or {}).get("tool_calls"),
                "incumbent_calls": ((judged or {}).get("incumbent") or {}).get("tool_calls"),
                "look": look,
                "decision": decision,
            }
        )
    return rows


def gate_table(snap: Snapshot) -> RenderableType:
    """The canary and the gate: share, both arms' calls, the last look, and the last decision with why.

    The look is the gate's z against the promotion boundary and the alpha spent so far.
    """
    table = Table(title="canary and gate", title_justify="left", expand=True)
    typed_column(table, "agent")
    typed_column(table, "version")
    number_column(table, "share")
    number_column(table, "calls vs live")
    number_column(table, "z vs boundary")
    text_column(table, "alpha spent")
    why: list[Text] = []
    for row in _gate_rows(snap):
        look, decision = row["look"], row["decision"]
        calls = row["candidate_calls"] if row["candidate_calls"] is not None else look.get("tool_calls")
        crossed = look and look.get("boundary_z") is not None and look["z"] >= look["boundary_z"]
        table.add_row(
            Text(row["agent"]),
            fmt_version(row["version"]),
            fmt_percent(row["share"], 0),
            f"{fmt_number(calls)} vs {fmt_number(row['incumbent_calls'])}",
            f"{fmt_signed(look.get('z'))} {'≥' if crossed else '<'} {fmt_signed(look.get('boundary_z'))}"
            if look
            else "—",
            f"{fmt_probability(look.get('alpha_spent'))} of {fmt_probability(look.get('alpha'))}" if look else "—",
        )
        if decision is not None:
            when = fmt_ago(decision["at"], snap.taken_at)
            why.append(
                Text(
                    f"{row['agent']} {fmt_version(decision['version'])} {decision['to_status']} · "
                    f"{decision['actor']} · {when}: {decision['reason'] or ''}"
                )
            )
    return Group(table, *why)


LOG_LINES = 5


def runs_table(snap: Snapshot) -> RenderableType:
    """Training runs: status, progress with the reward and ETA, and the newest run's log tail."""
    table = Table(title="training runs", title_justify="left", expand=True)
    typed_column(table, "run")
    typed_column(table, "agent")
    typed_column(table, "trainer")
    typed_column(table, "status")
    text_column(table, "progress")
    for run in snap.runs[:5]:
        progress = run.get("progress") or {}
        fraction = progress.get("fraction")
        elapsed = snap.taken_at - float(run["started_at"]) if run.get("started_at") else 0.0
        eta = f" · ETA {fmt_eta(fraction, elapsed)}" if run["status"] == "running" else ""
        rewards = run.get("rewards") or []
        reward = f" · reward {fmt_number(rewards[-1], 3)}" if rewards else ""
        message = progress.get("message", "")
        shown = f"{fmt_percent(fraction, 0)}{reward}{eta} · {message}" if fraction is not None else "—"
        table.add_row(
            Text(str(run["run_id"])), Text(str(run["agent"])), str(run["trainer"]), str(run["status"]), Text(shown)
        )
    if not snap.runs:
        return table
    newest = snap.runs[0]
    lines = (newest.get("log_tail") or "").strip().splitlines()[-LOG_LINES:]
    tail = [Text(f"log of run {newest['run_id']} (last {len(lines)} lines):", style="bold")]
    return Group(table, *tail, *(Text(f"  {line}") for line in lines))


def failures_table(snap: Snapshot) -> Table:
    """Failing tools and outcomes of the last hour with an example call."""
    table = Table(title="failures in the last hour", title_justify="left", expand=True)
    typed_column(table, "agent")
    typed_column(table, "tool")
    typed_column(table, "outcome")
    number_column(table, "calls")
    text_column(table, "example")
    for failure in snap.failures[:10]:
        table.add_row(
            Text(str(failure["agent"])),
            Text(str(failure["tool"])),
            str(failure["outcome"]),
            fmt_number(failure["calls"]),
            Text(f"{failure['tool']}({failure['example_arguments'] or ''}) → {failure['example_result'] or ''}"),
        )
    return table


def render_plain(snap: Snapshot) -> RenderableType:
    """Every panel as Rich tables (the view where a full terminal UI cannot run)."""
    problems = [Text(p, style="yellow") for p in snap.problems]
    return Group(
        Text(f"agentgym dashboard · {snap.label}", style="bold"),
        *problems,
        agents_table(snap),
        tools_table(snap),
        gate_table(snap),
        runs_table(snap),
        failures_table(snap),
    )


def read_recent(source: Source) -> Snapshot:
    """A snapshot with the failures of the last hour."""
    return source.read(failures_since=time.time() - FAILURE_WINDOW_S)


Action = Callable[[str], str]


def registry_actions(home: Path) -> dict[str, tuple[str, Action]]:
    """The dashboard's writes: key → (description, action on an agent) through the policy registry."""
    from agentgym_runtime.policy.registry import PolicyRegistry, default_actor

    registry = PolicyRegistry(home / "policies", actor=f"dashboard:{default_actor()}")

    def pin(agent: str) -> str:
        state = registry.state(agent)
        target = state.canary if state.canary is not None else state.live
        registry.pin(agent, target, reason="pinned from the dashboard")
        return f"pinned {agent} to {fmt_version(target)}"

    def promote(agent: str) -> str:
        state = registry.state(agent)
        if state.canary is None:
            return f"{agent} has no canary to promote"
        registry.promote(agent, state.canary, reason="promoted from the dashboard")
        return f"promoted {agent} {fmt_version(state.canary)}"

    def rollback(agent: str) -> str:
        after = registry.rollback(agent, reason="rolled back from the dashboard")
        return f"rolled back {agent}; live is {fmt_version(after.live)}"

    return {
        "p": ("pin the canary (or live version)", pin),
        "P": ("promote the canary", promote),
        "r": ("roll back the canary (or live version)", rollback),
    }


def build_app(source: Source, actions: dict[str, tuple[str, Action]], refresh_s: float = 2.0) -> Any:
    """The Textual app (Textual is imported here, only when the dashboard runs)."""
    from textual.app import App, ComposeResult
    from textual.binding import Binding, BindingType
    from textual.containers import Horizontal, Vertical, VerticalScroll
    from textual.screen import ModalScreen
    from textual.widgets import Button, Footer, Header, Label, OptionList, Static

    class Confirm(ModalScreen[bool]):
        def __init__(self, question: str) -> None:
            super().__init__()
            self.question = question

        def compose(self) -> ComposeResult:
            with Vertical(id="confirm"):
                yield Label(self.question, id="question")
                with Horizontal():
                    yield Button("Yes", id="yes", variant="error")
                    yield Button("No", id="no", variant="primary")

        def on_button_pressed(self, event: Button.Pressed) -> None:
            self.dismiss(event.button.id == "yes")

        def key_y(self) -> None:
            self.dismiss(True)

        def key_n(self) -> None:
            self.dismiss(False)

        def key_escape(self) -> None:
            self.dismiss(False)

    class Dashboard(App[None]):
        TITLE = "agentgym dashboard"
        CSS = "#agents{width:24;} #confirm{width:60;height:auto;border:thick $error;padding:1 2;}"
        BINDINGS: ClassVar[list[BindingType]] = [
            Binding("q", "quit", "quit"),
            Binding("p", "act('p')", "pin"),
            Binding("P", "act('P')", "promote"),
            Binding("r", "act('r')", "roll back"),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.snapshot: Snapshot | None = None
            self.message = ""

        def compose(self) -> ComposeResult:
            yield Header()
            with Horizontal():
                yield OptionList(id="agents")
                with VerticalScroll():
                    yield Static(id="status")
                    yield Static(id="panels")
            yield Footer()

        def on_mount(self) -> None:
            self.refresh_data()
            self.set_interval(refresh_s, self.refresh_data)

        def refresh_data(self) -> None:
            self.snapshot = read_recent(source)
            agents = self.query_one("#agents", OptionList)
            names = [str(a["agent"]) for a in self.snapshot.agents]
            if [str(agents.get_option_at_index(i).prompt) for i in range(agents.option_count)] != names:
                agents.clear_options()
                agents.add_options(names)
                # Wide enough for the longest name: it is what users type into the other commands.
                agents.styles.width = min(max((len(n) for n in names), default=20) + 4, 64)
                if names:
                    agents.highlighted = 0
            self.query_one("#panels", Static).update(render_plain(self.snapshot))
            self.query_one("#status", Static).update(Text(self.message, style="bold"))

        def selected_agent(self) -> str | None:
            agents = self.query_one("#agents", OptionList)
            if agents.highlighted is None:
                return None
            return str(agents.get_option_at_index(agents.highlighted).prompt)

        def action_act(self, key: str) -> None:
            agent = self.selected_agent()
            if agent is None or key not in actions:
                return
            description, act = actions[key]

            def done(confirmed: bool | None) -> None:
                if not confirmed:
                    self.message = "cancelled"
                else:
                    try:
                        self.message = act(agent)
                    except Exception as exc:  # a refused change is shown, never crashes the view
                        self.message = f"refused: {exc}"
                self.refresh_data()

            self.push_screen(Confirm(f"{description} of {agent}? (y/n)"), done)

    return Dashboard()
