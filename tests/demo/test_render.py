"""The demo's final screen: one plain verdict per criterion with its figures, and the overall one."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from agentgym_runtime.demo.loop import Demo, DemoConfig, _VersionTally, served_traffic, unserved_tasks
from agentgym_runtime.demo.render import render_summary, verdict_lines
from agentgym_runtime.scenarios import get_scenario


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
            "validation_tool_reliability": 0.9712,
        },
    ]
    console = Console(record=True, width=160)
    console.print(render_summary(summary))
    text = console.export_text()
    assert "cost/episode" in text and "$0.000123" in text and "$0.000101" in text
    assert "validation reliability" in text and "97.1%" in text
    assert "cost = the provider's bill at *: $0.15 in / $0.6 out per 1M tokens; " in text
    assert "LLM calls per episode (latency): 21.4% fewer" in text
    assert "NOT MET  cost reduction vs v0 (provider's bill per episode): 18.1% (needed >= 30.0%)" in text


def test_the_demo_stops_on_the_live_versions_validation_measure() -> None:
    demo = Demo(DemoConfig())
    assert demo._meets_criterion(0.95) is False  # nothing promoted yet
    demo.state.promoted_version = 1
    assert demo._meets_criterion(0.95) is False  # promoted, not measured yet
    # The live traffic does not decide (it overstated held-out reliability by up to 6 points).
    demo.state.by_version[1] = _VersionTally(episodes=150, tool_calls=300, successes=300)
    assert demo._meets_criterion(0.95) is False
    # 95% observed is not enough, nor 96.7% over 300 calls (95% lower bound 94.5%); 98% is (96.2%).
    demo.state.validation[1] = (95, 100)
    assert demo._meets_criterion(0.95) is False
    demo.state.validation[1] = (290, 300)
    assert demo._meets_criterion(0.95) is False
    demo.state.validation[1] = (294, 300)
    assert demo._meets_criterion(0.95) is True
    demo.state.validation[1] = (0, 0)  # a version that made no tool call meets nothing
    assert demo._meets_criterion(0.95) is False
    # Only the live version's measure counts.
    demo.state.validation = {1: (200, 300), 2: (300, 300)}
    assert demo._meets_criterion(0.95) is False


def test_each_live_version_is_measured_on_the_validation_tasks_once() -> None:
    demo = Demo(DemoConfig())
    asked: list[int] = []

    def measure(version: int) -> tuple[int, int]:
        asked.append(version)
        return (97 * version, 100 * version)

    demo._validate(1, measure)
    demo._validate(1, measure)
    demo._validate(2, measure)
    assert asked == [1, 2]
    assert demo.state.validation == {1: (97, 100), 2: (194, 200)}
    assert demo._validation_reliability(2) == 0.97
    assert demo._validation_reliability(3) is None


def test_validation_held_out_and_traffic_are_disjoint_for_every_scenario() -> None:
    config = DemoConfig()
    for name in ("customer_support", "code_review", "qa_testing"):
        scenario = get_scenario(name)
        served = served_traffic(scenario, config.served_tasks, config.seed + 1, config.served_block)
        held_out = unserved_tasks(scenario, served, config.eval_tasks, config.seed + 7, config.eval_block)
        validation = unserved_tasks(
            scenario, served + held_out, config.validation_tasks, config.seed + 13, config.eval_block
        )
        prompts = [{t.prompt for t in tasks} for tasks in (served, held_out, validation)]
        assert [len(p) for p in prompts] == [1000, 300, 200], name
        assert not (prompts[0] & prompts[1]) and not (prompts[0] & prompts[2]) and not (prompts[1] & prompts[2])
        worlds = [{t.world_seed for t in tasks} for tasks in (served, held_out, validation)]
        # 7 of 150 served; 6-7 of 50 held-out and 4-5 of 50 validation (a block loses prompts drawn before).
        assert len(worlds[0]) == 7 and len(worlds[1]) in (6, 7) and len(worlds[2]) in (4, 5), name
        assert not (worlds[0] & worlds[1]) and not (worlds[0] & worlds[2]) and not (worlds[1] & worlds[2])
