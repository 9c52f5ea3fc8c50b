"""``agentgym train --now`` shows round i/N, the reward and the ETA, then a summary (a real job)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import agentgym_runtime as agentgym
from agentgym_runtime.cli.progress import Report, TrainingProgress
from agentgym_runtime.services import Services
from agentgym_runtime.trainers.scheduler import TrainingConfig, list_runs

ROOT = Path(__file__).resolve().parents[2]
TINY = "trainer_class=tests.cli.tiny_trainer:RoundsTrainer"


@agentgym.tool
def get_order(order_id: int) -> dict[str, Any]:
    """Look up an order."""
    return {"id": order_id, "status": "shipped"}


def _record(count: int) -> None:
    for i in range(count):
        with agentgym.episode(agent="support", session_id=f"s{i % 2}"):
            get_order(order_id=i)


def _train(home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    command = [sys.executable, "-m", "agentgym_runtime.cli", "train", "--agent", "support", "--home", str(home)]
    options = ["--now", "--trainer", "tiny", "--gpu", "cpu", "--option", TINY, "--option", "rounds=3", *extra]
    return subprocess.run([*command, *options], capture_output=True, text=True, timeout=120, env=env, check=False)


def test_report_parsing_reads_rounds_and_reward() -> None:
    assert Report.parse(0.5, "step 3/8: reward 0.625") == Report(0.5, "step 3/8: reward 0.625", 3, 8, 0.625)
    assert Report.parse(1.5, "Round 2 / 4, reward=-0.5") == Report(1.0, "Round 2 / 4, reward=-0.5", 2, 4, -0.5)
    plain = Report.parse(0.1, "snapshot of 4 episodes")
    assert (plain.round, plain.rounds, plain.reward) == (None, None, None)


def test_plain_lines_carry_eta_and_summary_keeps_the_last_round() -> None:
    import io

    from rich.console import Console

    ticks = iter([0.0, 0.0, 10.0, 20.0, 30.0])
    out = Console(file=io.StringIO(), width=120)
    with TrainingProgress("support (tiny)", out, clock=lambda: next(ticks)) as view:
        view.update(0.25, "round 1/4: reward 0.250")
        view.update(0.25, "round 1/4: reward 0.250")  # a repeat is not printed again
        view.update(0.5, "evaluating")
    assert out.file.getvalue().splitlines() == [  # type: ignore[attr-defined]
        "support (tiny):  25% · round 1/4 · reward 0.250 · ETA 30.0 s · round 1/4: reward 0.250",
        "support (tiny):  50% · round 1/4 · reward 0.250 · ETA 20.0 s · evaluating",
    ]
    assert view.summary("succeeded") == "training succeeded: 1/4 rounds, last reward 0.250 in 30.0 s"


def test_train_now_prints_each_round_reward_eta_and_summary(agentgym_runtime: Services) -> None:
    _record(4)
    home = agentgym_runtime.settings.home
    agentgym.shutdown()  # the CLI opens the store itself

    done = _train(home, "--option", "round_s=0.6")

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    rounds = [line for line in lines if line.startswith("support (tiny):") and "· round " in line]
    seen = sorted({re.search(r"· round (\d)/3 ·", line).group(1) for line in rounds})  # type: ignore[union-attr]
    assert seen == ["1", "2", "3"], done.stdout
    assert any("round 3/3 · reward 1.000 · ETA" in line for line in rounds)
    assert "reward 0.333" in done.stdout
    summary = [line for line in lines if line.startswith("training succeeded")]
    assert len(summary) == 1 and summary[0].startswith("training succeeded: 3/3 rounds, last reward 1.000 in ")
    assert "candidate policy: v1" in done.stdout


def test_train_follows_a_run_the_service_executes(agentgym_runtime: Services) -> None:
    _record(4)
    scheduler = agentgym_runtime.scheduler
    scheduler.add_agent(
        TrainingConfig(
            agent="support",
            trainer="tiny",
            min_new_episodes=3,
            gpu="cpu",
            timeout_s=60.0,
            trainer_options={"trainer_class": "tests.cli.tiny_trainer:RoundsTrainer"},
        )
    )
    scheduler.serve_requests(interval_s=0.1)
    assert agentgym.flush()

    done = _train(agentgym_runtime.settings.home, "--option", "round_s=0.8")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "a running service holds the store: asked it to train 'support'" in done.stderr
    assert re.search(r"^support: .*· round [123]/3 · reward 0\.\d{3} · ETA ", done.stdout, re.M), done.stdout
    assert re.search(r"^training succeeded: 3/3 rounds, last reward 1\.000 in ", done.stdout, re.M), done.stdout
    rows = list_runs(agentgym_runtime.store, "support")
    assert [(r["status"], r["candidate_version"]) for r in rows] == [("succeeded", 1)]
    scheduler.shutdown()
