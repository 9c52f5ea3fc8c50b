"""The gate: decide from live traffic whether a canary is better, worse, or not known yet.

Tool reliability (successful tool calls / requested tool calls) of the candidate and the
incumbent is compared with a one-sided two-proportion z-test, in each direction, at a
configurable confidence, once both arms have a minimum number of tool calls. Episode error
rates are compared the same way (an error spike rolls back), and task reward, where both
arms have enough rewarded episodes, with a one-sided Welch z-test on the means.

* **rollback** — reliability significantly lower, error rate significantly higher, or
  reward significantly lower;
* **promote** — reliability significantly higher, and reward not significantly lower;
* **hold** — not enough data, or no significant difference yet.

Example:
    >>> gate = Gate(GateConfig(confidence=0.95, min_tool_calls=50))
    >>> better = ArmStats(version=2, episodes=60, tool_calls=120, tool_successes=114)
    >>> worse = ArmStats(version=1, episodes=60, tool_calls=120, tool_successes=72)
    >>> gate.decide(better, worse).action
    'promote'
    >>> gate.decide(worse, better).action
    'rollback'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

GateAction = Literal["promote", "rollback", "hold"]


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z.

    Example:
        >>> round(normal_sf(1.6448536), 3)
        0.05
    """
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def normal_ppf(p: float) -> float:
    """The z with P(Z <= z) = p (Acklam's rational approximation, |error| < 1.2e-9).

    Example:
        >>> round(normal_ppf(0.95), 4)
        1.6449
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    a = (
        -39.69683028665376,
        220.9460984245205,
        -275.9285104469687,
        138.3577518672690,
        -30.66479806614716,
        2.506628277459239,
    )
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572)
    c = (
        -0.007784894002430293,
        -0.3223964580411365,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    )
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    low = 0.02425
    if p < low:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        )
    if p > 1 - low:
        return -normal_ppf(1 - p)
    q = p - 0.5
    r = q * q
    return (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )


def two_proportion_z(successes_a: int, n_a: int, successes_b: int, n_b: int) -> tuple[float, float]:
    """Pooled two-proportion z statistic for ``p_a > p_b`` and its one-sided p-value.

    Example:
        >>> z, p = two_proportion_z(90, 100, 70, 100)
        >>> round(z, 2), p < 0.001
        (3.54, True)
    """
    if n_a <= 0 or n_b <= 0:
        return 0.0, 1.0
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    diff = successes_a / n_a - successes_b / n_b
    if variance <= 0:
        return 0.0, 1.0 if diff <= 0 else 0.0
    z = diff / math.sqrt(variance)
    return z, normal_sf(z)


def welch_z(mean_a: float, var_a: float, n_a: int, mean_b: float, var_b: float, n_b: int) -> tuple[float, float]:
    """Welch statistic for ``mean_a > mean_b`` (normal approximation) and its one-sided p-value.

    Example:
        >>> z, p = welch_z(0.9, 0.01, 50, 0.5, 0.01, 50)
        >>> p < 1e-6
        True
    """
    if n_a <= 1 or n_b <= 1:
        return 0.0, 1.0
    se = math.sqrt(max(var_a, 0.0) / n_a + max(var_b, 0.0) / n_b)
    diff = mean_a - mean_b
    if se <= 0:
        return 0.0, 1.0 if diff <= 0 else 0.0
    z = diff / se
    return z, normal_sf(z)


@dataclass(frozen=True, slots=True)
class GateConfig:
    """When the gate decides.

    Attributes:
        confidence: One-sided confidence of every test (0.95: p < 0.05).
        min_tool_calls: Tool calls each arm needs before reliability is tested.
        min_episodes: Episodes each arm needs before error rates are tested.
        min_rewarded: Rewarded episodes each arm needs before rewards are tested.
    """

    confidence: float = 0.95
    min_tool_calls: int = 200
    min_episodes: int = 30
    min_rewarded: int = 30

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if self.min_tool_calls < 1 or self.min_episodes < 1 or self.min_rewarded < 2:
            raise ValueError("minimum samples must be >= 1 (rewards: >= 2)")


@dataclass(frozen=True, slots=True)
class ArmStats:
    """What one version did during the comparison window.

    Example:
        >>> ArmStats(version=1, episodes=2, tool_calls=4, tool_successes=3).reliability
        0.75
    """

    version: int
    episodes: int = 0
    tool_calls: int = 0
    tool_successes: int = 0
    errors: int = 0
    rewarded: int = 0
    reward_mean: float | None = None
    reward_var: float | None = None

    @property
    def reliability(self) -> float | None:
        """Tool reliability, ``None`` without tool calls."""
        return self.tool_successes / self.tool_calls if self.tool_calls else None

    @property
    def error_rate(self) -> float | None:
        """Share of episodes that ended in an error."""
        return self.errors / self.episodes if self.episodes else None


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The gate's verdict with every number it was based on.

    Example:
        >>> GateDecision("hold", "not enough data", {}).action
        'hold'
    """

    action: GateAction
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)


class Gate:
    """Compares a candidate with the incumbent (see the module docstring).

    Args:
        config: Confidence and minimum samples.

    Example:
        >>> Gate().decide(ArmStats(2), ArmStats(1)).action
        'hold'
    """

    def __init__(self, config: GateConfig | None = None) -> None:
        self.config = config or GateConfig()

    def decide(self, candidate: ArmStats, incumbent: ArmStats) -> GateDecision:
        """Promote, roll back or hold ``candidate`` against ``incumbent``."""
        cfg = self.config
        alpha = 1.0 - cfg.confidence
        numbers: dict[str, Any] = {
            "candidate": {**asdict(candidate), "reliability": candidate.reliability},
            "incumbent": {**asdict(incumbent), "reliability": incumbent.reliability},
            "confidence": cfg.confidence,
            "test": "two-proportion z (one-sided)",
        }
        # Error spike: candidate episodes fail more often than the incumbent's.
        if candidate.episodes >= cfg.min_episodes and incumbent.episodes >= cfg.min_episodes:
            z, p = two_proportion_z(candidate.errors, candidate.episodes, incumbent.errors, incumbent.episodes)
            numbers["error_rate_z"], numbers["error_rate_p"] = z, p
            if p < alpha:
                return GateDecision(
                    "rollback",
                    f"error spike: {candidate.errors}/{candidate.episodes} episodes failed on v{candidate.version} "
                    f"vs {incumbent.errors}/{incumbent.episodes} on v{incumbent.version} (p={p:.2g})",
                    numbers,
                )
        reward_worse = False
        reward_note = ""
        if (
            candidate.rewarded >= cfg.min_rewarded
            and incumbent.rewarded >= cfg.min_rewarded
            and candidate.reward_mean is not None
            and incumbent.reward_mean is not None
        ):
            z, p = welch_z(
                incumbent.reward_mean,
                incumbent.reward_var or 0.0,
                incumbent.rewarded,
                candidate.reward_mean,
                candidate.reward_var or 0.0,
                candidate.rewarded,
            )
            numbers["reward_worse_z"], numbers["reward_worse_p"] = z, p
            reward_worse = p < alpha
            reward_note = f"; reward {candidate.reward_mean:.3f} vs {incumbent.reward_mean:.3f}"
        if candidate.tool_calls < cfg.min_tool_calls or incumbent.tool_calls < cfg.min_tool_calls:
            if reward_worse:
                return GateDecision(
                    "rollback", f"reward regression{reward_note} (p={numbers['reward_worse_p']:.2g})", numbers
                )
            return GateDecision(
                "hold",
                f"not enough tool calls yet: v{candidate.version} {candidate.tool_calls}, "
                f"v{incumbent.version} {incumbent.tool_calls} (need {cfg.min_tool_calls} each)",
                numbers,
            )
        z_better, p_better = two_proportion_z(
            candidate.tool_successes, candidate.tool_calls, incumbent.tool_successes, incumbent.tool_calls
        )
        p_worse = normal_sf(-z_better) if z_better != 0.0 or p_better < 1.0 else 1.0
        numbers["reliability_z"], numbers["reliability_p_better"], numbers["reliability_p_worse"] = (
            z_better,
            p_better,
            p_worse,
        )
        summary = (
            f"tool reliability v{candidate.version} {candidate.tool_successes}/{candidate.tool_calls} "
            f"({candidate.reliability:.3f}) vs v{incumbent.version} {incumbent.tool_successes}/{incumbent.tool_calls} "
            f"({incumbent.reliability:.3f}){reward_note}"
        )
        if p_worse < alpha:
            return GateDecision("rollback", f"regression: {summary} (p={p_worse:.2g})", numbers)
        if reward_worse:
            return GateDecision(
                "rollback", f"reward regression: {summary} (p={numbers['reward_worse_p']:.2g})", numbers
            )
        if p_better < alpha:
            return GateDecision("promote", f"better: {summary} (p={p_better:.2g})", numbers)
        return GateDecision("hold", f"no significant difference yet: {summary} (p={p_better:.2g})", numbers)
