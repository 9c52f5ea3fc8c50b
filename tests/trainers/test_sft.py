"""The ``sft`` trainer on a tiny chat model built here: held-out tool-call accuracy, distillation, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgym_runtime.models.chat_format import ChatTemplateError, PadTokenError
from agentgym_runtime.policy.artifact import write_artifact
from agentgym_runtime.recording.policy import LLMConfig, Policy
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.trainers.base import TRAINERS, TrainerUnavailable, TrainingJobSpec
from agentgym_runtime.trainers.dataset import write_snapshot
from tests.trainers.chat_toy import QWEN_LIKE, build_model, record_support

pytest.importorskip("peft")

# A 2-layer random Llama has no pretrained representations for LoRA to steer: it learns the call
# with LoRA on attention and a trained copy of the head (modules_to_save), at a learning rate that
# LoRA's zero-initialised B reaches in ~70 steps. LoRA on the head instead (rank 8) measured a
# held-out reward of 0.0 (loss 0.92), the default all-linear LoRA at 2e-3 for 3 epochs 0.0 (loss 6.3 -> 6.1).
FAST = {
    "epochs": 12,
    "batch_size": 8,
    "learning_rate": 1e-2,
    "max_new_tokens": 32,
    "lora_r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj", "v_proj"],
    "modules_to_save": ["lm_head"],
}


def _spec(tmp_path: Path, snapshot: Path, model: Path, agent: str = "support", **options: object) -> TrainingJobSpec:
    return TrainingJobSpec(
        run_id="r1",
        agent=agent,
        trainer="sft",
        snapshot_dir=str(snapshot),
        output_dir=str(tmp_path / "out"),
        device="cpu",
        options={"model_path": str(model), "heldout_fraction": 0.25, **FAST, **options},
    )


def test_sft_is_registered() -> None:
    assert TRAINERS["sft"] == "agentgym_runtime.trainers.sft:SFTTrainer"


def test_sft_learns_the_recorded_turns_measures_heldout_calls_and_saves_an_adapter_the_registry_takes(
    agentgym_runtime: Runtime, tmp_path: Path
) -> None:
    from agentgym_runtime.trainers.sft import SFTTrainer

    record_support("support", list(range(10, 42)), typo_every=4)
    assert agentgym_runtime.flush()
    snapshot = tmp_path / "snap"
    write_snapshot(agentgym_runtime.store, "support", snapshot, run_id="r1")
    model = build_model(tmp_path / "model", template=QWEN_LIKE)
    messages: list[str] = []

    result = SFTTrainer().train(_spec(tmp_path, snapshot, model), lambda f, m: messages.append(m))

    metrics = result.metrics
    assert metrics["tool_format"] == "hermes"  # plain ChatML: the tool block teaches Hermes calls
    assert metrics["teacher_models"] == ["teacher-large"]
    # 32 single-session episodes, a quarter of the sessions (8) held out; the sessions are named, so
    # the split is the same in every run: 24 train episodes, 8 held-out ones give 10 samples.
    assert metrics["heldout_samples"] == 10
    train_episodes = int(messages[0].split(" of ")[1].split()[0])
    assert metrics["train_samples"] == 2 * train_episodes  # its successful call and its answer
    assert metrics["heldout_reward_before"] == 0.0  # a random model writes no valid call
    assert metrics["heldout_exact_before"] == 0.0
    # Held-out sessions (order ids never trained on): the trained adapter writes a Hermes call of
    # the right shape that runs in the replay sandbox (measured 1.0 on every held-out call).
    assert metrics["heldout_reward_after"] >= 0.5
    # ... but not with the user's order id: each id is one BPE token here, and the held-out ones were
    # never a target, so a 2-layer random model cannot copy them (measured 0.0; with digits split one
    # by one as well). Copying the facts is asserted on a pretrained model (tests/models/test_smollm2.py).
    # An exact call is a valid call with the right arguments, so it can never score above the valid ones.
    assert metrics["heldout_exact_after"] <= metrics["heldout_reward_after"]
    assert metrics["train_samples"] == 48
    assert metrics["train_loss_last_epoch"] < metrics["train_loss_first_epoch"] * 0.1  # measured 4.6 -> 0.13
    assert messages[0].startswith(f"SFT on {metrics['train_samples']} recorded turns of {train_episodes} tasks")
    assert result.adapter == "adapter" and result.llm == LLMConfig(model=str(model), adapter="adapter")
    adapter = tmp_path / "out" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    policy = Policy(agent="support", version=1, llm=LLMConfig(model=str(model), adapter="adapter"), trainer="sft")
    stored = write_artifact(policy, tmp_path / "registry", adapter)
    assert (stored / "adapter" / "adapter_model.safetensors").is_file()


def test_distillation_trains_a_student_agent_on_a_teacher_agents_traces(
    agentgym_runtime: Runtime, tmp_path: Path
) -> None:
    from agentgym_runtime.trainers.sft import SFTTrainer

    record_support("teacher", list(range(10, 34)), model="gpt-large")
    record_support("student", [60, 61, 62, 63, 64, 65, 66, 67], model="small-open")
    assert agentgym_runtime.flush()
    write_snapshot(agentgym_runtime.store, "teacher", tmp_path / "teacher", run_id="t")
    write_snapshot(agentgym_runtime.store, "student", tmp_path / "student", run_id="s")
    model = build_model(tmp_path / "model", template=QWEN_LIKE)

    result = SFTTrainer().train(
        _spec(tmp_path, tmp_path / "student", model, agent="student", extra_snapshots=[str(tmp_path / "teacher")]),
        lambda f, m: None,
    )

    metrics = result.metrics
    assert metrics["teacher_models"] == ["gpt-large", "small-open"]
    # Every successful turn of both agents trains: 18 of the teacher's 24 sessions and 6 of the
    # student's 8 (each split holds out a quarter), a call and an answer each.
    assert metrics["train_samples"] == 2 * (18 + 6)
    assert metrics["heldout_samples"] == 8
    assert metrics["heldout_reward_before"] == 0.0
    assert metrics["train_loss_last_epoch"] < metrics["train_loss_first_epoch"] * 0.5
    assert metrics["heldout_reward_after"] >= 0.5


def test_with_nothing_held_out_there_is_no_heldout_score_and_the_candidate_counts(
    agentgym_runtime: Runtime, tmp_path: Path
) -> None:
    # Regression: heldout_fraction=0 reported held-out rewards 0 -> 0, which the scheduler reads as
    # "nothing learnt" and registers no candidate (every such run failed).
    from agentgym_runtime.trainers.scheduler.scheduler import learned_nothing
    from agentgym_runtime.trainers.sft import SFTTrainer

    record_support("support", [1, 2, 3, 4])
    assert agentgym_runtime.flush()
    write_snapshot(agentgym_runtime.store, "support", tmp_path / "snap", run_id="r1")
    model = build_model(tmp_path / "model", template=QWEN_LIKE)

    spec = _spec(tmp_path, tmp_path / "snap", model, heldout_fraction=0.0, epochs=1)
    metrics = SFTTrainer().train(spec, lambda f, m: None).metrics

    assert (metrics["heldout_samples"], metrics["train_samples"]) == (0, 8)
    held_out = ("heldout_reward_before", "heldout_reward_after", "heldout_exact_before", "heldout_exact_after")
    assert [metrics[key] for key in held_out] == [None] * 4
    assert learned_nothing(metrics) is None


def test_bad_input_is_refused_with_a_clear_error(agentgym_runtime: Runtime, tmp_path: Path) -> None:
    from agentgym_runtime.trainers.sft import SFTTrainer

    record_support("support", [1, 2, 3, 4])
    assert agentgym_runtime.flush()
    snapshot = tmp_path / "snap"
    write_snapshot(agentgym_runtime.store, "support", snapshot, run_id="r1")

    no_template = build_model(tmp_path / "bare", template=None)
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        SFTTrainer().train(_spec(tmp_path, snapshot, no_template), lambda f, m: None)
    no_pad = build_model(tmp_path / "nopad", pad=False, template=QWEN_LIKE)
    with pytest.raises(PadTokenError, match=r"has no pad token .*pad_token=.eos."):
        SFTTrainer().train(_spec(tmp_path, snapshot, no_pad), lambda f, m: None)
    with pytest.raises(TrainerUnavailable, match=r"needs options\['model_path'\]"):
        SFTTrainer().check_available(_spec(tmp_path, snapshot, no_pad).model_copy(update={"options": {}}))
    with pytest.raises(ValueError, match=r"xml"):
        SFTTrainer().train(_spec(tmp_path, snapshot, no_pad, pad_token="eos", tool_format="xml"), lambda f, m: None)

    # An adapter trained for one base model is refused at registration for another.
    model = build_model(tmp_path / "model", template=QWEN_LIKE)
    SFTTrainer().train(_spec(tmp_path, snapshot, model, epochs=1), lambda f, m: None)
    other = Policy(agent="support", version=2, llm=LLMConfig(model="org/other-model", adapter="adapter"))
    from agentgym_runtime.policy.artifact import PolicyArtifactError

    with pytest.raises(
        PolicyArtifactError, match=r"was trained on base model .*model.* but .* serves 'org/other-model'"
    ):
        write_artifact(other, tmp_path / "registry", tmp_path / "out" / "adapter")


def test_grpo_with_only_a_model_path_trains_on_the_recorded_chats_with_the_outcome_reward(
    agentgym_runtime: Runtime, tmp_path: Path
) -> None:
    from agentgym_runtime.trainers.grpo import GRPOTrainer

    record_support("support", list(range(10, 22)), typo_every=3)
    assert agentgym_runtime.flush()
    write_snapshot(agentgym_runtime.store, "support", tmp_path / "snap", run_id="r1")
    model = build_model(tmp_path / "model", template=QWEN_LIKE)
    spec = _spec(tmp_path, tmp_path / "snap", model).model_copy(
        update={
            "trainer": "grpo",
            "options": {
                "model_path": str(model),
                "steps": 2,
                "group_size": 2,
                "prompts_per_step": 2,
                "max_new_tokens": 4,
            },
        }
    )
    messages: list[str] = []

    result = GRPOTrainer().train(spec, lambda f, m: messages.append(m))

    assert messages[0].startswith("GRPO on ") and messages[0].endswith("(cpu, hermes tool calls)")
    assert result.metrics["tool_format"] == "hermes"
    assert result.metrics["samples"] == 2 * 2 * 2
    # Four tokens of a random model are never a valid call: the outcome reward scores them 0.
    assert result.metrics["train_reward_first_step"] == 0.0
    assert result.metrics["guided_samples"] >= 1  # the recorded calls guide the groups
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
