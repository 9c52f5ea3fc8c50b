"""``verl``: Agent Lightning's VERL (PPO/GRPO with vLLM + FSDP on Ray) for multi-GPU machines and clusters.

The options are validated by :class:`VERLConfig` and turned into the nested dictionary
Agent Lightning's ``VERL(config)`` takes. The trainer runs only where CUDA is present
(:class:`~agentgym_runtime.trainers.base.GPUNotAvailableError` otherwise, pointing to
``grpo`` for CPU) and needs ``verl``, ``vllm`` and ``ray`` installed.

Example:
    >>> VERLConfig(model_path="/models/qwen").to_verl_config()["trainer"]["n_gpus_per_node"]
    1
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agentgym_runtime.trainers.base import (
    GPUNotAvailableError,
    ProgressFn,
    TrainerUnavailable,
    TrainingJobSpec,
    TrainingResult,
)
from agentgym_runtime.trainers.lightning.common import (
    GENERIC_OPTIONS,
    job_store_path,
    replay_agent_from_spec,
    require_modules,
)


def verl_options(options: dict[str, Any]) -> dict[str, Any]:
    """The job options VERLConfig validates: its own keys plus ``model_path``.

    Example:
        >>> verl_options({"model_path": "/m", "replay": "a:b"})
        {'model_path': '/m'}
    """
    return {k: v for k, v in options.items() if k == "model_path" or k not in GENERIC_OPTIONS}


class VERLConfig(BaseModel):
    """The options of a VERL job (unknown keys are rejected).

    Attributes:
        model_path: Hugging Face model directory (or hub name reachable from the cluster).
        n_gpus_per_node: GPUs per node (>= 1).
        nnodes: Nodes in the Ray cluster.
        train_batch_size: Tasks per step.
        max_prompt_length: Prompt token budget.
        max_response_length: Response token budget.
        rollout_n: Rollouts per task (the GRPO group size).
        learning_rate: Actor learning rate.
        total_epochs: Passes over the training tasks.
        lora_rank: LoRA rank (0: full fine-tuning).
        kl_coef: KL penalty to the reference policy.
        ray_address: An existing Ray cluster (``None``: start a local one).
    """

    model_config = ConfigDict(extra="forbid")

    model_path: str
    n_gpus_per_node: int = Field(default=1, ge=1)
    nnodes: int = Field(default=1, ge=1)
    train_batch_size: int = Field(default=16, ge=1)
    max_prompt_length: int = Field(default=2048, ge=16)
    max_response_length: int = Field(default=1024, ge=1)
    rollout_n: int = Field(default=4, ge=2)
    learning_rate: float = Field(default=1e-6, gt=0)
    total_epochs: int = Field(default=1, ge=1)
    lora_rank: int = Field(default=0, ge=0)
    kl_coef: float = Field(default=0.001, ge=0)
    ray_address: str | None = None

    def to_verl_config(self) -> dict[str, Any]:
        """The nested configuration ``agentlightning.algorithm.verl.VERL`` expects."""
        return {
            "algorithm": {"adv_estimator": "grpo", "use_kl_in_reward": False},
            "data": {
                "train_batch_size": self.train_batch_size,
                "max_prompt_length": self.max_prompt_length,
                "max_response_length": self.max_response_length,
            },
            "actor_rollout_ref": {
                "model": {"path": self.model_path, "lora_rank": self.lora_rank, "use_remove_padding": True},
                "actor": {
                    "optim": {"lr": self.learning_rate},
                    "use_kl_loss": self.kl_coef > 0,
                    "kl_loss_coef": self.kl_coef,
                    "ppo_mini_batch_size": self.train_batch_size,
                },
                "rollout": {"name": "vllm", "n": self.rollout_n, "tensor_model_parallel_size": 1},
            },
            "trainer": {
                "n_gpus_per_node": self.n_gpus_per_node,
                "nnodes": self.nnodes,
                "total_epochs": self.total_epochs,
                "logger": ["console"],
                "val_before_train": True,
            },
        }


class VERLTrainer:
    """The ``verl`` trainer: validated configuration, launched only where CUDA is present.

    Example:
        >>> VERLTrainer.name
        'verl'
    """

    name: ClassVar[str] = "verl"

    def check_available(self, spec: TrainingJobSpec) -> None:
        """Validate the options, then require CUDA and the VERL stack."""
        VERLConfig.model_validate(verl_options(spec.options))
        try:
            import torch
        except ImportError:
            raise TrainerUnavailable(
                "the 'verl' trainer needs torch with CUDA: pip install 'agentgym-runtime[train]' on a GPU machine"
            ) from None
        if spec.device == "cpu" or not torch.cuda.is_available():
            raise GPUNotAvailableError(
                "verl needs CUDA (vLLM rollouts and FSDP training) and no CUDA device is available here; "
                "use trainer='grpo' on CPU, or run this job on a GPU backend (local GPU, ssh, ray, runpod)"
            )
        require_modules(self.name, {"agentlightning": "train", "verl": "verl", "vllm": "verl", "ray": "verl"})

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        """Run Agent Lightning's VERL on the snapshot's tasks with the replay agent (GPU only)."""
        self.check_available(spec)
        config = VERLConfig.model_validate(verl_options(spec.options))
        agent = replay_agent_from_spec(spec)
        if agent is None:
            raise TrainerUnavailable(
                "verl trains by replaying tasks through the agent: set options['replay'] to 'module:qualname' "
                "of an episode function, or record the agent with an entrypoint"
            )
        from agentgym_runtime.trainers.lightning import import_agentlightning
        from agentgym_runtime.trainers.lightning.bridge import load_snapshot_tasks
        from agentgym_runtime.trainers.lightning.store import DuckDBLightningStore

        agl = import_agentlightning()
        train, heldout = load_snapshot_tasks(spec)
        store = DuckDBLightningStore(job_store_path(spec))
        progress(0.05, f"VERL on {len(train)} tasks, {config.n_gpus_per_node} GPU(s) x {config.nnodes} node(s)")
        trainer = agl.Trainer(
            algorithm=agl.VERL(config.to_verl_config()), n_runners=config.train_batch_size, store=store
        )
        trainer.fit(
            agent,
            train_dataset=[t.model_dump(mode="json") for t in train],
            val_dataset=[t.model_dump(mode="json") for t in heldout],
        )
        asyncio.run(store.close())
        progress(1.0, "VERL finished")
        return TrainingResult(
            trainer=self.name,
            metrics={"train_tasks": len(train), "heldout_tasks": len(heldout)},
            notes=f"VERL checkpoints are written by VERL under its trainer.default_local_dir for {config.model_path}",
        )
