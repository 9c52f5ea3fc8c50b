"""The router: which policy version each call pins, canary routing, the gate loop, fallback.

:meth:`PolicyRouter.resolve` is the runtime's ``policy_resolver``: called once when an episode
(or an agent's turn) starts, it returns the pinned, canary or live policy. It is cheap: the
pointers and the loaded policies are cached, and ``pointers.json`` is re-checked (one
``os.stat``) at most every ``refresh_interval_s``, so a promotion made by another process is
seen within that interval; one made through this process's registry is seen by the next call.

* Canary: ``canary_share`` of episodes, sticky per session id (a hash of the session id, the
  agent and the canary version); random per episode without a session id.
* Gate: :meth:`PolicyRouter.evaluate` reads both arms' numbers from the trace store and
  promotes, rolls back, or holds; every decision is logged as an event with its numbers.
  With ``evaluate_every`` set, it also runs in the background every N canary episodes, and
  every evaluation is one look of a group-sequential test (alpha spending, see
  :mod:`agentgym_runtime.policy.gate`): however many looks are taken, the chance of promoting
  a canary that is not better stays at ``1 - confidence``, and the look that reaches the
  planned ``GateConfig.max_tool_calls`` promotes or rolls back for good.
* Fallback: when a policy's endpoint fails, :func:`fallback_to_incumbent` reports it and
  re-pins the incumbent for the rest of the call; repeated failures roll the version back.
* A corrupt or tampered artifact is refused (logged, listed in :attr:`PolicyRouter.refused`)
  and the policy that was serving stays live; so is a version whose LoRA adapter the inference
  server refuses or cannot be reached to load (:meth:`PolicyRegistry.load_served`).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from agentgym_runtime.policy.registry import PolicyRegistry
    >>> registry = PolicyRegistry(Path(tempfile.mkdtemp()))
    >>> router = PolicyRouter(registry)
    >>> router.resolve("bot", None).version
    0
    >>> _ = registry.promote("bot", registry.register("bot", system_prompt="Hi").version)
    >>> router.resolve("bot", "session-1").version
    1
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from agentgym_runtime import semconv
from agentgym_runtime.policy.errors import (
    InferenceServerError,
    PolicyArtifactError,
    PolicyConflictError,
    PolicyError,
    PolicyNotFoundError,
)
from agentgym_runtime.policy.gate import ArmStats, Gate, GateConfig, GateDecision, Look
from agentgym_runtime.policy.registry import PolicyRegistry, PolicyState
from agentgym_runtime.policy.statistics import ClusterSums
from agentgym_runtime.recording.context import AgentScope, current_agent_var, current_episode_var
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.semconv import EpisodeStatus

if TYPE_CHECKING:
    from agentgym_runtime.collectors.store import TraceStore
    from agentgym_runtime.config import Settings

logger = logging.getLogger("agentgym_runtime.policy")

_monotonic = time.monotonic
_random = random.random
_crc32 = zlib.crc32
_NO_FILE = (-1, -1, -1)

#: A policy seeded onto an agent object by ``TrainedPolicy.apply`` (plain callables), for the
#: duration of that object's calls.
seeded_policy_var: ContextVar[Policy | None] = ContextVar("agentgym_seeded_policy", default=None)


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """How the router behaves.

    Attributes:
        refresh_interval_s: How often ``pointers.json`` is re-checked (bounds how late another
            process's promotion is seen).
        gate: The gate's confidence and minimum samples.
        evaluate_every: Run :meth:`PolicyRouter.evaluate` in the background every N canary
            episodes, each run (and each explicit call) being one look of the group-sequential
            gate (``None``: only when called, each call a single fixed-sample test).
        fallback_failures: LLM failures of one version within ``fallback_window_s`` that roll it back.
        fallback_window_s: The window for ``fallback_failures``.
        max_canary_wait_s: How long a canary may stay undecided: an evaluation that would hold a
            canary older than this rolls it back instead, with the hold's reason (which minimum
            was not reached, or z against the boundary). ``None``: it may wait forever.

    Example:
        >>> RouterConfig().refresh_interval_s
        0.15
    """

    refresh_interval_s: float = 0.15
    gate: GateConfig = field(default_factory=GateConfig)
    evaluate_every: int | None = None
    fallback_failures: int = 3
    fallback_window_s: float = 60.0
    max_canary_wait_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RouterConfig:
        """The serving configuration: the gate judges every canary as its episodes arrive.

        ``canary_evaluate_every``, ``canary_min_tool_calls``, ``canary_promotion``,
        ``canary_margin``, ``canary_undecided`` and ``canary_max_wait_s`` of
        :class:`~agentgym_runtime.config.Settings` (``AGENTGYM_CANARY_*``) set :attr:`evaluate_every`,
        the gate's ``min_tool_calls``, ``promotion``, ``margin`` and ``undecided``, and
        :attr:`max_canary_wait_s`.

        Example:
            >>> from agentgym_runtime.config import Settings
            >>> config = RouterConfig.from_settings(Settings(canary_min_tool_calls=50))
            >>> config.evaluate_every, config.gate.min_tool_calls, config.max_canary_wait_s
            (20, 50, 86400.0)
        """
        return cls(
            gate=GateConfig(
                min_tool_calls=settings.canary_min_tool_calls,
                promotion=settings.canary_promotion,
                margin=settings.canary_margin,
                undecided=settings.canary_undecided,
            ),
            evaluate_every=settings.canary_evaluate_every,
            max_canary_wait_s=settings.canary_max_wait_s,
        )


@dataclass(slots=True)
class _Entry:
    check_at: float
    stat_key: tuple[int, int, int]
    sequence: int
    live: Policy
    canary: Policy | None
    share: float
    pinned: Policy | None
    salt: int = 0
    threshold: int = 0  # share * 2**32, compared with the 32-bit sticky hash


def sticky_salt(agent: str, version: int) -> int:
    """The CRC-32 seed that makes :func:`sticky_bucket` differ per agent and canary version."""
    return zlib.crc32(f"{agent}\x00{version}\x00".encode())


def sticky_bucket(agent: str, version: int, session_id: str, salt: int | None = None) -> float:
    """A stable number in [0, 1) for a session: the same in every process and replica.

    CRC-32 of the salted session id, scrambled by MurmurHash3's 32-bit finalizer (so consecutive
    ids spread evenly); about 0.5 µs, a third of a cryptographic hash.

    Example:
        >>> sticky_bucket("bot", 2, "s-1") == sticky_bucket("bot", 2, "s-1")
        True
    """
    h = zlib.crc32(session_id.encode(), sticky_salt(agent, version) if salt is None else salt)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h / 4294967296.0


class PolicyRouter:
    """Resolves the policy of each call, runs the gate and handles fallback (module docstring).

    Args:
        registry: Where the versions and pointers live.
        config: Refresh interval, gate settings, background evaluation, fallback thresholds.
        store: The trace store the gate reads both arms' numbers from (``None``: no gate).
        flush: Called before the gate reads the store, so episodes that ended are counted.
        on_error: Where failures of the background gate go (``where``, the exception); they
            are logged when ``None``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> PolicyRouter(PolicyRegistry(Path(tempfile.mkdtemp()))).resolve("bot", "s").is_baseline
        True
    """

    def __init__(
        self,
        registry: PolicyRegistry,
        config: RouterConfig | None = None,
        *,
        store: TraceStore | None = None,
        flush: Callable[[], bool] | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self._flush = flush
        self._on_error = on_error
        self.config = config or RouterConfig()
        self.gate = Gate(self.config.gate)
        self.refused: dict[tuple[str, int], str] = {}
        self.decisions: list[tuple[str, GateDecision]] = []
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._failures: dict[tuple[str, int], deque[float]] = {}
        self._canary_pins = 0
        self._evaluating: set[str] = set()
        self._gate_threads: list[threading.Thread] = []
        self._closed = False
        registry.add_listener(self.invalidate)

    def set_config(self, config: RouterConfig) -> None:
        """Replace the configuration (gate included); cached pointers are re-read."""
        self.config = config
        self.gate = Gate(config.gate)
        for agent in list(self._entries):
            self.invalidate(agent)

    # --- hot path --------------------------------------------------------------------------
    def resolve(self, agent: str, session_id: str | None) -> Policy:
        """The policy a call of ``agent`` in ``session_id`` pins now."""
        entry = self._entries.get(agent)
        if entry is None or _monotonic() >= entry.check_at:
            entry = self._refresh(agent)
        seeded = seeded_policy_var.get()
        if seeded is not None and seeded.agent == agent:
            return seeded
        if entry.pinned is not None:
            return entry.pinned
        canary = entry.canary
        if canary is None:
            return entry.live
        if session_id is None:
            chosen = _random() < entry.share
        else:  # sticky_bucket(), inlined: this runs on every call
            h = _crc32(session_id.encode(), entry.salt)
            h ^= h >> 16
            h = (h * 0x85EBCA6B) & 0xFFFFFFFF
            h ^= h >> 13
            h = (h * 0xC2B2AE35) & 0xFFFFFFFF
            chosen = (h ^ (h >> 16)) < entry.threshold
        if not chosen:
            return entry.live
        every = self.config.evaluate_every
        if every is not None and self.store is not None:
            self._canary_pins += 1
            if self._canary_pins % every == 0:
                self._evaluate_in_background(agent)
        return canary

    def invalidate(self, agent: str) -> None:
        """Forget the cached pointers of ``agent`` (the next call re-reads them)."""
        entry = self._entries.get(agent)
        if entry is not None:
            entry.stat_key = _NO_FILE
            entry.check_at = 0.0

    def _refresh(self, agent: str) -> _Entry:
        with self._lock:
            now = _monotonic()
            entry = self._entries.get(agent)
            if entry is not None and now < entry.check_at:
                return entry  # another thread refreshed it meanwhile
            try:
                st = os.stat(self.registry.pointers_path(agent))
                key = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                key = _NO_FILE
            if entry is not None and key == entry.stat_key and key != _NO_FILE:
                entry.check_at = now + self.config.refresh_interval_s
                return entry
            state: PolicyState | None = None
            if key != _NO_FILE:
                try:
                    state = self.registry.read_state(agent)
                except (OSError, PolicyError) as exc:
                    logger.warning("agentgym: cannot read the policy pointers of %s: %s", agent, exc)
                    if entry is not None:
                        entry.check_at = now + self.config.refresh_interval_s
                        return entry
            fresh = self._build(agent, state, key, entry, now)
            self._entries[agent] = fresh
            return fresh

    def _build(
        self, agent: str, state: PolicyState | None, key: tuple[int, int, int], old: _Entry | None, now: float
    ) -> _Entry:
        check_at = now + self.config.refresh_interval_s
        if state is None:
            return _Entry(check_at, key, 0, Policy.baseline(agent), None, 0.0, None)
        live = self._load(agent, state.live)
        if live is None:
            live = old.live if old is not None else self._last_good(agent, state)
        canary = self._load(agent, state.canary) if state.canary is not None else None
        pinned = self._load(agent, state.pinned) if state.pinned is not None else None
        share = state.canary_share if canary is not None else 0.0
        salt = sticky_salt(agent, canary.version) if canary is not None else 0
        threshold = int(share * 4294967296.0)
        return _Entry(check_at, key, state.sequence, live, canary, share, pinned, salt, threshold)

    def _load(self, agent: str, version: int) -> Policy | None:
        try:
            return self.registry.load_served(agent, version)
        except (PolicyArtifactError, PolicyNotFoundError, InferenceServerError) as exc:
            if (agent, version) not in self.refused:
                logger.error("agentgym: refusing policy %s@v%d (the current policy stays): %s", agent, version, exc)
            self.refused[(agent, version)] = str(exc)
            return None

    def _last_good(self, agent: str, state: PolicyState) -> Policy:
        for version in reversed(state.live_history):
            policy = self._load(agent, version)
            if policy is not None:
                return policy
        return Policy.baseline(agent)

    # --- fallback ----------------------------------------------------------------------------
    def incumbent(self, agent: str, failed_version: int) -> Policy:
        """What to fall back to when ``failed_version`` cannot serve: the live policy, or the one before it."""
        entry = self._entries.get(agent) or self._refresh(agent)
        if entry.live.version != failed_version:
            return entry.live
        state = self.registry.read_state(agent)
        if state is not None:
            for version in reversed(state.live_history):
                if version != failed_version:
                    policy = self._load(agent, version)
                    if policy is not None:
                        return policy
        return Policy.baseline(agent)

    def report_llm_failure(self, agent: str, version: int, error: BaseException) -> Policy:
        """Record that ``agent``'s LLM call under ``version`` failed; return the incumbent to use.

        After ``fallback_failures`` failures within ``fallback_window_s`` the version is rolled
        back (if it is still the canary or live).
        """
        now = _monotonic()
        with self._lock:
            times = self._failures.setdefault((agent, version), deque())
            times.append(now)
            while times and times[0] < now - self.config.fallback_window_s:
                times.popleft()
            count = len(times)
        incumbent = self.incumbent(agent, version)
        if version != 0 and count >= self.config.fallback_failures:
            state = self.registry.read_state(agent)
            if state is not None and version in (state.canary, state.live):
                details = {
                    "failures": count,
                    "window_s": self.config.fallback_window_s,
                    "last_error": f"{type(error).__qualname__}: {error}",
                    "fallback_to": incumbent.version,
                }
                try:
                    self.registry.rollback(
                        agent,
                        version,
                        actor="router",
                        reason=(
                            f"{count} LLM failures within {self.config.fallback_window_s:g}s "
                            f"({type(error).__qualname__})"
                        ),
                        details=details,
                        expected_sequence=state.sequence,
                    )
                    with self._lock:
                        self._failures.pop((agent, version), None)
                except PolicyConflictError as exc:
                    logger.info("agentgym: rollback of %s@v%d after failures superseded: %s", agent, version, exc)
        return incumbent

    # --- gate -----------------------------------------------------------------------------------
    def arm_stats(self, agent: str, version: int, since: float | None) -> ArmStats:
        """One version's episodes, tool calls, errors, rewards and tool-using episodes since ``since`` (from the store).

        The tool calls are also summed per session (the unit the canary assigns; an episode without
        a session is its own), for the gate's cluster-robust reliability test.

        Raises:
            PolicyError: The router has no trace store to read.
        """
        if self.store is None:
            raise PolicyError("the gate needs a trace store")
        start = datetime.fromtimestamp(since or 0.0, tz=UTC)
        # One statement, so the totals and the per-session sums read the same snapshot of the store.
        rows = self.store.query(
            "WITH e AS (SELECT * FROM episodes WHERE agent = ? AND policy_version = ? AND started_at >= ?), "
            "s AS (SELECT sum(tool_calls) AS n, sum(tool_calls - tool_failures) AS k FROM e WHERE tool_calls > 0 "
            "GROUP BY coalesce(session_id, episode_id)) "
            "SELECT * FROM (SELECT count(*), coalesce(sum(tool_calls), 0), "
            "coalesce(sum(tool_calls - tool_failures), 0), count(*) FILTER (WHERE status = ?), "
            "count(reward), avg(reward), var_samp(reward), "
            "count(*) FILTER (WHERE tool_calls > 0 AND tool_failures = 0) FROM e), "
            "(SELECT count(*), coalesce(sum(n), 0), coalesce(sum(k), 0), coalesce(sum(n * n), 0), "
            "coalesce(sum(k * k), 0), coalesce(sum(n * k), 0) FROM s)",
            [agent, version, start, EpisodeStatus.ERROR.value],
        )
        episodes, calls, successes, errors, rewarded, mean, var, tool_episodes, *sessions = rows[0]
        return ArmStats(
            version=version,
            episodes=int(episodes),
            tool_calls=int(calls),
            tool_successes=int(successes),
            errors=int(errors),
            rewarded=int(rewarded),
            reward_mean=None if mean is None else float(mean),
            reward_var=None if var is None else float(var),
            tool_episodes=int(tool_episodes),
            clusters=ClusterSums(*(int(value) for value in sessions)),
        )

    def evaluate(self, agent: str) -> GateDecision:
        """Run the gate on ``agent``'s canary now: promote, roll back, or hold (logged either way).

        Raises:
            PolicyNotFoundError: Unknown agent.
            PolicyError: The router has no trace store.
        """
        state = self.registry.state(agent)
        if state.canary is None:
            return GateDecision("hold", f"{agent!r} has no canary", {"live": state.live})
        if self.store is None:
            raise PolicyError("the gate needs a trace store")
        if self._flush is not None:
            self._flush()
        self.registry.sync_store(agent)
        candidate = self.arm_stats(agent, state.canary, state.canary_since)
        incumbent = self.arm_stats(agent, state.live, state.canary_since)
        looks = self.looks(agent, state) if self.config.evaluate_every is not None else None
        decision = self.gate.decide(candidate, incumbent, looks)
        decision = self._timed_out(state, decision)
        details: dict[str, Any] = {**decision.numbers, "decision": decision.action}
        with self._lock:  # listed before the change is applied: whoever sees the change sees the decision
            index = len(self.decisions)
            self.decisions.append((agent, decision))
        try:
            if decision.action == "promote":
                self.registry.promote(
                    agent,
                    state.canary,
                    actor="gate",
                    reason=f"gate: {decision.reason}",
                    details=details,
                    expected_sequence=state.sequence,
                )
            elif decision.action == "rollback":
                self.registry.rollback(
                    agent,
                    state.canary,
                    actor="gate",
                    reason=f"gate: {decision.reason}",
                    details=details,
                    expected_sequence=state.sequence,
                )
            else:
                self.registry.log_decision(
                    agent, state.canary, f"gate: hold ({decision.reason})", details, actor="gate"
                )
        except PolicyConflictError as exc:
            decision = GateDecision("hold", f"superseded by a concurrent change: {exc}", decision.numbers)
            with self._lock:
                self.decisions[index] = (agent, decision)
        except InferenceServerError as exc:  # logged by the registry; the live version keeps serving
            decision = GateDecision("hold", f"the inference server cannot serve it: {exc}", decision.numbers)
            with self._lock:
                self.decisions[index] = (agent, decision)
        logger.info("agentgym: gate on %s@v%d: %s — %s", agent, state.canary, decision.action, decision.reason)
        return decision

    def _timed_out(self, state: PolicyState, decision: GateDecision) -> GateDecision:
        limit = self.config.max_canary_wait_s
        if decision.action != "hold" or limit is None or state.canary_since is None:
            return decision
        waited = time.time() - state.canary_since
        if waited <= limit:
            return decision
        numbers = {**decision.numbers, "waited_s": waited, "max_canary_wait_s": limit}
        return GateDecision(
            "rollback",
            f"canary undecided after {waited:.0f}s (limit {limit:g}s): {decision.reason}",
            numbers,
            decision.look,
        )

    def looks(self, agent: str, state: PolicyState | None = None) -> list[Look]:
        """The gate's looks so far at ``agent``'s current canary, oldest first.

        Read back from the logged gate decisions (``events.jsonl``) rather than kept in memory,
        so a restarted process, or several serving processes, share one sequence of looks and
        one alpha budget. Looks at the same canary tool-call count are one look.

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> registry = PolicyRegistry(Path(tempfile.mkdtemp()))
            >>> _ = registry.start_canary("bot", registry.register("bot", system_prompt="Hi").version, 0.5)
            >>> PolicyRouter(registry).looks("bot")
            []
        """
        state = state or self.registry.state(agent)
        if state.canary is None:
            return []
        since = state.canary_since or 0.0
        by_calls: dict[int, Look] = {}
        for event in self.registry.events(agent):
            if event.version != state.canary or event.actor != "gate" or event.occurred_at < since:
                continue
            sequential = event.details.get("sequential")
            payload = sequential.get("look") if isinstance(sequential, dict) else None
            if not isinstance(payload, dict):
                continue  # a hold before the minimum sample, or a single-look decision
            try:
                look = Look.from_json(payload)
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("agentgym: ignoring a malformed gate look of %s@v%d: %s", agent, state.canary, exc)
                continue
            by_calls.setdefault(look.tool_calls, look)
        ordered = sorted(by_calls.values(), key=lambda look: look.tool_calls)
        return [replace(look, number=index) for index, look in enumerate(ordered, start=1)]

    def _evaluate_in_background(self, agent: str) -> None:
        with self._lock:
            if agent in self._evaluating or self._closed:
                return
            self._evaluating.add(agent)

        def run() -> None:
            try:
                if not self._closed:  # the store closes at shutdown: never reopen it from here
                    self.evaluate(agent)
            except Exception as exc:
                if self._on_error is not None:
                    try:
                        self._on_error("policy gate", exc)
                    except Exception:
                        logger.exception("agentgym: policy gate failed")
                else:
                    logger.exception("agentgym: policy gate failed")
            finally:
                with self._lock:
                    self._evaluating.discard(agent)

        thread = threading.Thread(target=run, name=f"agentgym-gate-{agent}", daemon=True)
        with self._lock:
            self._gate_threads = [t for t in self._gate_threads if t.is_alive()]
            self._gate_threads.append(thread)
        thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Start no more background evaluations and wait for those running (before the store closes)."""
        with self._lock:
            self._closed = True
            threads = list(self._gate_threads)
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def stats(self) -> dict[str, Any]:
        """Refused artifacts, recent LLM failures per version, decisions taken."""
        with self._lock:
            failures = {f"{a}@v{v}": len(t) for (a, v), t in self._failures.items() if t}
        return {
            "refused": {f"{a}@v{v}": msg for (a, v), msg in self.refused.items()},
            "llm_failures": failures,
            "decisions": len(self.decisions),
        }


def fallback_to_incumbent(error: BaseException, router: PolicyRouter) -> Policy | None:
    """For adapters: the current call's LLM endpoint failed; pin the incumbent for the rest of the call.

    Reports the failure to the router (repeated failures roll the version back), re-pins the
    incumbent policy in the current context and marks the current span (and the episode's root
    span, when the failing agent is the episode's own) with ``agentgym.policy.fallback_from``.
    The framework adapters call it through :mod:`agentgym_runtime.adapters.fallback`, passing
    the router of the current services. Returns the policy to retry with, or ``None`` outside an
    episode or when there is nothing to fall back to (the failing version is the baseline).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> router = PolicyRouter(PolicyRegistry(Path(tempfile.mkdtemp())))
        >>> fallback_to_incumbent(ConnectionError("down"), router) is None  # outside an episode
        True
    """
    scope = current_agent_var.get()
    if scope is None or scope.policy_version == 0:
        return None
    incumbent = router.report_llm_failure(scope.name, scope.policy_version, error)
    if incumbent.version == scope.policy_version:
        return None
    current_agent_var.set(AgentScope(scope.name, incumbent))
    span = trace.get_current_span()
    span.set_attribute(semconv.POLICY_FALLBACK_FROM, scope.policy_version)
    episode = current_episode_var.get()
    root = episode.root_span if episode is not None and episode.agent == scope.name else None
    if root is not None and root is not span:
        # A framework's own agent span (AutoGen's invoke_agent) may be the current one: mark the
        # episode's root span too, which is the episode's row in the store.
        root.set_attribute(semconv.POLICY_FALLBACK_FROM, scope.policy_version)
    return incumbent


@contextmanager
def seeded(policy: Policy) -> Iterator[Policy]:
    """Within the block, calls of ``policy.agent`` pin ``policy`` (what ``TrainedPolicy.apply`` uses).

    Example:
        >>> with seeded(Policy(agent="bot", version=3)) as p:
        ...     seeded_policy_var.get() is p
        True
    """
    token = seeded_policy_var.set(policy)
    try:
        yield policy
    finally:
        seeded_policy_var.reset(token)
