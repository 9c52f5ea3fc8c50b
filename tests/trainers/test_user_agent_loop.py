"""Issue 19, must show: the whole loop on a new user's own agent, a script run as ``python app.py``.

The agent (``apps/support_app.py``) is plain Python with ``@agentgym.tool`` tools and a scripted
model that makes realistic mistakes unless its policy shows a demonstration of the question's
kind. Its episodes are recorded by a real ``python support_app.py`` process (``__main__``), and
the scheduler trains on them as the schedule does: the job imports the script again by its path,
the tools reach the trainer from the ``execute_tool`` spans, and the replays see the candidate as
``agentgym.current_policy()``. The candidate goes to canary at the configured share, and the
next calls that get it see its demonstrations. (The gate's automatic promotion or rollback of
the canary is helper ``policy``'s part of issue 19; this test stops at the canary until it lands.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.trainers.dataset import read_tasks

pytest.importorskip("agentlightning")

APP = Path(__file__).parent / "apps" / "support_app.py"
ROOT = Path(__file__).resolve().parents[2]


def _run_app(home: Path, rounds: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(APP), str(home), str(rounds)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_a_script_agent_is_trained_from_its_episodes_and_canaried(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # 40 episodes, the hard half failing. Without session ids every episode is its own session, so
    # the held-out half is a random draw of episodes: with 10 of each hard kind, the chance that it
    # misses one kind (and the chosen set need not cover it) is about 4 in 10,000.
    _run_app(home, rounds=10)

    runtime = agentgym.configure(home=home)
    try:
        entrypoints = runtime.store.query("SELECT DISTINCT entrypoint FROM episodes WHERE agent = 'my-support'")
        assert entrypoints == [(f"{APP}:support",)]  # __main__ recorded by the script's path
        # The service's own config, as train_online(...) in the script registers it.
        from agentgym_runtime.trainers.scheduler import training_config

        config = training_config(
            "my-support",
            trainer="demos",
            canary_share=0.5,
            schedule="1h",
            min_new_episodes=4,
            gpu="cpu",
            entrypoint=f"{APP}:support",
            trainer_options={"embedder": "lexical", "heldout_fraction": 0.5},
        )
        run = runtime.scheduler.run_now("my-support", config=config)
        assert run.status == "succeeded", (run.reason, run.error, run.log_tail)
        assert run.episodes == 40
        tasks = read_tasks(run.snapshot_path or "")
        assert {t["name"] for t in tasks[0].tools} == {"get_order", "refund"}  # tools reached the trainer
        metrics = run.metrics
        assert metrics["scored_by"] == "replay"
        assert metrics["replay_errors"] == 0
        assert metrics["heldout_reward_before"] < metrics["heldout_reward_after"] == 1.0
        assert run.reason is None and run.candidate_version == 1
        state = runtime.policies.read_state("my-support")
        assert state is not None and state.canary == 1
        candidate = runtime.policies.load("my-support", 1)
        kinds = {("cancel" if "cancel" in str(d.input) else "status") for d in candidate.demonstrations}
        assert kinds == {"cancel", "status"}
    finally:
        agentgym.shutdown()

    # The next calls: the canary's share of them gets v1, whose demonstrations the agent sees.
    _run_app(home, rounds=6)
    runtime = agentgym.configure(home=home)
    try:
        rows = runtime.store.query(
            "SELECT policy_version, count(*), avg(tool_reliability) FROM episodes "
            "WHERE agent = 'my-support' AND input LIKE '%hard%' AND started_at > ("
            "  SELECT max(started_at) FROM training_runs WHERE agent = 'my-support') GROUP BY 1 ORDER BY 1"
        )
        by_version = {version: (count, reliability) for version, count, reliability in rows}
        assert sum(count for count, _ in by_version.values()) == 12
        assert by_version[1][0] > 0 and by_version[1][1] == 1.0  # the candidate's calls: no mistakes
        assert by_version.get(0, (0, 0.0))[1] == 0.0  # the incumbent's: the same mistakes as before
    finally:
        agentgym.shutdown()
