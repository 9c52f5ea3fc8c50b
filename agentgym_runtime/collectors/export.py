"""Export what the store holds for offline analysis: Parquet, JSONL chat format, OTLP JSON.

* ``parquet``: a ``.parquet`` path gets the ``spans`` table; any other path is a
  directory that gets ``spans``, ``episodes``, ``feedback`` and ``tool_calls``.
  Written by DuckDB's own ``COPY`` (no pyarrow in the serving process).
* ``jsonl``: one episode per line in the OpenAI chat format
  (``{"messages": [...], "tools": [...], ...}``) with its reward, ready for
  fine-tuning or evaluation sets.
* ``otlp-json``: the OTLP/JSON encoding of ``ExportTraceServiceRequest``, which any
  OpenTelemetry collector can ingest.

Example:
    >>> from agentgym_runtime.collectors.store import TraceStore
    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "spans.parquet")
    >>> export_store(TraceStore(":memory:"), out, "parquet").rows
    {'spans': 0}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from agentgym_runtime import semconv
from agentgym_runtime.collectors.schema import PROMOTED
from agentgym_runtime.collectors.store import TraceStore
from agentgym_runtime.errors import ConfigurationError

ExportFormat = Literal["parquet", "jsonl", "otlp-json"]
FORMATS: tuple[str, ...] = ("parquet", "jsonl", "otlp-json")


@dataclass(slots=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        path: The file or directory written.
        format: The format used.
        rows: Rows (or documents) written, per table or kind.
        files: Every file written.
    """

    path: Path
    format: str
    rows: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def parse_since(since: datetime | timedelta | str | None) -> datetime | None:
    """Accept a datetime, a timedelta before now, an ISO timestamp or ``30m``/``6h``/``7d``.

    Raises:
        ConfigurationError: The text is none of those forms.
    """
    if since is None:
        return None
    if isinstance(since, datetime):
        return since if since.tzinfo else since.replace(tzinfo=UTC)
    if isinstance(since, timedelta):
        return datetime.now(UTC) - since
    text = str(since).strip()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    if len(text) >= 2 and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: float(text[:-1])})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(
            f"since={since!r} is not an ISO timestamp or a duration like '30m', '6h', '7d'"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _filters(
    agent: str | None, since: datetime | None, *, time_column: str, agent_column: str = "agent"
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if agent is not None:
        clauses.append(f"{agent_column} = ?")
        params.append(agent)
    if since is not None:
        clauses.append(f"{time_column} >= ?")
        params.append(since)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def export_store(
    store: TraceStore,
    path: str | Path,
    format: str = "parquet",
    *,
    agent: str | None = None,
    since: datetime | timedelta | str | None = None,
) -> ExportResult:
    """Write the store's contents (optionally one agent's, since a time) to ``path``.

    Raises:
        ConfigurationError: Unknown format or bad ``since``.
    """
    if format not in FORMATS:
        raise ConfigurationError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    target = Path(path)
    start = parse_since(since)
    if format == "parquet":
        return _export_parquet(store, target, agent, start)
    if format == "jsonl":
        return _export_jsonl(store, target, agent, start)
    return _export_otlp(store, target, agent, start)


def _span_filter(agent: str | None, since: datetime | None) -> tuple[str, list[Any]]:
    # A span belongs to an agent's export when its episode is that agent's (tool spans of
    # sub-agents included), so filter by episode rather than by the span's own agent column.
    clauses: list[str] = []
    params: list[Any] = []
    if agent is not None:
        clauses.append("(agent = ? OR episode_id IN (SELECT episode_id FROM episodes WHERE agent = ?))")
        params.extend([agent, agent])
    if since is not None:
        clauses.append("started_at >= ?")
        params.append(since)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _copy(store: TraceStore, sql: str, params: list[Any], out: Path) -> int:
    cursor = store.connect().cursor()
    try:
        # COPY cannot take parameters for the file name; the path is quoted, never interpolated raw.
        quoted = str(out).replace("'", "''")
        cursor.execute(f"COPY ({sql}) TO '{quoted}' (FORMAT parquet, COMPRESSION zstd)", params)
        row = cursor.execute(f"SELECT count(*) FROM read_parquet('{quoted}')").fetchone()
        return int(row[0]) if row else 0
    finally:
        cursor.close()


def _export_parquet(store: TraceStore, target: Path, agent: str | None, since: datetime | None) -> ExportResult:
    result = ExportResult(target, "parquet")
    span_where, span_params = _span_filter(agent, since)
    if target.suffix == ".parquet":
        target.parent.mkdir(parents=True, exist_ok=True)
        result.rows["spans"] = _copy(
            store, f"SELECT * FROM spans{span_where} ORDER BY start_unix_nano", span_params, target
        )
        result.files.append(target)
        return result
    target.mkdir(parents=True, exist_ok=True)
    ep_where, ep_params = _filters(agent, since, time_column="started_at")
    tc_where, tc_params = _filters(agent, since, time_column="started_at")
    fb_where = ""
    fb_params: list[Any] = []
    if agent is not None or since is not None:
        fb_clauses: list[str] = []
        if agent is not None:
            fb_clauses.append("episode_id IN (SELECT episode_id FROM episodes WHERE agent = ?)")
            fb_params.append(agent)
        if since is not None:
            fb_clauses.append("created_at >= ?")
            fb_params.append(since)
        fb_where = " WHERE " + " AND ".join(fb_clauses)
    for table, sql, params in (
        ("spans", f"SELECT * FROM spans{span_where} ORDER BY start_unix_nano", span_params),
        ("episodes", f"SELECT * FROM episodes{ep_where} ORDER BY started_at", ep_params),
        ("feedback", f"SELECT * FROM feedback{fb_where} ORDER BY created_at", fb_params),
        ("tool_calls", f"SELECT * FROM tool_calls{tc_where} ORDER BY started_at", tc_params),
    ):
        out = target / f"{table}.parquet"
        result.rows[table] = _copy(store, sql, params, out)
        result.files.append(out)
    return result


def _loads(text: Any) -> Any:
    if text is None:
        return None
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _export_jsonl(store: TraceStore, target: Path, agent: str | None, since: datetime | None) -> ExportResult:
    where, params = _filters(agent, since, time_column="started_at")
    episodes = store.query_dicts(f"SELECT * FROM episodes{where} ORDER BY started_at", params)
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with target.open("w", encoding="utf-8") as handle:
        for episode in episodes:
            spans = store.query_dicts(
                "SELECT name, operation, tool_name, tool_call_id, tool_arguments, tool_result, tool_outcome, "
                "attributes "
                "FROM spans WHERE episode_id = ? AND operation IN (?, ?) ORDER BY start_unix_nano",
                [episode["episode_id"], semconv.OP_CHAT, semconv.OP_EXECUTE_TOOL],
            )
            messages, tools = _chat_messages(episode, spans)
            record = {
                "episode_id": episode["episode_id"],
                "agent": episode["agent"],
                "policy_version": episode["policy_version"],
                "session_id": episode["session_id"],
                "status": episode["status"],
                "reward": episode["reward"],
                "tool_reliability": episode["tool_reliability"],
                "tool_calls": episode["tool_calls"],
                "tool_failures": episode["tool_failures"],
                "messages": messages,
                "tools": tools,
            }
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            count += 1
    return ExportResult(target, "jsonl", {"episodes": count}, [target])


def _chat_messages(episode: dict[str, Any], spans: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """The episode's conversation as chat messages.

    The last LLM call's full input plus its output when LLM calls were recorded; else one
    reconstructed from the episode's input, its tool calls and its output.
    """
    chats = [s for s in spans if s["operation"] == semconv.OP_CHAT]
    messages: list[Any]
    if chats:
        last = _loads(chats[-1]["attributes"]) or {}
        messages = list(_loads(last.get(semconv.GEN_AI_INPUT_MESSAGES)) or [])
        output = _loads(last.get(semconv.GEN_AI_OUTPUT_MESSAGES))
        if isinstance(output, list):
            messages.extend(output)
        elif output is not None:
            messages.append(output)
        tools = _loads(last.get(semconv.GEN_AI_TOOL_DEFINITIONS)) or []
        return messages, tools if isinstance(tools, list) else []
    messages = []
    user_input = _loads(episode.get("input"))
    if user_input is not None:
        messages.append(
            {"role": "user", "content": user_input if isinstance(user_input, str) else json.dumps(user_input)}
        )
    for span in spans:
        if span["operation"] != semconv.OP_EXECUTE_TOOL:
            continue
        call_id = span["tool_call_id"] or f"call_{len(messages)}"
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": span["tool_name"], "arguments": span["tool_arguments"] or "{}"},
                    }
                ],
            }
        )
        messages.append(
            {"role": "tool", "tool_call_id": call_id, "content": span["tool_result"] or span["tool_outcome"]}
        )
    output = _loads(episode.get("output"))
    if output is not None:
        messages.append({"role": "assistant", "content": output if isinstance(output, str) else json.dumps(output)})
    return messages, []


_KIND_NUMBERS = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
_STATUS_NUMBERS = {"UNSET": 0, "OK": 1, "ERROR": 2}


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # proto3 JSON encodes int64 as a string
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": _any_value(v)} for k, v in value.items()]}}
    return {"stringValue": str(value)}


def _key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in attributes.items() if v is not None]


def _otlp_id(hex_id: str | None) -> str:
    # OTLP/JSON ids are lowercase hex strings (not base64), per the OTLP specification.
    return hex_id or ""


def _export_otlp(store: TraceStore, target: Path, agent: str | None, since: datetime | None) -> ExportResult:
    where, params = _span_filter(agent, since)
    rows = store.query_dicts(f"SELECT * FROM spans{where} ORDER BY start_unix_nano", params)
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        attributes = dict(_loads(row["attributes"]) or {})
        for promoted in PROMOTED:
            value = row.get(promoted.column)
            if value is not None:
                attributes[promoted.attribute] = value
        span: dict[str, Any] = {
            "traceId": _otlp_id(row["trace_id"]),
            "spanId": _otlp_id(row["span_id"]),
            "name": row["name"],
            "kind": _KIND_NUMBERS.get(row["kind"], 0),
            "startTimeUnixNano": str(row["start_unix_nano"]),
            "endTimeUnixNano": str(row["end_unix_nano"]),
            "attributes": _key_values(attributes),
            "status": {"code": _STATUS_NUMBERS.get(row["status_code"], 0)},
        }
        if row["parent_span_id"]:
            span["parentSpanId"] = _otlp_id(row["parent_span_id"])
        if row["status_message"]:
            span["status"]["message"] = row["status_message"]
        events = _loads(row["events"]) or []
        if events:
            span["events"] = [
                {
                    "name": e["name"],
                    "timeUnixNano": str(e["time_unix_nano"]),
                    "attributes": _key_values(e.get("attributes") or {}),
                }
                for e in events
            ]
        links = _loads(row["links"]) or []
        if links:
            span["links"] = [
                {
                    "traceId": link["trace_id"],
                    "spanId": link["span_id"],
                    "attributes": _key_values(link.get("attributes") or {}),
                }
                for link in links
            ]
        service = row["service_name"] or "unknown_service"
        grouped.setdefault(service, {}).setdefault(row["scope_name"] or "", []).append(span)
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": _key_values({"service.name": service})},
                "scopeSpans": [{"scope": {"name": scope}, "spans": spans} for scope, spans in scopes.items()],
            }
            for service, scopes in grouped.items()
        ]
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, ensure_ascii=False, default=str), encoding="utf-8")
    return ExportResult(target, "otlp-json", {"spans": len(rows)}, [target])
