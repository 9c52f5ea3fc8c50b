"""The demo's rendering: its live state and final summary as Rich renderables."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentgym_runtime.demo.loop import DemoConfig, DemoState


def render_state(state: DemoState, config: DemoConfig) -> Any:
    """A Rich renderable of the live state."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    elapsed = time.monotonic() - state.started
    header = Text.assemble(
        ("agentgym demo", "bold"),
        f" · {config.scenario} · {elapsed:5.0f}s · served {state.served} episodes · ",
        (state.phase, "cyan"),
    )
    versions = Table(title="tool reliability per policy version (live traffic)", title_justify="left")
    for column in ("version", "role", "episodes", "tool calls", "reliability", "LLM calls/episode"):
        versions.add_column(column, justify="right" if column != "role" else "left")
    with state.lock:
        for version, tally in sorted(state.by_version.items()):
            role = "live" if version == state.live_version else "canary" if version == state.canary_version else ""
            share = tally.reliability()
            colour = "green" if share is not None and share >= 0.95 else "yellow" if share and share >= 0.8 else "red"
            versions.add_row(
                f"v{version}",
                role,
                str(tally.episodes),
                str(tally.tool_calls),
                f"[{colour}]{'—' if share is None else f'{share:.1%}'}[/{colour}]",
                f"{tally.llm_calls / tally.episodes:.2f}" if tally.episodes else "—",
            )
        runs = Table(title="training runs", title_justify="left")
        for column in ("run", "trainer", "status", "candidate", "note"):
            runs.add_column(column)
        for run in state.runs[-3:]:
            runs.add_row(
                str(run["run_id"])[:8],
                str(run["trainer"]),
                str(run["status"]),
                "" if run["candidate_version"] is None else f"v{run['candidate_version']}",
                str(run["reason"] or "")[:60],
            )
        decisions = Text("\n".join(state.decisions[-4:]) or "no policy decisions yet", style="dim")
    return Group(header, versions, runs, decisions)


def verdict_lines(summary: dict[str, Any]) -> list[tuple[str, bool]]:
    """One plain line per success criterion, with its figures, then the overall verdict and why the demo stopped.

    Example:
        >>> summary = {"promoted_version": 1, "stopped": "criteria met on validation tasks", "passed": False,
        ...     "success_criteria": {"criteria": {"tool_reliability": 0.95, "cost_reduction": 0.3},
        ...     "tool_reliability": 0.96, "cost_reduction": 0.12, "met": {"tool_reliability": True,
        ...     "cost_reduction": False}}}
        >>> for line, _ in verdict_lines(summary)[:2]:
        ...     print(line)
        MET      held-out tool reliability of v1: 96.0% (needed >= 95.0%)
        NOT MET  cost reduction vs v0 (provider's bill per episode): 12.0% (needed >= 30.0%)
    """
    promoted = summary.get("promoted_version")
    report = summary.get("success_criteria")
    lines: list[tuple[str, bool]] = []
    if not report:
        lines.append(("NOT MET  no version was promoted, so no criterion could be met", False))
    else:
        wanted, met = report["criteria"], report["met"]
        figures = {
            "tool_reliability": (f"held-out tool reliability of v{promoted}", report.get("tool_reliability")),
            "cost_reduction": ("cost reduction vs v0 (provider's bill per episode)", report.get("cost_reduction")),
        }
        for name, threshold in wanted.items():
            label, value = figures.get(name, (name, report.get(name)))
            shown = "n/a" if value is None else f"{value:.1%}"
            ok = bool(met.get(name))
            lines.append((f"{'MET     ' if ok else 'NOT MET '} {label}: {shown} (needed >= {threshold:.1%})", ok))
    passed = bool(summary.get("passed"))
    lines.append(
        (
            f"{'PASSED' if passed else 'FAILED'}: {'every' if passed else 'not every'} criterion met "
            f"(stopped: {summary.get('stopped', 'unknown')}); exit status {0 if passed else 1}",
            passed,
        )
    )
    return lines


def _usd(value: float | None) -> str:
    """A per-episode bill: fractions of a cent need significant digits, not two decimals."""
    return "—" if value is None else f"${value:.3g}"


def render_summary(summary: dict[str, Any]) -> Any:
    """The before/after table against the success criteria."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"before / after on held-out tasks never served ({summary['scenario']})", title_justify="left")
    for column in (
        "version",
        "held-out tool reliability",
        "task success",
        "LLM calls/episode",
        "cost/episode",
        "live episodes",
        "live reliability",
        "validation reliability",
    ):
        table.add_column(column, justify="right")
    for row in summary["versions"]:
        mark = " (promoted)" if row["version"] == summary.get("promoted_version") else ""
        live = row["live_tool_reliability"]
        validation = row.get("validation_tool_reliability")
        table.add_row(
            f"v{row['version']}{mark}",
            f"{row['heldout_tool_reliability']:.1%}",
            f"{row['heldout_task_success']:.1%}",
            f"{row['heldout_llm_calls_per_episode']:.2f}",
            _usd(row.get("heldout_cost_per_episode_usd")),
            str(row["episodes"]),
            "—" if live is None else f"{live:.1%}",
            "—" if validation is None else f"{validation:.1%}",
        )
    parts: list[Any] = [table]
    for line, met in verdict_lines(summary):
        parts.append(Text(line, style="bold green" if met else "bold red"))
    improvement = summary.get("improvement")
    if improvement:
        parts.append(Text(f"{improvement['test']}: z = {improvement['z']}, p = {improvement['p_value']:.2e}"))
    if summary.get("prices"):
        report = summary.get("success_criteria") or {}
        calls = report.get("llm_call_reduction")
        beside = ""
        if calls is not None:
            beside = f"; LLM calls per episode (latency): {abs(calls):.1%} {'fewer' if calls >= 0 else 'more'}"
        parts.append(Text(f"cost = the provider's bill at {summary['prices']}{beside}", style="dim"))
    if summary.get("promoted_version") is None:
        parts.append(Text("no version was promoted within the time budget", style="yellow"))
    parts.append(Text(f"traces: {summary.get('store')}  ·  Parquet export: {summary.get('export')}", style="dim"))
    return Group(*parts)
