"""Every item issue 17 promises on the dashboard, driven with Textual's pilot on a real home.

The home is filled by a real agent (``tests.cli.dashboard_agent``: ``@agentgym.tool`` tools, a
scripted model, the public recording API), trained by a real training job (the tiny rounds
trainer, in a job subprocess), its candidate canaried by the scheduler and looked at by the
gate. Each value on the screen is compared with the number it must be, computed from the
agent's script or read back from the policy registry.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agentgym_runtime.cli.dashboard import build_app, registry_actions
from agentgym_runtime.cli.format import fmt_probability, fmt_signed
from agentgym_runtime.cli.sources import HomeSource
from agentgym_runtime.policy.registry import PolicyRegistry, PolicyStatus
from agentgym_runtime.policy.statistics import ClusterSums, obrien_fleming_spending, ratio_z, two_proportion_z
from tests.cli.conftest import PLANNED_CALLS, fill_trained_home
from tests.cli.dashboard_agent import AGENT, expected_outcomes


def _screen(app: Any) -> str:
    from textual.widgets import OptionList, Static

    console = Console(width=200, record=True, color_system=None)
    console.print(app.query_one("#panels", Static).content)
    console.print(app.query_one("#status", Static).content)
    agents = app.query_one("#agents", OptionList)
    names = [str(agents.get_option_at_index(i).prompt) for i in range(agents.option_count)]
    return console.export_text() + "\nagent list: " + ", ".join(names)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def _row(text: str, *cells: str) -> str:
    """The one screen line holding every cell."""
    lines = [line for line in text.splitlines() if all(c in line for c in cells)]
    assert len(lines) == 1, (cells, text)
    return lines[0]


@pytest.fixture
def trained_home(tmp_path: Path) -> tuple[Path, list[tuple[int, int]]]:
    home = tmp_path / "home"
    return home, fill_trained_home(home)


def test_dashboard_shows_every_promised_item_and_its_keys_change_the_registry(
    trained_home: tuple[Path, list[tuple[int, int]]],
) -> None:
    home, canary = trained_home
    registry = PolicyRegistry(home / "policies", actor="test")
    app = build_app(HomeSource(home), registry_actions(home), refresh_s=60)

    async def drive() -> dict[str, str]:
        screens: dict[str, str] = {}
        async with app.run_test(size=(200, 80)) as pilot:
            await pilot.pause()
            screens["first"] = _screen(app)
            for name, keys in (("cancelled", "rn"), ("pinned", "py"), ("rolled back", "ry")):
                for key in keys:
                    await pilot.press(key)
                    await pilot.pause()
                screens[name] = _screen(app)
        return screens

    screens = asyncio.run(drive())
    first = screens["first"]

    # The agent, whole, in the list and the panels.
    assert f"agent list: {AGENT}" in first
    _row(first, AGENT, "v0", "v1 (50%)")

    # Live reliability per tool and version: exactly what the agent's script makes.
    calls: Counter[tuple[str, int, str]] = Counter()
    for order, version in [(o, 0) for o in range(12)] + canary:
        for tool, outcomes in expected_outcomes(order, version).items():
            for outcome in outcomes:
                calls[(tool, version, outcome)] += 1
    for tool, version in {(t, v) for t, v, _ in calls}:
        total = sum(n for (t, v, _), n in calls.items() if (t, v) == (tool, version))
        ok = calls[(tool, version, "ok")]
        line = _row(first, AGENT, f" {tool} ", f" v{version} ")
        assert _cells(line)[:6] == [AGENT, tool, f"v{version}", str(total), str(ok), f"{100 * ok / total:.1f}%"]
    assert calls[("refund", 0, "tool_error")] > 0 and calls[("cancel_everything", 0, "unknown_tool")] > 0
    failures = {
        tuple(_cells(line)[1:4])
        for line in first.splitlines()
        if "_id" in line and ("tool_error" in line or "unknown_tool" in line)
    }
    assert failures == {
        ("refund", "tool_error", str(calls[("refund", 0, "tool_error")])),
        ("cancel_everything", "unknown_tool", str(calls[("cancel_everything", 0, "unknown_tool")])),
    }
    assert '"amount":500.0}) → ValueError' in first  # an example call of the failing tool

    # The gate's look at the canary: z and spent alpha as the statistics give them for these calls.
    # Each canary episode is its own session, so the gate's clusters are the episodes' calls.
    sessions: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    for order, version in canary:
        outcomes = [o for tool_outcomes in expected_outcomes(order, version).values() for o in tool_outcomes]
        sessions[version].append((len(outcomes), outcomes.count("ok")))
    sums = {version: ClusterSums.of(pairs) for version, pairs in sessions.items()}
    arms = {version: [s.trials, s.successes] for version, s in sums.items()}
    z, _ = ratio_z(sums[1], sums[0])
    binomial_z, _ = two_proportion_z(arms[1][1], arms[1][0], arms[0][1], arms[0][0])
    assert fmt_signed(z) != fmt_signed(binomial_z)  # the screen shows the session-robust statistic
    spent = obrien_fleming_spending(0.05, arms[1][0] / PLANNED_CALLS)
    gate_line = _row(first, AGENT, "50%", f"{arms[1][0]} vs {arms[0][0]}")
    assert f"{fmt_signed(z)} < +" in gate_line and f"{fmt_probability(spent)} of 0.05" in gate_line, gate_line
    assert f"{AGENT} v1 canary · gate · " in first
    assert f"tool reliability v1 {arms[1][0]}/{arms[1][0]} (1.000) vs v0 {arms[0][1]}/{arms[0][0]}" in first

    # The training run: its progress with the last reward, and the log tail.
    _row(first, AGENT, "tiny", "succeeded", "100% · reward 1.000")
    assert "(last 5 lines):" in first
    for line in ("round 1/3: reward 0.333", "round 2/3: reward 0.667", "round 3/3: reward 1.000"):
        assert line in first

    # The keys: a refused confirmation changes nothing; pin and roll back change the registry.
    assert "cancelled" in screens["cancelled"]
    assert "pinned " + AGENT + " to v1" in screens["pinned"]
    _row(screens["pinned"], AGENT, "v0", "v1 (50%)", " v1 ")
    after = registry.state(AGENT)
    assert (after.live, after.canary, after.pinned) == (0, None, 1)
    assert after.status_of(1) == PolicyStatus.ROLLED_BACK
    assert f"rolled back {AGENT}; live is v0" in screens["rolled back"]
    assert f"{AGENT} v1 rolled_back · dashboard:" in screens["rolled back"]
    actors = [(e.actor.split(":")[0], e.reason) for e in registry.events(AGENT) if e.actor.startswith("dashboard:")]
    assert actors == [
        ("dashboard", "pinned from the dashboard"),
        ("dashboard", "rolled back from the dashboard"),
    ]
