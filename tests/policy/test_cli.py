"""``agentgym policies list | show | diff | promote | rollback | pin | unpin``."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import agentgym_runtime as agentgym
from agentgym_runtime.cli.app import build_app
from agentgym_runtime.policy.registry import PolicyRegistry
from agentgym_runtime.recording.runtime import Runtime
from tests.policy.helpers import scripted_episode


def _run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), ["policies", *args, "--home", str(home)], env={"COLUMNS": "220"})
    return result.exit_code, result.output


@pytest.fixture
def home(agentgym_runtime: Runtime) -> Path:
    agentgym.register_policy("support", system_prompt="Look the order up first.", trainer="apo", metrics={"val": 0.91})
    agentgym.register_policy(
        "support", system_prompt="Answer briefly.", tool_descriptions={"get_order": "Fetch an order by numeric id."}
    )
    rng = random.Random(3)
    for i in range(6):
        scripted_episode("support", f"s{i}", {0: 0.5, 1: 1.0, 2: 1.0}, rng)
    agentgym.promote("support", 1)
    for i in range(4):
        scripted_episode("support", f"t{i}", {0: 0.5, 1: 1.0, 2: 1.0}, rng)
    agentgym_runtime.shutdown()  # the CLI is another process; in this one, release the DuckDB file
    return agentgym_runtime.settings.home


def test_list_and_show_with_metrics_from_the_store(home: Path) -> None:
    code, out = _run(home, "list")
    assert code == 0, out
    assert "support · live v1 · sequence 3" in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│ v")}
    assert "retired" in lines["v0"] and "live" in lines["v1"] and "apo" in lines["v1"]
    assert "candidate" in lines["v2"] and "Answer briefly." in lines["v2"]
    code, out = _run(home, "show", "support")
    assert code == 0, out
    assert "support@v1 · live" in out and "Look the order up first." in out and '{"val": 0.91}' in out
    metrics = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]]
        for line in out.splitlines()
        if line.startswith("│ v")
    }
    # 6 episodes on v0 then 4 on v1, 2 tool calls each; v1 always succeeds.
    assert metrics["v0"][1:4] == ["retired", "6", "12"]
    assert metrics["v1"][1:5] == ["live", "4", "8", "100.0%"]


def test_diff_promote_rollback_pin_unpin(home: Path) -> None:
    code, out = _run(home, "diff", "support", "v1", "v2")
    assert code == 0, out
    assert "system_prompt" in out and "Look the order up first." in out and "Answer briefly." in out
    assert "tool get_order" in out and "Fetch an order by numeric id." in out
    code, out = _run(home, "promote", "support", "2", "--canary", "0.25")
    assert (code, "support@v2 is the canary for 25% of sessions" in out) == (0, True), out
    code, out = _run(home, "rollback", "support", "--reason", "too chatty")
    assert (code, "rolled back canary v2; live stays v1" in out) == (0, True), out
    code, out = _run(home, "pin", "support", "v0")
    assert (code, "support pinned to v0" in out) == (0, True), out
    code, out = _run(home, "unpin", "support")
    assert (code, "support unpinned; live is v1" in out) == (0, True), out
    events = PolicyRegistry(home / "policies").events("support")
    assert events[-3].reason == "too chatty" and events[-3].actor.startswith("cli:")
    code, out = _run(home, "promote", "support", "1")
    assert code == 1 and "support@v1 is already live" in out


def test_errors_name_what_exists(home: Path) -> None:
    code, out = _run(home, "show", "nobody")
    assert code == 1 and "no policies registered for agent 'nobody'; agents with policies: support" in out
    code, out = _run(home, "promote", "support", "9")
    assert code == 1 and "agent 'support' has no version 9; versions: 0, 1, 2" in out


def test_cli_promotion_reaches_the_serving_process(agentgym_runtime: Runtime) -> None:
    v1 = agentgym.register_policy("bot", system_prompt="new")
    assert agentgym_runtime.router.resolve("bot", None).version == 0
    env = {**os.environ, "AGENTGYM_HOME": str(agentgym_runtime.settings.home), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "agentgym_runtime.cli", "policies", "promote", "bot", str(v1.version)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    agentgym_runtime.router.invalidate("bot")  # no need to wait out the refresh interval here
    with agentgym.episode(agent="bot") as ep:
        pass
    assert ep.policy_version == 1
    agentgym_runtime.policies.sync_store()  # the CLI's events reach this process's DuckDB
    rows = agentgym_runtime.store.query("SELECT version, to_status, actor FROM policy_events WHERE to_status = 'live'")
    assert len(rows) == 1 and rows[0][:2] == (1, "live") and rows[0][2].startswith("cli:")
