"""The registry's transitions: pure functions from a state (and a change) to a new state and its events.

Each function takes the agent's current :class:`PolicyState`, the time and who acts, checks
that the change is valid now, and returns ``(new_state, events)`` without touching a file. The
file store applies them under its lock (compare-and-set on the sequence number), which keeps the
rules of the state machine here, testable on plain values. A function that logs a decision
without changing a pointer returns the *same* state object.

* ``candidate`` -> ``canary`` (:func:`start_canary`) -> ``live`` (:func:`promote`) -> ``retired``
* ``canary`` or ``live`` -> ``rolled_back`` (:func:`rollback`); a candidate -> ``rejected``
* :func:`pin` / :func:`unpin` force one version for every call, whatever its status.

Example:
    >>> state = register(PolicyState.initial("bot", 0.0), 1, 1.0, actor="cli", reason="registered")[0]
    >>> state = promote(state, 1, 2.0, actor="cli")[0]
    >>> state.live, state.status_of(0).value
    (1, 'retired')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from agentgym_runtime.policy.errors import PolicyConflictError, PolicyNotFoundError
from agentgym_runtime.policy.registry.state import HISTORY_LIMIT, PolicyEvent, PolicyState, PolicyStatus, VersionRecord

Change = tuple[PolicyState, list[PolicyEvent]]


def unknown_version(state: PolicyState, version: int) -> PolicyNotFoundError:
    """The error for a version ``state`` does not hold; it lists those it does.

    Example:
        >>> str(unknown_version(PolicyState.initial("bot", 0.0), 4))
        "agent 'bot' has no version 4; versions: 0"
    """
    known = ", ".join(str(v) for v in sorted(state.versions))
    return PolicyNotFoundError(f"agent {state.agent!r} has no version {version}; versions: {known}")


def event(
    state: PolicyState,
    version: int,
    to_status: str,
    now: float,
    *,
    actor: str,
    reason: str | None,
    details: Mapping[str, Any] | None = None,
) -> PolicyEvent:
    """The event of ``version`` moving from its current status in ``state`` to ``to_status``."""
    record = state.versions.get(version)
    return PolicyEvent(
        state.agent,
        version,
        record.status.value if record else None,
        to_status,
        actor,
        reason,
        now,
        dict(details or {}),
    )


def _set_status(versions: dict[int, VersionRecord], version: int, status: PolicyStatus, now: float) -> None:
    versions[version] = replace(versions[version], status=status, updated_at=now)


def register(
    state: PolicyState,
    version: int,
    now: float,
    *,
    actor: str,
    reason: str | None,
    digest: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> Change:
    """Add ``version`` as a ``candidate`` (its artifact is written by the caller).

    Raises:
        PolicyConflictError: ``version`` exists already.
    """
    if version in state.versions:
        raise PolicyConflictError(f"{state.agent}@v{version} already exists")
    versions = dict(state.versions)
    versions[version] = VersionRecord(version, PolicyStatus.CANDIDATE, now, now, digest)
    candidate = PolicyStatus.CANDIDATE.value
    new = PolicyEvent(state.agent, version, None, candidate, actor, reason or "registered", now, dict(details or {}))
    return replace(state, versions=versions), [new]


def promote(
    state: PolicyState,
    number: int,
    now: float,
    *,
    actor: str,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> Change:
    """Make ``number`` live; the previous live version is retired and a canary of ``number`` ends.

    Raises:
        PolicyNotFoundError: Unknown version.
        PolicyConflictError: It is live already.
    """
    if number not in state.versions:
        raise unknown_version(state, number)
    if state.live == number:
        raise PolicyConflictError(f"{state.agent}@v{number} is already live")
    versions = dict(state.versions)
    events = [
        event(state, state.live, PolicyStatus.RETIRED, now, actor=actor, reason=f"replaced by v{number}"),
        event(state, number, PolicyStatus.LIVE, now, actor=actor, reason=reason, details=details),
    ]
    _set_status(versions, state.live, PolicyStatus.RETIRED, now)
    _set_status(versions, number, PolicyStatus.LIVE, now)
    canary_ends = state.canary == number
    history = (*state.live_history, state.live)[-HISTORY_LIMIT:]
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


def start_canary(
    state: PolicyState, number: int, share: float, now: float, *, actor: str, reason: str | None = None
) -> Change:
    """Route ``share`` of the episodes to ``number``; a previous canary goes back to ``candidate``.

    Raises:
        PolicyNotFoundError: Unknown version.
        PolicyConflictError: ``number`` is live.
    """
    if number not in state.versions:
        raise unknown_version(state, number)
    if state.live == number:
        raise PolicyConflictError(f"{state.agent}@v{number} is live; a canary must be another version")
    versions = dict(state.versions)
    events = []
    if state.canary is not None and state.canary != number:
        events.append(event(state, state.canary, PolicyStatus.CANDIDATE, now, actor=actor, reason=f"canary v{number}"))
        _set_status(versions, state.canary, PolicyStatus.CANDIDATE, now)
    events.append(
        event(
            state,
            number,
            PolicyStatus.CANARY,
            now,
            actor=actor,
            reason=reason,
            details={"share": float(share), "incumbent": state.live},
        )
    )
    _set_status(versions, number, PolicyStatus.CANARY, now)
    since = state.canary_since if state.canary == number and state.canary_since else now
    return replace(state, canary=number, canary_share=float(share), canary_since=since, versions=versions), events


def rollback(
    state: PolicyState,
    wanted: int | None,
    now: float,
    *,
    actor: str,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> Change:
    """Roll back ``wanted`` (default: the canary if any, else live) to the previous live version.

    Raises:
        PolicyConflictError: Nothing to roll back, or ``wanted`` is neither the canary nor live.
    """
    agent = state.agent
    target = wanted
    if target is None:
        if state.canary is not None:
            target = state.canary
        elif state.live != 0:
            target = state.live
        else:
            raise PolicyConflictError(f"nothing to roll back for {agent!r}: no canary, and live is the baseline v0")
    versions = dict(state.versions)
    if target == state.canary:
        events = [event(state, target, PolicyStatus.ROLLED_BACK, now, actor=actor, reason=reason, details=details)]
        _set_status(versions, target, PolicyStatus.ROLLED_BACK, now)
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
            event(state, target, PolicyStatus.ROLLED_BACK, now, actor=actor, reason=reason, details=details),
            event(state, previous, PolicyStatus.LIVE, now, actor=actor, reason=f"rollback of v{target}"),
        ]
        _set_status(versions, target, PolicyStatus.ROLLED_BACK, now)
        _set_status(versions, previous, PolicyStatus.LIVE, now)
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


def reject(
    state: PolicyState,
    number: int,
    now: float,
    *,
    actor: str,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> Change:
    """Mark a candidate ``rejected``.

    Raises:
        PolicyNotFoundError: Unknown version.
        PolicyConflictError: It is live or the canary.
    """
    if number not in state.versions:
        raise unknown_version(state, number)
    if number in (state.live, state.canary):
        raise PolicyConflictError(f"{state.agent}@v{number} is serving; roll it back instead of rejecting it")
    versions = dict(state.versions)
    events = [event(state, number, PolicyStatus.REJECTED, now, actor=actor, reason=reason, details=details)]
    _set_status(versions, number, PolicyStatus.REJECTED, now)
    return replace(state, versions=versions), events


def pin(state: PolicyState, number: int, now: float, *, actor: str, reason: str | None = None) -> Change:
    """Force ``number`` for every call (its status is unchanged; the event says ``pinned``).

    Raises:
        PolicyNotFoundError: Unknown version.
    """
    if number not in state.versions:
        raise unknown_version(state, number)
    status = state.versions[number].status.value
    pinned = PolicyEvent(state.agent, number, status, status, actor, reason or "pinned", now, {"pinned": True})
    return replace(state, pinned=number), [pinned]


def unpin(state: PolicyState, now: float, *, actor: str, reason: str | None = None) -> Change:
    """Remove the pin.

    Raises:
        PolicyConflictError: Nothing is pinned.
    """
    if state.pinned is None:
        raise PolicyConflictError(f"no version of {state.agent!r} is pinned")
    status = state.versions[state.pinned].status.value
    unpinned = PolicyEvent(
        state.agent, state.pinned, status, status, actor, reason or "unpinned", now, {"pinned": False}
    )
    return replace(state, pinned=None), [unpinned]


def log_decision(
    state: PolicyState, version: int, now: float, *, actor: str, reason: str, details: Mapping[str, Any]
) -> Change:
    """A decision that changes no pointer (the gate holding a canary): the same state, one event."""
    status = state.versions[version].status.value if version in state.versions else "unknown"
    return state, [PolicyEvent(state.agent, version, status, status, actor, reason, now, dict(details))]
