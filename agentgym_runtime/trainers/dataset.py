"""Snapshots of recorded episodes, and the training tasks built from them.

The serving process owns the DuckDB file, so it writes the snapshot:
:func:`write_snapshot` copies one agent's episodes (ended in a time window),
their spans and their feedback into Parquet files with DuckDB's ``COPY``,
inside one read transaction (a consistent view that never blocks the span
writer), and then writes ``manifest.json`` (counts, window, schema versions,
sha256 of every file). A directory without a manifest is not a snapshot.

The training job only reads: :func:`load_tasks` checks the manifest's hashes,
reads the Parquet files with an in-memory DuckDB and builds one :class:`Task`
per episode (input, tools offered, recorded tool calls with their outcomes,
output, reward, feedback), split into train and held-out sets by session so
no conversation leaks from one side to the other.

Example:
    >>> import tempfile
    >>> from agentgym_runtime.collectors.store import TraceStore
    >>> snap = write_snapshot(TraceStore(":memory:"), "support", tempfile.mkdtemp(), run_id="r1")
    >>> snap.counts["episodes"], load_tasks(snap.directory)
    (0, ([], []))
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from agentgym_runtime import semconv
from agentgym_runtime.collectors.schema import SCHEMA_VERSION
from agentgym_runtime.errors import AgentGymError
from agentgym_runtime.recording.files import atomic_write_text

if TYPE_CHECKING:
    from agentgym_runtime.collectors.store import TraceStore

#: Version of the snapshot layout (files and manifest fields); bump on incompatible changes.
SNAPSHOT_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: Tables copied into a snapshot, one Parquet file each.
SNAPSHOT_TABLES: tuple[str, ...] = ("episodes", "spans", "feedback")


class SnapshotError(AgentGymError, RuntimeError):
    """A snapshot directory is missing, incomplete or altered (the message says which file)."""


class SnapshotManifest(BaseModel):
    """What a snapshot holds; written last, as ``manifest.json``.

    Attributes:
        run_id: The training run the snapshot was taken for.
        agent: The agent whose episodes it holds.
        since: Episodes that ended after this instant (``None``: from the first one).
        until: ... and at or before this one.
        format_version: :data:`SNAPSHOT_FORMAT_VERSION`.
        store_schema_version: The store's schema version the rows follow.
        counts: Rows per table, plus ``sessions`` (distinct session ids, episodes without one count alone).
        files: Per file name: ``{"sha256": ..., "bytes": ...}``.
        created_at: When the snapshot was written.
        directory: Where it lies (not stored in the file; filled when read).
    """

    model_config = ConfigDict(extra="forbid")

    run_id: str
    agent: str
    since: datetime | None
    until: datetime
    format_version: int = SNAPSHOT_FORMAT_VERSION
    store_schema_version: int = SCHEMA_VERSION
    counts: dict[str, int] = Field(default_factory=dict)
    files: dict[str, dict[str, Any]] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    directory: str = Field(default="", exclude=True)

    @classmethod
    def read(cls, directory: str | Path) -> SnapshotManifest:
        """Read ``directory/manifest.json``.

        Raises:
            SnapshotError: No manifest (an unfinished or foreign directory) or an unreadable one.
        """
        path = Path(directory) / MANIFEST_NAME
        try:
            text = path.read_text()
        except OSError as exc:
            raise SnapshotError(f"no snapshot manifest at {path}: {exc.strerror or exc}") from None
        try:
            manifest = cls.model_validate_json(text)
        except ValueError as exc:
            raise SnapshotError(f"the snapshot manifest {path} is not valid: {exc}") from None
        if manifest.format_version > SNAPSHOT_FORMAT_VERSION:
            raise SnapshotError(
                f"the snapshot {directory} has format version {manifest.format_version}, newer than this "
                f"agentgym-runtime reads ({SNAPSHOT_FORMAT_VERSION}); upgrade agentgym-runtime in the training job"
            )
        manifest.directory = str(Path(directory))
        return manifest

    def verify(self) -> None:
        """Check every file against its recorded size and sha256.

        Raises:
            SnapshotError: A file is missing or differs (names the file).
        """
        for name, info in self.files.items():
            path = Path(self.directory) / name
            if not path.is_file():
                raise SnapshotError(f"snapshot file {path} is missing")
            if path.stat().st_size != info.get("bytes"):
                raise SnapshotError(f"snapshot file {path} has {path.stat().st_size} bytes, expected {info['bytes']}")
            if _sha256(path) != info.get("sha256"):
                raise SnapshotError(f"snapshot file {path} does not match its sha256 in {MANIFEST_NAME}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _quote(path: Path) -> str:
    # COPY takes no parameter for its file name: quote it, never interpolate it raw.
    return "'" + str(path).replace("'", "''") + "'"


def write_snapshot(
    store: TraceStore,
    agent: str,
    directory: str | Path,
    *,
    run_id: str,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> SnapshotManifest:
    """Copy ``agent``'s episodes that ended in ``(since, until]``, their spans and feedback to Parquet.

    Runs in one read transaction on a cursor of ``store``: the copy is consistent, and the span
    writer keeps writing meanwhile (rows it commits later are simply not in this snapshot).

    Args:
        store: The serving process's trace store.
        agent: The agent's name.
        directory: Created if needed; gets ``episodes.parquet``, ``spans.parquet``,
            ``feedback.parquet`` and, last, ``manifest.json``.
        run_id: The training run this snapshot is for.
        since: Exclusive lower bound on ``episodes.ended_at`` (``None``: everything).
        until: Inclusive upper bound (default: now).
        limit: Copy only the ``limit`` most recent of those episodes (``None``: all).

    Returns:
        The manifest written.

    Example:
        >>> import tempfile
        >>> from agentgym_runtime.collectors.store import TraceStore
        >>> write_snapshot(TraceStore(":memory:"), "a", tempfile.mkdtemp(), run_id="r").counts["spans"]
        0
    """
    until = until or datetime.now(UTC)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    where = "agent = ? AND ended_at <= ?" + (" AND ended_at > ?" if since is not None else "")
    window: list[Any] = [agent, until] + ([since] if since is not None else [])
    selected = f"SELECT episode_id FROM episodes WHERE {where}"
    if limit is not None:
        selected += f" ORDER BY ended_at DESC LIMIT {int(limit)}"
    queries = {
        "episodes": (f"SELECT * FROM episodes WHERE episode_id IN ({selected}) ORDER BY started_at", window),
        "spans": (f"SELECT * FROM spans WHERE episode_id IN ({selected}) ORDER BY start_unix_nano", window),
        "feedback": (f"SELECT * FROM feedback WHERE episode_id IN ({selected}) ORDER BY created_at", window),
    }
    manifest = SnapshotManifest(run_id=run_id, agent=agent, since=since, until=until, directory=str(target))
    cursor = store.connect().cursor()
    try:
        cursor.execute("BEGIN TRANSACTION")
        try:
            for table, (sql, params) in queries.items():
                out = target / f"{table}.parquet"
                cursor.execute(f"COPY ({sql}) TO {_quote(out)} (FORMAT parquet, COMPRESSION zstd)", params)
            row = cursor.execute(
                f"SELECT count(*), count(DISTINCT coalesce(session_id, 'episode:' || episode_id)) "
                f"FROM read_parquet({_quote(target / 'episodes.parquet')})"
            ).fetchone()
            manifest.counts["episodes"], manifest.counts["sessions"] = (int(row[0]), int(row[1])) if row else (0, 0)
            for table in ("spans", "feedback"):
                count = cursor.execute(f"SELECT count(*) FROM read_parquet({_quote(target / f'{table}.parquet')})")
                fetched = count.fetchone()
                manifest.counts[table] = int(fetched[0]) if fetched else 0
        finally:
            cursor.execute("ROLLBACK")  # read-only: nothing to commit
    finally:
        cursor.close()
    for table in SNAPSHOT_TABLES:
        path = target / f"{table}.parquet"
        manifest.files[path.name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    atomic_write_text(target / MANIFEST_NAME, manifest.model_dump_json(indent=2), mode=0o644)
    return manifest


def count_new_episodes(store: TraceStore, agent: str, since: datetime | None, until: datetime | None = None) -> int:
    """How many episodes of ``agent`` ended in ``(since, until]`` (cheap check before a snapshot).

    Example:
        >>> from agentgym_runtime.collectors.store import TraceStore
        >>> count_new_episodes(TraceStore(":memory:"), "support", None)
        0
    """
    sql = "SELECT count(*) FROM episodes WHERE agent = ?"
    params: list[Any] = [agent]
    if since is not None:
        sql += " AND ended_at > ?"
        params.append(since)
    if until is not None:
        sql += " AND ended_at <= ?"
        params.append(until)
    rows = store.query(sql, params)
    return int(rows[0][0]) if rows else 0


# --- the job side: tasks -------------------------------------------------------------------


class RecordedToolCall(BaseModel):
    """One tool call of an episode as it was recorded (requested and executed, or failed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None
    call_id: str | None = None
    arguments: Any = None
    result: Any = None
    outcome: str
    error_type: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the call succeeded (counts for tool reliability)."""
        return self.outcome == semconv.ToolOutcome.OK.value


class FeedbackItem(BaseModel):
    """One piece of feedback attached to an episode."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    value: float | None = None
    label: str | None = None
    comment: str | None = None


class Task(BaseModel):
    """One recorded episode, as a training or evaluation task.

    Attributes:
        episode_id: The episode.
        session_id: Its session (``None`` if it had none; it is then a session of its own).
        agent: The agent's name.
        policy_version: The policy the episode ran under.
        input: The agent's input as recorded (arguments by parameter name for functions).
        output: What the agent returned.
        tools: Tool definitions offered to the model (``{name, description, parameters}``), first seen first.
        system_instructions: The system prompt of the first LLM call, if recorded.
        tool_calls: Every requested or executed tool call, in order, with its outcome.
        reward: The episode's reward.
        tool_reliability: Share of its tool calls that succeeded (``None``: no tool calls).
        status: ``ok``, ``error`` or ``cancelled``.
        feedback: Feedback attached to it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    episode_id: str
    session_id: str | None = None
    agent: str
    policy_version: int = 0
    input: Any = None
    output: Any = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    system_instructions: Any = None
    tool_calls: list[RecordedToolCall] = Field(default_factory=list)
    reward: float | None = None
    tool_reliability: float | None = None
    status: str = semconv.EpisodeStatus.OK.value
    feedback: list[FeedbackItem] = Field(default_factory=list)

    @property
    def split_key(self) -> str:
        """The unit of the train/held-out split: the session, else the episode alone."""
        return self.session_id if self.session_id is not None else f"episode:{self.episode_id}"


def _loads(text: Any) -> Any:
    if text is None or not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _tool_definitions(text: Any) -> list[dict[str, Any]]:
    value = _loads(text)
    if isinstance(value, str):  # stored as JSON text inside the attributes' JSON
        value = _loads(value)
    return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []


def _executed_tools(
    calls: list[dict[str, Any]], agent_of: Mapping[str, str], parsed: dict[str, list[dict[str, Any]]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per agent, the definitions of the tools it ran (from ``execute_tool`` spans), by name.

    A tool that does not exist (``unknown_tool``) is never one of them. The recorded definition
    (``@agentgym.tool`` writes it) wins; a framework tool without one is known by name and
    description, with no schema (any arguments object is accepted).
    """
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for call in calls:
        name = call["tool_name"]
        if not name or call["tool_outcome"] == semconv.ToolOutcome.UNKNOWN_TOOL.value:
            continue
        known = found.setdefault(agent_of.get(call["episode_id"], ""), {})
        text = call["definition"]
        if text is not None:
            definitions = parsed.get(text)
            if definitions is None:
                definitions = parsed[text] = _tool_definitions(text)
            for definition in definitions:
                if definition.get("name") == name:
                    known[name] = definition
        if name not in known:
            known[name] = {"name": name, "description": str(call["description"] or ""), "parameters": None}
    return found


def _rows(con: Any, sql: str) -> list[dict[str, Any]]:
    result = con.execute(sql)
    names = [d[0] for d in result.description or []]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def read_tasks(snapshot_dir: str | Path, *, verify: bool = True) -> list[Task]:
    """Every episode of a snapshot as a :class:`Task`, oldest first.

    Raises:
        SnapshotError: The snapshot is incomplete or its files do not match the manifest.

    Example:
        >>> read_tasks("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        SnapshotError: no snapshot manifest at /nonexistent/manifest.json
    """
    manifest = SnapshotManifest.read(snapshot_dir)
    if verify:
        manifest.verify()
    # Hundreds of thousands of small objects that all survive: the cyclic GC would rescan them
    # again and again (measured: most of the time at 100k episodes), and they hold no cycles.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _read_tasks(Path(snapshot_dir))
    finally:
        if collecting:
            gc.enable()


def _read_tasks(base: Path) -> list[Task]:
    import duckdb

    episodes_file = _quote(base / "episodes.parquet")
    spans_file = _quote(base / "spans.parquet")
    feedback_file = _quote(base / "feedback.parquet")
    con = duckdb.connect()
    try:
        episodes = _rows(
            con,
            "SELECT episode_id, session_id, agent, policy_version, input, output, reward, tool_reliability, status "
            f"FROM read_parquet({episodes_file}) ORDER BY started_at, episode_id",
        )
        chats = _rows(
            con,
            "SELECT episode_id, "
            f"json_extract_string(attributes, '$.\"{semconv.GEN_AI_TOOL_DEFINITIONS}\"') AS tools, "
            f"json_extract_string(attributes, '$.\"{semconv.GEN_AI_SYSTEM_INSTRUCTIONS}\"') AS system "
            f"FROM read_parquet({spans_file}) WHERE operation = '{semconv.OP_CHAT}' "
            "ORDER BY episode_id, start_unix_nano",
        )
        calls = _rows(
            con,
            "SELECT episode_id, tool_name, tool_call_id, tool_arguments, tool_result, tool_outcome, error_type, "
            f"json_extract_string(attributes, '$.\"{semconv.TOOL_ERROR_MESSAGE}\"') AS error_message, "
            f"json_extract_string(attributes, '$.\"{semconv.GEN_AI_TOOL_DEFINITIONS}\"') AS definition, "
            f"json_extract_string(attributes, '$.\"{semconv.GEN_AI_TOOL_DESCRIPTION}\"') AS description "
            f"FROM read_parquet({spans_file}) WHERE operation = '{semconv.OP_EXECUTE_TOOL}' "
            "AND tool_outcome IS NOT NULL ORDER BY episode_id, start_unix_nano",
        )
        feedback = _rows(
            con,
            f"SELECT episode_id, name, value, label, comment FROM read_parquet({feedback_file}) ORDER BY created_at",
        )
    finally:
        con.close()

    tools: dict[str, dict[str, dict[str, Any]]] = {}
    system: dict[str, Any] = {}
    # An agent offers the same tool definitions on every call: parse each distinct text once
    # (the tasks share the parsed definitions; treat them as read-only).
    parsed_tools: dict[str, list[dict[str, Any]]] = {}
    parsed_system: dict[str, Any] = {}
    for chat in chats:
        offered = tools.setdefault(chat["episode_id"], {})
        text = chat["tools"]
        if text is not None:
            definitions = parsed_tools.get(text)
            if definitions is None:
                definitions = parsed_tools[text] = _tool_definitions(text)
            for definition in definitions:
                offered.setdefault(str(definition.get("name")), definition)
        if chat["system"] is not None and chat["episode_id"] not in system:
            if chat["system"] not in parsed_system:
                parsed_system[chat["system"]] = _loads(chat["system"])
            system[chat["episode_id"]] = parsed_system[chat["system"]]
    agent_of = {row["episode_id"]: row["agent"] for row in episodes}
    executed = _executed_tools(calls, agent_of, parsed_tools)
    tool_calls: dict[str, list[RecordedToolCall]] = {}
    for call in calls:
        tool_calls.setdefault(call["episode_id"], []).append(
            RecordedToolCall(
                name=call["tool_name"],
                call_id=call["tool_call_id"],
                arguments=_loads(call["tool_arguments"]),
                result=_loads(call["tool_result"]),
                outcome=call["tool_outcome"],
                error_type=call["error_type"],
                error_message=call["error_message"],
            )
        )
    feedback_by_episode: dict[str, list[FeedbackItem]] = {}
    for item in feedback:
        feedback_by_episode.setdefault(item["episode_id"], []).append(
            FeedbackItem(name=item["name"], value=item["value"], label=item["label"], comment=item["comment"])
        )
    return [
        Task(
            episode_id=row["episode_id"],
            session_id=row["session_id"],
            agent=row["agent"],
            policy_version=row["policy_version"],
            input=_loads(row["input"]),
            output=_loads(row["output"]),
            # What the model was offered; else (a plain agent records no chat span listing its tools)
            # every tool the agent really ran anywhere in the snapshot.
            tools=list((tools.get(row["episode_id"]) or executed.get(row["agent"], {})).values()),
            system_instructions=system.get(row["episode_id"]),
            tool_calls=tool_calls.get(row["episode_id"], []),
            reward=row["reward"],
            tool_reliability=row["tool_reliability"],
            status=row["status"],
            feedback=feedback_by_episode.get(row["episode_id"], []),
        )
        for row in episodes
    ]


def split_by_session(tasks: list[Task], heldout_fraction: float = 0.2, seed: int = 0) -> tuple[list[Task], list[Task]]:
    """Split tasks into (train, held-out) so that every session lies wholly on one side.

    Sessions are ordered by a seeded hash of their key (deterministic, independent of
    recording order) and the first ``ceil(fraction * sessions)`` go to held-out; with two
    or more sessions and a positive fraction each side gets at least one session.

    Raises:
        ValueError: ``heldout_fraction`` outside ``[0, 1)``.

    Example:
        >>> tasks = [Task(episode_id=f"e{i}", session_id=f"s{i % 4}", agent="a") for i in range(8)]
        >>> train, heldout = split_by_session(tasks, 0.25)
        >>> len(train), len(heldout), {t.session_id for t in train} & {t.session_id for t in heldout}
        (6, 2, set())
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction!r}")
    keys = sorted({t.split_key for t in tasks}, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    n_heldout = math.ceil(heldout_fraction * len(keys)) if heldout_fraction > 0 and len(keys) >= 2 else 0
    n_heldout = min(n_heldout, len(keys) - 1) if keys else 0
    heldout_keys = set(keys[:n_heldout])
    train = [t for t in tasks if t.split_key not in heldout_keys]
    heldout = [t for t in tasks if t.split_key in heldout_keys]
    return train, heldout


def load_tasks(
    snapshot_dir: str | Path, *, heldout_fraction: float = 0.2, seed: int = 0, verify: bool = True
) -> tuple[list[Task], list[Task]]:
    """Read a snapshot's tasks and split them into (train, held-out) by session.

    Args:
        snapshot_dir: A directory written by :func:`write_snapshot`.
        heldout_fraction: Share of sessions held out for evaluation.
        seed: Seed of the split.
        verify: Check the files' sha256 against the manifest first.

    Raises:
        SnapshotError: The snapshot is incomplete or altered.

    Example:
        >>> import tempfile
        >>> from agentgym_runtime.collectors.store import TraceStore
        >>> snap = write_snapshot(TraceStore(":memory:"), "a", tempfile.mkdtemp(), run_id="r")
        >>> load_tasks(snap.directory, heldout_fraction=0.5)
        ([], [])
    """
    return split_by_session(read_tasks(snapshot_dir, verify=verify), heldout_fraction, seed)
