"""The GRPO maths: group-relative advantages, the clipped policy loss with the k3 KL, token log-probabilities.

Pure functions over tensors and lists (torch imported inside each), apart from the sampling loop
and the trainer glue in :mod:`agentgym_runtime.trainers.grpo`, which describes the algorithm.

Example:
    >>> [round(a, 3) for a in group_advantages([1.0, 0.0], 2)]
    [1.0, -1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _positions(attention: Any) -> Any:
    """Position ids of left-padded rows: each row's first real token is position 0."""
    return (attention.cumsum(-1) - 1).clamp(min=0)


def _token_logprobs(model: Any, sequences: Any, attention: Any, prompt_length: int) -> Any:
    """Log-probabilities of the completion tokens (positions after ``prompt_length``).

    The model computes its head for the completion positions alone (transformers'
    ``logits_to_keep``, as TRL does): a chat prompt with a tool block is most of the sequence
    (SmolLM2: ~260 prompt tokens for a 40-token completion), and the 49k-vocabulary head over
    every prompt position cost more than the rest of the forward pass's logits were worth.
    """
    import torch

    keep = sequences.shape[1] - prompt_length + 1  # the completion and the token before it
    logits = model(
        input_ids=sequences,
        attention_mask=attention,
        position_ids=_positions(attention),
        use_cache=False,
        logits_to_keep=keep,
    ).logits[:, -keep:-1, :]
    targets = sequences[:, prompt_length:]
    try:
        from trl.trainer.utils import selective_log_softmax
    except ImportError:  # TRL absent: the same computation, less memory-frugal
        return torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return selective_log_softmax(logits, targets)


def grpo_loss(
    logps: Any,
    old_logps: Any,
    ref_logps: Any,
    advantages: Any,
    mask: Any,
    *,
    clip_epsilon: float,
    beta: float,
    on_policy: Any = None,
    batch_size: int | None = None,
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
        on_policy: 1 for sequences sampled from the policy, 0 for recorded (guide) ones ``[B]``;
            the KL term counts only the former. Default: all on-policy.
        batch_size: Sequences the batch had before uniform-reward groups were left out: the
            loss is the sum over the ``B`` sequences given divided by this (default ``B``), so
            leaving out groups with zero advantages does not scale up the others' gradients.

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
    kl_mask = mask
    if on_policy is not None:
        # A guide was not sampled from the old policy, so the trust-region clip (which would let
        # a token the policy gives 1e-4 grow by at most 20% a round) does not apply to it: its
        # tokens get the plain advantage-weighted log-likelihood gradient, as in LUFFY.
        guided = (1 - on_policy).unsqueeze(1)
        per_token = per_token * (1 - guided) - advantages.unsqueeze(1) * logps * guided
        kl_mask = mask * on_policy.unsqueeze(1)
    if beta:
        per_token = per_token + beta * kl * (kl_mask if on_policy is not None else 1.0)
    per_sequence = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
    loss = per_sequence.sum() / (batch_size or per_sequence.shape[0])
    clipped_tokens = ((ratio - 1).abs() > clip_epsilon).float() * kl_mask
    stats = {
        "kl": float(((kl * kl_mask).sum() / kl_mask.sum().clamp(min=1)).detach()),
        "clip_fraction": float(clipped_tokens.sum() / kl_mask.sum().clamp(min=1)),
    }
    return loss, stats


def lr_factor(schedule: str, done: int, total: int) -> float:
    """The learning rate's factor after ``done`` of ``total`` rounds: 1, or falling to 0 at the last.

    ``"linear"`` and ``"cosine"`` give the first round the full rate and reach 0 only after the
    last, so every round learns something.

    Raises:
        ValueError: An unknown schedule, or ``total`` below 1.

    Example:
        >>> [round(lr_factor("linear", k, 4), 2) for k in range(4)]
        [1.0, 0.75, 0.5, 0.25]
        >>> [round(lr_factor("cosine", k, 4), 2) for k in range(4)]
        [1.0, 0.85, 0.5, 0.15]
    """
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    left = max(0.0, 1.0 - done / total)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return left
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (1.0 - left)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}: use 'constant', 'linear' or 'cosine'")


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


def _rows_of_informative_groups(rewards: Sequence[float], group_size: int) -> list[int]:
    """Indices of the rows of every group whose rewards are not all equal (the groups with signal).

    Example:
        >>> _rows_of_informative_groups([1.0, 1.0, 0.0, 1.0, 0.5, 0.5], 2)
        [2, 3]
    """
    rows: list[int] = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        if max(group) - min(group) > 1e-9:
            rows.extend(range(start, start + len(group)))
    return rows
