"""Turn finished OpenTelemetry spans into rows of the store's tables.

Runs on the writer thread, never on the agent's: the calling thread only hands
the span to the batch processor. One span gives one ``spans`` row; the root
``invoke_agent`` span of an episode also gives its ``episodes`` row (its
counters travel as attributes, computed in-process as the episode ran), and a
``gen_ai.evaluation.result`` span gives a ``feedback`` row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from agentgym_runtime import semconv
from agentgym_runtime.collectors.schema import PROMOTED, PROMOTED_KEYS

Row = tuple[Any, ...]


@dataclass(slots=True)
class RowBatch:
    """Rows for one write transaction."""

    spans: list[Row] = field(default_factory=list)
    episodes: list[Row] = field(default_factory=list)
    feedback: list[Row] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.spans) + len(self.episodes) + len(self.feedback)

    def extend(self, other: RowBatch) -> None:
        """Append ``other``'s rows to this batch."""
        self.spans.extend(other.spans)
        self.episodes.extend(other.episodes)
        self.feedback.extend(other.feedback)


def _ts(unix_nano: int) -> datetime:
    return datetime.fromtimestamp(unix_nano / 1e9, UTC)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _json_or_none(text: Any) -> str | None:
    """Attributes holding JSON text go into JSON columns as they are; anything else is encoded."""
    if text is None:
        return None
    if isinstance(text, str):
        return text
    return _dumps(text)


def _as_int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


_PROMOTED_KEYS = tuple(p.attribute for p in PROMOTED)
_PROMOTED_INT = tuple(p.sql_type in ("INTEGER", "BIGINT") for p in PROMOTED)


def _promoted(attributes: Mapping[str, Any]) -> list[Any]:
    values: list[Any] = []
    for key, is_int in zip(_PROMOTED_KEYS, _PROMOTED_INT, strict=True):
        value = attributes.get(key)
        if value is not None:
            if is_int:
                value = _as_int(value)
            elif type(value) is not str:
                value = _dumps(value)
        values.append(value)
    return values


def span_rows(spans: Sequence[ReadableSpan]) -> RowBatch:
    """Convert finished spans into rows for ``spans``, ``episodes`` and ``feedback``.

    Runs on the writer thread, which shares the GIL with the agent's threads: keep it lean.
    """
    batch = RowBatch()
    append_span = batch.spans.append
    for span in spans:
        context = span.context
        if context is None:
            continue
        attributes: Mapping[str, Any] = span.attributes or {}
        rest = {k: v for k, v in attributes.items() if k not in PROMOTED_KEYS}
        start = span.start_time or 0
        end = span.end_time or start
        parent = span.parent
        resource = span.resource
        scope = span.instrumentation_scope
        status = span.status
        trace_id = format(context.trace_id, "032x")
        row: list[Any] = [
            trace_id,
            format(context.span_id, "016x"),
            format(parent.span_id, "016x") if parent is not None else None,
            span.name,
            span.kind.name,
            start,
            end,
            status.status_code.name,
            status.description,
            resource.attributes.get("service.name") if resource is not None else None,
            scope.name if scope is not None else None,
        ]
        row.extend(_promoted(attributes))
        row.append(_dumps(rest) if rest else None)
        row.append(_events(span) if span.events else None)
        row.append(_links(span) if span.links else None)
        append_span(tuple(row))

        if attributes.get(semconv.EPISODE_ROOT):
            batch.episodes.append(_episode_row(attributes, trace_id, start, end))
        elif span.name == semconv.FEEDBACK_SPAN_NAME:
            batch.feedback.append(_feedback_row(attributes, end))
    return batch


def _events(span: ReadableSpan) -> str:
    return _dumps(
        [{"name": e.name, "time_unix_nano": e.timestamp, "attributes": dict(e.attributes or {})} for e in span.events]
    )


def _links(span: ReadableSpan) -> str:
    return _dumps(
        [
            {
                "trace_id": format(link.context.trace_id, "032x"),
                "span_id": format(link.context.span_id, "016x"),
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ]
    )


def _episode_row(attributes: Mapping[str, Any], trace_id: str, start: int, end: int) -> Row:
    return (
        attributes.get(semconv.EPISODE_ID),
        attributes.get(semconv.GEN_AI_AGENT_NAME) or "unknown",
        _as_int(attributes.get(semconv.POLICY_VERSION)),
        attributes.get(semconv.EPISODE_SESSION_ID),
        trace_id,
        _ts(start),
        _ts(end),
        (end - start) / 1e6,
        attributes.get(semconv.EPISODE_STATUS) or semconv.EpisodeStatus.OK.value,
        attributes.get(semconv.ERROR_TYPE),
        attributes.get(semconv.FRAMEWORK),
        attributes.get(semconv.EPISODE_SCENARIO),
        attributes.get(semconv.EPISODE_ENTRYPOINT),
        _as_int(attributes.get(semconv.EPISODE_TOOL_CALLS)),
        _as_int(attributes.get(semconv.EPISODE_TOOL_FAILURES)),
        _as_float(attributes.get(semconv.EPISODE_TOOL_RELIABILITY)),
        _as_int(attributes.get(semconv.EPISODE_LLM_CALLS)),
        _as_int(attributes.get(semconv.EPISODE_INPUT_TOKENS)),
        _as_int(attributes.get(semconv.EPISODE_OUTPUT_TOKENS)),
        _as_float(attributes.get(semconv.EPISODE_REWARD)),
        _json_or_none(attributes.get(semconv.EPISODE_INPUT)),
        _json_or_none(attributes.get(semconv.EPISODE_OUTPUT)),
        _json_or_none(attributes.get(semconv.EPISODE_METADATA)),
    )


def _feedback_row(attributes: Mapping[str, Any], end: int) -> Row:
    return (
        attributes.get(semconv.FEEDBACK_ID),
        attributes.get(semconv.FEEDBACK_TARGET_EPISODE),
        attributes.get(semconv.GEN_AI_EVALUATION_NAME) or "user_rating",
        _as_float(attributes.get(semconv.GEN_AI_EVALUATION_SCORE_VALUE)),
        attributes.get(semconv.GEN_AI_EVALUATION_SCORE_LABEL),
        attributes.get(semconv.FEEDBACK_COMMENT),
        _ts(end),
    )
