"""``sft``: supervised LoRA on the successful calls and answers in the traces (distillation included).

Each recorded LLM call whose answer worked (every requested tool call ran ok, or the episode
ended ok on a text answer; see :class:`~agentgym_runtime.trainers.chat_data.ChatSample`) is one
example: the prompt is the recorded messages and tools rendered with the *student's* chat
template, the target is the recorded assistant turn in the student's tool-call format. The loss
is the cross-entropy of the target's tokens only (TRL's ``completion_only_loss``); the prompt
is context. Samples of every model count, so traces of a large API model (the teacher, another
agent: ``options["extra_snapshots"]``) train a small open model: the distillation users want
for cost.

TRL's ``SFTTrainer`` needs the ``datasets``/``accelerate`` plumbing and its own collator for a
job that, on a CPU, trains a few hundred short sequences; the loop here is the same objective in
~40 lines over a peft LoRA model, and the adapter is saved exactly as ``grpo`` saves its own
(:func:`~agentgym_runtime.trainers.grpo.save_adapter`), so the registry takes either.

Held-out tool-call accuracy is measured before and after on greedy completions with the
outcome reward (:class:`~agentgym_runtime.trainers.chat_data.OutcomeReward`: the call runs in the
replay) and as exact calls (:func:`~agentgym_runtime.trainers.chat_data.exact_call`: the recorded
tool and arguments), prompts encoded as the serving engine encodes them.

Example:
    >>> SFTConfig(epochs=2).epochs
    2
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agentgym_runtime.trainers.base import ProgressFn, TrainerUnavailable, TrainingJobSpec, TrainingResult
from agentgym_runtime.trainers.lightning.common import trainer_options


class SFTConfig(BaseModel):
    """Hyper-parameters of :func:`sft_train` (the job's options, less the generic ones).

    Attributes:
        epochs: Passes over the training samples.
        batch_size: Sequences per optimiser step.
        learning_rate: AdamW learning rate of the LoRA weights.
        lora_r: LoRA rank.
        lora_alpha: LoRA scale.
        lora_dropout: LoRA dropout.
        target_modules: Modules given LoRA adapters (``"all-linear"``: every linear layer but the head).
        modules_to_save: Modules trained in full and saved with the adapter (peft's ``modules_to_save``),
            e.g. ``["lm_head"]``: a model without pretrained representations (a small model trained
            from scratch) cannot learn a new output format through low-rank adapters alone.
        max_length: Longest sequence (prompt + target) trained on; longer prompts lose their start.
        max_new_tokens: Completion length when measuring held-out accuracy.
        include_answers: Train on text answers as well as on tool calls.
        continue_from_base: Train on from the live policy's adapter when it has one.
        seed: Random seed.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] | str | None = "all-linear"
    modules_to_save: list[str] | None = None
    max_length: int = Field(default=1024, ge=8)
    max_new_tokens: int = Field(default=48, ge=1)
    include_answers: bool = True
    continue_from_base: bool = True
    seed: int = 0


def _encode(tokenizer: Any, prompt: str, completion: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion (the prompt cut from the left to fit) and where the completion starts."""
    # No special tokens added: the rendered template holds its own (a BOS among them), and the serving
    # engine encodes prompts the same way; encode() would put a second BOS before Llama/Mistral prompts.
    prompt_ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    completion_ids = list(tokenizer.encode(completion, add_special_tokens=False))[:max_length]
    keep = max(0, max_length - len(completion_ids))
    prompt_ids = prompt_ids[len(prompt_ids) - keep :] if keep else []
    return prompt_ids + completion_ids, len(prompt_ids)


def _completion_loss(peft_model: Any, batch: Sequence[tuple[list[int], int]], pad: int, device: str) -> Any:
    """Mean cross-entropy of the batch's completion tokens, with logits for the completions only.

    Rows are left-padded (explicit position ids, as the sampler does), so every completion lies in
    the last ``keep`` columns and the model computes its head for those alone (transformers'
    ``logits_to_keep``): a chat prompt with a tool block is ~90% of the sequence, and for a small
    model with a large vocabulary (SmolLM2: 49k x 576) the head over every prompt position is a
    fifth of the forward pass, and the float32 logits over them hundreds of MB per batch.
    """
    import torch

    width = max(len(ids) for ids, _ in batch)
    keep = max(len(ids) - cut for ids, cut in batch) + 1  # the completions and the token before each
    ids = torch.tensor([[pad] * (width - len(row)) + row for row, _ in batch], device=device)
    attention = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row, _ in batch], device=device)
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
    # Labels -100 on the padding and the prompt: only the target is learnt.
    labels = torch.tensor([[-100] * (width - len(row)) + [-100] * cut + row[cut:] for row, cut in batch], device=device)
    output = peft_model(input_ids=ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep)
    logits = output.logits[:, -keep:-1, :].float()  # column j predicts token j + 1
    targets = labels[:, width - keep + 1 :]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def sft_train(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    config: SFTConfig,
    *,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    init_adapter: str | Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train LoRA adapters on ``(prompt, completion)`` pairs, loss on completion tokens only.

    Returns:
        ``(peft model, metrics)`` with ``train_loss_first_epoch``/``train_loss_last_epoch``,
        ``examples``, ``examples_per_second``.

    Example:
        >>> peft_model, metrics = sft_train(model, tok, [("Q: 1+1? A:", " 2")], SFTConfig())  # doctest: +SKIP
    """
    import torch

    from agentgym_runtime.trainers.grpo import lora_model

    report = progress or (lambda fraction, message: None)
    if not pairs:
        raise ValueError("sft_train needs at least one (prompt, completion) pair")
    torch.manual_seed(config.seed)
    peft_model = lora_model(model, config, device, init_adapter)
    encoded = [_encode(tokenizer, p, c, config.max_length) for p, c in pairs]
    optimiser = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.learning_rate)
    order = torch.Generator().manual_seed(config.seed)
    pad = tokenizer.pad_token_id
    losses: list[float] = []
    started = time.perf_counter()
    peft_model.train()
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        permutation = torch.randperm(len(encoded), generator=order).tolist()
        for start in range(0, len(permutation), config.batch_size):
            batch = [encoded[i] for i in permutation[start : start + config.batch_size]]
            optimiser.zero_grad()
            loss = _completion_loss(peft_model, batch, pad, device)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        losses.append(total / count)
        report(0.1 + 0.8 * (epoch + 1) / config.epochs, f"epoch {epoch + 1}/{config.epochs}: loss {losses[-1]:.4f}")
    elapsed = time.perf_counter() - started
    peft_model.eval()
    return peft_model, {
        "train_loss_first_epoch": losses[0],
        "train_loss_last_epoch": losses[-1],
        "examples": len(encoded) * config.epochs,
        "examples_per_second": len(encoded) * config.epochs / elapsed if elapsed > 0 else None,
        "train_seconds": elapsed,
        "device": device,
        "continued_from": None if init_adapter is None else str(init_adapter),
    }


def heldout_scores(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    samples: Sequence[Any],
    reward: Any,
    max_new_tokens: int,
    device: str,
) -> tuple[float, float]:
    """``(mean outcome reward, share of exact calls)`` of greedy completions of held-out ``prompts``.

    One completion per prompt (``samples[i]`` is prompt ``i``'s recorded turn), greedy as an agent
    serves, the prompt encoded as the serving engine encodes it (no special tokens added). The
    reward is :class:`~agentgym_runtime.trainers.chat_data.OutcomeReward` (the call runs in the
    replay: right tool, schema-valid arguments); exact is
    :func:`~agentgym_runtime.trainers.chat_data.exact_call` (the recorded tool and arguments).

    Example:
        >>> heldout_scores(model, tok, [], [], reward, 8, "cpu")  # doctest: +SKIP
        (0.0, 0.0)
    """
    import torch

    from agentgym_runtime.trainers.chat_data import exact_call
    from agentgym_runtime.trainers.grpo import GRPOConfig, _Sampler

    if not prompts:
        return 0.0, 0.0

    class _ServingSampler(_Sampler):
        def encode(self, prompt: str) -> list[int]:
            return list(self.tokenizer.encode(prompt, add_special_tokens=False))

    sampler = _ServingSampler(model, tokenizer, GRPOConfig(max_new_tokens=max_new_tokens), device)
    generator = torch.Generator(device=device).manual_seed(0)
    model.eval()
    texts: list[str] = []
    for start in range(0, len(prompts), 16):
        texts += sampler.sample(prompts[start : start + 16], 1, generator, greedy=True).texts
    rewards = [float(reward(sample, text)) for sample, text in zip(samples, texts, strict=True)]
    exact = [exact_call(sample, text, reward.fmt) for sample, text in zip(samples, texts, strict=True)]
    return sum(rewards) / len(rewards), sum(exact) / len(exact)


class SFTTrainer:
    """The ``sft`` trainer: supervised LoRA on the traces' successful calls and answers.

    Options: ``model_path`` (a local Hugging Face model directory, or one holding a GGUF file),
    ``tool_format`` (``hermes``, ``llama3``, ``mistral``, ``json``; default: detected),
    ``chat_template``, ``pad_token``, ``extra_snapshots`` (teacher traces), ``reward`` (an extra
    ``(task, completion) -> float`` for the held-out measurement), plus :class:`SFTConfig` fields.

    Example:
        >>> SFTTrainer.name
        'sft'
    """

    name: ClassVar[str] = "sft"

    def check_available(self, spec: TrainingJobSpec) -> None:
        """Needs torch, transformers and peft (the ``train`` extra) and a ``model_path``."""
        from agentgym_runtime.trainers.grpo import check_lora_trainer

        check_lora_trainer(self.name, spec)

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        """Read the samples, train, measure held-out accuracy before and after, save the adapter."""
        from transformers import AutoModelForCausalLM

        from agentgym_runtime.trainers.chat_data import (
            OutcomeReward,
            gguf_kwargs,
            load_job_data,
            render_prompt,
            render_sample,
        )
        from agentgym_runtime.trainers.grpo import adapter_result, resolve_device
        from agentgym_runtime.trainers.lightning.common import import_object

        self.check_available(spec)
        config = SFTConfig.model_validate({"seed": spec.seed, **trainer_options(spec.options)})
        data = load_job_data(spec)
        fmt: Any = data.fmt
        chosen = [s for s in data.train if s.successful and (s.is_tool_call or config.include_answers)]
        if not chosen:
            raise TrainerUnavailable("the traces hold no successful tool call or answer to learn from")
        pairs = [render_sample(data.tokenizer, s, fmt) for s in chosen]
        extra = spec.options.get("reward")
        reward = OutcomeReward(fmt, import_object(extra) if extra else None)
        heldout = [s for s in data.heldout if s.is_tool_call]
        heldout_prompts = [render_prompt(data.tokenizer, s, fmt) for s in heldout]
        model_path = str(spec.options["model_path"])
        model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, **gguf_kwargs(model_path))
        device = resolve_device(spec.device)
        progress(0.05, f"SFT on {len(pairs)} recorded turns of {data.tasks} tasks ({device})")
        init = spec.base_adapter if config.continue_from_base else None
        if init is not None:
            from peft import PeftModel

            before_model = PeftModel.from_pretrained(model, str(init))
            before, exact_before = heldout_scores(
                before_model, data.tokenizer, heldout_prompts, heldout, reward, config.max_new_tokens, device
            )
            model = before_model.unload()
        else:
            before, exact_before = heldout_scores(
                model, data.tokenizer, heldout_prompts, heldout, reward, config.max_new_tokens, device
            )
        peft_model, metrics = sft_train(
            model, data.tokenizer, pairs, config, device=device, progress=progress, init_adapter=init
        )
        after, exact_after = heldout_scores(
            peft_model, data.tokenizer, heldout_prompts, heldout, reward, config.max_new_tokens, device
        )
        measured = bool(heldout)  # nothing held out: no score, never a 0 that reads as "learnt nothing"
        metrics = {
            **metrics,
            "heldout_reward_before": before if measured else None,
            "heldout_reward_after": after if measured else None,
            "heldout_exact_before": exact_before if measured else None,
            "heldout_exact_after": exact_after if measured else None,
            "train_samples": len(pairs),
            "heldout_samples": len(heldout),
            "teacher_models": sorted({s.model for s in chosen if s.model}),
            "tool_format": fmt,
            "left_out_samples": data.left_out,
        }
        return adapter_result(self.name, peft_model, spec, model_path, metrics, progress)
