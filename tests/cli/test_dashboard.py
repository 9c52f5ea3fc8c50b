"""``agentgym dashboard``: driven with Textual's pilot; the plain Rich view where no terminal UI runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentgym_runtime.cli.dashboard import build_app, registry_actions, sparkline
from agentgym_runtime.cli.sources import HomeSource
from agentgym_runtime.policy.registry import PolicyRegistry
from tests.cli.conftest import run_cli


def _screen_text(app: object) -> str:
    from textual.widgets import Static

    panels = app.query_one("#panels", Static)  # type: ignore[attr-defined]
    status = app.query_one("#status", Static)  # type: ignore[attr-defined]
    from rich.console import Console

    console = Console(width=160, record=True, color_system=None)
    console.print(panels.content)
    console.print(status.content)
    return console.export_text()


def test_sparkline() -> None:
    assert sparkline([0.0, 0.25, 1.0]) == "▁▃█"


def test_dashboard_shows_the_home_and_promotes_after_confirmation(populated: Path) -> None:
    registry = PolicyRegistry(populated / "policies", actor="test")
    version = registry.register("support", system_prompt="Use lookup.").version
    registry.start_canary("support", version, 0.5)
    app = build_app(HomeSource(populated), registry_actions(populated), refresh_s=60)

    async def drive() -> tuple[str, str, str]:
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            first = _screen_text(app)
            await pilot.press("P")
            await pilot.pause()
            await pilot.press("n")
            await pilot.pause()
            cancelled = _screen_text(app)
            await pilot.press("P")
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
            return first, cancelled, _screen_text(app)

    first, cancelled, promoted = asyncio.run(drive())
    assert "support" in first and "v1 (50%)" in first
    assert "v0 ▆ 66.7%" in first  # 4 of 6 calls ok under v0
    assert "refund_all" in first and "unknown_tool" in first
    assert "cancelled" in cancelled
    assert "promoted support v1" in promoted
    assert "support v1 live · dashboard:" in promoted and ": promoted from the dashboard" in promoted
    assert registry.state("support").live == version
    assert any(e.actor.startswith("dashboard:") and e.to_status == "live" for e in registry.events("support"))


def test_plain_view_when_not_a_terminal(populated: Path) -> None:
    result = run_cli("dashboard", home=populated)
    assert result.returncode == 0, result.stderr
    assert "failures in the last hour" in result.stdout
    assert "refund_all" in result.stdout and "unknown_tool" in result.stdout
