"""Shared fixtures of the CLI tests: a home with recorded episodes, and running the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.policy.gate import GateConfig
from agentgym_runtime.policy.router import RouterConfig
from agentgym_runtime.recording.capture import record_tool_failure
from agentgym_runtime.semconv import ToolOutcome
from agentgym_runtime.trainers.scheduler import training_config
from tests.cli.dashboard_agent import AGENT, support

ROOT = Path(__file__).resolve().parents[2]
PLANNED_CALLS = 1000  # the gate's horizon: the first look holds, the canary stays


def run_cli(*args: str, home: Path | None = None, columns: int = 200) -> subprocess.CompletedProcess[str]:
    """Run ``agentgym ARGS`` in a subprocess (as users do) with ``COLUMNS`` set."""
    env = {**os.environ, "COLUMNS": str(columns)}
    if home is not None:
        env["AGENTGYM_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "agentgym_runtime.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    agentgym.configure(home=home)

    @agentgym.tool
    def lookup(order_id: int) -> str:
        return "ok"

    for i in range(4):
        with agentgym.episode(agent="support"):
            lookup(order_id=i)
            if i % 2:
                record_tool_failure("refund_all", ToolOutcome.UNKNOWN_TOOL, call_id=f"x{i}")
    agentgym.shutdown()
    return home


def fill_trained_home(home: Path) -> list[tuple[int, int]]:
    """A home as a real service leaves it; returns the canary phase's ``(order, version)`` per episode.

    12 episodes of ``dashboard_agent.support`` under v0, a real training run (the tiny rounds
    trainer in a job subprocess) whose candidate v1 the scheduler canaries at 50%, 40 more
    episodes split between v0 and v1 by session, and one look of the gate (a hold).
    """
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT)  # the job subprocess imports the tiny trainer from tests/
    runtime = agentgym.configure(home=home, strict=True, schedule_delay_ms=20)
    try:
        for order in range(12):
            assert support(order, f"before-{order}") == 0
        config = training_config(
            AGENT,
            trainer="tiny",
            gpu="cpu",
            min_new_episodes=1,
            canary_share=0.5,
            trainer_options={"trainer_class": "tests.cli.tiny_trainer:RoundsTrainer", "rounds": 3, "round_s": 0.0},
        )
        run = runtime.scheduler.run_now(AGENT, config=config)
        assert (run.status, run.candidate_version) == ("succeeded", 1), (run.reason, run.error, run.log_tail)
        gate = GateConfig(min_tool_calls=10, max_tool_calls=PLANNED_CALLS)
        runtime.router.set_config(RouterConfig(gate=gate, evaluate_every=10**6))  # one look, when asked
        canary = [(order, support(order, f"after-{order}")) for order in range(40)]
        decision = runtime.router.evaluate(AGENT)
        assert decision.action == "hold" and decision.look is not None, decision.reason
    finally:
        agentgym.shutdown()
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    return canary
