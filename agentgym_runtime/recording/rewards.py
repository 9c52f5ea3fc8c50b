"""Rewards: what an episode was worth, for training and for the gate.

The default reward is the episode's tool reliability. A ``reward=`` callable on
the decorator, or a scenario's reward function, replaces it; user feedback is
stored beside it (table ``feedback``) and combined with :func:`combine`.

Example:
    >>> from agentgym_runtime.recording.rewards import combine
    >>> combine(tool_reliability=0.5, task_reward=1.0, feedback=None)
    0.75
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from agentgym_runtime.recording.context import Episode

RewardFn = Callable[..., float | None]
"""``reward(episode)`` or ``reward(episode, output)`` → a finite float, or ``None`` for no reward."""


@runtime_checkable
class RewardSource(Protocol):
    """Anything with a ``reward(episode, output)`` method, e.g. a scenario."""

    def reward(self, episode: Episode, output: Any) -> float | None:
        """The reward of a finished ``episode`` whose agent returned ``output``."""
        ...


def tool_reliability(episode: Episode) -> float | None:
    """Successful tool calls / requested tool calls; ``None`` if the episode called no tool."""
    return episode.tool_reliability


def compute_reward(episode: Episode, output: Any, reward: RewardFn | RewardSource | None) -> float | None:
    """Apply the configured reward to a finished episode.

    Raises:
        ValueError: The reward function returned something that is not a finite number.
    """
    if episode.reward is not None:
        return episode.reward  # set explicitly inside the run: it wins
    if reward is None:
        return tool_reliability(episode)
    if isinstance(reward, RewardSource):
        value = reward.reward(episode, output)
    elif _arity(reward) >= 2:
        value = reward(episode, output)
    else:
        value = reward(episode)
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"reward function returned {value!r}; it must return a finite number or None")
    return number


def combine(
    *,
    tool_reliability: float | None,
    task_reward: float | None = None,
    feedback: float | None = None,
    weights: tuple[float, float, float] = (0.5, 0.5, 0.0),
) -> float | None:
    """Weighted mean of the parts that are present (weights renormalised over them)."""
    parts = [
        (value, weight)
        for value, weight in zip((tool_reliability, task_reward, feedback), weights, strict=True)
        if value is not None and weight > 0
    ]
    if not parts:
        return None
    total = sum(w for _, w in parts)
    return sum(v * w for v, w in parts) / total


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
