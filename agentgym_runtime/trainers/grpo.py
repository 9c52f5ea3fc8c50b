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

**Guidance from production traces** (mixed-policy GRPO, as in LUFFY, Yan et al. 2025): a model
with a systematic mistake never samples the right call for the prompts that provoke it, so every
sample of the group earns the same reward and the group's advantages are all zero: plain GRPO
has nothing to learn from. In production the agent usually *recovered* — its next call, after
the tool's error, succeeded — and that call is in the trace. ``guides(index)`` returns such
recorded completions for a training prompt; while fewer than ``guide_below`` (default: half) of
a group's samples reach a guide's reward, the guide replaces the group's worst sample (at most
``max_guides_per_group``). Its advantage is then large and positive, so the policy moves toward
the call that worked, until it finds that call itself in most samples (what greedy decoding needs).
A guide's tokens are not clipped (they were not sampled from the old policy; the clip would
let a token the policy gives 1e-4 grow by at most 20% a round) and carry no KL term (the k3
estimator assumes samples from the policy): they get the advantage-weighted log-likelihood
gradient.

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

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from agentgym_runtime import semconv
from agentgym_runtime.recording.policy import LLMConfig
from agentgym_runtime.trainers import sampling
from agentgym_runtime.trainers.base import (
    GPUNotAvailableError,
    ProgressFn,
    TrainerUnavailable,
    TrainingJobSpec,
    TrainingResult,
)
from agentgym_runtime.trainers.grpo_math import (
    _positions,
    _rows_of_informative_groups,
    _token_logprobs,
    group_advantages,
    grpo_loss,
    lr_factor,
)
from agentgym_runtime.trainers.lightning.common import import_object, require_modules, trainer_options

if TYPE_CHECKING:
    from agentgym_runtime.trainers.chat_data import ChatSample
    from agentgym_runtime.trainers.dataset import Task
    from agentgym_runtime.trainers.sft import SFTConfig

RewardFn = Callable[[int, str], float]
GuideFn = Callable[[int], Sequence[str]]


class GRPOConfig(BaseModel):
    """Hyper-parameters of :func:`grpo_train` (the job's ``options`` minus ``model_path``/``reward``).

    Attributes:
        steps: Optimisation rounds (each samples fresh groups).
        continued_steps: Rounds when the job trains on from a served version's adapter
            (``init_adapter``; default: ``steps``). A version that already makes the right call
            almost everywhere has little left to learn, and a shorter job reaches its canary sooner.
        prompts_per_step: Prompts sampled per round.
        group_size: Completions per prompt (the GRPO group).
        inner_steps: Optimiser steps per round on the same samples (ratios move away from 1 after the first).
        learning_rate: AdamW learning rate of the LoRA weights. The default suits a pretrained model:
            on SmolLM2-135M after sft, two rounds at 5e-3 took held-out exact tool calls from 100%
            to 0% (reward 1.875 -> 0 within a round), while 5e-5 kept them and raised valid calls
            87.5% -> 100% (``benchmarks/RESULTS.md``). Models trained from scratch, like the demo's
            0.3M-parameter one, need far larger steps (the demo uses 2.5e-3).
        lr_schedule: How the learning rate moves over the job's rounds: ``"constant"``, or down to
            zero at the last round, ``"linear"`` (TRL's default) or ``"cosine"``. A decaying rate
            lets the last rounds settle instead of jumping between ``eval_every`` measurements.
        beta: Weight of the KL term to the reference model.
        clip_epsilon: PPO clip range.
        max_new_tokens: Completion length.
        temperature: Sampling temperature.
        lora_r: LoRA rank.
        lora_alpha: LoRA scale.
        lora_dropout: LoRA dropout.
        target_modules: Modules given LoRA adapters: names, ``"all-linear"`` (default: every linear
            layer but the output head, as QLoRA recommends; on the demo model, attention-only
            adapters plateaued at 92% held-out tool reliability, all-linear reached 98%), or
            ``None`` for peft's default for the architecture.
        eval_samples: Completions per held-out prompt when measuring reward by sampling.
        eval_greedy: Measure the held-out reward on greedy completions (default: what serves,
            for an agent decoding at temperature 0; on the demo model, the sampled measurement
            ranked rounds differently from the greedy tool reliability that served) instead of
            ``eval_samples`` samples at ``temperature``.
        max_guides_per_group: Recorded completions (``guides``) that may replace on-policy samples in
            one group (0: pure on-policy GRPO).
        guide_below: A guide enters a group while fewer than this share of the group's samples
            reach its reward: the policy keeps the recorded call as an anchor until it finds the
            call itself in most samples, which is what makes greedy decoding pick it.
        failed_episode_weight: How much more often :class:`GRPOTrainer` draws the prompt of a
            recorded episode with a failed tool call than one without (1: uniform). The failures
            are where there is something to learn.
        rare_failure_threshold: Draw the prompts of a failure mode (the failed call's tool, outcome,
            error type and argument names) that is a share ``f`` below this of the failures
            ``sqrt(threshold / f)`` times as often again (repeat-factor sampling, see
            :mod:`agentgym_runtime.trainers.sampling`), so that a mistake the snapshot holds a few
            times is not drowned by a common one. 0 (default): off.
        base_failures_only: Give ``failed_episode_weight`` and the repeat factor only to failures
            recorded under the version the job trains from (``spec.base_policy_version``), and to
            other agents' (teachers'); a failure of another version of this agent is drawn as any
            prompt. A later job's snapshot holds the episodes since the last job's, most of them
            served by the previous version while that job trained and canaried: on the demo's
            customer_support, 503 of a second job's 625 episodes were v0's, and their 271 failures
            were mostly mistakes the live v1 no longer made, against v1's own 22.
        skip_uniform_groups: Leave out of the optimiser step the groups whose samples (guides
            included) all earned the same reward (DAPO's dynamic sampling, without the resampling):
            their advantages are all zero, so their only gradient is the KL term's, and on a model
            that already handles most prompts they are most of the batch. The loss keeps the full
            batch's scale, so the other groups' gradients are unchanged. Dropping them made a
            round about twice as fast on the demo model.
        settled_prompt_weight: A prompt whose last group was uniform (its samples, guides included,
            all earned the same reward, so there was nothing to learn from it) is drawn with its
            weight times this factor until a group of it shows a difference again (1, the default:
            off). On a model that already handles most prompts, half the groups drawn are uniform
            and their sampling, the bulk of a round's time, teaches nothing; drawing them less
            spends the rounds on the prompts still being learnt (online difficulty filtering).
            A settled prompt is still drawn now and then, so a prompt the policy unlearns comes back.
            At 0.25, three of the demo's weak first jobs replayed on their own snapshots went from
            94.0/93.8/81.9% to 95.5/99.3/96.4% tool reliability, but six fresh demo runs did as
            well without it (3 of 6 at >= 95%), their rounds ~8 s longer; the demo leaves it off.
        refocus_every: Every this many rounds (0, the default: never), decode every train prompt
            greedily, as the agent serves, and draw the prompts whose greedy completion earns less
            than the best the job has seen for them (a guide's reward, a sample's, or their own
            greedy reward at an earlier look) ``refocus_weight`` times as often until the next look.
            Two kinds of prompt are then trained more: a recorded mistake the policy still makes
            greedily although it has been shown the fix, and a prompt it handled and has unlearnt.
            Costs one greedy pass over the train prompts per look (2-3 s for 520 prompts of the demo
            model). On six customer_support first jobs replayed on their own snapshots (a fresh
            seed, a linearly decaying rate, 600 fresh requests each), looks every 20 rounds raised
            tool reliability from 92.3% to 96.0% mean, every snapshot better (two reruns with
            another seed lost 0.7 and 0.8 points); what they leave is mostly cancellations the job
            taught to carry another tool's argument. With a constant rate one such job ended at
            79.2%: pair it with ``lr_schedule``.
        refocus_weight: How much more often a prompt the last look found wrong is drawn.
        eval_every: Measure the held-out reward every this many rounds (0: only before and after)
            and return an earlier round's adapter (the start included) when it beat the last round
            by more than ``eval_margin``: RL on a small model can peak and then degrade (on the
            demo model, one seed went from 98% held-out tool reliability at 80 rounds to 86% at
            160), and a job should not ship the degraded end. ``metrics["best_step"]`` says which
            round was kept. Needs held-out prompts.
        eval_margin: How much better an earlier round must measure to replace the last one. A
            small held-out split is noisy: on the demo's 63 held-out tasks, taking the best of
            four measurements with no margin picked a worse round than the last (95.5% vs 98.0%).
        continue_from_base: When the live policy has a LoRA adapter (``spec.base_adapter``), train
            on from it instead of from a fresh one, so each candidate improves on what serves now
            (its rank and scale then come from that adapter, not ``lora_r``/``lora_alpha``).
        seed: Random seed.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=20, ge=1)
    continued_steps: int | None = Field(default=None, ge=1)
    prompts_per_step: int = Field(default=4, ge=1)
    group_size: int = Field(default=8, ge=2)
    inner_steps: int = Field(default=2, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    beta: float = Field(default=0.04, ge=0)
    clip_epsilon: float = Field(default=0.2, gt=0)
    max_new_tokens: int = Field(default=8, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] | str | None = "all-linear"
    eval_samples: int = Field(default=8, ge=1)
    eval_greedy: bool = True
    max_guides_per_group: int = Field(default=1, ge=0)
    guide_below: float = Field(default=0.5, gt=0, le=1)
    failed_episode_weight: float = Field(default=1.0, gt=0)
    rare_failure_threshold: float = Field(default=0.0, ge=0, le=1)
    base_failures_only: bool = True
    skip_uniform_groups: bool = True
    settled_prompt_weight: float = Field(default=1.0, gt=0, le=1)
    refocus_every: int = Field(default=0, ge=0)
    refocus_weight: float = Field(default=4.0, ge=1)
    eval_every: int = Field(default=0, ge=0)
    eval_margin: float = Field(default=0.05, ge=0)
    continue_from_base: bool = True
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


class Samples(NamedTuple):
    """Sampled completions of a batch of left-padded prompts.

    Attributes:
        sequences: Prompt + completion token ids ``[B, P + T]`` (prompts left-padded to ``P``).
        mask: 1 for completion tokens up to and including EOS ``[B, T]``.
        prompt_length: ``P``.
        texts: The completions, decoded (EOS and padding dropped).
        prompt_attention: 1 for real prompt tokens, 0 for left padding ``[B, P]``.
    """

    sequences: Any
    mask: Any
    prompt_length: int
    texts: list[str]
    prompt_attention: Any

    def attention(self, width: int) -> Any:
        """The attention mask of ``[B, P + width]`` sequences: the prompt's, then every completion column."""
        import torch

        ones = torch.ones((self.prompt_attention.shape[0], width), dtype=self.prompt_attention.dtype)
        return torch.cat([self.prompt_attention, ones.to(self.prompt_attention.device)], dim=1)


class _Sampler:
    def __init__(self, model: Any, tokenizer: Any, config: GRPOConfig, device: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.device = device

    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer.encode(prompt))

    def sample(self, prompts: Sequence[str], n: int, generator: Any, *, greedy: bool = False) -> Samples:
        """``n`` sampled completions of each prompt, all prompts in one left-padded batch.

        Rows ``i * n .. i * n + n - 1`` belong to ``prompts[i]``. Tokens after EOS are padding and
        masked out. The model's own KV cache (transformers' ``cache``) carries each step to the
        next: one token per forward pass instead of the whole sequence (15x faster for 64 samples
        of the demo model on a CPU); left padding with explicit position ids keeps every prompt
        in one batch. ``greedy`` takes the most likely token at every step instead of sampling.
        """
        import torch

        encoded = [self.encode(p) for p in prompts]
        width = max(len(e) for e in encoded)
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        rows = [[pad] * (width - len(e)) + e for e in encoded for _ in range(n)]
        attention_rows = [[0] * (width - len(e)) + [1] * len(e) for e in encoded for _ in range(n)]
        ids = torch.tensor(rows, device=self.device)
        prompt_attention = torch.tensor(attention_rows, device=self.device)
        attention = prompt_attention
        positions = _positions(attention)
        sequence = ids
        finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=self.device)
        mask_columns = []
        with torch.no_grad():
            # The prompt's pass needs the head at its last position only (as transformers' generate does).
            output = self.model(
                input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True, logits_to_keep=1
            )
            next_position = positions[:, -1] + 1
            for step in range(self.config.max_new_tokens):
                logits = output.logits[:, -1, :].float()
                if greedy:
                    token = logits.argmax(dim=-1)
                else:
                    probs = torch.softmax(logits / self.config.temperature, dim=-1)
                    token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                token = torch.where(finished, torch.full_like(token, pad), token)
                mask_columns.append((~finished).float())
                finished = finished | (token == eos)
                sequence = torch.cat([sequence, token.unsqueeze(1)], dim=1)
                if bool(finished.all()) or step == self.config.max_new_tokens - 1:
                    break
                attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
                output = self.model(
                    input_ids=token.unsqueeze(1),
                    attention_mask=attention,
                    position_ids=next_position.unsqueeze(1),
                    cache=output.cache,
                    use_cache=True,
                )
                next_position = next_position + 1
        mask = torch.stack(mask_columns, dim=1)
        texts = []
        for row, row_mask in zip(sequence[:, width:].tolist(), mask.tolist(), strict=True):
            kept = [t for t, m in zip(row, row_mask, strict=True) if m and t != eos]
            texts.append(self.tokenizer.decode(kept))
        return Samples(sequence, mask, width, texts, prompt_attention)


def insert_guides(
    sequences: Any,
    mask: Any,
    prompt_length: int,
    rewards: list[float],
    guides: Sequence[Sequence[tuple[list[int], float]]],
    group_size: int,
    pad_token_id: int,
    max_guides: int = 1,
    guide_below: float = 1e-9,
) -> tuple[Any, Any, list[float], list[bool]]:
    """Put recorded completions in place of the worst samples of groups none of whose samples did as well.

    ``sequences``/``mask``/``rewards`` hold ``len(rewards) // group_size`` groups of sampled
    completions (rows ``[P + T]``, mask ``[T]``); ``guides[g]`` lists ``(token ids incl. EOS,
    reward)`` for group ``g``; at most ``max_guides`` of them go into one group, and only while
    fewer than ``guide_below`` of its samples reach the guide's reward (default: none). Returns the new
    sequences, mask (widened with padding when a guide is longer than every sample), rewards,
    and one ``on_policy`` flag per row.

    Example:
        >>> import torch
        >>> seq, mask = torch.tensor([[5, 1, 9], [5, 2, 9]]), torch.ones(2, 2)
        >>> seq, mask, rewards, on_policy = insert_guides(seq, mask, 1, [0.0, 0.1], [[([3, 4, 9], 1.0)]], 2, 0)
        >>> seq.tolist(), mask.tolist(), rewards, on_policy
        ([[5, 3, 4, 9], [5, 2, 9, 0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], [1.0, 0.1], [False, True])
    """
    import torch

    rewards = list(rewards)
    on_policy = [True] * len(rewards)
    replacements: list[tuple[int, list[int]]] = []
    for group, options in enumerate(guides):
        start = group * group_size
        sampled = rewards[start : start + group_size]
        for ids, reward in sorted(options, key=lambda item: -item[1])[:max_guides]:
            # Keep at least one on-policy sample: the group's baseline must include the policy's own.
            candidates = [i for i in range(start, start + group_size) if on_policy[i]]
            # Guidance stops once the policy finds the call itself in ``guide_below`` of its samples.
            found = sum(r >= reward for r in sampled) / len(sampled)
            if found >= guide_below or len(candidates) <= 1:
                break
            # The worst on-policy sample of the group makes room for the guide.
            worst = min(candidates, key=rewards.__getitem__)
            rewards[worst], on_policy[worst] = reward, False
            replacements.append((worst, ids))
    if not replacements:
        return sequences, mask, rewards, on_policy
    width = max(mask.shape[1], *(len(ids) for _, ids in replacements))
    if width > mask.shape[1]:
        extra = width - mask.shape[1]
        padding = torch.full((sequences.shape[0], extra), pad_token_id, dtype=sequences.dtype, device=sequences.device)
        sequences = torch.cat([sequences, padding], dim=1)
        mask = torch.cat([mask, torch.zeros((mask.shape[0], extra), dtype=mask.dtype, device=mask.device)], dim=1)
    sequences, mask = sequences.clone(), mask.clone()
    for row, ids in replacements:
        sequences[row, prompt_length:] = pad_token_id
        sequences[row, prompt_length : prompt_length + len(ids)] = torch.tensor(
            ids, dtype=sequences.dtype, device=sequences.device
        )
        mask[row] = 0
        mask[row, : len(ids)] = 1
    return sequences, mask, rewards, on_policy


def evaluate(
    model: Any, tokenizer: Any, prompts: Sequence[str], reward: RewardFn, config: GRPOConfig, device: str, seed: int
) -> float:
    """Mean held-out reward of greedy completions, or of seeded samples (``config.eval_greedy``).

    Greedy is how a tool-calling agent usually serves; otherwise ``config.eval_samples`` samples
    per prompt at ``temperature``, with the same seed before and after training.

    Example:
        >>> evaluate(model, tok, ["p"], lambda i, c: 1.0, GRPOConfig(), "cpu", 0)  # doctest: +SKIP
        1.0
    """
    if not prompts:
        return 0.0
    rewards = prompt_rewards(
        model, tokenizer, prompts, reward, config, device, seed, greedy=config.eval_greedy, samples=config.eval_samples
    )
    return sum(rewards) / len(prompts)


def prompt_rewards(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    reward: RewardFn,
    config: GRPOConfig,
    device: str,
    seed: int,
    *,
    greedy: bool = True,
    samples: int = 1,
) -> list[float]:
    """Each prompt's reward for its greedy completion, or its mean over ``samples`` seeded samples.

    Example:
        >>> prompt_rewards(model, tok, ["p", "q"], lambda i, c: float(i), GRPOConfig(), "cpu", 0)  # doctest: +SKIP
        [0.0, 1.0]
    """
    import torch

    sampler = _Sampler(model, tokenizer, config, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    rewards: list[float] = []
    model.eval()
    n = 1 if greedy else samples
    chunk = max(1, 64 // n)  # about 64 sequences per batch
    for start in range(0, len(prompts), chunk):
        texts = sampler.sample(prompts[start : start + chunk], n, generator, greedy=greedy).texts
        for position in range(len(texts) // n):
            index = start + position
            rewards.append(sum(reward(index, t) for t in texts[position * n : (position + 1) * n]) / n)
    return rewards


def _update(
    model: Any,
    optimiser: Any,
    sequences: Any,
    attention: Any,
    mask: Any,
    prompt_length: int,
    advantages: list[float],
    on_policy: list[bool],
    batch_size: int,
    config: GRPOConfig,
    device: str,
) -> dict[str, float]:
    """``config.inner_steps`` optimiser steps on one round's samples; the last step's loss stats."""
    import torch

    with torch.no_grad():
        # The weights the ratio compares with are the very weights that sampled, which the first
        # optimiser step still has: its own log-probabilities, detached, are the old ones (TRL's
        # shortcut), and later inner steps reuse them. That saves a forward pass over the batch
        # (a quarter of a demo round's passes at two inner steps). Only with dropout would a
        # separate pass differ, by the dropout noise alone, so it is kept where dropout is on.
        old = _token_logprobs(model, sequences, attention, prompt_length) if _has_dropout(model) else None
        with model.disable_adapter():
            ref = _token_logprobs(model, sequences, attention, prompt_length)
    advantage = torch.tensor(advantages, device=device)
    flags = torch.tensor(on_policy, dtype=torch.float32, device=device)
    model.train()
    stats: dict[str, float] = {}
    for _ in range(config.inner_steps):
        optimiser.zero_grad()
        logps = _token_logprobs(model, sequences, attention, prompt_length)
        if old is None:
            old = logps.detach()
        loss, stats = grpo_loss(
            logps,
            old,
            ref,
            advantage,
            mask,
            clip_epsilon=config.clip_epsilon,
            beta=config.beta,
            on_policy=flags,
            batch_size=batch_size,
        )
        loss.backward()
        optimiser.step()
    return stats


def _has_dropout(model: Any) -> bool:
    """Whether training mode makes ``model``'s forward pass random (a dropout module or attention dropout > 0)."""
    import torch

    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        return True
    config = getattr(model, "config", None)
    return bool(getattr(config, "attention_dropout", 0) or getattr(config, "hidden_dropout", 0))


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
    guides: GuideFn | None = None,
    prompt_weights: Sequence[float] | None = None,
    init_adapter: str | Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train LoRA adapters on ``model`` with GRPO; return (the peft model, metrics).

    ``guides(index)`` may return recorded completions known to have worked for train prompt
    ``index`` (see the module docstring); they enter a group only when none of its samples
    does as well, and ``metrics["guided_samples"]`` counts them. ``prompt_weights`` makes some
    train prompts more likely to be drawn each round (default: uniform). ``init_adapter`` is a
    saved peft LoRA adapter to train on from (default: a fresh one from ``config``).

    Example:
        >>> peft_model, metrics = grpo_train(model, tok, prompts, reward, GRPOConfig(steps=2))  # doctest: +SKIP
    """
    import torch

    report = progress or (lambda fraction, message: None)
    torch.manual_seed(config.seed)
    peft_model = lora_model(model, config, device, init_adapter)
    heldout_fn = heldout_reward or train_reward
    before = evaluate(peft_model, tokenizer, heldout_prompts, heldout_fn, config, device, config.seed + 1)
    selecting = bool(config.eval_every and heldout_prompts)
    trainable = [(name, p) for name, p in peft_model.named_parameters() if p.requires_grad]
    best_reward, best_step = before, 0
    best_state = [p.detach().clone() for _, p in trainable] if selecting else None
    optimiser = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.learning_rate)
    sampler = _Sampler(peft_model, tokenizer, config, device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    order = torch.Generator().manual_seed(config.seed)
    rewards_per_step: list[float] = []
    samples = 0
    started = time.perf_counter()
    stats: dict[str, float] = {}
    weights = None
    if prompt_weights is not None:
        if len(prompt_weights) != len(train_prompts) or min(prompt_weights) < 0 or sum(prompt_weights) <= 0:
            raise ValueError("prompt_weights needs one non-negative weight per train prompt, not all zero")
        weights = torch.tensor(list(prompt_weights), dtype=torch.float64)
    # Per-prompt factor on the draw: settled_prompt_weight after a uniform group, 1 after one with signal.
    settled = torch.ones(len(train_prompts), dtype=torch.float64)
    adaptive = config.settled_prompt_weight < 1.0
    # Per-prompt factor on the draw: refocus_weight while the last greedy look found the prompt below
    # the best reward the job has seen for it (see refocus_every).
    focus = torch.ones(len(train_prompts), dtype=torch.float64)
    best_seen = [float("-inf")] * len(train_prompts)
    refocused: list[int] = []
    if (adaptive or config.refocus_every) and weights is None:
        weights = torch.ones(len(train_prompts), dtype=torch.float64)
    guide_cache: dict[int, list[tuple[list[int], float]]] = {}
    guided = 0
    skipped_groups = 0
    steps = config.continued_steps if init_adapter is not None and config.continued_steps else config.steps
    # Stepped once a round (not per inner step): every optimiser step of a round has the round's rate.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda done: lr_factor(config.lr_schedule, done, steps))

    def guides_of(index: int) -> list[tuple[list[int], float]]:
        # Tokenised once per prompt, scored with the same reward as the samples.
        if guides is None or config.max_guides_per_group == 0:
            return []
        if index not in guide_cache:
            eos = tokenizer.eos_token_id
            guide_cache[index] = [
                ([*tokenizer.encode(text), eos], float(train_reward(index, text))) for text in guides(index)
            ]
        return guide_cache[index]

    for step in range(steps):
        if weights is None:
            picks = torch.randint(len(train_prompts), (config.prompts_per_step,), generator=order).tolist()
        else:
            # Multiplying by factors of 1.0 leaves the weights, and so the draws, exactly as they were.
            draw = weights * settled * focus
            picks = torch.multinomial(draw, config.prompts_per_step, replacement=True, generator=order).tolist()
        peft_model.eval()
        n = config.group_size
        drawn = sampler.sample([train_prompts[i] for i in picks], n, generator)
        # The train reward reports what the policy itself sampled, guides excluded.
        sampled = [float(train_reward(picks[j // n], t)) for j, t in enumerate(drawn.texts)]
        samples += len(sampled)
        rewards_per_step.append(sum(sampled) / len(sampled))
        sequences, mask, rewards, on_policy = insert_guides(
            drawn.sequences,
            drawn.mask,
            drawn.prompt_length,
            sampled,
            [guides_of(i) for i in picks],
            n,
            tokenizer.pad_token_id,
            config.max_guides_per_group,
            config.guide_below,
        )
        guided += on_policy.count(False)
        if config.refocus_every:
            for j, index in enumerate(picks):
                best_seen[index] = max([best_seen[index], *rewards[j * n : (j + 1) * n]])
        attention = drawn.attention(mask.shape[1])
        advantages_list = group_advantages(rewards, n)
        informative_rows = _rows_of_informative_groups(rewards, n) if adaptive or config.skip_uniform_groups else []
        if adaptive:
            informative = set(informative_rows)
            for j, index in enumerate(picks):
                settled[index] = 1.0 if j * n in informative else config.settled_prompt_weight
        rows = list(range(len(rewards)))
        if config.skip_uniform_groups:
            rows = informative_rows
            skipped_groups += (len(rewards) - len(rows)) // n
            if rows and len(rows) < len(rewards):
                keep = torch.tensor(rows, device=sequences.device)
                sequences, mask, attention = sequences[keep], mask[keep], attention[keep]
                advantages_list = [advantages_list[r] for r in rows]
                on_policy = [on_policy[r] for r in rows]
        if rows:
            stats = _update(
                peft_model,
                optimiser,
                sequences,
                attention,
                mask,
                drawn.prompt_length,
                advantages_list,
                on_policy,
                len(rewards),
                config,
                device,
            )
            note = f"reward {rewards_per_step[-1]:.3f}"
        else:
            note = "no group with signal"
        scheduler.step()  # a round with no signal still counts: the schedule is over the job's rounds
        report(0.1 + 0.8 * (step + 1) / steps, f"step {step + 1}/{steps}: {note}")
        if config.refocus_every and (step + 1) % config.refocus_every == 0 and step + 1 < steps:
            greedy = prompt_rewards(peft_model, tokenizer, train_prompts, train_reward, config, device, config.seed + 2)
            wrong = _refocus(greedy, config, focus, best_seen, guides_of)
            refocused.append(wrong)
            report(
                0.1 + 0.8 * (step + 1) / steps,
                f"round {step + 1}: {wrong} of {len(train_prompts)} train prompts below their best, greedily",
            )
        if selecting and (step + 1) % config.eval_every == 0 and step + 1 < steps:
            measured = evaluate(peft_model, tokenizer, heldout_prompts, heldout_fn, config, device, config.seed + 1)
            if measured > best_reward:
                best_reward, best_step = measured, step + 1
                best_state = [p.detach().clone() for _, p in trainable]
            # In the run's progress, so that `agentgym runs` shows whether the rounds were still paying.
            # Not worded "reward": the CLI reads "reward X" in a message as the train reward.
            report(
                0.1 + 0.8 * (step + 1) / steps,
                f"round {step + 1}: held-out score {measured:.3f} (best {best_reward:.3f}, round {best_step})",
            )
    elapsed = time.perf_counter() - started
    after = evaluate(peft_model, tokenizer, heldout_prompts, heldout_fn, config, device, config.seed + 1)
    last_step = after
    if selecting and best_state is not None and best_reward > after + config.eval_margin:
        with torch.no_grad():
            for (_, parameter), saved in zip(trainable, best_state, strict=True):
                parameter.copy_(saved)
        after = best_reward
    else:
        best_step = steps
    measured = bool(heldout_prompts)  # nothing held out: no score, never a 0 that reads as "learnt nothing"
    metrics: dict[str, Any] = {
        "heldout_reward_before": before if measured else None,
        "heldout_reward_after": after if measured else None,
        "heldout_reward_last_step": last_step if measured else None,
        "best_step": best_step,
        "steps": steps,
        "train_reward_first_step": rewards_per_step[0],
        "train_reward_last_step": rewards_per_step[-1],
        "samples": samples,
        "guided_samples": guided,
        "skipped_groups": skipped_groups,
        "refocused_prompts": refocused,
        "samples_per_second": samples / elapsed if elapsed > 0 else None,
        "train_seconds": elapsed,
        "final_kl": stats.get("kl"),
        "device": device,
        "continued_from": None if init_adapter is None else str(init_adapter),
    }
    return peft_model, metrics


def _refocus(
    greedy: Sequence[float],
    config: GRPOConfig,
    focus: Any,
    best_seen: list[float],
    guides_of: Callable[[int], list[tuple[list[int], float]]],
) -> int:
    """One greedy look over the train prompts (see ``refocus_every``): sets ``focus``, returns the prompts found wrong.

    ``greedy`` holds each train prompt's greedy reward. A prompt is wrong when it is below the best
    seen for it: a sample's or a guide's reward, or its own greedy reward at an earlier look (so a
    prompt the policy unlearns counts).
    """
    wrong = 0
    for index, got in enumerate(greedy):
        best = max([best_seen[index], *(value for _, value in guides_of(index))])
        below = got < best - 1e-9
        focus[index] = config.refocus_weight if below else 1.0
        wrong += below
        best_seen[index] = max(best, got)
    return wrong


def save_adapter(peft_model: Any, output_dir: str | Path) -> Path:
    """Save the LoRA adapter (safetensors) to ``output_dir/adapter``; return that directory.

    Example:
        >>> save_adapter(peft_model, "/tmp/out")  # doctest: +SKIP
        PosixPath('/tmp/out/adapter')
    """
    target = Path(output_dir) / "adapter"
    peft_model.save_pretrained(str(target), safe_serialization=True)
    return target


def lora_model(model: Any, config: GRPOConfig | SFTConfig, device: str, init_adapter: str | Path | None = None) -> Any:
    """``model`` with a trainable LoRA: a fresh one from ``config``, or ``init_adapter`` to continue from.

    Shared by the LoRA trainers (``grpo``, ``sft``), whose configs carry the same LoRA fields.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if init_adapter is not None:
        return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True).to(device)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        modules_to_save=getattr(config, "modules_to_save", None),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora).to(device)


def check_lora_trainer(name: str, spec: TrainingJobSpec) -> None:
    """What every LoRA trainer (``grpo``, ``sft``) needs: the ``train`` extra, ``model_path``, the device.

    Raises:
        TrainerUnavailable: Missing ``model_path`` or a module of the ``train`` extra, or CUDA asked
            for without CUDA.
    """
    require_modules(name, {"torch": "train", "transformers": "train", "peft": "train"})
    if not spec.options.get("model_path"):
        raise TrainerUnavailable(
            f"the {name!r} trainer needs options['model_path']: a local Hugging Face causal LM directory"
        )
    resolve_device(spec.device)


def adapter_result(
    name: str, peft_model: Any, spec: TrainingJobSpec, model_path: str, metrics: dict[str, Any], progress: ProgressFn
) -> TrainingResult:
    """Save the trained adapter into the job's output and describe it as the candidate's LLM."""
    save_adapter(peft_model, spec.output_dir)
    progress(1.0, "adapter saved")
    return TrainingResult(
        trainer=name, llm=LLMConfig(model=model_path, adapter="adapter"), adapter="adapter", metrics=metrics
    )


class GRPOTrainer:
    """The ``grpo`` trainer for a job: model from ``options["model_path"]``, reward from ``options["reward"]``.

    Options: ``model_path`` (a local Hugging Face model directory, loaded offline), ``reward``
    (``module:qualname`` of ``(task, completion) -> float``; default: 1 when the completion
    contains the recorded output), ``prompt`` (``module:qualname`` of ``(task) -> str``, or a list
    of prompts, one per step of the recorded episode; default: the system prompt and the input as
    text), ``guide`` (``module:qualname`` of ``(task) -> list[str]``: completions the recorded
    episode shows to have worked, e.g. the call that succeeded after a tool error; default: none,
    pure on-policy GRPO), plus :class:`GRPOConfig` fields. ``reward`` and ``guide`` also get
    ``prompt=`` when they take it, for tasks with several prompts.

    Example:
        >>> GRPOTrainer.name
        'grpo'
    """

    name: ClassVar[str] = "grpo"

    def check_available(self, spec: TrainingJobSpec) -> None:
        """Needs torch, transformers and peft (the ``train`` extra) and a ``model_path``."""
        check_lora_trainer(self.name, spec)

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        """Load the snapshot, model and tokenizer; run :func:`grpo_train`; save the adapter."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from agentgym_runtime.trainers.lightning.bridge import as_text, load_snapshot_tasks

        self.check_available(spec)
        model_path = str(spec.options["model_path"])
        reward_path = spec.options.get("reward")
        prompt_path = spec.options.get("prompt")
        if not prompt_path and not spec.options.get("guide") and _has_chat_spans(spec):
            return self._train_on_traces(spec, progress)
        config = GRPOConfig.model_validate({"seed": spec.seed, **trainer_options(spec.options)})
        train, heldout = load_snapshot_tasks(spec)
        if not train:
            raise TrainerUnavailable("the snapshot has no training tasks: record more episodes before training")
        score = _with_prompt(
            import_object(reward_path) if reward_path else (lambda task, text: float(as_text(task.output) in text))
        )
        render = import_object(prompt_path) if prompt_path else (lambda task: as_text(task.input))
        guide_path = spec.options.get("guide")
        guide = _with_prompt(import_object(guide_path)) if guide_path else None
        # A task may give several prompts (the steps of its episode); each is a training prompt.
        pairs, held = _prompts(train, render), _prompts(heldout, render)
        if not pairs:
            raise TrainerUnavailable("the prompt option gave no prompt for any training task")
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True)
        device = resolve_device(spec.device)
        progress(0.05, f"GRPO on {len(pairs)} prompts of {len(train)} tasks ({device})")
        peft_model, metrics = grpo_train(
            model,
            tokenizer,
            [prompt for _, prompt in pairs],
            lambda i, text: float(score(pairs[i][0], text, prompt=pairs[i][1])),
            config,
            heldout_prompts=[prompt for _, prompt in held],
            heldout_reward=lambda i, text: float(score(held[i][0], text, prompt=held[i][1])),
            device=device,
            progress=progress,
            guides=None if guide is None else (lambda i: list(guide(pairs[i][0], prompt=pairs[i][1]))),
            prompt_weights=task_weights(config, spec, [t for t, _ in pairs]),
            init_adapter=spec.base_adapter if config.continue_from_base else None,
        )
        counts = {"train_tasks": len(train), "heldout_tasks": len(heldout), "train_prompts": len(pairs)}
        return adapter_result(
            self.name, peft_model, spec, model_path, {**metrics, **counts, "heldout_prompts": len(held)}, progress
        )

    def _train_on_traces(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        """The default with only ``model_path``: the recorded chats, the outcome reward, guides from the traces.

        Prompts are the recorded messages and tools in the model's chat template; the reward is
        :class:`~agentgym_runtime.trainers.chat_data.OutcomeReward` (plus ``options["reward"]``
        when given); the guides are the successful calls and recoveries of any version.
        """
        from transformers import AutoModelForCausalLM

        from agentgym_runtime.trainers.chat_data import (
            OutcomeReward,
            gguf_kwargs,
            guides,
            load_job_data,
            render_prompt,
            target_text,
        )

        config = GRPOConfig.model_validate({"seed": spec.seed, **trainer_options(spec.options)})
        data = load_job_data(spec)
        fmt: Any = data.fmt
        train = [s for s in data.train if s.is_tool_call]
        heldout = [s for s in data.heldout if s.is_tool_call]
        if not train:
            raise TrainerUnavailable("the traces hold no recorded tool call to train on")
        extra = spec.options.get("reward")
        reward = OutcomeReward(fmt, import_object(extra) if extra else None)
        prompts = [render_prompt(data.tokenizer, s, fmt) for s in train]
        held = [render_prompt(data.tokenizer, s, fmt) for s in heldout]
        texts = [target_text(data.tokenizer, s, fmt) for s in train]
        guided = guides(train, texts)
        model_path = str(spec.options["model_path"])
        model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, **gguf_kwargs(model_path))
        device = resolve_device(spec.device)
        progress(0.05, f"GRPO on {len(prompts)} recorded calls ({device}, {fmt} tool calls)")
        peft_model, metrics = grpo_train(
            model,
            data.tokenizer,
            prompts,
            lambda i, text: float(reward(train[i], text)),
            config,
            heldout_prompts=held,
            heldout_reward=lambda i, text: float(reward(heldout[i], text)),
            device=device,
            progress=progress,
            guides=lambda i: guided[i],
            prompt_weights=sample_weights(config, spec, train),
            init_adapter=spec.base_adapter if config.continue_from_base else None,
        )
        counts = {
            "train_prompts": len(prompts),
            "heldout_prompts": len(held),
            "tool_format": fmt,
            "left_out_samples": data.left_out,
        }
        return adapter_result(self.name, peft_model, spec, model_path, {**metrics, **counts}, progress)


def _weighs_failures(config: GRPOConfig, spec: TrainingJobSpec, agent: str, version: int) -> bool:
    """Whether a failure recorded by ``agent`` under ``version`` is drawn as a failure (see ``base_failures_only``)."""
    return not config.base_failures_only or sampling.is_base_failure(
        agent, version, base_agent=spec.agent, base_version=spec.base_policy_version
    )


def task_weights(config: GRPOConfig, spec: TrainingJobSpec, tasks: Sequence[Task]) -> list[float]:
    """How often to draw each training prompt of recorded episodes (one entry per prompt's task).

    A task whose episode had a failed tool call, recorded under the version the job trains from
    (``base_failures_only``), weighs ``failed_episode_weight`` times its failure mode's repeat
    factor (:func:`~agentgym_runtime.trainers.sampling.prompt_weights`); every other weighs 1.
    """
    modes = [
        (sampling.recorded_failure_mode(t.tool_calls) or sampling.UNKNOWN_FAILURE)
        if t.tool_reliability is not None
        and t.tool_reliability < 1
        and _weighs_failures(config, spec, t.agent, t.policy_version)
        else None
        for t in tasks
    ]
    return sampling.prompt_weights(
        modes, failed_weight=config.failed_episode_weight, rare_threshold=config.rare_failure_threshold
    )


def sample_weights(config: GRPOConfig, spec: TrainingJobSpec, samples: Sequence[ChatSample]) -> list[float]:
    """:func:`task_weights` for recorded chat turns: a turn whose requested calls did not all succeed is a failure."""
    modes = [
        None
        if s.successful or not _weighs_failures(config, spec, s.agent, s.policy_version)
        else (sampling.target_failure_mode(s.target, s.outcomes, s.error_types) or sampling.UNKNOWN_FAILURE)
        for s in samples
    ]
    return sampling.prompt_weights(
        modes, failed_weight=config.failed_episode_weight, rare_threshold=config.rare_failure_threshold
    )


def _has_chat_spans(spec: TrainingJobSpec) -> bool:
    """Whether the snapshot recorded LLM calls with their messages (the trace-derived default applies)."""
    import duckdb

    path = "'" + str(Path(spec.snapshot_dir) / "spans.parquet").replace("'", "''") + "'"
    con = duckdb.connect()
    try:
        row = con.execute(
            f"SELECT count(*) FROM read_parquet({path}) WHERE operation = '{semconv.OP_CHAT}' "
            f"AND json_extract_string(attributes, '$.\"{semconv.GEN_AI_INPUT_MESSAGES}\"') IS NOT NULL"
        ).fetchone()
    except duckdb.Error:
        return False
    finally:
        con.close()
    return bool(row and row[0])


def _prompts(tasks: Sequence[Any], render: Callable[[Any], Any]) -> list[tuple[Any, str]]:
    """``(task, prompt)`` for every prompt ``render`` gives (a string, or a list for multi-step episodes)."""
    pairs: list[tuple[Any, str]] = []
    for task in tasks:
        rendered = render(task)
        for prompt in [rendered] if isinstance(rendered, str) else list(rendered or ()):
            if prompt:
                pairs.append((task, prompt))
    return pairs


def _with_prompt(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` called as ``f(*args, prompt=p)``: the prompt is passed on when ``fn`` takes one (as TRL does).

    Example:
        >>> _with_prompt(lambda task, text: text)("t", "x", prompt="p")
        'x'
        >>> _with_prompt(lambda task, prompt: prompt)("t", prompt="p")
        'p'
    """
    import inspect

    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    if any(p.name == "prompt" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return lambda *args, prompt: fn(*args, prompt=prompt)

    def without_prompt(*args: Any, prompt: str) -> Any:
        return fn(*args)

    return without_prompt
