r"""OTLP trace requests into store rows: protobuf or JSON, gzip, foreign GenAI spans mapped.

A span gives the same ``spans`` row whether it was written in-process or arrived over
OTLP (both go through :func:`~agentgym_runtime.collectors.rows.place_attributes`). Spans
from other instrumentations (OpenInference's ``openinference.span.kind``, OpenLLMetry's
``traceloop.span.kind``, plain ``gen_ai.*``) get the GenAI columns the trainers read:
``execute_tool`` spans become ``tool_calls`` rows with an outcome, LLM spans ``llm_calls``
rows, and every GenAI span of a trace joins the episode ``otel-<trace id>`` whose row is
made when the trace's root span arrives (see :mod:`.sink`).

Example:
    >>> from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    >>> request = ExportTraceServiceRequest()
    >>> span = request.resource_spans.add().scope_spans.add().spans.add()
    >>> span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "execute_tool ping"
    >>> span.attributes.add(key="tool.name").value.string_value = "ping"
    >>> decoded = decode_request(request.SerializeToString(), "application/x-protobuf", None)
    >>> rows = request_rows(decoded)
    >>> dict(zip(SPAN_COLUMNS, rows.batch.spans[0]))["tool_name"]
    'ping'
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from agentgym_runtime import semconv
from agentgym_runtime.collectors.rows import (
    RowBatch,
    episode_row,
    feedback_row,
    new_row,
    place_attributes,
)
from agentgym_runtime.collectors.schema import SPAN_COLUMNS

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"

#: Episode ids given to foreign traces: ``otel-<trace id>``.
FOREIGN_EPISODE_PREFIX: Final = "otel-"

_KINDS: Final = {
    Span.SPAN_KIND_UNSPECIFIED: "INTERNAL",  # the SDK's default kind
    Span.SPAN_KIND_INTERNAL: "INTERNAL",
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
_STATUSES: Final = {
    Status.STATUS_CODE_UNSET: "UNSET",
    Status.STATUS_CODE_OK: "OK",
    Status.STATUS_CODE_ERROR: "ERROR",
}
_AT: Final = {name: index for index, name in enumerate(SPAN_COLUMNS)}


class MalformedPayloadError(ValueError):
    """A request body that is not a valid OTLP trace request; the message says why."""


@dataclass(slots=True)
class DecodedRows:
    """Rows of one request.

    Attributes:
        batch: The rows to write.
        foreign_roots: Foreign episodes whose root span is in this request:
            ``episode_id -> (agent, trace_id, start_ns, end_ns, status, error_type, framework, name)``.
    """

    batch: RowBatch = field(default_factory=RowBatch)
    foreign_roots: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def span_count(self) -> int:
        """Spans in the request."""
        return len(self.batch.spans)


def inflate(body: bytes, content_encoding: str | None, *, max_bytes: int = 64 * 1024 * 1024) -> bytes:
    """``body`` as sent, un-gzipped if ``content_encoding`` says so (at most ``max_bytes``).

    Raises:
        MalformedPayloadError: An unknown encoding, bad gzip, or a body past ``max_bytes``.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            body = inflater.decompress(body, max_bytes + 1)
        except zlib.error as exc:
            raise MalformedPayloadError(f"body is not valid gzip: {exc}") from None
        if len(body) > max_bytes:
            raise MalformedPayloadError(f"body is larger than {max_bytes} bytes once decompressed")
        if not inflater.eof:
            raise MalformedPayloadError("body is not valid gzip: truncated stream")
    elif encoding not in ("identity", ""):
        raise MalformedPayloadError(f"unsupported Content-Encoding {content_encoding!r} (use gzip or none)")
    return body


def decode_request(
    body: bytes, content_type: str | None, content_encoding: str | None, *, max_bytes: int = 64 * 1024 * 1024
) -> ExportTraceServiceRequest:
    """Parse an OTLP/HTTP trace request body.

    Args:
        body: The body as received.
        content_type: ``application/x-protobuf`` (the default) or ``application/json``.
        content_encoding: ``gzip`` or none.
        max_bytes: Largest body once decompressed (a gzip bomb stops there).

    Raises:
        MalformedPayloadError: Unknown encoding or content type, bad or oversized gzip, bad
            protobuf or JSON.
    """
    body = inflate(body, content_encoding, max_bytes=max_bytes)
    kind = (content_type or PROTOBUF).split(";")[0].strip().lower()
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise MalformedPayloadError(f"body is not a protobuf ExportTraceServiceRequest: {exc}") from None
    elif kind == JSON:
        try:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise MalformedPayloadError("JSON body must be an object with resourceSpans")
            json_format.ParseDict(_hex_ids_to_base64(document), request)
        except (ValueError, json_format.ParseError) as exc:
            if isinstance(exc, MalformedPayloadError):
                raise
            raise MalformedPayloadError(f"body is not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    else:
        raise MalformedPayloadError(f"unsupported Content-Type {content_type!r} (use {PROTOBUF} or {JSON})")
    return request


def _hex_ids_to_base64(document: dict[str, Any]) -> dict[str, Any]:
    # OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping expects base64.
    for resource_spans in document.get("resourceSpans") or []:
        for scope_spans in resource_spans.get("scopeSpans") or []:
            for span in scope_spans.get("spans") or []:
                _convert_ids(span, ("traceId", "spanId", "parentSpanId"))
                for link in span.get("links") or []:
                    _convert_ids(link, ("traceId", "spanId"))
    return document


def _convert_ids(item: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = item.get(key)
        if isinstance(value, str) and value:
            try:
                item[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise MalformedPayloadError(f"{key} {value!r} is not hex") from None


def any_value(value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (lists and maps as lists and dicts).

    Example:
        >>> any_value(AnyValue(int_value=3))
        3
    """
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return value.double_value
    if which == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def request_rows(request: ExportTraceServiceRequest) -> DecodedRows:
    """The store rows of every span in ``request``.

    Raises:
        MalformedPayloadError: A span without a valid trace or span id.
    """
    out = DecodedRows()
    rows = out.batch.spans
    for resource_spans in request.resource_spans:
        service: str | None = None
        for kv in resource_spans.resource.attributes:
            if kv.key == "service.name":
                service = kv.value.string_value or None
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name or None
            ours = scope == semconv.SCOPE_NAME
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8:
                    raise MalformedPayloadError(
                        f"span {span.name!r} has a trace id of {len(span.trace_id)} bytes and a span id of "
                        f"{len(span.span_id)} bytes (want 16 and 8)"
                    )
                attributes: dict[str, Any] = {kv.key: any_value(kv.value) for kv in span.attributes}
                trace_hex = span.trace_id.hex()
                status = _STATUSES.get(span.status.code, "UNSET")
                if not ours and semconv.EPISODE_ID not in attributes:
                    _map_foreign(attributes, trace_hex, service, status, span, out)
                row = new_row()
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano or start
                row[0:11] = [
                    trace_hex,
                    span.span_id.hex(),
                    span.parent_span_id.hex() or None,
                    span.name,
                    _KINDS.get(span.kind, "INTERNAL"),
                    start,
                    end,
                    status,
                    span.status.message or None,
                    service,
                    scope,
                ]
                place_attributes(row, attributes)
                if span.events:
                    row[_AT["events"]] = json.dumps(
                        [
                            {
                                "name": e.name,
                                "time_unix_nano": e.time_unix_nano,
                                "attributes": {kv.key: any_value(kv.value) for kv in e.attributes},
                            }
                            for e in span.events
                        ],
                        separators=(",", ":"),
                        default=str,
                    )
                if span.links:
                    row[_AT["links"]] = json.dumps(
                        [
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "attributes": {kv.key: any_value(kv.value) for kv in link.attributes},
                            }
                            for link in span.links
                        ],
                        separators=(",", ":"),
                    )
                rows.append(tuple(row))
                if attributes.get(semconv.EPISODE_ROOT):
                    out.batch.episodes.append(episode_row(attributes, trace_hex, start, end))
                elif span.name == semconv.FEEDBACK_SPAN_NAME:
                    out.batch.feedback.append(feedback_row(attributes, end))
    return out


# --- foreign GenAI spans ----------------------------------------------------------------------

_KIND_KEYS: Final = ("openinference.span.kind", "traceloop.span.kind")
_TOOL_NAME_KEYS: Final = ("tool.name", "traceloop.entity.name")
_MODEL_KEYS: Final = ("llm.model_name", "gen_ai.request.model")
_PROVIDER_KEYS: Final = ("llm.provider", "llm.system", "gen_ai.system")
_INPUT_TOKEN_KEYS: Final = ("llm.token_count.prompt", "gen_ai.usage.prompt_tokens")
_OUTPUT_TOKEN_KEYS: Final = ("llm.token_count.completion", "gen_ai.usage.completion_tokens")
_ROOT_KINDS: Final = frozenset({"AGENT", "CHAIN", "WORKFLOW", "TASK"})


def _first(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value not in (None, ""):
            return value
    return None


def _framework(attributes: Mapping[str, Any]) -> str:
    if "openinference.span.kind" in attributes:
        return "openinference"
    if "traceloop.span.kind" in attributes:
        return "openllmetry"
    return "otel"


def _map_foreign(
    attributes: dict[str, Any], trace_hex: str, service: str | None, status: str, span: Span, out: DecodedRows
) -> None:
    """Give a foreign GenAI span the attributes our columns and views are built on.

    Only keys that are absent are set: what the instrumentation wrote itself wins.
    """
    kind = str(_first(attributes, _KIND_KEYS) or "").upper()
    operation = attributes.get(semconv.GEN_AI_OPERATION_NAME)
    tool_name = attributes.get(semconv.GEN_AI_TOOL_NAME)
    if operation is None:
        if kind == "TOOL" or tool_name is not None or "tool.name" in attributes:
            operation = semconv.OP_EXECUTE_TOOL
        elif kind == "LLM" or _first(attributes, _MODEL_KEYS) is not None:
            operation = semconv.OP_CHAT
        elif kind in _ROOT_KINDS and not span.parent_span_id:
            operation = semconv.OP_INVOKE_AGENT
    if operation is None and not kind:
        return  # not a GenAI span (an HTTP client span, a database call): stored as it came
    failed = status == "ERROR"
    agent = attributes.get(semconv.GEN_AI_AGENT_NAME) or service or "unknown"
    framework = _framework(attributes)
    episode_id = FOREIGN_EPISODE_PREFIX + trace_hex
    mapped: dict[str, Any] = {
        semconv.EPISODE_ID: episode_id,
        semconv.GEN_AI_AGENT_NAME: agent,
        semconv.FRAMEWORK: framework,
        semconv.POLICY_VERSION: 0,
    }
    if operation is not None:
        mapped[semconv.GEN_AI_OPERATION_NAME] = operation
    if operation == semconv.OP_EXECUTE_TOOL:
        if tool_name is None:
            tool_name = _first(attributes, _TOOL_NAME_KEYS) or span.name
        mapped[semconv.GEN_AI_TOOL_NAME] = tool_name
        mapped[semconv.TOOL_OUTCOME] = (semconv.ToolOutcome.TOOL_ERROR if failed else semconv.ToolOutcome.OK).value
        arguments = _first(attributes, ("input.value", "traceloop.entity.input"))
        result = _first(attributes, ("output.value", "traceloop.entity.output"))
        if arguments is not None:
            mapped[semconv.GEN_AI_TOOL_CALL_ARGUMENTS] = arguments
        if result is not None:
            mapped[semconv.GEN_AI_TOOL_CALL_RESULT] = result
    elif operation == semconv.OP_CHAT:
        for target, keys in (
            (semconv.GEN_AI_REQUEST_MODEL, _MODEL_KEYS),
            (semconv.GEN_AI_PROVIDER_NAME, _PROVIDER_KEYS),
            (semconv.GEN_AI_USAGE_INPUT_TOKENS, _INPUT_TOKEN_KEYS),
            (semconv.GEN_AI_USAGE_OUTPUT_TOKENS, _OUTPUT_TOKEN_KEYS),
        ):
            value = _first(attributes, keys)
            if value is not None:
                mapped[target] = value
    if failed and semconv.ERROR_TYPE not in attributes:
        mapped[semconv.ERROR_TYPE] = _exception_type(span) or "error"
    for key, value in mapped.items():
        attributes.setdefault(key, value)
    if not span.parent_span_id:
        out.foreign_roots[episode_id] = (
            agent,
            trace_hex,
            span.start_time_unix_nano,
            span.end_time_unix_nano or span.start_time_unix_nano,
            semconv.EpisodeStatus.ERROR.value if failed else semconv.EpisodeStatus.OK.value,
            attributes.get(semconv.ERROR_TYPE),
            framework,
            span.name,
        )


def _exception_type(span: Span) -> str | None:
    for event in span.events:
        if event.name == "exception":
            for kv in event.attributes:
                if kv.key == "exception.type":
                    return kv.value.string_value or None
    return None
