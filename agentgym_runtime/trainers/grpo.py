"""``grpo``: GRPO with LoRA on a Hugging Face causal LM (CPU for small models, CUDA when present).

The core, :func:`grpo_train`, is generic: a causal LM, a tokenizer (``encode``/``decode``,
``eos_token_id``, ``pad_token_id``), training and held-out prompts, and a reward function
``reward(index, completion) -> float`` for the prompt at ``index``. Each step:

1. samples ``group_size`` completions for each of ``prompts_per_step`` prompts;
2. scores them and turns rewards into **group-relative advantages**
   ``(r - mean_group) / (std_group + eps)``;
3. takes ``inner_steps`` optimiser steps on the **clipped policy loss**
   ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)`` plus ``beta`` times the **KL to the
   reference** (the base model: the same network with the LoRA adapter disabled, TRL's own
   trick) with the k3 estimator ``exp(ref - logp) - (ref - logp) - 1``, averaged over
   completion tokens.

Only the LoRA weights (peft) train. TRL's ``GRPOTrainer`` needs ``datasets``/``accelerate``
plumbing, a chat template and its own generation loop, which is heavy for a CPU job on a
tiny model; this module uses TRL's ``selective_log_softmax`` for per-token log-probabilities
(when TRL is installed) and writes the loss itself, as TRL's ``GRPOTrainer._compute_loss``
defines it. The adapter is saved with peft's ``save_pretrained`` (safetensors) to
``output_dir/adapter/``.

Held-out reward is measured before and after training with the same seeded sampling, so
``metrics["heldout_reward_before"]``/``["heldout_reward_after"]`` compare like with like.

Example:
    >>> GRPOConfig(group_size=4).group_size
    4
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agentgym_runtime.policy.model import LLMConfig
from agentgym_runtime.trainers.base import (
    GPUNotAvailableError,
    ProgressFn,
    TrainerUnavailable,
    TrainingJobSpec,
    TrainingResult,
)
from agentgym_runtime.trainers.lightning.common import import_object, require_modules, trainer_options

RewardFn = Callable[[int, str], float]


class GRPOConfig(BaseModel):
    """Hyper-parameters of :func:`grpo_train` (the job's ``options`` minus ``model_path``/``reward``).

    Attributes:
        steps: Optimisation rounds (each samples fresh groups).
        prompts_per_step: Prompts sampled per round.
        group_size: Completions per prompt (the GRPO group).
        inner_steps: Optimiser steps per round on the same samples (ratios move away from 1 after the first).
        learning_rate: AdamW learning rate of the LoRA weights.
        beta: Weight of the KL term to the reference model.
        clip_epsilon: PPO clip range.
        max_new_tokens: Completion length.
        temperature: Sampling temperature.
        lora_r: LoRA rank.
        lora_alpha: LoRA scale.
        lora_dropout: LoRA dropout.
        target_modules: Modules given LoRA adapters (``None``: peft's default for the architecture).
        eval_samples: Completions per held-out prompt when measuring reward.
        seed: Random seed.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=20, ge=1)
    prompts_per_step: int = Field(default=4, ge=1)
    group_size: int = Field(default=8, ge=2)
    inner_steps: int = Field(default=2, ge=1)
    learning_rate: float = Field(default=5e-3, gt=0)
    beta: float = Field(default=0.04, ge=0)
    clip_epsilon: float = Field(default=0.2, gt=0)
    max_new_tokens: int = Field(default=8, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] | None = None
    eval_samples: int = Field(default=8, ge=1)
    seed: int = 0


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when available, else ``"cpu"``; ``"cuda"`` without CUDA raises.

    Example:
        >>> resolve_device("cpu")
        'cpu'
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise GPUNotAvailableError("device='cuda' was asked for but no CUDA device is available; use device='cpu'")
    return device


def _token_logprobs(model: Any, sequences: Any, attention: Any, prompt_length: int) -> Any:
    """Log-probabilities of the completion tokens (positions after ``prompt_length``)."""
    import torch

    logits = model(input_ids=sequences, attention_mask=attention, use_cache=False).logits[:, prompt_length - 1 : -1, :]
    targets = sequences[:, prompt_length:]
    try:
        from trl.trainer.utils import selective_log_softmax
    except ImportError:  # TRL absent: the same computation, less memory-frugal
        return torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return selective_log_softmax(logits, targets)


def grpo_loss(
    logps: Any, old_logps: Any, ref_logps: Any, advantages: Any, mask: Any, *, clip_epsilon: float, beta: float
) -> tuple[Any, dict[str, float]]:
    """GRPO loss: clipped policy-gradient term + ``beta`` * k3 KL to the reference, mean over completion tokens.

    Args:
        logps: Current per-token log-probabilities ``[B, T]`` (with grad).
        old_logps: Log-probabilities when the samples were drawn ``[B, T]``.
        ref_logps: Reference-model log-probabilities ``[B, T]``.
        advantages: One group-relative advantage per sequence ``[B]``.
        mask: 1 for completion tokens up to and including EOS ``[B, T]``.
        clip_epsilon: Clip range.
        beta: KL weight.

    Example:
        >>> import torch
        >>> z = torch.zeros(1, 2)
        >>> float(grpo_loss(z, z, z, torch.ones(1), torch.ones(1, 2), clip_epsilon=0.2, beta=0.1)[0])
        -1.0
    """
    import torch

    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages.unsqueeze(1)
    clipped = torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * advantages.unsqueeze(1)
    per_token = -torch.min(unclipped, clipped)
    kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
    if beta:
        per_token = per_token + beta * kl
    per_sequence = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
    loss = per_sequence.mean()
    stats = {
        "kl": float(((kl * mask).sum() / mask.sum().clamp(min=1)).detach()),
        "clip_fraction": float((((ratio - 1).abs() > clip_epsilon).float() * mask).sum() / mask.sum().clamp(min=1)),
    }
    return loss, stats


def group_advantages(rewards: Sequence[float], group_size: int, eps: float = 1e-4) -> list[float]:
    """Group-relative advantages: each reward minus its group's mean, over the group's std (+eps).

    Example:
        >>> [round(a, 3) for a in group_advantages([1.0, 0.0, 0.0, 0.0], 4)]
        [1.732, -0.577, -0.577, -0.577]
    """
    out: list[float] = []
    for start in range(0, len(rewards), group_size):
        group = list(rewards[start : start + group_size])
        mean = sum(group) / len(group)
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / len(group))
        out.extend((r - mean) / (std + eps) for r in group)
    return out


class _Sampler:
    def __init__(self, model: Any, tokenizer: Any, config: GRPOConfig, device: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.device = device

    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer.encode(prompt))

    def sample(self, prompts: Sequence[str], n: int, generator: Any) -> tuple[Any, Any, int, list[str]]:
        """``n`` sampled completions of each prompt (prompts of one token length, grouped).

        Returns (sequences ``[len(prompts) * n, P + T]``, completion mask ``[.., T]``, prompt length ``P``,
        completion texts). Tokens after EOS are padding and masked out. No KV cache: completions are
        short and the models small, and it keeps the loop independent of each architecture's cache API.
        """
        import torch

        encoded = [self.encode(p) for p in prompts]
        if len({len(e) for e in encoded}) != 1:
            raise ValueError("prompts sampled together must have the same token length")
        ids = torch.tensor([e for e in encoded for _ in range(n)], device=self.device)
        eos = self.tokenizer.eos_token_id
        sequence = ids
        finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=self.device)
        mask_columns = []
        with torch.no_grad():
            for _ in range(self.config.max_new_tokens):
                logits = self.model(input_ids=sequence, use_cache=False).logits[:, -1, :].float()
                probs = torch.softmax(logits / self.config.temperature, dim=-1)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                token = torch.where(finished, torch.full_like(token, self.tokenizer.pad_token_id), token)
                mask_columns.append((~finished).float())
                finished = finished | (token == eos)
                sequence = torch.cat([sequence, token.unsqueeze(1)], dim=1)
                if bool(finished.all()):
                    break
        mask = torch.stack(mask_columns, dim=1)
        prompt_length = ids.shape[1]
        texts = []
        for row, row_mask in zip(sequence[:, prompt_length:].tolist(), mask.tolist(), strict=True):
            kept = [t for t, m in zip(row, row_mask, strict=True) if m and t != eos]
            texts.append(self.tokenizer.decode(kept))
        return sequence, mask, prompt_length, texts


def _by_length(sampler: _Sampler, indices: Sequence[int], prompts: Sequence[str]) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for index in indices:
        groups.setdefault(len(sampler.encode(prompts[index])), []).append(index)
    return list(groups.values())


def evaluate(
    model: Any, tokenizer: Any, prompts: Sequence[str], reward: RewardFn, config: GRPOConfig, device: str, seed: int
) -> float:
    """Mean reward of ``config.eval_samples`` seeded samples per prompt (the same seed before and after).

    Example:
        >>> evaluate(model, tok, ["p"], lambda i, c: 1.0, GRPOConfig(), "cpu", 0)  # doctest: +SKIP
        1.0
    """
    import torch

    if not prompts:
        return 0.0
    sampler = _Sampler(model, tokenizer, config, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    total = 0.0
    model.eval()
    n = config.eval_samples
    for group in _by_length(sampler, range(len(prompts)), prompts):
        _, _, _, texts = sampler.sample([prompts[i] for i in group], n, generator)
        for position, index in enumerate(group):
            total += sum(reward(index, t) for t in texts[position * n : (position + 1) * n]) / n
    return total / len(prompts)


def grpo_train(
    model: Any,
    tokenizer: Any,
    train_prompts: Sequence[str],
    train_reward: RewardFn,
    config: GRPOConfig,
    *,
    heldout_prompts: Sequence[str] = (),
    heldout_reward: RewardFn | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train LoRA adapters on ``model`` with GRPO; return (the peft model, metrics).

    Example:
        >>> peft_model, metrics = grpo_train(model, tok, prompts, reward, GRPOConfig(steps=2))  # doctest: +SKIP
    """
    import torch
    from peft import LoraConfig, get_peft_model

    report = progress or (lambda fraction, message: None)
    torch.manual_seed(config.seed)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora).to(device)
    heldout_fn = heldout_reward or train_reward
    before = evaluate(peft_model, tokenizer, heldout_prompts, heldout_fn, config, device, config.seed + 1)
    optimiser = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.learning_rate)
    sampler = _Sampler(peft_model, tokenizer, config, device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    order = torch.Generator().manual_seed(config.seed)
    rewards_per_step: list[float] = []
    samples = 0
    started = time.perf_counter()
    stats: dict[str, float] = {}
    for step in range(config.steps):
        picks = torch.randint(len(train_prompts), (config.prompts_per_step,), generator=order).tolist()
        peft_model.eval()
        batch = []
        n = config.group_size
        for group in _by_length(sampler, picks, train_prompts):
            sequences, mask, prompt_length, texts = sampler.sample([train_prompts[i] for i in group], n, generator)
            rewards = [float(train_reward(group[j // n], t)) for j, t in enumerate(texts)]
            batch.append((sequences, mask, prompt_length, rewards))
            samples += len(texts)
        all_rewards = [r for *_, rewards in batch for r in rewards]
        rewards_per_step.append(sum(all_rewards) / len(all_rewards))
        prepared = []
        with torch.no_grad():
            for sequences, mask, prompt_length, rewards in batch:
                attention = torch.ones_like(sequences)
                old = _token_logprobs(peft_model, sequences, attention, prompt_length)
                with peft_model.disable_adapter():
                    ref = _token_logprobs(peft_model, sequences, attention, prompt_length)
                advantages = torch.tensor(group_advantages(rewards, config.group_size), device=device)
                prepared.append((sequences, attention, mask, prompt_length, old, ref, advantages))
        peft_model.train()
        for _ in range(config.inner_steps):
            optimiser.zero_grad()
            losses = []
            for sequences, attention, mask, prompt_length, old, ref, advantages in prepared:
                logps = _token_logprobs(peft_model, sequences, attention, prompt_length)
                loss, stats = grpo_loss(
                    logps, old, ref, advantages, mask, clip_epsilon=config.clip_epsilon, beta=config.beta
                )
                losses.append(loss)
            total = torch.stack(losses).mean()
            total.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
        report(
            0.1 + 0.8 * (step + 1) / config.steps, f"step {step + 1}/{config.steps}: reward {rewards_per_step[-1]:.3f}"
        )
    elapsed = time.perf_counter() - started
    after = evaluate(peft_model, tokenizer, heldout_prompts, heldout_fn, config, device, config.seed + 1)
    metrics: dict[str, Any] = {
        "heldout_reward_before": before,
        "heldout_reward_after": after,
        "train_reward_first_step": rewards_per_step[0],
        "train_reward_last_step": rewards_per_step[-1],
        "samples": samples,
        "samples_per_second": samples / elapsed if elapsed > 0 else None,
        "train_seconds": elapsed,
        "final_kl": stats.get("kl"),
        "device": device,
    }
    return peft_model, metrics


def save_adapter(peft_model: Any, output_dir: str | Path) -> Path:
    """Save the LoRA adapter (safetensors) to ``output_dir/adapter``; return that directory.

    Example:
        >>> save_adapter(peft_model, "/tmp/out")  # doctest: +SKIP
        PosixPath('/tmp/out/adapter')
    """
    target = Path(output_dir) / "adapter"
    peft_model.save_pretrained(str(target), safe_serialization=True)
    return target


class GRPOTrainer:
    """The ``grpo`` trainer for a job: model from ``options["model_path"]``, reward from ``options["reward"]``.

    Options: ``model_path`` (a local Hugging Face model directory, loaded offline), ``reward``
    (``module:qualname`` of ``(task, completion) -> float``; default: 1 when the completion
    contains the recorded output), ``prompt`` (``module:qualname`` of ``(task) -> str``; default:
    the system prompt and the input as text), plus :class:`GRPOConfig` fields.

    Example:
        >>> GRPOTrainer.name
        'grpo'
    """

    name: ClassVar[str] = "grpo"

    def check_available(self, spec: TrainingJobSpec) -> None:
        """Needs torch, transformers and peft (the ``train`` extra) and a ``model_path``."""
        require_modules(self.name, {"torch": "train", "transformers": "train", "peft": "train"})
        if not spec.options.get("model_path"):
            raise TrainerUnavailable(
                "the 'grpo' trainer needs options['model_path']: a local Hugging Face causal LM directory"
            )
        resolve_device(spec.device)

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        """Load the snapshot, model and tokenizer; run :func:`grpo_train`; save the adapter."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from agentgym_runtime.trainers.lightning.bridge import as_text, load_snapshot_tasks

        self.check_available(spec)
        model_path = str(spec.options["model_path"])
        reward_path = spec.options.get("reward")
        prompt_path = spec.options.get("prompt")
        config = GRPOConfig.model_validate({"seed": spec.seed, **trainer_options(spec.options)})
        train, heldout = load_snapshot_tasks(spec)
        if not train:
            raise TrainerUnavailable("the snapshot has no training tasks: record more episodes before training")
        score = import_object(reward_path) if reward_path else (lambda task, text: float(as_text(task.output) in text))
        render = import_object(prompt_path) if prompt_path else (lambda task: as_text(task.input))
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True)
        device = resolve_device(spec.device)
        progress(0.05, f"GRPO on {len(train)} tasks ({device})")
        peft_model, metrics = grpo_train(
            model,
            tokenizer,
            [render(t) for t in train],
            lambda i, text: float(score(train[i], text)),
            config,
            heldout_prompts=[render(t) for t in heldout],
            heldout_reward=lambda i, text: float(score(heldout[i], text)),
            device=device,
            progress=progress,
        )
        save_adapter(peft_model, spec.output_dir)
        progress(1.0, "adapter saved")
        return TrainingResult(
            trainer=self.name,
            llm=LLMConfig(model=model_path, adapter="adapter"),
            adapter="adapter",
            metrics={**metrics, "train_tasks": len(train), "heldout_tasks": len(heldout)},
        )
