"""The statistics the gate (and the demo) decide with: one-sided z tests and alpha spending.

Pure functions, no state besides a cache of the sequential recursion:

* :func:`normal_sf`, :func:`normal_ppf` — the standard normal's tail and quantile;
* :func:`two_proportion_z` — pooled two-proportion z test. **Direction:** the statistic is
  positive when the *first* proportion is higher (``p_a > p_b``), and the p-value is the
  one-sided ``P(Z > z)``. A caller that asks "did B improve on A" passes B first;
* :func:`ratio_z` — the same question for a *ratio of sums over clusters* (tool calls that
  succeeded over tool calls, where the canary assigns whole sessions): the delta-method variance
  of the ratio, computed from per-cluster sums (:class:`ClusterSums`), so that calls of one session
  that fail or succeed together are not counted as independent evidence;
* :func:`welch_z` — Welch's test of ``mean_a > mean_b`` (normal approximation);
* :func:`obrien_fleming_spending` and :func:`sequential_boundaries` — the Lan-DeMets
  O'Brien-Fleming-type alpha spending and the exact group-sequential boundaries for it, so a
  canary can be re-tested as data arrives without inflating the false-promotion rate.

Example:
    >>> z, p = two_proportion_z(95, 100, 60, 100)  # 95% beat 60%: z > 0, p small
    >>> round(z, 2), p < 1e-6
    (5.93, True)
    >>> [round(b, 2) for b in sequential_boundaries(0.05, [0.5, 1.0])]
    [2.54, 1.66]
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import NamedTuple

__all__ = [
    "ClusterSums",
    "normal_ppf",
    "normal_sf",
    "obrien_fleming_spending",
    "ratio_z",
    "sequential_boundaries",
    "two_proportion_z",
    "welch_z",
]


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


def two_proportion_z(
    successes_a: int, n_a: int, successes_b: int, n_b: int, *, margin: float = 0.0
) -> tuple[float, float]:
    """Pooled two-proportion z statistic for ``p_a > p_b - margin`` and its one-sided p-value.

    ``margin`` 0 (the default) tests superiority; a positive ``margin`` tests non-inferiority:
    that ``a`` is worse than ``b`` by less than ``margin`` (``(p_a - p_b + margin) / se``, the
    standard error of the difference as for superiority).

    Example:
        >>> z, p = two_proportion_z(90, 100, 70, 100)
        >>> round(z, 2), p < 0.001
        (3.54, True)
        >>> round(two_proportion_z(90, 100, 90, 100, margin=0.05)[0], 2)  # equal rates, within 5 points
        1.18
    """
    if n_a <= 0 or n_b <= 0:
        return 0.0, 1.0
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    diff = successes_a / n_a - successes_b / n_b + margin
    if variance <= 0:
        return 0.0, 1.0 if diff <= 0 else 0.0
    z = diff / math.sqrt(variance)
    return z, normal_sf(z)


class ClusterSums(NamedTuple):
    """Per-cluster sums of a ratio metric: ``clusters`` clusters, cluster ``i`` with ``n_i`` trials, ``k_i`` successes.

    Attributes:
        clusters: Number of clusters (sessions) with at least one trial.
        trials: ``sum n_i``.
        successes: ``sum k_i``.
        trials_sq: ``sum n_i**2``.
        successes_sq: ``sum k_i**2``.
        cross: ``sum n_i * k_i``.

    Example:
        >>> ClusterSums.of([(2, 2), (1, 0)])
        ClusterSums(clusters=2, trials=3, successes=2, trials_sq=5, successes_sq=4, cross=4)
    """

    clusters: int
    trials: int
    successes: int
    trials_sq: int
    successes_sq: int
    cross: int

    @classmethod
    def of(cls, pairs: Sequence[tuple[int, int]]) -> ClusterSums:
        """The sums of ``(trials, successes)`` pairs, one per cluster (clusters without trials left out)."""
        kept = [(n, k) for n, k in pairs if n > 0]
        return cls(
            len(kept),
            sum(n for n, _ in kept),
            sum(k for _, k in kept),
            sum(n * n for n, _ in kept),
            sum(k * k for _, k in kept),
            sum(n * k for n, k in kept),
        )

    def ratio_variance(self, ratio: float) -> float:
        """Delta-method variance of ``successes / trials`` with residuals around ``ratio``.

        ``clusters / (clusters - 1) * sum (k_i - ratio * n_i)**2 / trials**2`` (Deng, Knoblich and
        Lu, "Applying the Delta Method in Metric Analytics", KDD 2018); with one trial per cluster
        and ``ratio`` the arm's own rate it is the binomial ``p (1 - p) / (n - 1)``. 0 with fewer
        than two clusters.
        """
        if self.clusters < 2 or self.trials <= 0:
            return 0.0
        residual = self.successes_sq - 2 * ratio * self.cross + ratio * ratio * self.trials_sq
        return self.clusters / (self.clusters - 1) * max(residual, 0.0) / (self.trials * self.trials)


def ratio_z(a: ClusterSums, b: ClusterSums, *, margin: float = 0.0) -> tuple[float, float]:
    """Cluster-robust z statistic for ``ratio_a > ratio_b - margin`` and its one-sided p-value.

    The analogue of :func:`two_proportion_z` when the trials come in clusters that were assigned to
    an arm as a whole (a session's tool calls): each arm's variance is the delta-method variance of
    its ratio (:meth:`ClusterSums.ratio_variance`), with residuals around the pooled ratio as the
    pooled z test has them. Calls that succeed or fail together in a session weigh as the evidence
    they are: one session that fails five calls is not five independent failures.

    Example:
        >>> def sessions(size, ok, failed):
        ...     return ClusterSums.of([(size, size)] * ok + [(size, 0)] * failed)
        >>> round(ratio_z(sessions(1, 90, 10), sessions(1, 70, 30))[0], 2)  # 90% against 70%, one call a session
        3.52
        >>> round(two_proportion_z(90, 100, 70, 100)[0], 2)
        3.54
        >>> round(ratio_z(sessions(5, 18, 2), sessions(5, 14, 6))[0], 2)  # the same, in sessions of five that agree
        1.54
        >>> round(ratio_z(sessions(1, 90, 10), sessions(1, 90, 10), margin=0.05)[0], 2)  # equal, within 5 points
        1.17

    ``margin`` 0 tests superiority; a positive ``margin`` tests non-inferiority, as in
    :func:`two_proportion_z`.
    """
    if a.trials <= 0 or b.trials <= 0:
        return 0.0, 1.0
    pooled = (a.successes + b.successes) / (a.trials + b.trials)
    variance = a.ratio_variance(pooled) + b.ratio_variance(pooled)
    if variance <= 0:
        return 0.0, 1.0
    z = (a.successes / a.trials - b.successes / b.trials + margin) / math.sqrt(variance)
    return z, normal_sf(z)


def wilson_lower(successes: int, n: int, confidence: float) -> float:
    """One-sided Wilson lower bound of a success rate at ``confidence`` (0 when there is no trial).

    Example:
        >>> round(wilson_lower(95, 100, 0.8), 3), round(wilson_lower(294, 300, 0.8), 3)
        (0.928, 0.972)
    """
    if n <= 0:
        return 0.0
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
    z = normal_ppf(confidence)
    p = successes / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n))


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
