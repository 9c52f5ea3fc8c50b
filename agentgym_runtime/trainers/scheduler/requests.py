"""Training requests from other processes: ``agentgym train`` while a service holds the store.

``agentgym train`` cannot open a store another process holds; it leaves
``<home>/requests/<id>.request.json`` instead, the service's scheduler claims it and reports in
``<id>.status.json``.

A request file is data from outside the serving process, so it is trusted only as far as it can
be (see SECURITY.md): it must be a regular file (no symlink) owned by the service's own user and
writable by nobody else, in a directory of the same kind; it may only ask for the options the
command line offers (:data:`REQUEST_OPTIONS`); nothing in it chooses an executable (the job's
interpreter comes from the serving process), and the options that name code to import
(:data:`CODE_OPTIONS`) must equal what the serving process configured itself.

Example:
    >>> read_request_payload({"agent": "a", "overrides": {"python": "/bin/sh"}}, configured={})
    Traceback (most recent call last):
    ...
    agentgym_runtime.trainers.scheduler.requests.RequestRejected: a request may not set 'python'; ...
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentgym_runtime.errors import AgentGymError
from agentgym_runtime.recording.files import atomic_write_json, untrusted_reason
from agentgym_runtime.trainers.scheduler.runs import new_run_id, safe_name

REQUESTS_DIR = "requests"


#: What a request may ask for: the options ``agentgym train`` offers, nothing else.
REQUEST_OPTIONS = frozenset({"trainer", "gpu", "min_new_episodes", "timeout_s", "trainer_options", "since"})
#: Trainer options that name code to import (``module:qualname``): from a request only when equal
#: to what the serving process configured for the agent.
CODE_OPTIONS = frozenset({"trainer_class", "reward", "prompt", "replay", "guide", "live_tools", "fake_tools"})


class RequestRejected(AgentGymError, ValueError):
    """A request file the service will not act on (the message says why)."""


@dataclass(frozen=True, slots=True)
class TrainingRequest:
    """One claimed request: whom to train, whether to force, and the (checked) overrides."""

    request_id: str
    agent: str
    force: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def write_status(path: Path, payload: Mapping[str, Any]) -> None:
    """Replace a request's status file (a throw-away progress report: no fsync)."""
    atomic_write_json(path, dict(payload), durable=False)


def check_trusted(path: Path, *, uid: int | None = None) -> os.stat_result:
    """Refuse a file (or directory) not owned by ``uid`` (default: ours), or writable by group/others.

    Returns the ``lstat`` result; a symlink is refused, never followed.

    Raises:
        RequestRejected: The file is a symlink, someone else's, or group/world-writable.

    Example:
        >>> import tempfile
        >>> directory = Path(tempfile.mkdtemp())
        >>> check_trusted(directory).st_uid == os.geteuid()
        True
        >>> directory.chmod(0o777)
        >>> check_trusted(directory)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        RequestRejected: refusing request file ...: it is writable by group or others (mode 777)
    """
    info, reason = untrusted_reason(path, uid=uid)
    if reason is not None:
        raise RequestRejected(f"refusing request file {path}: {reason}")
    return info


def read_request_file(path: Path, *, configured: Mapping[str, Any]) -> TrainingRequest:
    """Read and check one claimed request file (see the module's trust rules).

    Args:
        path: The claimed file (``<id>.claimed.json``).
        configured: The trainer options the serving process configured for the request's agent,
            keyed by agent name (``{agent: trainer_options}``).

    Raises:
        RequestRejected: Untrusted file or directory, bad JSON, or an option it may not set.
    """
    check_trusted(path.parent)
    info = check_trusted(path)
    if not stat.S_ISREG(info.st_mode):
        raise RequestRejected(f"{path} is not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(1 << 20)
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise RequestRejected(f"{path.name} is not valid JSON: {exc}") from None
    request = read_request_payload(payload, configured=configured)
    return TrainingRequest(
        request_id=path.name.replace(".claimed.json", ""),
        agent=request.agent,
        force=request.force,
        overrides=request.overrides,
    )


def read_request_payload(payload: Any, *, configured: Mapping[str, Any]) -> TrainingRequest:
    """Check a request's content against :data:`REQUEST_OPTIONS` and :data:`CODE_OPTIONS`.

    Raises:
        RequestRejected: What the request may not do, named.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("agent"), str) or not payload["agent"]:
        raise RequestRejected("a request must be a JSON object with an 'agent' name")
    agent = str(payload["agent"])
    overrides = payload.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise RequestRejected("a request's 'overrides' must be a JSON object")
    for key in overrides:
        if key not in REQUEST_OPTIONS:
            raise RequestRejected(f"a request may not set {key!r}; it may set: {', '.join(sorted(REQUEST_OPTIONS))}")
    options = overrides.get("trainer_options") or {}
    if not isinstance(options, Mapping):
        raise RequestRejected("a request's 'trainer_options' must be a JSON object")
    own = configured.get(agent) or {}
    for key in CODE_OPTIONS & set(options):
        if options[key] != own.get(key):
            raise RequestRejected(
                f"a request may not set trainer option {key!r} (it names code to import) to anything but what "
                f"the service configured for {agent!r} ({own.get(key)!r}); set it in train_online(trainer_options=...)"
            )
    return TrainingRequest(request_id="", agent=agent, force=bool(payload.get("force")), overrides=dict(overrides))


def submit_request(
    home: str | Path, agent: str, *, force: bool = False, overrides: Mapping[str, Any] | None = None
) -> str:
    """Ask the service that holds ``home``'s store to run one training of ``agent``; returns the request id.

    The service's scheduler claims ``<home>/requests/<id>.request.json`` and reports in
    ``<id>.status.json`` (see :func:`request_status`).

    Example:
        >>> import tempfile
        >>> home = tempfile.mkdtemp()
        >>> request_id = submit_request(home, "support", force=True, overrides={"trainer": "apo"})
        >>> request_status(home, request_id) is None, withdraw_request(home, request_id)
        (True, True)
    """
    directory = Path(home) / REQUESTS_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    request_id = f"{new_run_id()}-{safe_name(agent)}"
    payload = {"agent": agent, "force": force, "overrides": dict(overrides or {}), "pid": os.getpid()}
    atomic_write_json(directory / f"{request_id}.request.json", payload, mode=0o600)
    return request_id


def request_status(home: str | Path, request_id: str) -> dict[str, Any] | None:
    """The service's report on a request: ``None`` until claimed, then ``{"state": "running"|"done", ...}``."""
    try:
        payload = json.loads((Path(home) / REQUESTS_DIR / f"{request_id}.status.json").read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def withdraw_request(home: str | Path, request_id: str) -> bool:
    """Remove a request nobody claimed yet; ``False`` if a service already took it."""
    try:
        (Path(home) / REQUESTS_DIR / f"{request_id}.request.json").unlink()
    except FileNotFoundError:
        return False
    return True
