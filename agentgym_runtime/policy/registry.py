"""The policy registry: versions, their status, and the live / canary / pinned pointers.

The filesystem is the source of truth shared by every process (serving replicas, the CLI, a
training job)::

    policies/<agent>/v<N>/           artifacts (see ``artifact.py``)
    policies/<agent>/pointers.json   live, canary, canary share, pinned, statuses, sequence number
    policies/<agent>/events.jsonl    every transition: who, why, when, with its numbers
    policies/<agent>/.lock           exclusive ``flock`` held while the pointers change

Every change runs under the lock, reads the pointers, optionally checks the sequence number
the caller last saw (compare-and-set), writes the new pointers to a temporary file and
``os.replace``-s it, then appends its events. Racing changes therefore serialize, and a change
made on a stale view fails with :class:`PolicyConflictError` instead of overwriting the winner.

The serving process mirrors versions and events into the DuckDB ``policies`` and
``policy_events`` tables (:meth:`PolicyRegistry.sync_store`), including changes other processes
made.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> registry = PolicyRegistry(Path(tempfile.mkdtemp()))
    >>> v1 = registry.register("bot", system_prompt="Be exact.")
    >>> registry.promote("bot", v1.version).live
    1
    >>> [(info.version, info.status.value) for info in registry.policies("bot")]
    [(0, 'retired'), (1, 'live')]
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agentgym_runtime.errors import ConfigurationError, StoreUnavailableError
from agentgym_runtime.policy.artifact import manifest_digest, read_artifact, version_dir, write_artifact
from agentgym_runtime.policy.errors import PolicyArtifactError, PolicyConflictError, PolicyError, PolicyNotFoundError
from agentgym_runtime.recording.policy import Demonstration, LLMConfig, Policy

if TYPE_CHECKING:
    import duckdb

    from agentgym_runtime.collectors.store import TraceStore

logger = logging.getLogger("agentgym_runtime.policy")

POINTERS: Final = "pointers.json"
EVENTS: Final = "events.jsonl"
LOCK: Final = ".lock"
_HISTORY_LIMIT = 100


class PolicyStatus(StrEnum):
    """Where a version stands.

    Example:
        >>> PolicyStatus("canary").value
        'canary'
    """

    CANDIDATE = "candidate"
    CANARY = "canary"
    LIVE = "live"
    RETIRED = "retired"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One version's status and timestamps (Unix seconds)."""

    version: int
    status: PolicyStatus
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class PolicyState:
    """The pointers of one agent, as stored in ``pointers.json``.

    Attributes:
        agent: The agent's name.
        sequence: Incremented by every change (compare-and-set token).
        live: The version serving by default (0: the agent as written).
        canary: The version receiving ``canary_share`` of episodes, if any.
        canary_share: Share of episodes routed to the canary (0..1).
        canary_since: When the canary started (Unix seconds); the gate compares data since then.
        pinned: A version forced for every call (overrides live and canary), if any.
        live_history: Previously live versions, oldest first (rollback goes back along it).
        versions: Every version and its status.
        updated_at: Time of the last change.

    Example:
        >>> PolicyState.initial("bot", 0.0).live
        0
    """

    agent: str
    sequence: int = 0
    live: int = 0
    canary: int | None = None
    canary_share: float = 0.0
    canary_since: float | None = None
    pinned: int | None = None
    live_history: tuple[int, ...] = ()
    versions: Mapping[int, VersionRecord] = field(default_factory=dict)
    updated_at: float = 0.0

    @classmethod
    def initial(cls, agent: str, now: float) -> PolicyState:
        """The state of an agent with only its baseline (v0 live)."""
        return cls(agent=agent, versions={0: VersionRecord(0, PolicyStatus.LIVE, now, now)}, updated_at=now)

    def to_json(self) -> dict[str, Any]:
        """The ``pointers.json`` document."""
        return {
            "agent": self.agent,
            "sequence": self.sequence,
            "live": self.live,
            "canary": self.canary,
            "canary_share": self.canary_share,
            "canary_since": self.canary_since,
            "pinned": self.pinned,
            "live_history": list(self.live_history),
            "updated_at": self.updated_at,
            "versions": {
                str(v): {"status": r.status.value, "created_at": r.created_at, "updated_at": r.updated_at}
                for v, r in sorted(self.versions.items())
            },
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> PolicyState:
        """Parse a ``pointers.json`` document."""
        versions = {
            int(v): VersionRecord(int(v), PolicyStatus(r["status"]), float(r["created_at"]), float(r["updated_at"]))
            for v, r in payload.get("versions", {}).items()
        }
        return cls(
            agent=str(payload["agent"]),
            sequence=int(payload.get("sequence", 0)),
            live=int(payload.get("live", 0)),
            canary=None if payload.get("canary") is None else int(payload["canary"]),
            canary_share=float(payload.get("canary_share") or 0.0),
            canary_since=None if payload.get("canary_since") is None else float(payload["canary_since"]),
            pinned=None if payload.get("pinned") is None else int(payload["pinned"]),
            live_history=tuple(int(v) for v in payload.get("live_history", ())),
            versions=versions,
            updated_at=float(payload.get("updated_at", 0.0)),
        )

    def status_of(self, version: int) -> PolicyStatus:
        """The status of ``version`` (raises ``KeyError`` if unknown)."""
        return self.versions[version].status


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    """One logged registry transition or decision (a line of ``events.jsonl``).

    Example:
        >>> PolicyEvent("bot", 1, "candidate", "live", "cli", "manual", 0.0).to_status
        'live'
    """

    agent: str
    version: int
    from_status: str | None
    to_status: str
    actor: str
    reason: str | None
    occurred_at: float
    details: dict[str, Any] = field(default_factory=dict)
    sequence: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON line."""
        return {
            "agent": self.agent,
            "version": self.version,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "actor": self.actor,
            "reason": self.reason,
            "occurred_at": self.occurred_at,
            "details": self.details,
            "sequence": self.sequence,
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> PolicyEvent:
        """Parse one JSON line."""
        return cls(
            agent=str(payload["agent"]),
            version=int(payload["version"]),
            from_status=payload.get("from_status"),
            to_status=str(payload["to_status"]),
            actor=str(payload.get("actor", "")),
            reason=payload.get("reason"),
            occurred_at=float(payload["occurred_at"]),
            details=dict(payload.get("details") or {}),
            sequence=int(payload.get("sequence", 0)),
        )


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """A version with its status, for listings (``policy`` is ``None`` if its artifact is refused)."""

    agent: str
    version: int
    status: PolicyStatus
    created_at: float
    updated_at: float
    policy: Policy | None
    error: str | None = None


def default_actor() -> str:
    """``user@host:pid`` of this process (who registry changes are attributed to by default).

    Example:
        >>> ":" in default_actor()
        True
    """
    try:
        user = getpass.getuser()
    except Exception:  # no user database entry (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def parse_version(ref: str | int) -> int:
    """``3``, ``"3"`` or ``"v3"`` as an int.

    Raises:
        ConfigurationError: Not a version number.

    Example:
        >>> parse_version("v3"), parse_version(2)
        (3, 2)
    """
    if isinstance(ref, int) and not isinstance(ref, bool):
        value = ref
    else:
        text = str(ref).strip().lower().removeprefix("v")
        if not text.isdigit():
            raise ConfigurationError(f"not a policy version: {ref!r} (expected 3, 'v3', 'live' or 'canary')")
        value = int(text)
    if value < 0:
        raise ConfigurationError(f"policy versions are >= 0, got {ref!r}")
    return value


class PolicyRegistry:
    """Versions, statuses and pointers of every agent's policies under one directory.

    Args:
        root: The policies directory (``<home>/policies``).
        store: The serving process's trace store, to mirror versions and events into
            (``None``: filesystem only, as in the CLI or another process).
        on_error: Where mirroring failures go (the runtime's ``internal_error``); they never fail
            a registry change.
        actor: Who the changes are attributed to by default.

    Example:
        >>> import tempfile
        >>> registry = PolicyRegistry(Path(tempfile.mkdtemp()))
        >>> registry.register("bot", tool_descriptions={"lookup": "Find an order."}).ref
        'bot@v1'
    """

    def __init__(
        self,
        root: Path | str,
        *,
        store: TraceStore | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
        actor: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.store = store
        self.actor = actor or default_actor()
        self._on_error = on_error
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._cache: dict[tuple[str, int], Policy] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._event_offsets: dict[str, int] = {}
        self._mirror_cond = threading.Condition()
        self._mirror_pending: set[str] = set()
        self._mirror_thread: threading.Thread | None = None

    # --- paths -----------------------------------------------------------------------------
    def agent_dir(self, agent: str) -> Path:
        """``<root>/<agent>``."""
        return self.root / agent

    def pointers_path(self, agent: str) -> Path:
        """``<root>/<agent>/pointers.json``."""
        return self.root / agent / POINTERS

    def events_path(self, agent: str) -> Path:
        """``<root>/<agent>/events.jsonl``."""
        return self.root / agent / EVENTS

    def artifact_path(self, agent: str, version: int) -> Path:
        """``<root>/<agent>/v<version>`` (adapters resolve ``llm.adapter`` against it)."""
        return version_dir(self.root, agent, version)

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(agent)`` after every change this registry makes (the router's cache)."""
        self._listeners.append(listener)

    # --- reading ---------------------------------------------------------------------------
    def agents(self) -> list[str]:
        """Agents with registered policies, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / POINTERS).is_file())

    def read_state(self, agent: str) -> PolicyState | None:
        """The agent's pointers, or ``None`` if it has none yet.

        Raises:
            PolicyError: ``pointers.json`` is not a valid pointers document.
        """
        path = self.pointers_path(agent)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise PolicyError(f"{path} is corrupt ({exc}); restore it or remove it to start over") from exc
        try:
            return PolicyState.from_json(payload)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"{path} is not a valid pointers document: {exc!r}") from exc

    def state(self, agent: str) -> PolicyState:
        """The agent's pointers.

        Raises:
            PolicyNotFoundError: No policies registered for ``agent``; the message lists those that are.
        """
        state = self.read_state(agent)
        if state is None:
            raise self._unknown_agent(agent)
        return state

    def _unknown_agent(self, agent: str) -> PolicyNotFoundError:
        known = ", ".join(self.agents()) or "(none)"
        return PolicyNotFoundError(f"no policies registered for agent {agent!r}; agents with policies: {known}")

    def _unknown_version(self, state: PolicyState, version: int) -> PolicyNotFoundError:
        known = ", ".join(str(v) for v in sorted(state.versions))
        return PolicyNotFoundError(f"agent {state.agent!r} has no version {version}; versions: {known}")

    def load(self, agent: str, version: int) -> Policy:
        """The policy of ``agent`` at ``version``, verified and cached (v0: the baseline).

        Raises:
            PolicyArtifactError: The artifact is corrupt or was tampered with.
            PolicyNotFoundError: No such version.
        """
        key = (agent, version)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if version == 0:
            policy = Policy.baseline(agent)
        else:
            path = self.artifact_path(agent, version)
            if not path.exists():
                state = self.read_state(agent)
                if state is None:
                    raise self._unknown_agent(agent)
                raise self._unknown_version(state, version)
            policy = read_artifact(path, agent=agent, version=version)
        self._cache[key] = policy
        return policy

    def resolve_ref(self, agent: str, ref: str | int) -> int:
        """A version number from ``3``, ``"v3"``, ``"live"``, ``"canary"`` or ``"pinned"``.

        Raises:
            PolicyNotFoundError: Unknown agent or version, or no canary / pin set.
        """
        state = self.state(agent)
        if isinstance(ref, str) and ref.strip().lower() in ("live", "canary", "pinned"):
            name = ref.strip().lower()
            value = state.live if name == "live" else state.canary if name == "canary" else state.pinned
            if value is None:
                raise PolicyNotFoundError(f"agent {agent!r} has no {name} version; live is v{state.live}")
            return value
        version = parse_version(ref)
        if version not in state.versions:
            raise self._unknown_version(state, version)
        return version

    def get(self, agent: str, ref: str | int = "live") -> Policy:
        """The policy ``ref`` points to (see :meth:`resolve_ref`)."""
        return self.load(agent, self.resolve_ref(agent, ref))

    def policies(self, agent: str) -> list[PolicyInfo]:
        """Every version of ``agent`` with its status, oldest first.

        Raises:
            PolicyNotFoundError: Unknown agent.
        """
        state = self.state(agent)
        infos = []
        for version, record in sorted(state.versions.items()):
            try:
                policy: Policy | None = self.load(agent, version)
                error = None
            except (PolicyArtifactError, PolicyNotFoundError) as exc:
                policy, error = None, str(exc)
            infos.append(PolicyInfo(agent, version, record.status, record.created_at, record.updated_at, policy, error))
        return infos

    def events(self, agent: str) -> list[PolicyEvent]:
        """Every logged transition and decision of ``agent``, oldest first."""
        path = self.events_path(agent)
        if not path.exists():
            return []
        with path.open(encoding="utf-8") as handle:
            return [PolicyEvent.from_json(json.loads(line)) for line in handle if line.strip()]

    # --- changing ---------------------------------------------------------------------------
    @contextmanager
    def _locked(self, agent: str) -> Iterator[None]:
        directory = self.agent_dir(agent)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _write_state(self, state: PolicyState) -> None:
        path = self.pointers_path(state.agent)
        tmp = path.with_name(f".{POINTERS}.{os.getpid()}.{threading.get_ident()}.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(state.to_json(), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def _append_events(self, agent: str, events: Sequence[PolicyEvent]) -> None:
        if not events:
            return
        text = "".join(json.dumps(e.to_json(), default=str) + "\n" for e in events)
        with self.events_path(agent).open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def _transact(
        self,
        agent: str,
        change: Callable[[PolicyState, float], tuple[PolicyState, list[PolicyEvent]]],
        *,
        expected_sequence: int | None = None,
        create: bool = False,
    ) -> PolicyState:
        with self._locked(agent):
            now = time.time()
            state = self.read_state(agent)
            if state is None:
                if not create:
                    raise self._unknown_agent(agent)
                state = PolicyState.initial(agent, now)
            if expected_sequence is not None and state.sequence != expected_sequence:
                last = self._last_event(agent)
                raise PolicyConflictError(
                    f"the policies of {agent!r} changed meanwhile (sequence {expected_sequence} -> {state.sequence}"
                    f"{'; last change: ' + last if last else ''}); nothing was changed, retry on the current state"
                )
            new_state, events = change(state, now)
            if new_state is state:  # a logged decision: the pointers stay as they are
                events = [replace(e, sequence=state.sequence) for e in events]
                if not self.pointers_path(agent).exists():
                    self._write_state(state)
            else:
                sequence = state.sequence + 1
                new_state = replace(new_state, sequence=sequence, updated_at=now)
                events = [replace(e, sequence=sequence) for e in events]
                self._write_state(new_state)
            self._append_events(agent, events)
        for listener in list(self._listeners):
            listener(agent)
        self._mirror(agent)
        return new_state

    def _last_event(self, agent: str) -> str | None:
        events = self.events(agent)
        if not events:
            return None
        e = events[-1]
        return f"v{e.version} {e.from_status} -> {e.to_status} by {e.actor} ({e.reason})"

    def _event(
        self,
        state: PolicyState,
        version: int,
        to_status: str,
        now: float,
        *,
        actor: str | None,
        reason: str | None,
        details: Mapping[str, Any] | None = None,
    ) -> PolicyEvent:
        record = state.versions.get(version)
        return PolicyEvent(
            state.agent,
            version,
            record.status.value if record else None,
            to_status,
            actor or self.actor,
            reason,
            now,
            dict(details or {}),
        )

    def register(
        self,
        agent: str,
        *,
        system_prompt: str | None = None,
        tool_descriptions: Mapping[str, str] | None = None,
        demonstrations: Sequence[Demonstration | Mapping[str, Any]] | None = None,
        llm: LLMConfig | Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        trainer: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        parent_version: int | None = None,
        adapter_dir: Path | str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Policy:
        """Write a new version of ``agent``'s policy as a ``candidate``.

        Raises:
            ConfigurationError: Invalid agent name or policy fields (the message says which).
            PolicyArtifactError: ``adapter_dir`` is unusable.
        """
        from pydantic import ValidationError

        fields: dict[str, Any] = {
            "system_prompt": system_prompt,
            "tool_descriptions": dict(tool_descriptions or {}),
            "demonstrations": tuple(demonstrations or ()),
            "llm": llm,
            "metadata": dict(metadata or {}),
            "trainer": trainer or "manual",
            "metrics": dict(metrics or {}),
        }
        try:
            Policy.baseline(agent)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid agent name {agent!r}: {exc.errors()[0]['msg']}") from None
        if agent.startswith("."):
            raise ConfigurationError(f"invalid agent name {agent!r}: must not start with '.'")
        created: list[Policy] = []

        def change(state: PolicyState, now: float) -> tuple[PolicyState, list[PolicyEvent]]:
            on_disk = [int(p.name[1:]) for p in self.agent_dir(agent).glob("v*") if p.is_dir() and p.name[1:].isdigit()]
            version = max([*state.versions, *on_disk]) + 1
            parent = state.live if parent_version is None else parent_version
            if parent not in state.versions:
                raise self._unknown_version(state, parent)
            try:
                policy = Policy(agent=agent, version=version, parent_version=parent, **fields)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
                )
                raise ConfigurationError(f"invalid policy for {agent!r}: {problems}") from None
            path = write_artifact(policy, self.root, adapter_dir)
            policy = read_artifact(path, agent=agent, version=version)
            self._cache[(agent, version)] = policy
            created.append(policy)
            versions = dict(state.versions)
            versions[version] = VersionRecord(version, PolicyStatus.CANDIDATE, now, now)
            event = PolicyEvent(
                agent,
                version,
                None,
                PolicyStatus.CANDIDATE.value,
                actor or self.actor,
                reason or "registered",
                now,
                {"trainer": policy.trainer, "parent_version": parent, "metrics": policy.metrics},
            )
            return replace(state, versions=versions), [event]

        self._transact(agent, change, create=True)
        return created[0]

    def promote(
        self,
        agent: str,
        version: int | str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        expected_sequence: int | None = None,
    ) -> PolicyState:
        """Make ``version`` live (the previous live version is retired; a canary of it ends).

        The artifact is verified first: a corrupt one is refused and the current policy stays live.

        Raises:
            PolicyNotFoundError: Unknown agent or version.
            PolicyArtifactError: The artifact is corrupt or tampered with.
            PolicyConflictError: It is live already, or the pointers changed since ``expected_sequence``.
        """
        number = self.resolve_ref(agent, version)
        if number:
            self._verify(agent, number)

        def change(state: PolicyState, now: float) -> tuple[PolicyState, list[PolicyEvent]]:
            if number not in state.versions:
                raise self._unknown_version(state, number)
            if state.live == number:
                raise PolicyConflictError(f"{agent}@v{number} is already live")
            versions = dict(state.versions)
            events = [
                self._event(state, state.live, PolicyStatus.RETIRED, now, actor=actor, reason=f"replaced by v{number}"),
                self._event(state, number, PolicyStatus.LIVE, now, actor=actor, reason=reason, details=details),
            ]
            versions[state.live] = replace(versions[state.live], status=PolicyStatus.RETIRED, updated_at=now)
            versions[number] = replace(versions[number], status=PolicyStatus.LIVE, updated_at=now)
            canary_ends = state.canary == number
            history = (*state.live_history, state.live)[-_HISTORY_LIMIT:]
            return (
                replace(
                    state,
                    live=number,
                    canary=None if canary_ends else state.canary,
                    canary_share=0.0 if canary_ends else state.canary_share,
                    canary_since=None if canary_ends else state.canary_since,
                    live_history=history,
                    versions=versions,
                ),
                events,
            )

        return self._transact(agent, change, expected_sequence=expected_sequence)

    def start_canary(
        self,
        agent: str,
        version: int | str,
        share: float,
        *,
        actor: str | None = None,
        reason: str | None = None,
        expected_sequence: int | None = None,
    ) -> PolicyState:
        """Route ``share`` of ``agent``'s episodes (sticky per session) to ``version``.

        A previous canary goes back to ``candidate``.

        Raises:
            ConfigurationError: ``share`` outside (0, 1].
            PolicyNotFoundError: Unknown agent or version.
            PolicyArtifactError: The artifact is corrupt or tampered with.
            PolicyConflictError: ``version`` is live, or the pointers changed since ``expected_sequence``.
        """
        if not 0.0 < float(share) <= 1.0:
            raise ConfigurationError(f"canary share must be in (0, 1], got {share!r}")
        number = self.resolve_ref(agent, version)
        if number:
            self._verify(agent, number)

        def change(state: PolicyState, now: float) -> tuple[PolicyState, list[PolicyEvent]]:
            if number not in state.versions:
                raise self._unknown_version(state, number)
            if state.live == number:
                raise PolicyConflictError(f"{agent}@v{number} is live; a canary must be another version")
            versions = dict(state.versions)
            events = []
            if state.canary is not None and state.canary != number:
                events.append(
                    self._event(
                        state, state.canary, PolicyStatus.CANDIDATE, now, actor=actor, reason=f"canary v{number}"
                    )
                )
                versions[state.canary] = replace(versions[state.canary], status=PolicyStatus.CANDIDATE, updated_at=now)
            events.append(
                self._event(
                    state,
                    number,
                    PolicyStatus.CANARY,
                    now,
                    actor=actor,
                    reason=reason,
                    details={"share": float(share), "incumbent": state.live},
                )
            )
            versions[number] = replace(versions[number], status=PolicyStatus.CANARY, updated_at=now)
            since = state.canary_since if state.canary == number and state.canary_since else now
            return (
                replace(state, canary=number, canary_share=float(share), canary_since=since, versions=versions),
                events,
            )

        return self._transact(agent, change, expected_sequence=expected_sequence)

    def rollback(
        self,
        agent: str,
        version: int | str | None = None,
        *,
        actor: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        expected_sequence: int | None = None,
    ) -> PolicyState:
        """Roll back the canary if there is one, else the live version (to the previous live one).

        Args:
            agent: The agent.
            version: Only roll back if this version is the canary or live (else a conflict).
            actor: Who.
            reason: Why.
            details: Numbers that justify it.
            expected_sequence: Compare-and-set token.

        Raises:
            PolicyNotFoundError: Unknown agent.
            PolicyConflictError: Nothing to roll back, ``version`` is neither canary nor live, or the
                pointers changed since ``expected_sequence``.
        """
        wanted = None if version is None else parse_version(version)

        def change(state: PolicyState, now: float) -> tuple[PolicyState, list[PolicyEvent]]:
            target = wanted
            if target is None:
                if state.canary is not None:
                    target = state.canary
                elif state.live != 0:
                    target = state.live
                else:
                    raise PolicyConflictError(
                        f"nothing to roll back for {agent!r}: no canary, and live is the baseline v0"
                    )
            versions = dict(state.versions)
            if target == state.canary:
                events = [
                    self._event(
                        state, target, PolicyStatus.ROLLED_BACK, now, actor=actor, reason=reason, details=details
                    )
                ]
                versions[target] = replace(versions[target], status=PolicyStatus.ROLLED_BACK, updated_at=now)
                return replace(state, canary=None, canary_share=0.0, canary_since=None, versions=versions), events
            if target == state.live and target != 0:
                history = list(state.live_history)
                previous = 0
                while history:
                    candidate = history.pop()
                    record = versions.get(candidate)
                    if (
                        candidate != target
                        and record is not None
                        and record.status not in (PolicyStatus.ROLLED_BACK, PolicyStatus.REJECTED)
                    ):
                        previous = candidate
                        break
                events = [
                    self._event(
                        state, target, PolicyStatus.ROLLED_BACK, now, actor=actor, reason=reason, details=details
                    ),
                    self._event(state, previous, PolicyStatus.LIVE, now, actor=actor, reason=f"rollback of v{target}"),
                ]
                versions[target] = replace(versions[target], status=PolicyStatus.ROLLED_BACK, updated_at=now)
                versions[previous] = replace(versions[previous], status=PolicyStatus.LIVE, updated_at=now)
                canary_ends = state.canary == previous
                return (
                    replace(
                        state,
                        live=previous,
                        live_history=tuple(history),
                        canary=None if canary_ends else state.canary,
                        canary_share=0.0 if canary_ends else state.canary_share,
                        canary_since=None if canary_ends else state.canary_since,
                        versions=versions,
                    ),
                    events,
                )
            status = state.versions[target].status.value if target in state.versions else "unknown"
            raise PolicyConflictError(
                f"{agent}@v{target} is neither the canary nor live (status {status}; live v{state.live}, "
                f"canary {'v' + str(state.canary) if state.canary is not None else 'none'}): nothing rolled back"
            )

        return self._transact(agent, change, expected_sequence=expected_sequence)

    def reject(
        self,
        agent: str,
        version: int | str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> PolicyState:
        """Mark a candidate ``rejected`` (e.g. it failed the offline gate).

        Raises:
            PolicyConflictError: The version is live or the canary.
        """
        number = self.resolve_ref(agent, version)

        def change(state: PolicyState, now: float) -> tuple[PolicyState, list[PolicyEvent]]:
            if number in (state.live, state.canary):
                raise PolicyConflictError(f"{agent}@v{number} is serving; roll it back instead of rejecting it")
            versions = dict(state.versions)
            events = [
                self._event(state, number, PolicyStatus.REJECTED, now, actor=actor, reason=reason, details=details)
            ]
            versions[number] = replace(versions[number], status=PolicyStatus.REJECTED, updated_at=now)
            return replace(state, versions=versions), events

        return self._transact(agent, change)

    def pin(
        self, agent: str, version: int | str, *, actor: str | None = None, reason: str | None = None
    ) -> PolicyState:
        """Serve ``version`` to every call of ``agent`` until :meth:`unpin` (overrides live and canary)."""
        number = self.resolve_ref(agent, version)
        if number:
            self._verify(agent, number)

        def change(state: PolicyState, now: float) -> tuple[PolicyState, list[PolicyEvent]]:
            status = state.versions[number].status.value
            event = PolicyEvent(
                agent, number, status, status, actor or self.actor, reason or "pinned", now, {"pinned": True}
            )
            return replace(state, pinned=number), [event]

        return self._transact(agent, change)

    def unpin(self, agent: str, *, actor: str | None = None, reason: str | None = None) -> PolicyState:
        """Remove the pin; live and canary apply again.

        Raises:
            PolicyConflictError: Nothing is pinned.
        """

        def change(state: PolicyState, now: float) -> tuple[PolicyState, list[PolicyEvent]]:
            if state.pinned is None:
                raise PolicyConflictError(f"no version of {agent!r} is pinned")
            status = state.versions[state.pinned].status.value
            event = PolicyEvent(
                agent, state.pinned, status, status, actor or self.actor, reason or "unpinned", now, {"pinned": False}
            )
            return replace(state, pinned=None), [event]

        return self._transact(agent, change)

    def log_decision(
        self,
        agent: str,
        version: int,
        reason: str,
        details: Mapping[str, Any],
        *,
        actor: str | None = None,
    ) -> None:
        """Log a decision that changes no pointer (e.g. the gate holding a canary), with its numbers."""

        def change(state: PolicyState, now: float) -> tuple[PolicyState, list[PolicyEvent]]:
            status = state.versions[version].status.value if version in state.versions else "unknown"
            return state, [PolicyEvent(agent, version, status, status, actor or self.actor, reason, now, dict(details))]

        self._transact(agent, change)

    def _verify(self, agent: str, version: int) -> None:
        self._cache.pop((agent, version), None)  # re-check the files now, not a cached copy
        self.load(agent, version)

    # --- DuckDB mirror -------------------------------------------------------------------------
    def _mirror(self, agent: str) -> None:
        """Mirror ``agent`` into the store soon, on a background thread (a change never waits on DuckDB)."""
        if self.store is None:
            return
        with self._mirror_cond:
            self._mirror_pending.add(agent)
            if self._mirror_thread is None:
                self._mirror_thread = threading.Thread(
                    target=self._mirror_loop, name="agentgym-policy-mirror", daemon=True
                )
                self._mirror_thread.start()
            self._mirror_cond.notify()

    def _mirror_loop(self) -> None:
        while True:
            with self._mirror_cond:
                while not self._mirror_pending:
                    if not self._mirror_cond.wait(timeout=5.0) and not self._mirror_pending:
                        self._mirror_thread = None  # idle: a later change starts a new one
                        return
                agents, self._mirror_pending = self._mirror_pending, set()
            for agent in sorted(agents):
                self._mirror_now(agent)

    def _mirror_now(self, agent: str) -> None:
        store = self.store
        if store is None or not store.is_open:
            return  # not opened yet, or closed at shutdown: never reopen it from here
        try:
            self.sync_store(agent)
        except StoreUnavailableError as exc:
            logger.debug("agentgym: cannot mirror policies of %s now: %s", agent, exc)
        except Exception as exc:
            try:
                if self._on_error is None:
                    raise
                self._on_error("policy registry mirror", exc)
            except Exception:
                logger.exception("agentgym: mirroring the policies of %s into the store failed", agent)

    def sync_store(self, agent: str | None = None) -> int:
        """Mirror versions and new events (also other processes') into the DuckDB tables now.

        Changes made through this registry are mirrored in the background within milliseconds;
        call this to be sure (tests, the gate) or to pick up other processes' changes.

        Returns:
            How many new events were written.
        """
        written = 0
        for name in [agent] if agent is not None else self.agents():
            with self._sync_lock:
                store = self.store  # read under the lock: close() detaches it under the same lock
                if store is None:
                    break
                written += self._sync_agent(store, name)
        return written

    def close(self) -> None:
        """Mirror what is pending, then stop using the store (called by the runtime's shutdown)."""
        if self.store is None:
            return
        with self._mirror_cond:
            pending, self._mirror_pending = self._mirror_pending, set()
        for agent in sorted(pending):
            self._mirror_now(agent)
        with self._sync_lock:
            self.store = None

    def _sync_agent(self, store: TraceStore, agent: str) -> int:
        state = self.read_state(agent)
        if state is None:
            return 0
        rows = []
        for version, record in sorted(state.versions.items()):
            try:
                policy = self.load(agent, version)
            except (PolicyArtifactError, PolicyNotFoundError):
                policy = None
            path = self.artifact_path(agent, version) if version else None
            digest = None
            if path is not None:
                try:
                    digest = manifest_digest(path)
                except PolicyArtifactError:
                    digest = None
            rows.append(
                [
                    agent,
                    version,
                    record.status.value,
                    policy.parent_version if policy else None,
                    policy.trainer if policy else None,
                    str(path) if path else None,
                    digest,
                    _utc(record.created_at),
                    _utc(record.updated_at),
                    json.dumps(policy.metrics if policy else {}, default=str),
                    json.dumps(policy.metadata if policy else {}, default=str),
                ]
            )
        offset = self._event_offsets.get(agent)
        if offset is None:
            known = store.query("SELECT count(*) FROM policy_events WHERE agent = ?", [agent])
            offset = self._offset_after_lines(agent, int(known[0][0]) if known else 0)
        events, new_offset = self._read_events_from(agent, offset)

        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM policies WHERE agent = ?", [agent])
            con.executemany("INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if events:
                con.executemany(
                    "INSERT INTO policy_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        [
                            e.agent,
                            e.version,
                            e.from_status,
                            e.to_status,
                            e.actor,
                            e.reason,
                            _utc(e.occurred_at),
                            json.dumps({**e.details, "sequence": e.sequence}, default=str),
                        ]
                        for e in events
                    ],
                )

        store.write(write)
        self._event_offsets[agent] = new_offset
        return len(events)

    def _offset_after_lines(self, agent: str, lines: int) -> int:
        path = self.events_path(agent)
        if not lines or not path.exists():
            return 0
        offset = 0
        with path.open("rb") as handle:
            for _ in range(lines):
                line = handle.readline()
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
        return offset

    def _read_events_from(self, agent: str, offset: int) -> tuple[list[PolicyEvent], int]:
        path = self.events_path(agent)
        if not path.exists():
            return [], offset
        events = []
        with path.open("rb") as handle:
            handle.seek(offset)
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # a line still being written
                offset += len(line)
                if line.strip():
                    events.append(PolicyEvent.from_json(json.loads(line)))
        return events, offset
