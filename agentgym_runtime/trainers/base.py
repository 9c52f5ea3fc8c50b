"""The contract between the scheduler (serving side) and the trainers (job side).

A training job is a subprocess (or a remote process) that gets a
:class:`TrainingJobSpec` as JSON, reads the snapshot it names, runs one
:class:`Trainer`, and writes a :class:`TrainingResult` (plus any adapter
weights) into ``output_dir``. Nothing but these JSON documents and files
crosses the boundary, so a job can crash, hang or run on another machine
without touching the service.

Example:
    >>> spec = TrainingJobSpec(run_id="r1", agent="support", trainer="demos",
    ...                        snapshot_dir="/tmp/snap", output_dir="/tmp/out")
    >>> TrainingJobSpec.model_validate_json(spec.model_dump_json()).trainer
    'demos'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agentgym_runtime.errors import AgentGymError
from agentgym_runtime.recording.policy import Demonstration, LLMConfig

TrainerName = Literal["demos", "apo", "grpo", "sft", "verl"]

#: trainer name -> "module:Class"; modules are imported only inside the job process.
TRAINERS: dict[str, str] = {
    "demos": "agentgym_runtime.trainers.demos:DemosTrainer",
    "apo": "agentgym_runtime.trainers.apo:APOTrainer",
    "grpo": "agentgym_runtime.trainers.grpo:GRPOTrainer",
    "sft": "agentgym_runtime.trainers.sft:SFTTrainer",
    "verl": "agentgym_runtime.trainers.verl:VERLTrainer",
}


class TrainerUnavailable(AgentGymError, RuntimeError):
    """A trainer cannot run here (missing extra, unreachable endpoint); the message says what to do."""


class GPUNotAvailableError(TrainerUnavailable):
    """The trainer needs CUDA and none is available."""


class TrainingJobSpec(BaseModel):
    """Everything a training job needs, serialisable as JSON.

    Attributes:
        run_id: The ``training_runs`` row this job fills.
        agent: Agent name.
        trainer: Which trainer (a key of :data:`TRAINERS`).
        snapshot_dir: Directory written by the snapshot step (Parquet files + manifest.json).
        output_dir: Where the job writes ``result.json`` and any ``adapter/`` files.
        base_policy_version: The live version the candidate derives from.
        base_adapter: Absolute path of that version's LoRA adapter, if it has one: trainers of
            weights (``grpo``) continue from it, so each candidate improves on the live policy.
        entrypoint: ``module:qualname`` of the user's agent (for replay), if recorded.
        scenario: Scenario name, if the agent runs one.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        seed: Random seed.
        options: Trainer-specific options (e.g. ``base_url``/``model`` for APO, ``model_path`` for GRPO).
    """

    model_config = ConfigDict(extra="forbid")

    run_id: str
    agent: str
    trainer: str
    snapshot_dir: str
    output_dir: str
    base_policy_version: int = 0
    base_adapter: str | None = None
    entrypoint: str | None = None
    scenario: str | None = None
    device: Literal["cpu", "cuda", "auto"] = "auto"
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class TrainingResult(BaseModel):
    """What a job produced: the candidate policy's fields and the numbers measured.

    ``adapter`` (if set) is a path relative to the job's ``output_dir``.
    ``metrics`` should include ``heldout_reward_before``/``heldout_reward_after`` (or the
    trainer's closest equivalents) so the registry and the gate can show them; ``None`` when
    nothing was held out (``heldout_fraction=0``): a 0 there would make the scheduler judge that
    the job learnt nothing and register no candidate.
    """

    model_config = ConfigDict(extra="forbid")

    trainer: str
    system_prompt: str | None = None
    tool_descriptions: dict[str, str] = Field(default_factory=dict)
    demonstrations: list[Demonstration] = Field(default_factory=list)
    llm: LLMConfig | None = None
    adapter: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    notes: str | None = None


ProgressFn = Callable[[float, str], None]
"""``progress(fraction_done, message)``: trainers report progress through it."""


class Trainer(Protocol):
    """A training algorithm run inside the job process."""

    name: ClassVar[str]

    def check_available(self, spec: TrainingJobSpec) -> None:
        """Raise :class:`TrainerUnavailable` (naming what is missing) if it cannot run here."""
        ...

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        """Run the algorithm on the snapshot and return the candidate."""
        ...
