"""``agentgym report``: a self-contained HTML file, rendered in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from agentgym_runtime.cli.sources import HomeSource
from agentgym_runtime.policy.registry import PolicyRegistry
from tests.cli.conftest import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _look(number: int, calls: int, z: float, boundary: float) -> dict[str, object]:
    return {
        "sequential": {
            "look": {
                "number": number,
                "tool_calls": calls,
                "information_fraction": calls / 400,
                "boundary_z": boundary,
                "z": z,
                "alpha_spent": 0.001 * number,
                "alpha_released": 0.001,
                "final": False,
            }
        }
    }


@pytest.fixture
def full_home(populated: Path) -> Path:
    """The populated home plus a canary judged twice and promoted, a training run and a demo summary."""
    registry = PolicyRegistry(populated / "policies", actor="test")
    version = registry.register("support", system_prompt="Use lookup.").version
    registry.start_canary("support", version, 0.5)
    registry.log_decision(
        "support", version, "gate: hold (no significant difference yet)", _look(1, 100, 1.1, 3.7), actor="gate"
    )
    registry.log_decision(
        "support", version, "gate: hold (no significant difference yet)", _look(2, 200, 2.4, 2.5), actor="gate"
    )
    registry.promote("support", version, actor="gate", reason="gate: better: tool reliability 0.99 vs 0.67")
    con = duckdb.connect(str(populated / "traces.duckdb"))
    metrics = {"heldout_reward_before": 0.41, "heldout_reward_after": 0.83}
    con.execute(
        "INSERT INTO training_runs (run_id, agent, trainer, status, scheduled_at, candidate_version, metrics) "
        "VALUES ('run-abcdef12', 'support', 'grpo', 'succeeded', now(), ?, ?)",
        [version, json.dumps(metrics)],
    )
    con.close()
    job = populated / "training" / "support" / "run-abcdef12"
    job.mkdir(parents=True)
    job.joinpath("progress.jsonl").write_text(
        "".join(
            json.dumps({"time": 0, "fraction": i / 4, "message": f"round {i}/4 reward {r}"}) + "\n"
            for i, r in enumerate((0.2, 0.45, 0.6, 0.7), start=1)
        )
    )
    summary = {
        "scenario": "customer_support",
        "versions": [
            {"version": 0, "heldout_tool_reliability": 0.62, "heldout_task_success": 0.4},
            {"version": 1, "heldout_tool_reliability": 0.97, "heldout_task_success": 0.9},
        ],
        "improvement": {"test": "one-sided two-proportion z-test on held-out tool calls", "z": 5.1},
    }
    (populated / "demo-summary.json").write_text(json.dumps(summary))
    return populated


def test_home_source_reads_every_part(full_home: Path) -> None:
    snap = HomeSource(full_home).read()
    assert [a["agent"] for a in snap.agents] == ["support"] and snap.agents[0]["live"] == 1
    assert [(look["tool_calls"], look["z"]) for look in snap.looks] == [(100, 1.1), (200, 2.4)]
    assert any(d["to_status"] == "live" and "0.99 vs 0.67" in d["reason"] for d in snap.decisions)
    assert sum(r["calls"] for r in snap.reliability) == 6
    assert [(f["tool"], f["outcome"], f["calls"]) for f in snap.failures] == [("refund_all", "unknown_tool", 2)]
    assert snap.runs[0]["rewards"] == [0.2, 0.45, 0.6, 0.7] and snap.runs[0]["progress"]["fraction"] == 1.0
    assert snap.demo is not None and snap.demo["scenario"] == "customer_support"
    assert HomeSource(full_home).read().to_json()["looks"][1]["boundary_z"] == 2.5


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(full_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run_cli("report", str(out), "--price-in", "1", "--price-out", "2", home=full_home)
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert len(html) < 100_000
    dom = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    for caption in (
        "Tool reliability per policy version (hourly)",
        "Failed tool calls by tool and outcome",
        "Gate looks: reliability z against the promotion boundary",
        "Training reward per round",
        "Held-out reward before / after each training run",
        "Cost per episode per policy version",
        "Demo before / after on held-out tasks (customer_support)",
    ):
        assert caption in page, caption
    assert page.count("<svg") == 7
    assert "support v0 z" not in page and "support v1 z" in page  # the looks of the canary v1
    assert "gate: better: tool reliability 0.99 vs 0.67" in page
    assert "run-abcdef12" in page and "97.0%" in page
    assert "refund_all" in page and "unknown_tool" in page
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1000,2400",
            out.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000
