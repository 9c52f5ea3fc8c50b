"""The demo's final screen: one plain verdict per criterion with its figures, and the overall one."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from agentgym_runtime.demo.loop import Demo, DemoConfig, _VersionTally
from agentgym_runtime.demo.render import render_summary, verdict_lines


def _summary(reliability: float, cost: float | None, passed: bool) -> dict[str, Any]:
    return {
        "scenario": "customer_support",
        "promoted_version": 2,
        "stopped": "time budget spent",
        "passed": passed,
        "versions": [],
        "success_criteria": {
            "criteria": {"tool_reliability": 0.95, "cost_reduction": 0.3},
            "tool_reliability": reliability,
            "cost_reduction": cost,
            "met": {"tool_reliability": reliability >= 0.95, "cost_reduction": cost is not None and cost >= 0.3},
        },
    }


def test_each_criterion_is_stated_with_its_figures_and_the_exit_status() -> None:
    lines = verdict_lines(_summary(0.946, 0.121, passed=False))
    assert lines == [
        ("NOT MET  held-out tool reliability of v2: 94.6% (needed >= 95.0%)", False),
        ("NOT MET  cost reduction vs v0 (provider's bill per episode): 12.1% (needed >= 30.0%)", False),
        ("FAILED: not every criterion met (stopped: time budget spent); exit status 1", False),
    ]
    passed = verdict_lines(_summary(0.962, 0.31, passed=True))
    assert [met for _, met in passed] == [True, True, True]
    assert passed[-1][0] == "PASSED: every criterion met (stopped: time budget spent); exit status 0"
    assert passed[0][0] == "MET      held-out tool reliability of v2: 96.2% (needed >= 95.0%)"


def test_no_promotion_is_a_failure_said_plainly() -> None:
    summary = {"scenario": "qa_testing", "promoted_version": None, "stopped": "time budget spent", "versions": []}
    assert verdict_lines(summary) == [
        ("NOT MET  no version was promoted, so no criterion could be met", False),
        ("FAILED: not every criterion met (stopped: time budget spent); exit status 1", False),
    ]
    console = Console(record=True, width=120)
    console.print(render_summary({**summary, "passed": False}))
    text = console.export_text()
    assert "NOT MET  no version was promoted" in text
    assert "exit status 1" in text


def test_the_final_screen_shows_each_versions_bill_and_the_price_table() -> None:
    summary = _summary(0.962, 0.181, passed=False)
    summary["success_criteria"]["llm_call_reduction"] = 0.214
    summary["prices"] = "*: $0.15 in / $0.6 out per 1M tokens"
    row = {"heldout_task_success": 0.8, "episodes": 10, "live_tool_reliability": None}
    summary["versions"] = [
        {
            **row,
            "version": 0,
            "heldout_tool_reliability": 0.63,
            "heldout_llm_calls_per_episode": 2.8,
            "heldout_cost_per_episode_usd": 0.000123456,
        },
        {
            **row,
            "version": 2,
            "heldout_tool_reliability": 0.962,
            "heldout_llm_calls_per_episode": 2.2,
            "heldout_cost_per_episode_usd": 0.0001011,
        },
    ]
    console = Console(record=True, width=160)
    console.print(render_summary(summary))
    text = console.export_text()
    assert "cost/episode" in text and "$0.000123" in text and "$0.000101" in text
    assert "cost = the provider's bill at *: $0.15 in / $0.6 out per 1M tokens; " in text
    assert "LLM calls per episode (latency): 21.4% fewer" in text
    assert "NOT MET  cost reduction vs v0 (provider's bill per episode): 18.1% (needed >= 30.0%)" in text


def test_the_demo_stops_on_the_live_versions_own_traffic() -> None:
    demo = Demo(DemoConfig())
    assert demo._live_meets_criterion(0.95) is False  # nothing promoted yet
    demo.state.promoted_version = 1
    demo.state.by_version[1] = _VersionTally(episodes=40, tool_calls=100, successes=94)
    assert demo._live_meets_criterion(0.95) is False
    # 95% observed is not enough (a run that stopped on 95.07% live measured 93.8% held-out), nor
    # 96.7% over 300 calls, whose 80% lower bound (95.7%) stopped runs before: at 95% it is 94.5%
    # (a run stopped on 95.8% live with its version at 94.0% held-out). 98% over 300 calls is
    # enough (lower bound 96.2%), and 100% over 60 (95.7%).
    demo.state.by_version[1] = _VersionTally(episodes=40, tool_calls=100, successes=95)
    assert demo._live_meets_criterion(0.95) is False
    demo.state.by_version[1] = _VersionTally(episodes=150, tool_calls=300, successes=290)
    assert demo._live_meets_criterion(0.95) is False
    demo.state.by_version[1] = _VersionTally(episodes=150, tool_calls=300, successes=294)
    assert demo._live_meets_criterion(0.95) is True
    demo.state.by_version[1] = _VersionTally(episodes=30, tool_calls=60, successes=60)
    assert demo._live_meets_criterion(0.95) is True
    demo.state.by_version[1] = _VersionTally(episodes=150, tool_calls=300, successes=285)  # 95.0%, lower 92.6%
    assert demo._live_meets_criterion(0.95) is False
