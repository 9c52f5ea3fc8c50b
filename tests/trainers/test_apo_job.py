"""``apo`` as a real training job: the scheduler snapshots recorded episodes, runs Agent Lightning's APO in a
subprocess against a local OpenAI-compatible endpoint, and registers the candidate policy with its metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.errors import ToolArgumentsError
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from agentgym_runtime.trainers.dataset import Task
from agentgym_runtime.trainers.scheduler import TrainingConfig, list_runs
from tests.trainers.openai_stub import IMPROVED_PROMPT, MARKER

pytest.importorskip("agentlightning")
pytest.importorskip("poml")

#: What the replayed agent's get_order calls returned in the job (the job process appends, the test reads).
REPLAYED_LOG = "replayed_results.jsonl"


@agentgym.tool
def get_order(order_id: int) -> dict[str, Any]:
    """Look up an order."""
    raise AssertionError("the real get_order must not run during a training replay")


def replay_support(task: Task, policy: Policy, sandbox: Any) -> str:
    """The support agent as the job replays it: it calls the real ``@agentgym.tool`` (the sandbox answers).

    Only a system prompt carrying the marker makes it pass the order id as an integer; otherwise it
    passes text, which fails the tool's schema.
    """
    order_id = task.input["order_id"]
    argument = order_id if policy.system_prompt and MARKER in policy.system_prompt else f"order {order_id}"
    try:
        found = get_order(order_id=argument)
    except ToolArgumentsError:
        return "sorry"
    log = Path(task.input["log_dir"]) / REPLAYED_LOG
    with log.open("a") as handle:
        handle.write(json.dumps({"order_id": order_id, "result": found}) + "\n")
    return f"order {order_id} is {found['status']}"


def record_episodes(log_dir: Path) -> None:
    """Eight episodes in four sessions: the model was offered get_order and called it with the order id."""
    from agentgym_runtime.recording.capture import start_llm_call
    from agentgym_runtime.recording.context import RequestedToolCall

    @agentgym.tool(name="get_order")
    def recorded_get_order(order_id: int) -> dict[str, Any]:
        """Look up an order."""
        return {"id": order_id, "status": "shipped"}

    def support(question: str, order_id: int, log_dir: str) -> str:
        call = start_llm_call(
            model="scripted",
            provider="test",
            tools=[recorded_get_order.definition()],
            input_messages=[{"role": "user", "content": question}],
            system_instructions="Be exact.",
        )
        call.finish(
            requested=[RequestedToolCall.from_raw("get_order", f"c{order_id}", json.dumps({"order_id": order_id}))]
        )
        return f"order {order_id} is {recorded_get_order(order_id=order_id)['status']}"

    agents = [agentgym.train_online(name="support", session_id=f"s{k}")(support) for k in range(4)]
    for i in range(8):
        agents[i % 4](f"where is order {i}?", i, str(log_dir))
    assert agentgym.flush()


@pytest.mark.slow
def test_apo_job_through_the_scheduler_registers_the_candidate(
    agentgym_runtime: Runtime, recorded: Recorded, openai_stub: dict[str, Any], tmp_path: Path
) -> None:
    record_episodes(tmp_path)
    assert len(recorded.episodes("support")) == 8
    run = agentgym_runtime.scheduler.run_now(
        "support",
        config=TrainingConfig(
            agent="support",
            trainer="apo",
            min_new_episodes=8,
            gpu="cpu",
            timeout_s=540.0,
            heldout_fraction=0.25,
            trainer_options={
                "base_url": openai_stub["base_url"],
                "model": "stub",
                "rounds": 1,
                "beam_width": 1,
                "branch_factor": 1,
                "replay": f"{__name__}:replay_support",
            },
        ),
    )
    assert run.status == "succeeded", run.log_tail
    assert run.candidate_version == 1
    (row,) = list_runs(agentgym_runtime.store, "support")
    assert (row["status"], row["trainer"], row["episodes"], row["candidate_version"]) == ("succeeded", "apo", 8, 1)
    metrics = json.loads(row["metrics"])
    assert metrics["algorithm"] == "agentlightning.APO"
    assert (metrics["train_tasks"], metrics["heldout_tasks"]) == (6, 2)  # one session of four held out
    # Recorded prompt "Be exact.": text arguments, invalid (0). APO's prompt: valid calls (1). The
    # get_order description stage finds nothing better, so no description is kept.
    assert (metrics["heldout_reward_before"], metrics["heldout_reward_after"]) == (0.0, 1.0)
    assert [(s["resource"], s["heldout_reward_best"], s["kept"]) for s in metrics["stages"]] == [
        ("system_prompt", 1.0, True),
        ("tool:get_order", 1.0, False),
    ]

    policy = agentgym_runtime.policies.load("support", 1)
    assert policy.trainer == "apo"
    assert policy.system_prompt == IMPROVED_PROMPT
    assert policy.tool_descriptions == {}
    assert policy.metrics == metrics
    assert policy.parent_version == 0
    assert policy.metadata["training_run"] == run.run_id
    assert [r["kind"] for r in openai_stub["requests"]] == ["gradient", "edit"] * 2
    # The replayed get_order calls never ran the real tool: each got the result recorded for its arguments.
    replayed = [json.loads(line) for line in (tmp_path / REPLAYED_LOG).read_text().splitlines()]
    assert replayed
    assert all(r["result"] == {"id": r["order_id"], "status": "shipped"} for r in replayed)
