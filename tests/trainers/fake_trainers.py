"""Trainers for the scheduler tests, run inside real job subprocesses.

Selected per config with ``trainer_options={"trainer_class": "tests.trainers.fake_trainers:<Class>"}``
(the extension point for users' own trainers). They read the snapshot like a real trainer does.
"""

from __future__ import annotations

import os
import time
from typing import ClassVar

from agentgym_runtime.trainers.base import ProgressFn, TrainerUnavailable, TrainingJobSpec, TrainingResult
from agentgym_runtime.trainers.dataset import load_tasks


class PromptTrainer:
    """Writes a system prompt naming how many tasks it saw, with held-out numbers as metrics."""

    name: ClassVar[str] = "fake-prompt"

    def check_available(self, spec: TrainingJobSpec) -> None:
        return None

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        train, heldout = load_tasks(spec.snapshot_dir, heldout_fraction=float(spec.options["heldout_fraction"]))
        progress(0.5, f"read {len(train)} train and {len(heldout)} held-out tasks")
        delay = float(spec.options.get("delay_s", 0.0))
        steps = 5
        for step in range(steps):
            time.sleep(delay / steps)
            progress(0.5 + 0.1 * step, f"step {step + 1}/{steps}")
        rewards = [t.reward for t in heldout if t.reward is not None]
        return TrainingResult(
            trainer="fake-prompt",
            system_prompt=f"Always call get_order first. (trained on {len(train)} tasks)",
            tool_descriptions={"get_order": "Look up an order by its numeric id."},
            metrics={
                "train_tasks": len(train),
                "heldout_tasks": len(heldout),
                "heldout_reward_before": sum(rewards) / len(rewards) if rewards else None,
                "heldout_reward_after": float(spec.options.get("heldout_reward_after", 1.0)),
                "device": spec.device,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            },
        )


class CrashingTrainer:
    name: ClassVar[str] = "fake-crash"

    def check_available(self, spec: TrainingJobSpec) -> None:
        return None

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        progress(0.25, "about to crash")
        raise RuntimeError("boom: the fake trainer crashed on purpose")


class HangingTrainer:
    name: ClassVar[str] = "fake-hang"

    def check_available(self, spec: TrainingJobSpec) -> None:
        return None

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        progress(0.1, "hanging forever")
        time.sleep(600)
        raise AssertionError("unreachable")


class UnavailableTrainer:
    name: ClassVar[str] = "fake-unavailable"

    def check_available(self, spec: TrainingJobSpec) -> None:
        raise TrainerUnavailable(
            "the fake trainer needs the 'fake-extra' package: pip install 'agentgym-runtime[fake]'"
        )

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        raise AssertionError("never called when unavailable")


class SpecEchoTrainer:
    """Reports what the job spec told it about the policy it derives from."""

    name: ClassVar[str] = "fake-echo"

    def check_available(self, spec: TrainingJobSpec) -> None:
        return None

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        return TrainingResult(
            trainer="fake-echo",
            system_prompt="echo",
            metrics={"base_policy_version": spec.base_policy_version, "base_adapter": spec.base_adapter},
        )


class StageEchoTrainer:
    """Reports which trainer name (stage) the job ran under, the options it got and its starting version."""

    name: ClassVar[str] = "fake-stage"

    def check_available(self, spec: TrainingJobSpec) -> None:
        return None

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        options = {k: v for k, v in spec.options.items() if k not in ("trainer_class", "heldout_fraction")}
        return TrainingResult(
            trainer="fake-stage",
            system_prompt=f"trained by {spec.trainer}",
            metrics={"stage": spec.trainer, "options": options, "base_policy_version": spec.base_policy_version},
        )


class SnapshotsTrainer:
    """Reports the episodes and sessions of each snapshot the job reads (its own, then its teachers')."""

    name: ClassVar[str] = "fake-snapshots"

    def check_available(self, spec: TrainingJobSpec) -> None:
        return None

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        from agentgym_runtime.trainers.chat_data import snapshot_dirs

        read = {}
        for directory in snapshot_dirs(spec):  # keyed by the path inside the job's snapshot ("." for its own)
            train, heldout = load_tasks(directory, heldout_fraction=0.0)
            sessions = sorted(str(t.session_id) for t in [*train, *heldout])
            read[os.path.relpath(directory, spec.snapshot_dir)] = sessions
        return TrainingResult(
            trainer="fake-snapshots",
            system_prompt="read the teachers",
            metrics={"read": read, "extra_snapshots": spec.options.get("extra_snapshots")},
        )


class ZeroScoreTrainer:
    """Every replay raised: held-out reward 0 before and after, the way a broken replay reports it."""

    name: ClassVar[str] = "fake-zero"

    def check_available(self, spec: TrainingJobSpec) -> None:
        return None

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        return TrainingResult(
            trainer="fake-zero",
            demonstrations=[],
            metrics={
                "heldout_reward_before": 0.0,
                "heldout_reward_after": 0.0,
                "set_scores": {"k0": 0.0, "k1": 0.0},
                "replays": 6,
                "replay_errors": 6,
                "replay_error": "AttributeError: module '__main__' has no attribute 'support'",
            },
        )


class HarmfulDemosTrainer:
    """A buggy plug-in trainer: demonstrations with the wrong calls, and a claimed held-out gain.

    What the live gate exists for: a candidate that passes the offline numbers its trainer
    reports, yet makes the served agent worse (the scripted model copies the bad examples).
    """

    name: ClassVar[str] = "fake-harmful-demos"

    def check_available(self, spec: TrainingJobSpec) -> None:
        return None

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        from agentgym_runtime.recording.policy import Demonstration, ToolCallExample

        wrong = {"cancel": ("cancel_order", {"order_id": 1003}), "status": ("get_order", {"order_id": "one"})}
        demonstrations = [
            Demonstration(input=f"{kind} example", tool_calls=(ToolCallExample(name=name, arguments=arguments),))
            for kind, (name, arguments) in wrong.items()
        ]
        return TrainingResult(
            trainer=self.name,
            demonstrations=demonstrations,
            metrics={"heldout_reward_before": 0.5, "heldout_reward_after": 1.0},
        )
