"""What the dashboard and the report read, behind one small interface.

:class:`Source` has one method, :meth:`Source.read`, returning a :class:`Snapshot` of plain,
JSON-safe data. :class:`HomeSource` builds it from a home directory (the trace store, read-only
or from a snapshot copy, the policies directory's ``pointers.json``/``events.jsonl``, and the
training jobs' ``progress.jsonl``/``job.log``). A collector source only has to return the same
snapshot (for instance fetched as JSON: :meth:`Snapshot.to_json` / :meth:`Snapshot.from_json`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agentgym_runtime.collectors.pricing import TokenPrices, bill_by_version

_REWARD = re.compile(r"reward (-?[0-9]*\.?[0-9]+)")


@dataclass
class Snapshot:
    """Everything the views show, as plain data (lists of dicts), taken at ``taken_at``."""

    label: str
    taken_at: float
    agents: list[dict[str, Any]] = field(default_factory=list)
    reliability: list[dict[str, Any]] = field(default_factory=list)
    tool_reliability: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    costs: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    looks: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    demo: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (what a collector endpoint would serve)."""
        return json.loads(json.dumps(asdict(self), default=str))  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Snapshot:
        """The inverse of :meth:`to_json`."""
        return cls(**payload)


class Source(Protocol):
    """Where a dashboard or a report reads from."""

    def read(self, *, failures_since: float | None = None) -> Snapshot:
        """The current snapshot; ``failures_since`` limits the failures to recent ones (Unix s)."""
        ...


class HomeSource:
    """A :class:`Source` reading one home directory (never writing it).

    Example:
        >>> import tempfile
        >>> HomeSource(Path(tempfile.mkdtemp())).read().agents
        []
    """

    def __init__(self, home: Path, store_path: str | None = None, prices: TokenPrices | None = None) -> None:
        self.home = Path(home)
        self.store_path = store_path or str(self.home / "traces.duckdb")
        self.prices = prices or TokenPrices()

    def read(self, *, failures_since: float | None = None) -> Snapshot:
        """Read the store, the policies and the training jobs now."""
        snap = Snapshot(label=str(self.home), taken_at=time.time())
        self._read_policies(snap)
        self._read_store(snap, failures_since)
        self._read_progress(snap)
        demo = self.home / "demo-summary.json"
        if demo.exists():
            try:
                snap.demo = json.loads(demo.read_text())
            except ValueError as exc:
                snap.problems.append(f"{demo}: {exc}")
        return snap

    def _read_policies(self, snap: Snapshot) -> None:
        from agentgym_runtime.policy.gate import decision_z
        from agentgym_runtime.policy.registry import PolicyRegistry

        registry = PolicyRegistry(self.home / "policies", actor="dashboard")
        for agent in registry.agents():
            state = registry.read_state(agent)
            if state is None:
                continue
            snap.agents.append(
                {
                    "agent": agent,
                    "live": state.live,
                    "canary": state.canary,
                    "canary_share": state.canary_share,
                    "canary_since": state.canary_since,
                    "pinned": state.pinned,
                    "versions": {str(v): r.status.value for v, r in sorted(state.versions.items())},
                }
            )
            for event in registry.events(agent):
                sequential = event.details.get("sequential")
                look = sequential.get("look") if isinstance(sequential, dict) else None
                if event.actor == "gate" and isinstance(look, dict):
                    alpha = sequential.get("alpha") if isinstance(sequential, dict) else None
                    snap.looks.append(
                        {"agent": agent, "version": event.version, "at": event.occurred_at, "alpha": alpha, **look}
                    )
                if event.from_status != event.to_status or event.actor == "gate":
                    snap.decisions.append(
                        {
                            "agent": agent,
                            "version": event.version,
                            "from_status": event.from_status,
                            "to_status": event.to_status,
                            "actor": event.actor,
                            "reason": event.reason,
                            "at": event.occurred_at,
                            "candidate": event.details.get("candidate"),
                            "incumbent": event.details.get("incumbent"),
                            "z": decision_z(event.details),
                        }
                    )

    def _read_store(self, snap: Snapshot, failures_since: float | None) -> None:
        from datetime import UTC, datetime

        from agentgym_runtime.cli.access import StoreMissingError, open_for_reading
        from agentgym_runtime.errors import StoreUnavailableError

        try:
            with open_for_reading(self.store_path) as opened:
                store = opened.store
                snap.reliability = store.query_dicts(
                    "SELECT agent, policy_version AS version, epoch(date_trunc('hour', started_at)) AS bucket, "
                    "count(*) AS calls, count(*) FILTER (WHERE outcome = 'ok') AS successes "
                    "FROM tool_calls GROUP BY ALL ORDER BY bucket, agent, version"
                )
                snap.tool_reliability = store.query_dicts(
                    "SELECT agent, tool_name AS tool, policy_version AS version, "
                    "epoch(date_trunc('hour', started_at)) AS bucket, count(*) AS calls, "
                    "count(*) FILTER (WHERE outcome = 'ok') AS successes "
                    "FROM tool_calls GROUP BY ALL ORDER BY agent, tool, version, bucket"
                )
                since = datetime.fromtimestamp(failures_since or 0.0, tz=UTC)
                snap.failures = store.query_dicts(
                    "SELECT agent, tool_name AS tool, outcome, count(*) AS calls, max(started_at) AS last_at, "
                    "arg_max(arguments, started_at) AS example_arguments, "
                    "arg_max(coalesce(result, error_type), started_at) AS example_result "
                    "FROM tool_calls WHERE outcome <> 'ok' AND started_at >= ? "
                    "GROUP BY ALL ORDER BY calls DESC, agent, tool LIMIT 50",
                    [since],
                )
                snap.costs = bill_by_version(store, self.prices)
                snap.runs = store.query_dicts(
                    "SELECT run_id, agent, trainer, status, reason, epoch(scheduled_at) AS scheduled_at, "
                    "epoch(started_at) AS started_at, epoch(ended_at) AS ended_at, episodes, candidate_version, "
                    "metrics, error, log_tail FROM training_runs ORDER BY scheduled_at DESC LIMIT 20"
                )
        except StoreMissingError:
            snap.problems.append(f"no trace store at {self.store_path} yet")
        except StoreUnavailableError as exc:
            snap.problems.append(str(exc))
        for run in snap.runs:
            if isinstance(run.get("metrics"), str):
                try:
                    run["metrics"] = json.loads(run["metrics"])
                except ValueError:
                    run["metrics"] = {}

    def _read_progress(self, snap: Snapshot) -> None:
        from agentgym_runtime.trainers.job import LOG_NAME, PROGRESS_NAME

        for run in snap.runs:
            matches = list((self.home / "training").glob(f"*/{run['run_id']}"))
            run["progress"], run["rewards"] = None, []
            if not matches:
                continue
            folder = matches[0]
            try:
                lines = (folder / PROGRESS_NAME).read_text().splitlines()
            except OSError:
                lines = []
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line being written now
                run["progress"] = {"fraction": entry.get("fraction"), "message": entry.get("message")}
                found = _REWARD.search(str(entry.get("message", "")))
                if found:
                    run["rewards"].append(float(found.group(1)))
            if not run.get("log_tail"):
                try:
                    run["log_tail"] = (folder / LOG_NAME).read_text()[-2000:]
                except OSError:
                    pass
