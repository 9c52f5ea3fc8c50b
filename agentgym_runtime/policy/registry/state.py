"""The registry's state model: statuses, per-agent pointers and logged events (plain data).

:class:`PolicyState` is one agent's ``pointers.json``; :class:`PolicyEvent` one line of its
``events.jsonl``. Both are frozen and round-trip through JSON; nothing here touches a file.

Example:
    >>> state = PolicyState.initial("bot", 0.0)
    >>> PolicyState.from_json(state.to_json()) == state
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.recording.policy import Policy

#: How many previously live versions ``live_history`` keeps (rollback walks back along it).
HISTORY_LIMIT: Final = 100


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
    """One version's status and timestamps (Unix seconds).

    Attributes:
        version: The version number.
        status: Where it stands.
        created_at: When it was registered.
        updated_at: When its status last changed.
        digest: The sha256 of its ``manifest.json`` recorded at registration: loading compares
            the artifact with it, so an artifact rewritten afterwards (even with a recomputed
            manifest) is refused. ``None`` for v0 and for versions registered before it existed.

    Example:
        >>> VersionRecord(1, PolicyStatus.CANDIDATE, 0.0, 0.0, "ab12").digest
        'ab12'
    """

    version: int
    status: PolicyStatus
    created_at: float
    updated_at: float
    digest: str | None = None


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
            "versions": {str(v): _record_json(r) for v, r in sorted(self.versions.items())},
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> PolicyState:
        """Parse a ``pointers.json`` document."""
        versions = {
            int(v): VersionRecord(
                int(v),
                PolicyStatus(r["status"]),
                float(r["created_at"]),
                float(r["updated_at"]),
                None if r.get("digest") is None else str(r["digest"]),
            )
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


def _record_json(record: VersionRecord) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "status": record.status.value,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    if record.digest is not None:
        payload["digest"] = record.digest
    return payload


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
