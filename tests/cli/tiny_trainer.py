"""A tiny real trainer for the CLI progress tests: N rounds, a rising reward, run in a job subprocess.

Selected with ``--option trainer_class=tests.cli.tiny_trainer:RoundsTrainer``; ``rounds`` and
``round_s`` (seconds per round) are its options.
"""

from __future__ import annotations

import time
from typing import ClassVar

from agentgym_runtime.trainers.base import ProgressFn, TrainingJobSpec, TrainingResult
from agentgym_runtime.trainers.dataset import load_tasks


class RoundsTrainer:
    """Reports ``round i/N: reward r`` per round (r = i/N) and returns a prompt naming the rounds."""

    name: ClassVar[str] = "tiny-rounds"

    def check_available(self, spec: TrainingJobSpec) -> None:
        return None

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        train, _heldout = load_tasks(spec.snapshot_dir, heldout_fraction=float(spec.options["heldout_fraction"]))
        rounds = int(spec.options.get("rounds", 3))
        pause = float(spec.options.get("round_s", 0.5))
        for index in range(1, rounds + 1):
            progress(0.1 + 0.8 * index / rounds, f"round {index}/{rounds}: reward {index / rounds:.3f}")
            time.sleep(pause)  # each report stays the last one long enough for the scheduler's poll to see it
        return TrainingResult(
            trainer=self.name,
            system_prompt=f"Trained for {rounds} rounds on {len(train)} tasks.",
            metrics={
                "rounds": rounds,
                "train_tasks": len(train),
                "heldout_reward_before": 0.0,
                "heldout_reward_after": 1.0,
            },
        )
