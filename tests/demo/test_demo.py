"""The main job, shortened: serve, record, train in a background job, canary, gate, promote, measure.

The same code as ``make demo`` with a smaller budget: two users, training after 150 episodes,
one GRPO job of 60 rounds. The test asserts that every stage ran for real and that the version
the router promoted is better than version 0 on held-out tasks never served, by a margin no
random fluctuation explains: a one-sided two-proportion z-test on the held-out tool calls of the
two versions, p < 0.001.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agentgym_runtime.demo.loop import Demo, DemoConfig, two_proportion_z

pytestmark = pytest.mark.slow


def test_two_proportion_z() -> None:
    z, p = two_proportion_z(64, 100, 95, 100)
    assert z == pytest.approx(5.43, abs=0.01)
    assert p == pytest.approx(2.82e-8, rel=0.01)
    assert two_proportion_z(50, 100, 50, 100) == (0.0, 0.5)
    assert two_proportion_z(0, 0, 1, 1) == (0.0, 1.0)


def test_shortened_demo_promotes_a_trained_version_that_is_significantly_better(
    demo: Any, demo_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(demo_home / "models", home / "models")  # reuse the session's built model
    config = DemoConfig(
        home=home,
        minutes=7.0,  # an upper bound: the run ends once the promoted version has served 20 episodes
        users=2,
        min_new_episodes=150,
        schedule="3s",
        grpo_steps=60,
        eval_tasks=150,
        after_promotion_episodes=20,
        gate_min_tool_calls=40,
        until_criteria=False,  # one promotion; the stopping rule's reading of the validation measure: test_render
    )
    summary = Demo(config).run()
    json.dumps(summary)  # the --json summary is one JSON object
    assert summary["scenario"] == "customer_support"
    assert summary["episodes_served"] >= 150
    versions = {v["version"]: v for v in summary["versions"]}
    succeeded = [r["candidate_version"] for r in summary["training_runs"] if r["status"] == "succeeded"]
    assert succeeded[0] == 1
    assert set(versions) == {0, *succeeded}
    assert 0.5 <= versions[0]["heldout_tool_reliability"] <= 0.75
    assert versions[0]["episodes"] >= 150

    # The router promoted a trained version, through candidate -> canary -> live, by the gate.
    promoted = summary["promoted_version"]
    assert promoted in succeeded
    import duckdb

    con = duckdb.connect(summary["store"], read_only=True)
    try:
        stored = con.execute(
            "SELECT policy_version, count(*) FROM episodes WHERE agent = 'customer-support-bot' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        path = con.execute(
            "SELECT to_status, actor FROM policy_events WHERE version = ? ORDER BY occurred_at", [promoted]
        ).fetchall()
    finally:
        con.close()
    assert stored[0] == (0, versions[0]["episodes"])
    assert dict(stored)[promoted] >= 20  # the live agent hot-swapped to it and served it
    statuses = [status for status, _ in path]
    distinct = [status for i, status in enumerate(statuses) if i == 0 or status != statuses[i - 1]]
    assert distinct[:3] == ["candidate", "canary", "live"]
    assert next(actor for status, actor in path if status == "live") == "gate"
    # The summary carries the same decisions, with their reasons and when they happened.
    decided = [d for d in summary["decisions"] if d["version"] == promoted]
    assert [d["to"] for d in decided][: len(statuses)] == statuses
    went_live = next(d for d in decided if d["to"] == "live")
    assert went_live["actor"] == "gate"
    assert went_live["reason"]
    assert 0 < went_live["at_s"] <= summary["promoted_at_s"][str(promoted)] + 0.5

    # The live version was measured on the validation tasks as it went live (what the stopping
    # rule reads), on tasks disjoint from the held-out ones: the two measures agree within noise.
    assert versions[0]["validation_tool_reliability"] is None
    assert abs(versions[promoted]["validation_tool_reliability"] - versions[promoted]["heldout_tool_reliability"]) < 0.1

    # Better on held-out tasks never served, beyond chance.
    before, after = versions[0], versions[promoted]
    assert after["heldout_tool_reliability"] >= before["heldout_tool_reliability"] + 0.1
    improvement = summary["improvement"]
    assert improvement["test"] == "one-sided two-proportion z-test on held-out tool calls"
    assert improvement["p_value"] < 1e-3
    assert summary["success_criteria"]["criteria"] == {"tool_reliability": 0.95, "cost_reduction": 0.3}

    assert Path(summary["export"]).exists()
    from agentgym_runtime.trainers.scheduler import registered_training

    assert "customer-support-bot" not in registered_training()
    assert summary["stopped"] == "1 promotion(s) reached"
    # Where the time went: when the version went live, and what its run trained on and took.
    assert 0 < summary["promoted_at_s"][str(promoted)] < summary["minutes"] * 60
    first = next(r for r in summary["training_runs"] if r["candidate_version"] == 1)
    assert first["episodes"] >= 150
    assert 0 < first["took_s"] < summary["promoted_at_s"][str(promoted)]
    # No run is left running or recorded as failed because the demo ended: one still going was
    # cancelled, with the reason.
    for run in summary["training_runs"]:
        assert run["status"] in ("succeeded", "skipped", "cancelled"), run
        if run["status"] == "cancelled":
            assert run["reason"] == "cancelled: the demo ended before the run finished"
