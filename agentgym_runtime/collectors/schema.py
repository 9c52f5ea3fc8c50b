"""The DuckDB schema: tables, views, promoted columns and migrations.

This module is the single source of truth for what the store holds. The table
and view names and their columns are a public contract: users query them with
SQL (``SELECT * FROM reliability``). A change to them is a new
:class:`Migration` appended to :data:`MIGRATIONS`, never an edit of an old one.

Example:
    >>> import duckdb
    >>> con = duckdb.connect()
    >>> migrate(con) == SCHEMA_VERSION
    True
    >>> con.execute("SELECT count(*) FROM episodes").fetchone()
    (0,)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from agentgym_runtime import semconv
from agentgym_runtime.errors import StoreUnavailableError

if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True, slots=True)
class PromotedAttribute:
    """A span attribute stored in a typed column of ``spans`` instead of the JSON rest."""

    column: str
    attribute: str
    sql_type: str


#: Attributes that are grouped or filtered on, so they get typed columns (the notes measured
#: ~4 ms for a grouped query on a typed column against ~150 ms through json_extract).
PROMOTED: Final[tuple[PromotedAttribute, ...]] = (
    PromotedAttribute("episode_id", semconv.EPISODE_ID, "VARCHAR"),
    PromotedAttribute("agent", semconv.GEN_AI_AGENT_NAME, "VARCHAR"),
    PromotedAttribute("policy_version", semconv.POLICY_VERSION, "INTEGER"),
    PromotedAttribute("framework", semconv.FRAMEWORK, "VARCHAR"),
    PromotedAttribute("operation", semconv.GEN_AI_OPERATION_NAME, "VARCHAR"),
    PromotedAttribute("tool_name", semconv.GEN_AI_TOOL_NAME, "VARCHAR"),
    PromotedAttribute("tool_call_id", semconv.GEN_AI_TOOL_CALL_ID, "VARCHAR"),
    PromotedAttribute("tool_outcome", semconv.TOOL_OUTCOME, "VARCHAR"),
    PromotedAttribute("tool_arguments", semconv.GEN_AI_TOOL_CALL_ARGUMENTS, "VARCHAR"),
    PromotedAttribute("tool_result", semconv.GEN_AI_TOOL_CALL_RESULT, "VARCHAR"),
    PromotedAttribute("provider", semconv.GEN_AI_PROVIDER_NAME, "VARCHAR"),
    PromotedAttribute("request_model", semconv.GEN_AI_REQUEST_MODEL, "VARCHAR"),
    PromotedAttribute("response_model", semconv.GEN_AI_RESPONSE_MODEL, "VARCHAR"),
    PromotedAttribute("input_tokens", semconv.GEN_AI_USAGE_INPUT_TOKENS, "BIGINT"),
    PromotedAttribute("output_tokens", semconv.GEN_AI_USAGE_OUTPUT_TOKENS, "BIGINT"),
    PromotedAttribute("error_type", semconv.ERROR_TYPE, "VARCHAR"),
)
PROMOTED_KEYS: Final = frozenset(p.attribute for p in PROMOTED)

#: Columns of ``spans`` before the promoted ones, in table order (what the writer appends).
SPAN_HEAD_COLUMNS: Final = (
    ("trace_id", "VARCHAR NOT NULL"),
    ("span_id", "VARCHAR NOT NULL"),
    ("parent_span_id", "VARCHAR"),
    ("name", "VARCHAR NOT NULL"),
    ("kind", "VARCHAR NOT NULL"),
    ("start_unix_nano", "BIGINT NOT NULL"),
    ("end_unix_nano", "BIGINT NOT NULL"),
    ("status_code", "VARCHAR NOT NULL"),
    ("status_message", "VARCHAR"),
    ("service_name", "VARCHAR"),
    ("scope_name", "VARCHAR"),
)
#: Columns of ``spans`` after the promoted ones: the JSON rest.
SPAN_TAIL_COLUMNS: Final = (
    ("attributes", "JSON"),
    ("events", "JSON"),
    ("links", "JSON"),
)
#: Columns DuckDB derives from the stored ones (virtual: computed when read, never appended).
#: Building datetimes in Python cost the writer thread more than the rest of a row.
SPAN_GENERATED_COLUMNS: Final = (
    ("started_at", "TIMESTAMPTZ GENERATED ALWAYS AS (make_timestamptz(start_unix_nano // 1000)) VIRTUAL"),
    ("ended_at", "TIMESTAMPTZ GENERATED ALWAYS AS (make_timestamptz(end_unix_nano // 1000)) VIRTUAL"),
    ("duration_ms", "DOUBLE GENERATED ALWAYS AS ((end_unix_nano - start_unix_nano) / 1e6) VIRTUAL"),
)
SPAN_COLUMNS: Final = tuple(
    [name for name, _ in SPAN_HEAD_COLUMNS] + [p.column for p in PROMOTED] + [name for name, _ in SPAN_TAIL_COLUMNS]
)

EPISODE_COLUMNS: Final = (
    ("episode_id", "VARCHAR NOT NULL"),
    ("agent", "VARCHAR NOT NULL"),
    ("policy_version", "INTEGER NOT NULL"),
    ("session_id", "VARCHAR"),
    ("trace_id", "VARCHAR NOT NULL"),
    ("started_at", "TIMESTAMPTZ NOT NULL"),
    ("ended_at", "TIMESTAMPTZ NOT NULL"),
    ("duration_ms", "DOUBLE NOT NULL"),
    ("status", "VARCHAR NOT NULL"),
    ("error_type", "VARCHAR"),
    ("framework", "VARCHAR"),
    ("scenario", "VARCHAR"),
    ("entrypoint", "VARCHAR"),
    ("tool_calls", "INTEGER NOT NULL"),
    ("tool_failures", "INTEGER NOT NULL"),
    ("tool_reliability", "DOUBLE"),
    ("llm_calls", "INTEGER NOT NULL"),
    ("input_tokens", "BIGINT NOT NULL"),
    ("output_tokens", "BIGINT NOT NULL"),
    ("reward", "DOUBLE"),
    ("input", "JSON"),
    ("output", "JSON"),
    ("metadata", "JSON"),
)

FEEDBACK_COLUMNS: Final = (
    ("feedback_id", "VARCHAR NOT NULL"),
    ("episode_id", "VARCHAR NOT NULL"),
    ("name", "VARCHAR NOT NULL"),
    ("value", "DOUBLE"),
    ("label", "VARCHAR"),
    ("comment", "VARCHAR"),
    ("created_at", "TIMESTAMPTZ NOT NULL"),
)

POLICY_COLUMNS: Final = (
    ("agent", "VARCHAR NOT NULL"),
    ("version", "INTEGER NOT NULL"),
    ("status", "VARCHAR NOT NULL"),
    ("parent_version", "INTEGER"),
    ("trainer", "VARCHAR"),
    ("artifact_path", "VARCHAR"),
    ("manifest_sha256", "VARCHAR"),
    ("created_at", "TIMESTAMPTZ NOT NULL"),
    ("updated_at", "TIMESTAMPTZ NOT NULL"),
    ("metrics", "JSON"),
    ("metadata", "JSON"),
)

POLICY_EVENT_COLUMNS: Final = (
    ("agent", "VARCHAR NOT NULL"),
    ("version", "INTEGER NOT NULL"),
    ("from_status", "VARCHAR"),
    ("to_status", "VARCHAR NOT NULL"),
    ("actor", "VARCHAR NOT NULL"),
    ("reason", "VARCHAR"),
    ("occurred_at", "TIMESTAMPTZ NOT NULL"),
    ("details", "JSON"),
)

TRAINING_RUN_COLUMNS: Final = (
    ("run_id", "VARCHAR NOT NULL"),
    ("agent", "VARCHAR NOT NULL"),
    ("trainer", "VARCHAR NOT NULL"),
    ("status", "VARCHAR NOT NULL"),
    ("reason", "VARCHAR"),
    ("scheduled_at", "TIMESTAMPTZ NOT NULL"),
    ("started_at", "TIMESTAMPTZ"),
    ("ended_at", "TIMESTAMPTZ"),
    ("episodes", "INTEGER"),
    ("snapshot_path", "VARCHAR"),
    ("candidate_version", "INTEGER"),
    ("metrics", "JSON"),
    ("error", "VARCHAR"),
    ("log_tail", "VARCHAR"),
)

#: Where and at what price a training job ran (the backend's ``RunInfo``), added by migration 2.
TRAINING_RUN_BACKEND_COLUMNS: Final = (
    ("backend", "VARCHAR"),
    ("backend_choice", "VARCHAR"),
    ("backend_host", "VARCHAR"),
    ("gpu_type", "VARCHAR"),
    ("hourly_usd", "DOUBLE"),
    ("duration_s", "DOUBLE"),
    ("cost_usd", "DOUBLE"),
)


def _create_table(name: str, columns: tuple[tuple[str, str], ...]) -> str:
    body = ",\n  ".join(f"{col} {sql_type}" for col, sql_type in columns)
    return f"CREATE TABLE IF NOT EXISTS {name} (\n  {body}\n)"


_SPANS_DDL = _create_table(
    "spans",
    SPAN_HEAD_COLUMNS + tuple((p.column, p.sql_type) for p in PROMOTED) + SPAN_TAIL_COLUMNS + SPAN_GENERATED_COLUMNS,
)

_TOOL_CALLS_VIEW = f"""
CREATE OR REPLACE VIEW tool_calls AS
SELECT
  episode_id, agent, policy_version, framework, tool_name, tool_call_id AS call_id,
  tool_outcome AS outcome, tool_arguments AS arguments, tool_result AS result, error_type,
  duration_ms, started_at, trace_id, span_id
FROM spans
WHERE operation = '{semconv.OP_EXECUTE_TOOL}' AND tool_outcome IS NOT NULL
"""

_RELIABILITY_VIEW = f"""
CREATE OR REPLACE VIEW reliability AS
SELECT
  agent, tool_name, policy_version,
  count(*) AS calls,
  count(*) FILTER (WHERE outcome = '{semconv.ToolOutcome.OK}') AS successes,
  count(*) FILTER (WHERE outcome <> '{semconv.ToolOutcome.OK}') AS failures,
  count(*) FILTER (WHERE outcome = '{semconv.ToolOutcome.UNKNOWN_TOOL}') AS unknown_tool,
  count(*) FILTER (WHERE outcome = '{semconv.ToolOutcome.INVALID_ARGUMENTS}') AS invalid_arguments,
  count(*) FILTER (WHERE outcome = '{semconv.ToolOutcome.TOOL_ERROR}') AS tool_error,
  count(*) FILTER (WHERE outcome = '{semconv.ToolOutcome.ERROR_RESULT}') AS error_result,
  count(*) FILTER (WHERE outcome = '{semconv.ToolOutcome.NOT_EXECUTED}') AS not_executed,
  count(*) FILTER (WHERE outcome = '{semconv.ToolOutcome.OK}') / count(*) AS tool_reliability,
  min(started_at) AS first_call_at,
  max(started_at) AS last_call_at
FROM tool_calls
GROUP BY agent, tool_name, policy_version
"""

_LLM_CALLS_VIEW = f"""
CREATE OR REPLACE VIEW llm_calls AS
SELECT
  episode_id, agent, policy_version, framework, provider, request_model, response_model,
  input_tokens, output_tokens, duration_ms, status_code, error_type, started_at, trace_id, span_id
FROM spans
WHERE operation = '{semconv.OP_CHAT}'
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema's history; applied once, in a transaction, in order."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "spans, episodes, feedback, policies, policy_events, training_runs; tool_calls, reliability, llm_calls",
        (
            _SPANS_DDL,
            _create_table("episodes", EPISODE_COLUMNS),
            _create_table("feedback", FEEDBACK_COLUMNS),
            _create_table("policies", POLICY_COLUMNS),
            _create_table("policy_events", POLICY_EVENT_COLUMNS),
            _create_table("training_runs", TRAINING_RUN_COLUMNS),
            _TOOL_CALLS_VIEW,
            _RELIABILITY_VIEW,
            _LLM_CALLS_VIEW,
        ),
    ),
    Migration(
        2,
        "training_runs: backend, backend_choice, backend_host, gpu_type, hourly_usd, duration_s, cost_usd",
        tuple(
            f"ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS {name} {sql_type}"
            for name, sql_type in TRAINING_RUN_BACKEND_COLUMNS
        ),
    ),
    Migration(
        3,
        "otlp_batches: the OTLP requests a collector committed, so a retried one is never written twice",
        (
            "CREATE TABLE IF NOT EXISTS otlp_batches "
            "(batch_id VARCHAR NOT NULL, spans INTEGER NOT NULL, received_at TIMESTAMPTZ NOT NULL)",
        ),
    ),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1].version


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The version recorded in ``con``'s database (0 for an empty database)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'agentgym_schema'"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT max(version) FROM agentgym_schema").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring ``con``'s database to :data:`SCHEMA_VERSION`; return the version reached.

    Raises:
        StoreUnavailableError: The database was written by a newer agentgym-runtime.
    """
    con.execute(
        "CREATE TABLE IF NOT EXISTS agentgym_schema "
        "(version INTEGER NOT NULL, description VARCHAR, applied_at TIMESTAMPTZ DEFAULT current_timestamp)"
    )
    current = schema_version(con)
    if current > SCHEMA_VERSION:
        raise StoreUnavailableError(
            f"the trace store has schema version {current}, newer than this agentgym-runtime "
            f"understands ({SCHEMA_VERSION}); upgrade agentgym-runtime"
        )
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in migration.statements:
                con.execute(statement)
            con.execute(
                "INSERT INTO agentgym_schema (version, description) VALUES (?, ?)",
                [migration.version, migration.description],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        current = migration.version
    return current
