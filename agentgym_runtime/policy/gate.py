"""The gate: decide from live traffic whether a canary is better, worse, or not known yet.

Tool reliability (successful tool calls / requested tool calls) of the candidate and the
incumbent is compared with a one-sided z-test, in each direction, at a configurable confidence,
once both arms have a minimum number of tool calls. The router assigns whole sessions to an arm,
and a session's calls fail or succeed together (a model that gets a tool's schema wrong gets it
wrong on every retry; a retry after an error often succeeds), so when both arms carry their
per-session sums (:attr:`ArmStats.clusters`) the test is the cluster-robust
:func:`~agentgym_runtime.policy.statistics.ratio_z` (delta-method variance over sessions);
without them, the pooled two-proportion z-test of independent calls. Episode error
rates are compared the same way (an error spike rolls back), and task reward, where both
arms have enough rewarded episodes, with a one-sided Welch z-test on the means.

**An arm that calls no tool.** Reliability is undefined for a version that never requests a
tool call: a base model that answers in prose before its first training, or a candidate whose
training broke its tool use. Waiting for its tool calls would hold the canary forever, so when
one arm made no tool call in at least ``min_episodes`` episodes and the other has
``min_tool_calls``, the gate compares *tool use* instead: the share of episodes that made at
least one tool call and no failed one (:attr:`ArmStats.tool_episodes`), with the same test,
boundaries and actions.

* **rollback** — reliability significantly lower, error rate significantly higher, or
  reward significantly lower;
* **promote** — reliability significantly higher (or, with ``promotion="non_inferiority"``,
  significantly not lower by ``margin``), and reward not significantly lower;
* **hold** — not enough data, or no significant difference yet.

**Repeated looks.** :meth:`Gate.decide` without ``looks`` is one fixed-sample test. A caller that
re-tests the same canary as data arrives (the router's ``evaluate_every``) passes the looks made so
far and gets a *group-sequential* test of the promotion: the information fraction of a look is
``t = canary tool calls / GateConfig.max_tool_calls``, and the look's z boundary is chosen so that the
cumulative probability of a false promotion equals the Lan-DeMets O'Brien-Fleming-type spending
function ``alpha*(t) = 2 - 2·Φ(z_(alpha/2) / √t)`` (see
:func:`~agentgym_runtime.policy.statistics.obrien_fleming_spending` and
:func:`~agentgym_runtime.policy.statistics.sequential_boundaries`). Early looks need
overwhelming evidence, the last one nearly the fixed-sample ``z_alpha``; at ``t >= 1`` the
decision is final (promote or roll back). Every look's fraction, boundary, z and spent alpha
travel in ``GateDecision.numbers["sequential"]``.

**Rolling back early.** Tested at the nominal level at every look, the regression tests (reliability
or reward worse) roll back an *equal* canary far more often than ``alpha`` — repeated looks inflate
them exactly as they inflate promotions — and with it, now and then, a better one on an early
stretch of bad luck. With repeated looks they therefore use the promotion's boundary mirrored (a
symmetric two-sided group-sequential design, the harm side non-binding): a regression stops the
canary at look ``k`` when its z passes the boundary of that look. A canary that is much worse is
still stopped early (its z grows with ``√n``; a candidate that broke its tool use entirely is
caught at the first look), a mildly worse one is stopped later or by the final look.
``GateConfig(rollback="nominal")`` keeps the old per-look test. The error-spike test (episodes
that crash) always runs at the nominal level: it guards users, not the statistics.

**Promoting what is not worse** (``GateConfig(promotion="non_inferiority", margin=0.02)``). By
default a canary is promoted only when live traffic shows it *better*. A second or third training
round usually is better by a few points or not at all, and showing three points at 95% takes about
400 tool calls per arm (``benchmarks/gate_power.py``): the canary runs out of traffic, or time, and
a better version is rolled back. Where the candidate's improvement was already measured offline
(the scheduler's offline gate, ``TrainingConfig.max_heldout_drop``, compares it with its starting
point on the same held-out prompts), live traffic has a different job: to show that the candidate
is *not worse* by more than ``margin``, the question a canary analysis asks. The promotion test is
then the non-inferiority z, ``(candidate - incumbent + margin) / se``, with the same boundaries and
looks; the rollback tests are unchanged, and at the final look a canary that has not shown it is
within the margin is rolled back. A candidate truly ``margin`` worse is promoted at most
``1 - confidence`` of the time; an equal one more often than as "better" (a fifth of the time over
240 canary calls a side, against 4.5%), a clearly better one far more often.

**Promoting what was not shown worse** (``GateConfig(undecided="promote")``). Near the top of the
scale even "not worse by 2 points" takes more traffic than a canary gets: at 98% against 98%,
240 canary calls a side show it in half of the canaries (``benchmarks/gate_power.py --pairs
high``), and a customer_support run's second round, 97.0% on the held-out tasks against the live
version's 94.3%, was rolled back at the final look on 245/250 against 244/247. With ``undecided=
"promote"`` the final look promotes a canary that crossed no regression boundary: progressive
delivery's rule (Kayenta's "no significant difference passes", Flagger's and Argo Rollouts'
analysis that fails only on a failing metric). Live traffic then only guards against a
regression, and the improvement must come from the offline gate. The price, over the same 240
calls at 98% live: a candidate two points worse is promoted 64.5% of the time (7.0% by default),
four points worse 25.8% (0.2%); an equal one 94.8% (49.5%). The default stays ``"rollback"``.

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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# The statistics live in their own module (the demo uses them too); they stay importable from
# here, where the gate's callers have always found them.
from agentgym_runtime.policy.statistics import (
    ClusterSums,
    normal_ppf,
    normal_sf,
    obrien_fleming_spending,
    ratio_z,
    sequential_boundaries,
    two_proportion_z,
    welch_z,
)

__all__ = [
    "MAX_TOOL_CALLS_FACTOR",
    "ArmStats",
    "ClusterSums",
    "Gate",
    "GateAction",
    "GateConfig",
    "GateDecision",
    "Look",
    "decision_z",
    "normal_ppf",
    "normal_sf",
    "obrien_fleming_spending",
    "ratio_z",
    "sequential_boundaries",
    "two_proportion_z",
    "welch_z",
]

GateAction = Literal["promote", "rollback", "hold"]


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
        rollback: With repeated looks, how the regression tests (reliability or reward worse)
            decide: ``"sequential"`` at the promotion's boundary mirrored (an equal canary is
            rolled back early about as rarely as it is promoted), ``"nominal"`` at ``confidence``
            at every look (stops a mild regression sooner, rolls back equal canaries far more
            often). One fixed-sample test (no looks) is always at ``confidence``.
        promotion: What live traffic must show to promote: ``"superiority"`` (the candidate is
            better) or ``"non_inferiority"`` (it is not worse by ``margin``; for candidates whose
            improvement an offline gate measured, see the module docstring).
        margin: With ``promotion="non_inferiority"``, how much lower (absolute, 0.02: two points
            of tool reliability) the candidate may truly be and still count as not worse.
        undecided: With repeated looks, what the final look does with a canary that neither
            crossed the promotion boundary nor showed a regression: ``"rollback"`` (only what
            live traffic showed goes live) or ``"promote"`` (progressive delivery's rule, as in
            Kayenta, Flagger or Argo Rollouts: a canary that served its planned traffic without a
            regression goes on; for candidates an offline gate measured, see the module docstring).

    Example:
        >>> GateConfig(min_tool_calls=100).planned_tool_calls
        400
        >>> GateConfig(promotion="non_inferiority", margin=1.5)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: margin must be in [0, 0.5), got 1.5
    """

    confidence: float = 0.95
    min_tool_calls: int = 200
    min_episodes: int = 30
    min_rewarded: int = 30
    max_tool_calls: int | None = None
    rollback: Literal["sequential", "nominal"] = "sequential"
    promotion: Literal["superiority", "non_inferiority"] = "superiority"
    margin: float = 0.02
    undecided: Literal["rollback", "promote"] = "rollback"

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if self.rollback not in ("sequential", "nominal"):
            raise ValueError(f"rollback must be 'sequential' or 'nominal', got {self.rollback!r}")
        if self.promotion not in ("superiority", "non_inferiority"):
            raise ValueError(f"promotion must be 'superiority' or 'non_inferiority', got {self.promotion!r}")
        if self.undecided not in ("rollback", "promote"):
            raise ValueError(f"undecided must be 'rollback' or 'promote', got {self.undecided!r}")
        if isinstance(self.margin, bool) or not 0.0 <= self.margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {self.margin!r}")
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

    ``clusters`` are the per-session sums of the tool calls and successes (a session without a
    session id is its own cluster): with them on both arms the gate's reliability test is
    cluster-robust; ``None`` tests the calls as independent.

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
    tool_episodes: int = 0  # episodes with at least one tool call and no failed one
    clusters: ClusterSums | None = None

    @property
    def reliability(self) -> float | None:
        """Tool reliability, ``None`` without tool calls."""
        return self.tool_successes / self.tool_calls if self.tool_calls else None

    @property
    def tool_use(self) -> float | None:
        """Share of episodes that made at least one tool call and no failed one, ``None`` without episodes.

        Example:
            >>> ArmStats(version=1, episodes=4, tool_calls=3, tool_successes=3, tool_episodes=3).tool_use
            0.75
        """
        return self.tool_episodes / self.episodes if self.episodes else None

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
        z: The promotion's z statistic at this look: candidate better than the incumbent, or
            with ``promotion="non_inferiority"``, not worse by the margin.
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


def decision_z(details: Mapping[str, Any]) -> float | None:
    """The promotion z of a gate decision's ``details``: the one its look's boundary was compared with.

    The metric is tool reliability, or tool use; with ``promotion="non_inferiority"`` the z is the
    non-inferiority one (``<metric>_z_not_worse``), not the plain difference's.

    Example:
        >>> decision_z({"metric": "tool_use", "tool_use_z": 4.8}), decision_z({"reliability_z": 2.5})
        (4.8, 2.5)
        >>> decision_z({"metric": "reliability", "reliability_z": 0.4, "reliability_z_not_worse": 1.9})
        1.9
    """
    metric = details.get("metric", "reliability")
    value = details.get(f"{metric}_z_not_worse", details.get(f"{metric}_z"))
    return None if value is None else float(value)


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
                final (promote or roll back). The regression tests then use the promotion's
                boundary mirrored (``GateConfig.rollback``; module docstring); the error-spike
                test stays at ``confidence``.

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
            "candidate": _arm_numbers(candidate),
            "incumbent": _arm_numbers(incumbent),
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
            reward_note = f"; reward {candidate.reward_mean:.3f} vs {incumbent.reward_mean:.3f}"
        silent = self._silent_arm(candidate, incumbent)
        if silent is None and (candidate.tool_calls < cfg.min_tool_calls or incumbent.tool_calls < cfg.min_tool_calls):
            # The boundary costs a numerical integration at a new fraction: only when there is a reward to test.
            harm = (
                self._harm_boundary(candidate.tool_calls, previous, None, alpha, numbers)
                if "reward_worse_z" in numbers
                else math.inf
            )
            if numbers.get("reward_worse_z", -math.inf) > harm:
                return GateDecision(
                    "rollback",
                    f"reward regression{reward_note} (p={numbers['reward_worse_p']:.2g}{_beyond(harm, alpha)})",
                    numbers,
                )
            return GateDecision(
                "hold",
                f"not enough tool calls yet: v{candidate.version} {candidate.tool_calls}, "
                f"v{incumbent.version} {incumbent.tool_calls} (need {cfg.min_tool_calls} each)",
                numbers,
            )
        margin = cfg.margin if cfg.promotion == "non_inferiority" else 0.0
        if silent is None:
            metric = "reliability"
            candidate_sums, incumbent_sums = _cluster_sums(candidate), _cluster_sums(incumbent)
            if candidate_sums is not None and incumbent_sums is not None:
                z_better, p_better = ratio_z(candidate_sums, incumbent_sums)
                z_promote, p_promote = ratio_z(candidate_sums, incumbent_sums, margin=margin)
                numbers["test"] = numbers["test"].replace(
                    "two-proportion z", "cluster-robust ratio z (delta method over sessions)"
                )
            else:
                counts = (
                    candidate.tool_successes,
                    candidate.tool_calls,
                    incumbent.tool_successes,
                    incumbent.tool_calls,
                )
                z_better, p_better = two_proportion_z(*counts)
                z_promote, p_promote = two_proportion_z(*counts, margin=margin)
            summary = (
                f"tool reliability v{candidate.version} {candidate.tool_successes}/{candidate.tool_calls} "
                f"({candidate.reliability:.3f}) vs v{incumbent.version} "
                f"{incumbent.tool_successes}/{incumbent.tool_calls} ({incumbent.reliability:.3f}){reward_note}"
            )
        else:
            metric = "tool_use"
            counts = (candidate.tool_episodes, candidate.episodes, incumbent.tool_episodes, incumbent.episodes)
            z_better, p_better = two_proportion_z(*counts)
            z_promote, p_promote = two_proportion_z(*counts, margin=margin)
            summary = (
                f"episodes with successful tool use v{candidate.version} {candidate.tool_episodes}/"
                f"{candidate.episodes} vs v{incumbent.version} {incumbent.tool_episodes}/{incumbent.episodes} "
                f"(v{silent.version} made no tool call in {silent.episodes} episodes){reward_note}"
            )
        p_worse = normal_sf(-z_better) if z_better != 0.0 or p_better < 1.0 else 1.0
        numbers["metric"] = metric
        numbers[f"{metric}_z"], numbers[f"{metric}_p_better"], numbers[f"{metric}_p_worse"] = (
            z_better,
            p_better,
            p_worse,
        )
        numbers["promotion"] = cfg.promotion
        verdict, short_of = "better", "not better"
        if cfg.promotion == "non_inferiority":
            numbers["margin"] = margin
            numbers[f"{metric}_z_not_worse"], numbers[f"{metric}_p_not_worse"] = z_promote, p_promote
            numbers["test"] += f", promotion on non-inferiority (margin {margin:g})"
            verdict = f"not worse by {100 * margin:g} points or more"
            short_of = f"not shown within {100 * margin:g} points"
        look: Look | None = None
        if sequential is not None:
            if candidate.tool_calls == 0:
                # A look's information is the candidate's tool calls: with none there is nothing to
                # promote on, and only the (nominal-level) rollback test runs.
                sequential["note"] = "the candidate made no tool call"
            elif previous and candidate.tool_calls <= previous[-1].tool_calls:
                # No new canary information since the last look: testing again would spend
                # alpha on the same data (and the spending needs increasing fractions).
                sequential["note"] = f"no new canary tool calls since look {previous[-1].number}"
            else:
                look = self._look(candidate.tool_calls, z_promote, previous, alpha)
                sequential["look"] = look.to_json()
                sequential["looks"].append(look.to_json())
        harm = self._harm_boundary(candidate.tool_calls, previous, look, alpha, numbers)
        if -z_better > harm:
            return GateDecision(
                "rollback", f"regression: {summary} (p={p_worse:.2g}{_beyond(harm, alpha)})", numbers, look
            )
        if numbers.get("reward_worse_z", -math.inf) > harm:
            return GateDecision(
                "rollback",
                f"reward regression: {summary} (p={numbers['reward_worse_p']:.2g}{_beyond(harm, alpha)})",
                numbers,
                look,
            )
        if sequential is None:
            if p_promote < alpha:
                return GateDecision("promote", f"{verdict}: {summary} (p={p_promote:.2g})", numbers)
            return GateDecision("hold", f"no significant difference yet: {summary} (p={p_promote:.2g})", numbers)
        if look is None:
            return GateDecision("hold", f"no significant difference yet: {summary} ({sequential['note']})", numbers)
        crossed = z_promote >= look.boundary_z
        where = (
            f"look {look.number}, t={look.information_fraction:.2f}: z={z_promote:.2f} "
            f"{'>=' if crossed else '<'} boundary {look.boundary_z:.2f}, "
            f"alpha spent {look.alpha_spent:.2g} of {alpha:.2g}"
        )
        if crossed:
            return GateDecision("promote", f"{verdict}: {summary} ({where})", numbers, look)
        if look.final:
            numbers["undecided"] = cfg.undecided
            if cfg.undecided == "promote":
                return GateDecision(
                    "promote", f"no regression by the final look ({short_of}): {summary} ({where})", numbers, look
                )
            return GateDecision("rollback", f"{short_of} by the final look: {summary} ({where})", numbers, look)
        return GateDecision("hold", f"no significant difference yet: {summary} ({where})", numbers, look)

    def _silent_arm(self, candidate: ArmStats, incumbent: ArmStats) -> ArmStats | None:
        """The arm to compare on tool use: it made no tool call in ``min_episodes`` episodes, the other has enough.

        Example:
            >>> gate = Gate(GateConfig(min_tool_calls=5, min_episodes=5))
            >>> gate._silent_arm(ArmStats(1, 6, 6, 6, tool_episodes=6), ArmStats(0, 5)).version
            0
            >>> gate._silent_arm(ArmStats(1, 6, 6, 6, tool_episodes=6), ArmStats(0, 4)) is None  # too few episodes
            True
        """
        cfg = self.config
        for silent, other in ((incumbent, candidate), (candidate, incumbent)):
            if (
                silent.tool_calls == 0
                and silent.episodes >= cfg.min_episodes
                and other.tool_calls >= cfg.min_tool_calls
            ):
                return silent
        return None

    def _harm_boundary(
        self, tool_calls: int, previous: Sequence[Look], look: Look | None, alpha: float, numbers: dict[str, Any]
    ) -> float:
        """The z a regression must reach to roll back now (recorded as ``numbers["rollback_boundary_z"]``).

        One fixed-sample test, ``rollback="nominal"``, or a candidate without tool calls (no
        information fraction; a candidate that stopped calling tools is a harm to stop at once):
        ``z_(1-alpha)``. Otherwise the boundary of this look mirrored: the look's own when it made
        one, else the one a look at the candidate's calls would get after the earlier looks (or
        the last look's, when no canary call came since).
        """
        nominal = normal_ppf(1.0 - alpha)
        boundary = nominal
        if "sequential" in numbers and self.config.rollback == "sequential" and tool_calls > 0:
            if look is not None:
                boundary = look.boundary_z
            elif previous and tool_calls <= previous[-1].tool_calls:
                boundary = previous[-1].boundary_z
            else:
                planned = self.config.planned_tool_calls
                fractions = [earlier.tool_calls / planned for earlier in previous] + [tool_calls / planned]
                boundary = sequential_boundaries(alpha, fractions)[-1]
            # Never below the single test: past the planned horizon the spending is exhausted, and
            # the final look decides instead.
            boundary = max(boundary, nominal)
        numbers["rollback_boundary_z"] = boundary if math.isfinite(boundary) else None
        return boundary

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


def _beyond(boundary: float, alpha: float) -> str:
    """The rollback boundary in a reason, where it is not the single test's."""
    if math.isclose(boundary, normal_ppf(1.0 - alpha)):
        return ""
    return f", beyond the sequential boundary z={boundary:.2f}"


def _cluster_sums(arm: ArmStats) -> ClusterSums | None:
    """``arm``'s per-session sums when it carries them and they agree with its totals (else: calls are independent)."""
    sums = arm.clusters
    if sums is None or sums.trials != arm.tool_calls or sums.successes != arm.tool_successes:
        return None
    return sums


def _arm_numbers(arm: ArmStats) -> dict[str, Any]:
    """An arm's numbers for a decision's details (JSON-safe: the per-session sums as a named dict)."""
    numbers = {**asdict(arm), "reliability": arm.reliability, "tool_use": arm.tool_use}
    numbers["clusters"] = None if arm.clusters is None else arm.clusters._asdict()
    return numbers
