"""Trainers in stages (``trainer=["sft", "grpo"]``): which stage each job runs, with which options."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import agentgym_runtime as agentgym
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from agentgym_runtime.trainers.scheduler import (
    TrainingConfig,
    alone,
    registered_training,
    stage_for,
    stage_options,
    training_config,
)
from tests.trainers.test_scheduler import FAKES, run_row, serve

STAGE_ECHO = f"{FAKES}:StageEchoTrainer"


def staged(**overrides: Any) -> TrainingConfig:
    values: dict[str, Any] = {
        "trainer": ["sft", "grpo"],
        "gpu": "cpu",
        "min_new_episodes": 3,
        "timeout_s": 60.0,
        "trainer_options": {
            "trainer_class": STAGE_ECHO,
            "shared": 1,
            "sft": {"tag": "supervised"},
            "grpo": {"tag": "reinforce", "steps": 5},
        },
    }
    values.update(overrides)
    return training_config("support", **values)


def test_each_job_runs_the_stage_after_the_one_that_trained_the_served_version(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    scheduler, registry = agentgym_runtime.scheduler, agentgym_runtime.policies
    config = staged()

    def run_and_read(start: int, **kwargs: Any) -> tuple[str, dict[str, Any], int | None]:
        serve(4, start=start)
        predicted = scheduler.staged(config).trainer  # what `agentgym train` shows before it runs
        run = scheduler.run_now("support", config=config, **kwargs)
        assert kwargs or predicted == run.trainer
        assert run.status == "succeeded", run.error
        row = run_row(agentgym_runtime, run.run_id)
        metrics = json.loads(row["metrics"])
        assert row["trainer"] == run.trainer == metrics["stage"]
        assert registry.load("support", run.candidate_version).metadata["trainer_stage"] == run.trainer
        return run.trainer, metrics["options"], metrics["base_policy_version"]

    # From the base model: the first stage, with its own options over the shared ones.
    assert run_and_read(0) == ("sft", {"shared": 1, "tag": "supervised"}, 0)
    registry.promote("support", 1, actor="test")
    # From the version sft trained: grpo, from that version.
    assert run_and_read(4) == ("grpo", {"shared": 1, "tag": "reinforce", "steps": 5}, 1)
    registry.promote("support", 2, actor="test")
    # The last stage repeats.
    assert run_and_read(8) == ("grpo", {"shared": 1, "tag": "reinforce", "steps": 5}, 2)
    # A version no stage trained (a person's) starts the stages again.
    manual = registry.register("support", system_prompt="hand-written", trainer="manual")
    assert manual.version == 4
    registry.promote("support", 4, actor="test")
    assert run_and_read(12) == ("sft", {"shared": 1, "tag": "supervised"}, 4)
    # A trainer named for one run runs as named, with that stage's options: here the stages say sft...
    assert run_and_read(16, trainer="grpo") == ("grpo", {"shared": 1, "tag": "reinforce", "steps": 5}, 4)
    registry.promote("support", 6, actor="test")
    # ...and here grpo (v6 was trained by grpo).
    assert run_and_read(20, trainer="sft") == ("sft", {"shared": 1, "tag": "supervised"}, 6)
    assert [registry.load("support", v).metadata.get("trainer_stage") for v in range(1, 8)] == [
        "sft",
        "grpo",
        "grpo",
        None,
        "sft",
        "grpo",
        "sft",
    ]


def test_the_decorator_takes_a_list_of_trainers(agentgym_runtime: Runtime, no_registered_training: None) -> None:
    @agentgym.train_online(
        name="staged-agent",
        schedule="1h",
        trainer=["sft", "grpo"],
        gpu="cpu",
        trainer_options={"model_path": "/models/m", "grpo": {"steps": 20}},
    )
    def answer(question: str) -> str:
        return question

    assert answer("hi") == "hi"
    config = registered_training()["staged-agent"]
    assert (config.trainer, config.stages) == ("sft", ["sft", "grpo"])
    assert stage_options(config, "grpo") == {"model_path": "/models/m", "steps": 20}
    assert stage_options(config, "sft") == {"model_path": "/models/m"}


def test_a_config_read_back_keeps_its_stages_and_an_override_runs_alone() -> None:
    config = staged()
    again = training_config("support", **config.model_dump(exclude={"agent"}))
    assert again == config
    single = training_config("support", **alone(config, "grpo"))
    assert (single.trainer, single.stages) == ("grpo", [])
    assert single.trainer_options == {"trainer_class": STAGE_ECHO, "shared": 1, "tag": "reinforce", "steps": 5}
    one = training_config("support", trainer="grpo", trainer_options={"grpo": 3})
    assert one.stages == [] and one.trainer_options == {"grpo": 3}  # without stages, a plain option


@pytest.mark.parametrize(
    ("trainer", "options", "gpu", "message"),
    [
        ([], {}, "auto", "trainer must be a trainer's name or a non-empty list of them (stages run in turn"),
        (["sft", 3], {}, "auto", "trainer must be a trainer's name or a non-empty list of them"),
        (["sft", ""], {}, "auto", "trainer must be a trainer's name or a non-empty list of them"),
        (["sft", "gpro"], {}, "auto", "unknown trainer 'gpro'; choose one of: "),
        (
            ["sft", "grpo"],
            {"grpo": 5},
            "auto",
            "trainer_options['grpo'] must be a mapping of the 'grpo' stage's own options, got int",
        ),
        (["sft", "verl"], {}, "cpu", "trainer 'verl' needs a CUDA GPU; gpu='cpu' cannot work"),
        (["sft", "grpo"], {"grpo": {"trainer_class": "nope"}}, "auto", "trainer_class must be 'module:Class'"),
    ],
)
def test_bad_stages_are_refused_naming_what_is_wrong(
    trainer: Any, options: dict[str, Any], gpu: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        training_config("support", trainer=trainer, trainer_options=options, gpu=gpu)
    assert message in str(caught.value)


@given(
    stages=st.lists(st.sampled_from(["sft", "grpo", "demos", "apo"]), min_size=1, max_size=4, unique=True),
    trained_by=st.one_of(st.none(), st.sampled_from(["sft", "grpo", "demos", "apo", "manual"])),
)
def test_the_next_stage_is_always_one_of_the_stages_and_never_goes_back(
    stages: list[str], trained_by: str | None
) -> None:
    config = TrainingConfig(agent="a", trainer=stages[0], stages=stages if len(stages) > 1 else [])
    chosen = stage_for(config, trained_by)
    assert chosen in stages
    if trained_by in stages:
        assert stages.index(chosen) == min(stages.index(trained_by) + 1, len(stages) - 1)
    else:
        assert chosen == stages[0]
