"""``agentgym dashboard``: a live terminal view of a home (or any :class:`~agentgym_runtime.cli.sources.Source`).

Panels: agents and their pointers with a reliability sparkline per version; the canary and
the gate (calls, reliability of both arms, z against the boundary, spent alpha, the last
decision and why); training runs with progress and the log tail; the failing tools of the
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

from agentgym_runtime.cli.format import fmt_ago, fmt_eta, fmt_percent, fmt_signed, fmt_version
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


def agents_table(snap: Snapshot) -> Table:
    """Agents, pointers and reliability over time per version."""
    series: dict[tuple[str, int], list[float]] = defaultdict(list)
    for row in snap.reliability:
        series[(str(row["agent"]), int(row["version"]))].append(row["successes"] / row["calls"])
    table = Table(title="agents", title_justify="left", expand=True)
    for header in ("agent", "live", "canary", "pinned", "reliability per version (hourly)"):
        table.add_column(header, no_wrap=header != "reliability per version (hourly)")
    for agent in snap.agents:
        name = str(agent["agent"])
        lines = [
            f"{fmt_version(v)} {sparkline(values)} {fmt_percent(values[-1])}"
            for (a, v), values in sorted(series.items())
            if a == name
        ]
        canary = f"{fmt_version(agent['canary'])} ({fmt_percent(agent['canary_share'], 0)})" if agent["canary"] else "—"
        table.add_row(Text(name), fmt_version(agent["live"]), canary, fmt_version(agent["pinned"]), "\n".join(lines))
    return table


def gate_table(snap: Snapshot) -> Table:
    """The last gate look and decision of each agent."""
    table = Table(title="canary and gate", title_justify="left", expand=True)
    for header in ("agent", "version", "calls", "z", "boundary", "alpha spent", "last decision"):
        table.add_column(header, no_wrap=header != "last decision", overflow="fold")
    last_look = {(lk["agent"], lk["version"]): lk for lk in snap.looks}
    last_decision: dict[str, dict[str, Any]] = {}
    for decision in snap.decisions:
        if decision["actor"] == "gate" or decision["to_status"] in ("live", "rolled_back", "rejected"):
            last_decision[str(decision["agent"])] = decision
    for agent, decision in sorted(last_decision.items()):
        look = last_look.get((agent, decision["version"]), {})
        table.add_row(
            Text(agent),
            fmt_version(decision["version"]),
            str(look.get("tool_calls", "—")),
            fmt_signed(look.get("z")),
            fmt_signed(look.get("boundary_z")),
            fmt_percent(look.get("alpha_spent"), 2),
            Text(f"{decision['to_status']}: {decision['reason'] or ''} ({fmt_ago(decision['at'], snap.taken_at)})"),
        )
    return table


def runs_table(snap: Snapshot) -> Table:
    """Training runs: status, progress with ETA, the last log line."""
    table = Table(title="training runs", title_justify="left", expand=True)
    for header in ("run", "agent", "trainer", "status", "progress", "log"):
        table.add_column(header, no_wrap=header not in ("progress", "log"), overflow="fold")
    for run in snap.runs[:5]:
        progress = run.get("progress") or {}
        fraction = progress.get("fraction")
        elapsed = snap.taken_at - float(run["started_at"]) if run.get("started_at") else 0.0
        eta = f" · ETA {fmt_eta(fraction, elapsed)}" if run["status"] == "running" else ""
        shown = f"{fmt_percent(fraction, 0)} {progress.get('message', '')}{eta}" if fraction is not None else "—"
        log = (run.get("log_tail") or "").strip().splitlines()
        table.add_row(
            Text(str(run["run_id"])),
            Text(str(run["agent"])),
            str(run["trainer"]),
            str(run["status"]),
            Text(shown),
            Text(log[-1] if log else ""),
        )
    return table


def failures_table(snap: Snapshot) -> Table:
    """Failing tools and outcomes of the last hour with an example call."""
    table = Table(title="failures in the last hour", title_justify="left", expand=True)
    for header in ("agent", "tool", "outcome", "calls", "example"):
        table.add_column(header, no_wrap=header != "example", overflow="fold")
    for failure in snap.failures[:10]:
        table.add_row(
            Text(str(failure["agent"])),
            Text(str(failure["tool"])),
            str(failure["outcome"]),
            str(failure["calls"]),
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
