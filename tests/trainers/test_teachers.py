"""Teachers (``train_online(teachers=[...])``): another agent's episodes train this one (distillation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from agentgym_runtime.trainers.scheduler import registered_training, training_config
from tests.trainers.test_scheduler import FAKES, run_row

SNAPSHOTS = f"{FAKES}:SnapshotsTrainer"


def ask(name: str, sessions: list[str]) -> None:
    """Each session one episode of the agent ``name`` (a teacher, or the student)."""

    @agentgym.train_online(name=name)
    def agent(question: str) -> str:
        return question.upper()

    for session in sessions:
        with agentgym.episode(session_id=session):
            agent(f"question of {session}")


def test_each_job_trains_on_its_teachers_episodes_of_the_same_window(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    scheduler = agentgym_runtime.scheduler
    config = training_config(
        "student",
        trainer="sft",
        teachers=["big-model", "quiet"],
        min_new_episodes=5,
        gpu="cpu",
        timeout_s=60.0,
        trainer_options={"trainer_class": SNAPSHOTS, "extra_snapshots": ["/nowhere/absolute"]},
    )
    ask("big-model", ["t1", "t2", "t3", "t4"])
    ask("student", ["s1"])
    ask("bystander", ["b1", "b2"])  # not a teacher: never read

    run = scheduler.run_now("student", config=config)
    assert run.status == "failed"  # the user's own absolute extra snapshot does not exist...
    assert "/nowhere/absolute" in (run.error or "") + (run.log_tail or "")  # ...and the job says which

    config = training_config(
        "student",
        **{
            **config.model_dump(exclude={"agent"}),
            "trainer_options": {
                "trainer_class": SNAPSHOTS,
            },
        },
    )
    run = scheduler.run_now("student", config=config)
    assert run.status == "succeeded", run.error
    row = run_row(agentgym_runtime, run.run_id)
    assert row["episodes"] == 5  # its own 1 and its teacher's 4; a teacher with none adds no directory
    metrics = json.loads(row["metrics"])
    assert metrics["extra_snapshots"] == ["teachers/big-model"]
    assert metrics["read"] == {".": ["s1"], "teachers/big-model": ["t1", "t2", "t3", "t4"]}
    assert (Path(row["snapshot_path"]) / "teachers" / "big-model" / "manifest.json").is_file()

    # The next window: only what ended since that run, teachers' included, counts.
    ask("quiet", ["q1"])
    ask("big-model", ["t5"])
    skipped = scheduler.run_now("student", config=config)
    assert skipped.status == "skipped"
    assert skipped.reason is not None
    assert skipped.reason.startswith("too few new episodes: 2 since the last successful run (")
    assert skipped.reason.endswith("(teachers' included: big-model 1, quiet 1), at least 5 needed")

    forced = scheduler.run_now("student", config=config, force=True)
    assert forced.status == "succeeded", forced.error
    read = json.loads(run_row(agentgym_runtime, forced.run_id)["metrics"])["read"]
    assert read == {".": [], "teachers/big-model": ["t5"], "teachers/quiet": ["q1"]}


def test_the_decorator_takes_teachers(agentgym_runtime: Runtime, no_registered_training: None) -> None:
    @agentgym.train_online(name="small-model", teachers=("big-model",), trainer=["sft", "grpo"], gpu="cpu")
    def small(question: str) -> str:
        return question

    assert registered_training()["small-model"].teachers == ["big-model"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"teachers": "big-model"}, "teachers must be a list of agent names, got 'big-model'"),
        ({"teachers": ["big-model", ""]}, "teachers must be agent names (non-empty strings), got ''"),
        ({"teachers": [3]}, "teachers must be agent names (non-empty strings), got 3"),
        ({"teachers": ["student"]}, "agent 'student' cannot be its own teacher"),
        (
            {"teachers": ["big-model"], "trainer": ["sft", "apo"]},
            "the 'apo' trainer replays agent 'student''s own entrypoint and would ignore its teachers' traces: "
            "teachers are read by the 'sft' and 'grpo' trainers",
        ),
    ],
)
def test_teachers_that_cannot_work_are_refused_naming_why(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        training_config("student", gpu="cpu", **{"trainer": "sft", **options})
    assert message in str(raised.value)
