"""The main job, shortened: serve, record, train a candidate in a background job, canary it, gate it.

The full ``make demo`` runs the same code for minutes; here the budget is small, so the
candidate is trained for two GRPO rounds only and the test asserts the loop's mechanics and
the gate's safety: every stage ran for real, and a candidate that is not significantly better
never becomes the live version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agentgym_runtime.demo import Demo, DemoConfig, two_proportion_z

pytestmark = pytest.mark.slow


def test_two_proportion_z() -> None:
    z, p = two_proportion_z(64, 100, 95, 100)
    assert z == pytest.approx(5.43, abs=0.01)
    assert p == pytest.approx(2.82e-8, rel=0.01)
    assert two_proportion_z(50, 100, 50, 100) == (0.0, 0.5)
    assert two_proportion_z(0, 0, 1, 1) == (0.0, 1.0)


def test_shortened_demo_runs_every_stage(demo: Any, demo_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(demo_home / "models", home / "models")  # reuse the session's built model
    config = DemoConfig(
        home=home,
        minutes=2.5,
        users=2,
        min_new_episodes=24,
        schedule="3s",
        grpo_steps=2,
        eval_tasks=80,
        after_promotion_episodes=5,
        gate_min_tool_calls=20,
    )
    summary = Demo(config).run()
    json.dumps(summary)  # the --json summary is one JSON object
    assert summary["scenario"] == "customer_support"
    assert summary["episodes_served"] >= 24
    versions = {v["version"]: v for v in summary["versions"]}
    # The scheduler retrains whenever enough new episodes arrived: one candidate per succeeded run.
    succeeded = [r["candidate_version"] for r in summary["training_runs"] if r["status"] == "succeeded"]
    assert succeeded[0] == 1
    assert set(versions) == {0, *succeeded}
    assert 0.5 <= versions[0]["heldout_tool_reliability"] <= 0.8
    assert versions[0]["episodes"] >= 24
    import duckdb

    con = duckdb.connect(summary["store"], read_only=True)
    try:
        stored = con.execute(
            "SELECT policy_version, count(*) FROM episodes WHERE agent = 'customer-support-bot' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        events = [
            r[0]
            for r in con.execute(
                "SELECT to_status FROM policy_events WHERE version = 1 ORDER BY occurred_at"
            ).fetchall()
        ]
    finally:
        con.close()
    assert stored[0][0] == 0
    assert stored[0][1] >= 24
    assert events[:2] == ["candidate", "canary"]
    # Only the gate moves a candidate further: to live (it was significantly better on the canary's
    # traffic), or back (it was not); a version never goes live without having been a canary.
    promoted = summary["promoted_version"]
    if promoted is not None:
        con = duckdb.connect(summary["store"], read_only=True)
        try:
            path = [
                r[0]
                for r in con.execute(
                    "SELECT to_status FROM policy_events WHERE version = ? ORDER BY occurred_at", [promoted]
                ).fetchall()
            ]
        finally:
            con.close()
        # The gate logs each "hold" as canary -> canary; the distinct path is what matters.
        distinct = [status for i, status in enumerate(path) if i == 0 or status != path[i - 1]]
        assert distinct[:3] == ["candidate", "canary", "live"]
    assert Path(summary["export"]).exists()
    from agentgym_runtime.trainers.scheduler import registered_training

    assert "customer-support-bot" not in registered_training()
