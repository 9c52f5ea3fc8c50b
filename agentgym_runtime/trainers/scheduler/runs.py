"""Training runs: their outcome (:class:`TrainingRun`), statuses, and the ``training_runs`` rows."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentgym_runtime.collectors.store import TraceStore


class RunStatus:
    """Values of ``training_runs.status``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    #: Stopped by the service's shutdown, not by a fault of its own (does not count as a failure).
    CANCELLED = "cancelled"


@dataclass(slots=True)
class TrainingRun:
    """The outcome of one training run (also written to ``training_runs``).

    Example:
        >>> TrainingRun(run_id="r1", agent="a", trainer="demos").status
        'queued'
    """

    run_id: str
    agent: str
    trainer: str
    status: str = RunStatus.QUEUED
    reason: str | None = None
    episodes: int | None = None
    snapshot_path: str | None = None
    output_dir: str | None = None
    candidate_version: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    log_tail: str | None = None
    exit_code: int | None = None


def safe_name(name: str) -> str:
    """``name`` made safe as one path component (what is not ``[A-Za-z0-9._-]`` becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def new_run_id() -> str:
    """A sortable unique run id: ``<UTC time>-<random>``."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def last_success_until(store: TraceStore, agent: str) -> datetime | None:
    """The snapshot ``until`` of ``agent``'s last successful run (its ``started_at``), if any."""
    rows = store.query(
        "SELECT max(started_at) FROM training_runs WHERE agent = ? AND status = ?", [agent, RunStatus.SUCCEEDED]
    )
    return rows[0][0] if rows and rows[0][0] is not None else None


def list_runs(store: TraceStore, agent: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Rows of ``training_runs``, newest first.

    Example:
        >>> from agentgym_runtime.collectors.store import TraceStore
        >>> list_runs(TraceStore(":memory:"))
        []
    """
    where = " WHERE agent = ?" if agent is not None else ""
    params: list[Any] = [agent] if agent is not None else []
    return store.query_dicts(
        f"SELECT * FROM training_runs{where} ORDER BY scheduled_at DESC, run_id DESC LIMIT {int(limit)}", params
    )


def insert_run(store: TraceStore, run: TrainingRun) -> None:
    """Insert ``run``'s row into ``training_runs`` (status ``queued``, scheduled now)."""
    store.write(
        lambda con: con.execute(
            "INSERT INTO training_runs (run_id, agent, trainer, status, scheduled_at) VALUES (?, ?, ?, ?, ?)",
            [run.run_id, run.agent, run.trainer, run.status, datetime.now(UTC)],
        )
    )


def update_run(store: TraceStore, run: TrainingRun, *, started_at: datetime | None = None, ended: bool = False) -> None:
    """Write ``run``'s outcome so far into its row (``started_at``: the snapshot's ``until``; ``ended``: now)."""
    assignments = [
        "status = ?",
        "reason = ?",
        "episodes = ?",
        "snapshot_path = ?",
        "candidate_version = ?",
        "metrics = ?",
        "error = ?",
        "log_tail = ?",
    ]
    params: list[Any] = [
        run.status,
        run.reason,
        run.episodes,
        run.snapshot_path,
        run.candidate_version,
        json.dumps(run.metrics, default=str) if run.metrics else None,
        run.error,
        run.log_tail,
    ]
    if started_at is not None:
        assignments.append("started_at = ?")
        params.append(started_at)
    if ended:
        assignments.append("ended_at = ?")
        params.append(datetime.now(UTC))
    params.append(run.run_id)
    store.write(lambda con: con.execute(f"UPDATE training_runs SET {', '.join(assignments)} WHERE run_id = ?", params))


def consecutive_failures(store: TraceStore, agent: str, *, limit: int) -> tuple[int, dict[str, Any] | None]:
    """How many of ``agent``'s latest finished runs failed in a row (at most ``limit``), and the last one.

    Skipped and cancelled runs do not break or extend the streak; a success ends it.

    Example:
        >>> from agentgym_runtime.collectors.store import TraceStore
        >>> consecutive_failures(TraceStore(":memory:"), "a", limit=5)
        (0, None)
    """
    rows = store.query_dicts(
        "SELECT status, reason, error, ended_at FROM training_runs WHERE agent = ? AND status IN (?, ?) "
        f"ORDER BY scheduled_at DESC, run_id DESC LIMIT {int(limit)}",
        [agent, RunStatus.FAILED, RunStatus.SUCCEEDED],
    )
    streak = 0
    for row in rows:
        if row["status"] != RunStatus.FAILED:
            break
        streak += 1
    return streak, (rows[0] if streak else None)
