"""Training on production traces: snapshots, the scheduler, job backends and the trainers.

Only the contract (:mod:`~agentgym_runtime.trainers.base`) is imported here; the
scheduler (:mod:`.scheduler`), the snapshot code (:mod:`.dataset`), the backends
(:mod:`.backends`) and the job entry point (:mod:`.job`) are imported by whoever
needs them, and the trainers themselves only inside the job process, so the
serving process never loads torch or Agent Lightning.

Example:
    >>> from agentgym_runtime.trainers import TRAINERS
    >>> sorted(TRAINERS)
    ['apo', 'demos', 'grpo', 'sft', 'verl']
"""

from __future__ import annotations

from agentgym_runtime.trainers.base import (
    TRAINERS,
    GPUNotAvailableError,
    ProgressFn,
    Trainer,
    TrainerUnavailable,
    TrainingJobSpec,
    TrainingResult,
)

__all__ = [
    "TRAINERS",
    "GPUNotAvailableError",
    "ProgressFn",
    "Trainer",
    "TrainerUnavailable",
    "TrainingJobSpec",
    "TrainingResult",
]
