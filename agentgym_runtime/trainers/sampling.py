"""How often a trainer draws each recorded prompt: failures first, and rare failures not drowned out.

A snapshot of production traffic holds a model's mistakes in very unequal numbers: on the demo's
customer_support traffic, 337 episodes held 128 failed with one argument of the wrong type and 9
with a required argument left out. Drawn in proportion, the common mistake takes most of a
training job and the rare one stays unlearned (a customer_support version that served at 98% still
failed 4 of 13 held-out calls of the rare kind). :func:`prompt_weights` gives every prompt of a
failed recording ``failed_weight`` and, with ``rare_threshold``, multiplies it by the *repeat
factor* of its failure mode (Gupta et al., "LVIS", 2019: ``max(1, sqrt(threshold / f))`` for a
mode that is a share ``f`` of the failures). A failure mode is what the failed call looked like,
with no knowledge of the task: the tool it named, its outcome, the error type recorded with it, and
the argument names it passed. The error type is what tells apart two mistakes on the same tool
with the same argument names: on customer_support, ``open_ticket`` called with text that is not
JSON (error type ``invalid_arguments``) and with an order id of the wrong type (``ValidationError``)
were one mode, 12 episodes inside 42, and the rarer one was never boosted (a first round then got
0 of 8 such held-out calls right).

Example:
    >>> modes = [None, ("get_order", "invalid_arguments", "ValidationError", ("order_id",))]
    >>> modes += [("refund", "unknown_tool", "unknown_tool", ())] * 15
    >>> [round(w, 2) for w in prompt_weights(modes, failed_weight=3.0, rare_threshold=0.25)[:3]]
    [1.0, 6.0, 3.0]
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from agentgym_runtime import semconv

__all__ = [
    "UNKNOWN_FAILURE",
    "call_failure_mode",
    "is_base_failure",
    "prompt_weights",
    "recorded_failure_mode",
    "target_failure_mode",
]

FailureMode = tuple[str | None, str, str | None, tuple[str, ...]]

#: The mode of a recording counted as failed whose failed call is not at hand (one shared mode).
UNKNOWN_FAILURE: FailureMode = (None, "failed", None, ())


def call_failure_mode(
    name: str | None, outcome: str | None, arguments: Any, error_type: str | None = None
) -> FailureMode:
    """The failure mode of one failed call: its tool name, outcome, error type and sorted argument names.

    Arguments recorded as a JSON string are read; anything that is not an object has no names.

    Example:
        >>> call_failure_mode("get_order", "invalid_arguments", '{"order_id": "#12", "x": 1}', "ValidationError")
        ('get_order', 'invalid_arguments', 'ValidationError', ('order_id', 'x'))
    """
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = None
    names = tuple(sorted(str(k) for k in arguments)) if isinstance(arguments, Mapping) else ()
    return (name, outcome or "unknown", error_type, names)


def recorded_failure_mode(calls: Iterable[Any]) -> FailureMode | None:
    """The failure mode of a recorded episode's first failed call (``None``: no call failed).

    ``calls`` are :class:`~agentgym_runtime.trainers.dataset.RecordedToolCall` (``name``,
    ``outcome``, ``arguments``, ``error_type``).
    """
    for call in calls:
        if call.outcome != semconv.ToolOutcome.OK.value:
            return call_failure_mode(call.name, call.outcome, call.arguments, call.error_type)
    return None


def target_failure_mode(
    target: Mapping[str, Any], outcomes: Sequence[str | None], error_types: Sequence[str | None] = ()
) -> FailureMode | None:
    """The failure mode of a recorded assistant turn's first failed tool call (``None``: none failed).

    ``target`` holds OpenAI-style ``tool_calls``; ``outcomes`` their recorded outcomes, in order
    (``None``: never executed, which is not a failure), and ``error_types`` their recorded error
    types (missing ones count as ``None``).
    """
    for index, (call, outcome) in enumerate(zip(target.get("tool_calls") or [], outcomes, strict=False)):
        if outcome is not None and outcome != semconv.ToolOutcome.OK.value:
            function = call.get("function") or {}
            error_type = error_types[index] if index < len(error_types) else None
            return call_failure_mode(function.get("name"), outcome, function.get("arguments"), error_type)
    return None


def is_base_failure(agent: str, version: int, *, base_agent: str, base_version: int) -> bool:
    """Whether a failure recorded by ``agent`` under ``version`` is one of the policy a job trains from.

    Another agent's failures (a teacher's) count; another version of the same agent's do not: the
    job improves ``base_version``, and what an older version got wrong it may already get right.

    Example:
        >>> recorded = [("bot", 1), ("bot", 0), ("teacher", 0)]
        >>> [is_base_failure(agent, version, base_agent="bot", base_version=1) for agent, version in recorded]
        [True, False, True]
    """
    return agent != base_agent or version == base_version


def prompt_weights(
    modes: Sequence[Hashable | None], *, failed_weight: float, rare_threshold: float = 0.0
) -> list[float]:
    """A drawing weight per prompt from its recording's failure mode (``None``: it did not fail).

    Args:
        modes: One failure mode per prompt, ``None`` for a prompt of a recording that did not fail.
        failed_weight: Weight of a failed prompt against 1 for the others.
        rare_threshold: Failure modes that are a share ``f`` below this of the failed prompts get
            their weight multiplied by ``sqrt(rare_threshold / f)``; 0 turns it off.

    Raises:
        ValueError: ``failed_weight`` not positive or ``rare_threshold`` not in [0, 1].

    Example:
        >>> prompt_weights([None, "a", "a", "a", "b"], failed_weight=2.0, rare_threshold=0.5)
        [1.0, 2.0, 2.0, 2.0, 2.8284271247461903]
    """
    if failed_weight <= 0:
        raise ValueError(f"failed_weight must be > 0, got {failed_weight}")
    if not 0.0 <= rare_threshold <= 1.0:
        raise ValueError(f"rare_threshold must be in [0, 1], got {rare_threshold}")
    counts = Counter(mode for mode in modes if mode is not None)
    failed = sum(counts.values())
    weights: list[float] = []
    for mode in modes:
        if mode is None:
            weights.append(1.0)
            continue
        share = counts[mode] / failed
        factor = max(1.0, math.sqrt(rare_threshold / share)) if rare_threshold else 1.0
        weights.append(failed_weight * factor)
    return weights
