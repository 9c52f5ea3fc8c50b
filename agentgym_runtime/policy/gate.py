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

**Repeated looks.** :meth:`Gate.decide` without ``looks`` is one fixed-sample test. A caller that
re-tests the same canary as data arrives (the router's ``evaluate_every``) passes the looks made so
far and gets a *group-sequential* test of the promotion: the information fraction of a look is
``t = canary tool calls / GateConfig.max_tool_calls``, and the look's z boundary is chosen so that the
cumulative probability of a false promotion equals the Lan-DeMets O'Brien-Fleming-type spending
function ``alpha*(t) = 2 - 2·Φ(z_(alpha/2) / √t)`` (see :func:`obrien_fleming_spending` and
:func:`sequential_boundaries`). Early looks need overwhelming evidence, the last one nearly the
fixed-sample ``z_alpha``; at ``t >= 1`` the decision is final (promote or roll back). Every look's
fraction, boundary, z and spent alpha travel in ``GateDecision.numbers["sequential"]``.

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
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
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


_STANDARD_NORMAL = NormalDist()
#: Where the density of the score below the continuation region is cut off, in standard
#: deviations: a path that low essentially never climbs back to the boundary (mass ~1e-15).
_LOWER_SDS = 8.0
#: Grid points per standard deviation of the narrowest Gaussian a stage integrates against;
#: 6 reproduces published boundaries to 1e-4 (see the tests).
_POINTS_PER_SD = 6.0
#: The kernel is negligible beyond this many standard deviations (exp(-40.5) ~ 2.6e-18).
_KERNEL_SDS = 9.0
#: A bound on one stage's grid (and its cost, ~0.2 s): only looks closer than ~0.03% of the
#: planned information need more, and even two looks 1e-6 apart then spend 0.0509 for 0.05.
_MAX_GRID_POINTS = 4001
#: The score's grid stops this many standard deviations above the boundary when the boundary is
#: infinite (nothing left to spend).
_UPPER_SDS_WITHOUT_BOUNDARY = 10.0


def obrien_fleming_spending(alpha: float, information_fraction: float) -> float:
    """The Lan-DeMets O'Brien-Fleming-type alpha spent by information fraction ``t``.

    ``alpha*(t) = 2 - 2·Φ(z_(alpha/2) / √t)`` for a one-sided test at level ``alpha``: it spends
    almost nothing early (``alpha*(0.25) ~ 9e-5`` at ``alpha = 0.05``) and exactly ``alpha`` at
    ``t = 1``; fractions above 1 spend no more. (The form ``2 - 2·Φ(z_alpha / √t)`` would spend
    ``2·alpha`` by ``t = 1``: the ``alpha/2`` quantile is what makes the total ``alpha``.)

    Args:
        alpha: The one-sided level to spend in total (``1 - confidence``).
        information_fraction: ``t``, the share of the planned information seen so far.

    Example:
        >>> obrien_fleming_spending(0.05, 1.0)
        0.05
        >>> round(obrien_fleming_spending(0.05, 0.5), 5)
        0.00557
    """
    if information_fraction <= 0.0:
        return 0.0
    if information_fraction >= 1.0:
        return alpha
    z_half = _STANDARD_NORMAL.inv_cdf(1.0 - alpha / 2.0)
    return 2.0 * normal_sf(z_half / math.sqrt(information_fraction))


def _crossing(score: float, start: float, spacing: float, weighted: tuple[float, ...], step_sd: float) -> float:
    # P(continue to the previous look, then S_k >= score): the previous look's weighted density
    # times the chance that the Gaussian increment carries each node past ``score``.
    return sum(w * normal_sf((score - (start + j * spacing)) / step_sd) for j, w in enumerate(weighted))


@dataclass(frozen=True, slots=True)
class _Stage:
    # The recursion after look k: its boundary is known; its density is not gridded yet, because
    # the grid must resolve the step to look k+1, which is not known until that look comes.
    boundaries: tuple[float, ...]
    t: float
    spent: float
    step_sd: float  # √(t_k - t_(k-1))
    grid_start: float  # the grid of look k-1's density (empty for the first look)
    grid_spacing: float
    weighted: tuple[float, ...]  # Simpson weight x density of S_(k-1) at each node


def _first_stage(alpha: float, t: float) -> _Stage:
    spent = obrien_fleming_spending(alpha, t)
    boundary = -_STANDARD_NORMAL.inv_cdf(spent) if spent > 0.0 else math.inf
    return _Stage((boundary,), t, spent, math.sqrt(t), 0.0, 0.0, ())


def _next_stage(alpha: float, stage: _Stage, next_t: float) -> _Stage:
    # The pooled z statistics of successive looks behave (asymptotically) like a Brownian motion
    # observed at the information fractions: the score S_k = Z_k·√t_k has independent Gaussian
    # increments of variance t_k - t_(k-1) under the null. So P(no crossing before k+1, crossing
    # at k+1) is a one-dimensional integral over the density of S_k on the continuation region,
    # propagated look by look on a grid (Simpson's rule; Armitage, McPherson and Rowe 1969;
    # Jennison and Turnbull 2000, ch. 19). The boundary of look k+1 is then solved so that this
    # probability equals the alpha the spending function releases since look k.
    t, boundary, step_sd = stage.t, stage.boundaries[-1], stage.step_sd
    next_sd = math.sqrt(next_t - t)
    # 1. The density of S_k on (-8·√t_k, boundary·√t_k), on a grid fine enough for both the step
    #    that produced it and the step to the next look (the kernel it is integrated against).
    root_t = math.sqrt(t)
    top = boundary * root_t if math.isfinite(boundary) else (_UPPER_SDS_WITHOUT_BOUNDARY + 1.0) * root_t
    bottom = -_LOWER_SDS * root_t
    finest = min(root_t, step_sd, next_sd)
    intervals = math.ceil((top - bottom) * _POINTS_PER_SD / finest)
    intervals = min(max(intervals + intervals % 2, 2), _MAX_GRID_POINTS - 1)
    h = (top - bottom) / intervals
    if not stage.weighted:  # the first look: S_1 is N(0, t_1)
        norm = 1.0 / (root_t * math.sqrt(2.0 * math.pi))
        density = [norm * math.exp(-0.5 * ((bottom + i * h) / root_t) ** 2) for i in range(intervals + 1)]
    else:
        norm = 1.0 / (step_sd * math.sqrt(2.0 * math.pi))
        reach = _KERNEL_SDS * step_sd
        start, spacing, weighted = stage.grid_start, stage.grid_spacing, stage.weighted
        last = len(weighted) - 1
        density = []
        for i in range(intervals + 1):
            s = bottom + i * h
            total = 0.0
            first_j = max(0, math.ceil((s - reach - start) / spacing))
            for j in range(first_j, min(last, math.floor((s + reach - start) / spacing)) + 1):
                d = (s - start - j * spacing) / step_sd
                total += weighted[j] * math.exp(-0.5 * d * d)
            density.append(norm * total)
    simpson = tuple(
        density[i] * h / 3.0 * (1.0 if i in (0, intervals) else 4.0 if i % 2 else 2.0) for i in range(intervals + 1)
    )
    # 2. The next boundary: bisection on the crossing probability, which falls from about
    #    P(continue) at z = -10 to 0 at z = 40.
    spent = obrien_fleming_spending(alpha, next_t)
    released = spent - stage.spent
    if released <= 0.0:
        next_boundary = math.inf  # nothing left to spend (t beyond 1, or spending underflows)
    else:
        root_next = math.sqrt(next_t)
        low, high = -10.0, 40.0
        while high - low >= 1e-10:
            middle = 0.5 * (low + high)
            if _crossing(middle * root_next, bottom, h, simpson, next_sd) > released:
                low = middle
            else:
                high = middle
        next_boundary = 0.5 * (low + high)
    return _Stage((*stage.boundaries, next_boundary), next_t, spent, next_sd, bottom, h, simpson)


#: Recursion states per (alpha, fractions so far): a new look extends its predecessor's state,
#: so each look costs one stage (~20 ms) however many came before.
_STAGES: OrderedDict[tuple[float, tuple[float, ...]], _Stage] = OrderedDict()
_STAGES_LOCK = threading.Lock()
_MAX_CACHED_STAGES = 512


def _boundaries(alpha: float, fractions: tuple[float, ...]) -> tuple[float, ...]:
    stage: _Stage | None = None
    done = 0
    with _STAGES_LOCK:
        for length in range(len(fractions), 0, -1):
            key = (alpha, fractions[:length])
            if key in _STAGES:
                _STAGES.move_to_end(key)
                stage, done = _STAGES[key], length
                break
    for length in range(done + 1, len(fractions) + 1):
        t = fractions[length - 1]
        stage = _first_stage(alpha, t) if stage is None else _next_stage(alpha, stage, t)
        with _STAGES_LOCK:
            _STAGES[(alpha, fractions[:length])] = stage
            while len(_STAGES) > _MAX_CACHED_STAGES:
                _STAGES.popitem(last=False)
    assert stage is not None  # fractions is never empty here
    return stage.boundaries


def sequential_boundaries(alpha: float, information_fractions: Sequence[float]) -> tuple[float, ...]:
    """The z boundary of each look so that P(false promotion by look k) = ``alpha*(t_k)`` exactly.

    The one-sided group-sequential boundaries for :func:`obrien_fleming_spending`, computed by
    the Lan-DeMets recursion under the usual independent-increments (Brownian motion)
    approximation of the looks' z statistics, by numerical integration (pure Python; each look
    extends the cached state of the looks before it).
    This was preferred over the simpler nominal boundaries
    ``z_k = Φ⁻¹(1 - (alpha*(t_k) - alpha*(t_(k-1))))``: those are valid (a union bound) but,
    because successive looks are correlated ``√(t_(k-1)/t_k) ~ 0.9``, they waste part of the
    alpha and so delay or miss promotions of real but modest improvements. The boundary of look
    ``k`` depends only on the first ``k`` fractions, so it does not change as looks are added.
    A look with nothing left to spend (``t`` beyond 1 after a final look) gets ``inf``.

    Args:
        alpha: The one-sided level (``1 - confidence``).
        information_fractions: ``t`` of every look so far, strictly increasing, each > 0 (they
            may exceed 1: the spending stops there, the correlation still uses them).

    Raises:
        ValueError: Fractions not strictly increasing and positive, or ``alpha`` not in (0, 1).

    Example:
        >>> [round(z, 3) for z in sequential_boundaries(0.025, [0.2, 0.4, 0.6, 0.8, 1.0])]
        [4.877, 3.357, 2.68, 2.29, 2.031]
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    fractions = tuple(float(t) for t in information_fractions)
    if not fractions:
        return ()
    previous = 0.0
    for t in fractions:
        if not t > previous:
            raise ValueError(f"information fractions must be positive and strictly increasing, got {list(fractions)}")
        previous = t
    return _boundaries(float(alpha), fractions)


#: The planned canary horizon, in multiples of ``min_tool_calls``, when ``max_tool_calls`` is unset:
#: the first test then sits at ``t = 0.25`` (boundary 3.75 at 95%), and the last one needs z 1.72
#: (looks every 25% of the horizon) to 1.84 (every 5%) instead of the fixed-sample 1.645.
MAX_TOOL_CALLS_FACTOR = 4


@dataclass(frozen=True, slots=True)
class GateConfig:
    """When the gate decides.

    Attributes:
        confidence: One-sided confidence of every test (0.95: p < 0.05). With repeated looks it
            bounds the false-promotion probability of the whole sequence of looks.
        min_tool_calls: Tool calls each arm needs before reliability is tested.
        min_episodes: Episodes each arm needs before error rates are tested.
        min_rewarded: Rewarded episodes each arm needs before rewards are tested.
        max_tool_calls: The planned maximum of canary tool calls for repeated looks: a look's
            information fraction is ``canary tool calls / max_tool_calls``, and the look that
            reaches it decides for good. ``None``: ``MAX_TOOL_CALLS_FACTOR * min_tool_calls``.

    Example:
        >>> GateConfig(min_tool_calls=100).planned_tool_calls
        400
    """

    confidence: float = 0.95
    min_tool_calls: int = 200
    min_episodes: int = 30
    min_rewarded: int = 30
    max_tool_calls: int | None = None

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if self.min_tool_calls < 1 or self.min_episodes < 1 or self.min_rewarded < 2:
            raise ValueError("minimum samples must be >= 1 (rewards: >= 2)")
        if self.max_tool_calls is not None and self.max_tool_calls < self.min_tool_calls:
            raise ValueError(
                f"max_tool_calls ({self.max_tool_calls}) must be >= min_tool_calls ({self.min_tool_calls})"
            )

    @property
    def planned_tool_calls(self) -> int:
        """The canary tool calls at which a sequence of looks ends (``t = 1``)."""
        return self.max_tool_calls if self.max_tool_calls is not None else MAX_TOOL_CALLS_FACTOR * self.min_tool_calls


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
class Look:
    """One test of the promotion in a sequence of looks at the same canary.

    Attributes:
        number: 1 for the first look that tested reliability, then 2, ...
        tool_calls: The candidate's tool calls at this look (they define the fraction).
        information_fraction: ``tool_calls / GateConfig.planned_tool_calls`` (may exceed 1).
        boundary_z: The z the candidate needed to be promoted (``inf``: no alpha left).
        z: The reliability z statistic (candidate better than incumbent) at this look.
        alpha_spent: Cumulative alpha spent by this look, ``alpha*(t)``.
        alpha_released: What this look added to ``alpha_spent``.
        final: ``t >= 1``: this look decided for good.

    Example:
        >>> look = Look(1, 100, 0.25, 3.75, 1.2, 8.9e-05, 8.9e-05, False)
        >>> Look.from_json(look.to_json()) == look
        True
    """

    number: int
    tool_calls: int
    information_fraction: float
    boundary_z: float
    z: float
    alpha_spent: float
    alpha_released: float
    final: bool

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (an infinite boundary becomes ``None``)."""
        return {
            "number": self.number,
            "tool_calls": self.tool_calls,
            "information_fraction": self.information_fraction,
            "boundary_z": self.boundary_z if math.isfinite(self.boundary_z) else None,
            "z": self.z,
            "alpha_spent": self.alpha_spent,
            "alpha_released": self.alpha_released,
            "final": self.final,
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Look:
        """Parse :meth:`to_json`'s dict (e.g. from a logged decision's details)."""
        boundary = payload.get("boundary_z")
        return cls(
            number=int(payload["number"]),
            tool_calls=int(payload["tool_calls"]),
            information_fraction=float(payload["information_fraction"]),
            boundary_z=math.inf if boundary is None else float(boundary),
            z=float(payload["z"]),
            alpha_spent=float(payload["alpha_spent"]),
            alpha_released=float(payload.get("alpha_released", 0.0)),
            final=bool(payload["final"]),
        )


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The gate's verdict with every number it was based on.

    Attributes:
        action: ``promote``, ``rollback`` or ``hold``.
        reason: One line for people.
        numbers: Every statistic (logged as the event's details).
        look: With repeated looks, the look this decision made (``None``: reliability was not
            tested, so no alpha was spent); pass it with the earlier ones to the next decision.

    Example:
        >>> GateDecision("hold", "not enough data", {}).action
        'hold'
    """

    action: GateAction
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    look: Look | None = None


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

    def decide(self, candidate: ArmStats, incumbent: ArmStats, looks: Sequence[Look] | None = None) -> GateDecision:
        """Promote, roll back or hold ``candidate`` against ``incumbent``.

        Args:
            candidate: The canary's numbers since it started.
            incumbent: The live version's numbers over the same period.
            looks: ``None`` for a single fixed-sample test at ``confidence``. For repeated looks
                at the same canary, the looks made so far (``[]`` at first; append each
                decision's :attr:`GateDecision.look`): the promotion must then cross the
                group-sequential boundary (module docstring), and the look with ``t >= 1`` is
                final (promote or roll back). The rollback tests stay at the nominal level at
                every look: they stop harm early and can only end a sequence without promoting,
                so they add no false promotions (an equal canary is sometimes rolled back, which
                costs a retrain, not users).

        Example:
            >>> gate = Gate(GateConfig(min_tool_calls=100))  # planned: 400 canary tool calls
            >>> first = gate.decide(ArmStats(2, 60, 120, 100), ArmStats(1, 60, 120, 88), looks=[])
            >>> first.action, first.look.number, round(first.look.boundary_z, 2), round(first.look.z, 2)
            ('hold', 1, 3.39, 1.88)
            >>> gate.decide(ArmStats(2, 60, 120, 100), ArmStats(1, 60, 120, 88)).action  # one look: p = 0.03
            'promote'
        """
        cfg = self.config
        alpha = 1.0 - cfg.confidence
        numbers: dict[str, Any] = {
            "candidate": {**asdict(candidate), "reliability": candidate.reliability},
            "incumbent": {**asdict(incumbent), "reliability": incumbent.reliability},
            "confidence": cfg.confidence,
            "test": "two-proportion z (one-sided)",
        }
        previous = tuple(looks) if looks is not None else ()
        sequential: dict[str, Any] | None = None
        if looks is not None:
            planned = cfg.planned_tool_calls
            numbers["test"] = "two-proportion z (one-sided), group-sequential"
            sequential = numbers["sequential"] = {
                "method": "Lan-DeMets O'Brien-Fleming-type alpha spending, exact recursion (independent increments)",
                "alpha": alpha,
                "max_tool_calls": planned,
                "tool_calls": candidate.tool_calls,
                "information_fraction": candidate.tool_calls / planned,
                "look": None,
                "looks": [look.to_json() for look in previous],
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
        look: Look | None = None
        if sequential is not None:
            if previous and candidate.tool_calls <= previous[-1].tool_calls:
                # No new canary information since the last look: testing again would spend
                # alpha on the same data (and the spending needs increasing fractions).
                sequential["note"] = f"no new canary tool calls since look {previous[-1].number}"
            else:
                look = self._look(candidate.tool_calls, z_better, previous, alpha)
                sequential["look"] = look.to_json()
                sequential["looks"].append(look.to_json())
        if p_worse < alpha:
            return GateDecision("rollback", f"regression: {summary} (p={p_worse:.2g})", numbers, look)
        if reward_worse:
            return GateDecision(
                "rollback", f"reward regression: {summary} (p={numbers['reward_worse_p']:.2g})", numbers, look
            )
        if sequential is None:
            if p_better < alpha:
                return GateDecision("promote", f"better: {summary} (p={p_better:.2g})", numbers)
            return GateDecision("hold", f"no significant difference yet: {summary} (p={p_better:.2g})", numbers)
        if look is None:
            return GateDecision("hold", f"no significant difference yet: {summary} ({sequential['note']})", numbers)
        crossed = z_better >= look.boundary_z
        where = (
            f"look {look.number}, t={look.information_fraction:.2f}: z={z_better:.2f} "
            f"{'>=' if crossed else '<'} boundary {look.boundary_z:.2f}, "
            f"alpha spent {look.alpha_spent:.2g} of {alpha:.2g}"
        )
        if crossed:
            return GateDecision("promote", f"better: {summary} ({where})", numbers, look)
        if look.final:
            return GateDecision("rollback", f"not better by the final look: {summary} ({where})", numbers, look)
        return GateDecision("hold", f"no significant difference yet: {summary} ({where})", numbers, look)

    def _look(self, tool_calls: int, z: float, previous: Sequence[Look], alpha: float) -> Look:
        planned = self.config.planned_tool_calls
        # Fractions come from the tool calls, so a change of the planned horizon between looks
        # re-scales the earlier looks consistently instead of mixing two scales.
        fractions = [look.tool_calls / planned for look in previous] + [tool_calls / planned]
        boundary = sequential_boundaries(alpha, fractions)[-1]
        t = fractions[-1]
        spent = obrien_fleming_spending(alpha, t)
        before = obrien_fleming_spending(alpha, fractions[-2]) if len(fractions) > 1 else 0.0
        return Look(
            number=len(previous) + 1,
            tool_calls=tool_calls,
            information_fraction=t,
            boundary_z=boundary,
            z=z,
            alpha_spent=spent,
            alpha_released=spent - before,
            final=t >= 1.0,
        )
