"""The registry's file store: ``pointers.json`` with a lock and compare-and-set, ``events.jsonl``.

The filesystem is the source of truth shared by every process (serving replicas, the CLI, a
training job)::

    policies/<agent>/v<N>/           artifacts (see ``policy/artifact.py``)
    policies/<agent>/pointers.json   live, canary, canary share, pinned, statuses, sequence number
    policies/<agent>/events.jsonl    every transition: who, why, when, with its numbers
    policies/<agent>/.lock           exclusive ``flock`` held while the pointers change

:meth:`PolicyFiles.transact` runs a change under the lock: it reads the pointers, checks the
sequence number the caller last saw (compare-and-set), applies a transition, writes the new
pointers atomically (:func:`~agentgym_runtime.recording.files.atomic_write_json`) and appends the
events. Racing changes therefore serialize, and a change made on a stale view fails with
:class:`PolicyConflictError` instead of overwriting the winner. Pointers and events are read only
when the service's user owns them and nobody else may write them (:mod:`~agentgym_runtime.policy.trust`).

Example:
    >>> import tempfile
    >>> from agentgym_runtime.policy.registry import transitions
    >>> files = PolicyFiles(Path(tempfile.mkdtemp()))
    >>> state = files.transact("bot", lambda s, now: transitions.register(s, 1, now, actor="me", reason=None),
    ...                        create=True)
    >>> files.read_state("bot").sequence, [e.to_status for e in files.events("bot")]
    (1, ['candidate'])
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Final

from agentgym_runtime.policy.errors import PolicyConflictError, PolicyError, PolicyNotFoundError
from agentgym_runtime.policy.registry.state import PolicyEvent, PolicyState
from agentgym_runtime.policy.trust import check_trusted
from agentgym_runtime.recording.files import atomic_write_json

POINTERS: Final = "pointers.json"
EVENTS: Final = "events.jsonl"
LOCK: Final = ".lock"

#: A change: the state now and the time, to the new state and its events (see ``transitions``).
ChangeFn = Callable[[PolicyState, float], tuple[PolicyState, list[PolicyEvent]]]


class PolicyFiles:
    """Pointers and events of every agent under ``root`` (module docstring).

    Args:
        root: The policies directory (``<home>/policies``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.RLock()

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

    # --- reading ---------------------------------------------------------------------------
    def agents(self) -> list[str]:
        """Agents with pointers, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / POINTERS).is_file())

    def unknown_agent(self, agent: str) -> PolicyNotFoundError:
        """The error for an agent without pointers; it lists the agents that have some."""
        known = ", ".join(self.agents()) or "(none)"
        return PolicyNotFoundError(f"no policies registered for agent {agent!r}; agents with policies: {known}")

    def read_state(self, agent: str) -> PolicyState | None:
        """The agent's pointers, or ``None`` if it has none yet.

        Raises:
            PolicyError: ``pointers.json`` is not a valid pointers document.
            UntrustedFileError: It is a symlink, another user's, or world-writable.
        """
        path = self.pointers_path(agent)
        try:
            check_trusted(path, "policy pointers")
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except PolicyError:
            raise  # untrusted: its own message says why
        except ValueError as exc:
            raise PolicyError(f"{path} is corrupt ({exc}); restore it or remove it to start over") from exc
        try:
            return PolicyState.from_json(payload)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"{path} is not a valid pointers document: {exc!r}") from exc

    def events(self, agent: str) -> list[PolicyEvent]:
        """Every logged transition and decision of ``agent``, oldest first.

        A transition writes the pointers, then appends its events, both under the agent's lock; a
        reader that saw the new pointers without taking the lock may see their event a moment later.
        """
        return self.events_from(agent, 0)[0]

    def events_from(self, agent: str, offset: int) -> tuple[list[PolicyEvent], int]:
        """The complete event lines from byte ``offset`` on, and the offset after the last one.

        Raises:
            UntrustedFileError: ``events.jsonl`` is a symlink, another user's, or world-writable.
        """
        path = self.events_path(agent)
        try:
            check_trusted(path, "policy events")
        except FileNotFoundError:
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

    def offset_after_lines(self, agent: str, lines: int) -> int:
        """The byte offset after the first ``lines`` complete lines of ``events.jsonl``."""
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

    def last_event(self, agent: str) -> str | None:
        """The last logged change of ``agent`` in one line (for conflict messages)."""
        events = self.events(agent)
        if not events:
            return None
        e = events[-1]
        return f"v{e.version} {e.from_status} -> {e.to_status} by {e.actor} ({e.reason})"

    # --- changing ---------------------------------------------------------------------------
    @contextmanager
    def locked(self, agent: str) -> Iterator[None]:
        """Hold ``agent``'s exclusive lock (threads of this process and other processes)."""
        directory = self.agent_dir(agent)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def write_state(self, state: PolicyState) -> None:
        """Replace ``pointers.json`` atomically (call under :meth:`locked`)."""
        atomic_write_json(self.pointers_path(state.agent), state.to_json())

    def append_events(self, agent: str, events: Sequence[PolicyEvent]) -> None:
        """Append ``events`` to ``events.jsonl`` durably (call under :meth:`locked`)."""
        if not events:
            return
        text = "".join(json.dumps(e.to_json(), default=str) + "\n" for e in events)
        fd = os.open(self.events_path(agent), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def transact(
        self, agent: str, change: ChangeFn, *, expected_sequence: int | None = None, create: bool = False
    ) -> PolicyState:
        """Apply ``change`` to ``agent``'s pointers under the lock (compare-and-set); return the new state.

        Args:
            agent: The agent.
            change: A transition (the same state object back: a logged decision, no pointer change).
            expected_sequence: Fail unless the pointers are still at this sequence number.
            create: Start from the initial state when the agent has no pointers yet.

        Raises:
            PolicyNotFoundError: Unknown agent (and not ``create``).
            PolicyConflictError: The pointers changed since ``expected_sequence``; nothing changed.
        """
        with self.locked(agent):
            now = time.time()
            state = self.read_state(agent)
            if state is None:
                if not create:
                    raise self.unknown_agent(agent)
                state = PolicyState.initial(agent, now)
            if expected_sequence is not None and state.sequence != expected_sequence:
                last = self.last_event(agent)
                raise PolicyConflictError(
                    f"the policies of {agent!r} changed meanwhile (sequence {expected_sequence} -> {state.sequence}"
                    f"{'; last change: ' + last if last else ''}); nothing was changed, retry on the current state"
                )
            new_state, events = change(state, now)
            if new_state is state:  # a logged decision: the pointers stay as they are
                events = [replace(e, sequence=state.sequence) for e in events]
                if not self.pointers_path(agent).exists():
                    self.write_state(state)
            else:
                sequence = state.sequence + 1
                new_state = replace(new_state, sequence=sequence, updated_at=now)
                events = [replace(e, sequence=sequence) for e in events]
                self.write_state(new_state)
            self.append_events(agent, events)
        return new_state
