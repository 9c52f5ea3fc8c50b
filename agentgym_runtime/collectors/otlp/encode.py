"""Store rows back into an OTLP ``ExportTraceServiceRequest``, for peers that read only OTLP.

A worker has its spans as ``spans`` rows already (``rows.span_record``). When the endpoint
it exports to is not an agentgym collector that reads rows (an OpenTelemetry Collector in
front of it, an older agentgym, no pyarrow on either side), the rows are written as OTLP
protobuf directly: one message built from the rows' values, never the SDK's encoder, which
walks SDK span objects in pure Python (~29 µs a span on the 2-core box; this is ~8 µs).

The collector turns the request back into the same rows: promoted columns travel as their
attributes, the JSON rest as the other attributes (in their order), events and links as
events and links, and an episode root's or feedback span's ``episodes`` / ``feedback`` row is
rebuilt from its attributes as it is for any sender.

Example:
    >>> from agentgym_runtime.collectors.otlp.decode import decode_request, request_rows
    >>> from agentgym_runtime.collectors.rows import new_row
    >>> row = new_row()
    >>> row[0:11] = ["ab" * 16, "cd" * 8, None, "execute_tool ping", "INTERNAL", 1, 2, "OK", None, "svc", "s"]
    >>> body = encode_rows([tuple(row)])
    >>> request_rows(decode_request(body, "application/x-protobuf", None)).batch.spans == [tuple(row)]
    True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from agentgym_runtime.collectors.rows import Row
from agentgym_runtime.collectors.schema import PROMOTED, SPAN_COLUMNS, SPAN_HEAD_COLUMNS

_KINDS: Final = {
    "INTERNAL": Span.SPAN_KIND_INTERNAL,
    "SERVER": Span.SPAN_KIND_SERVER,
    "CLIENT": Span.SPAN_KIND_CLIENT,
    "PRODUCER": Span.SPAN_KIND_PRODUCER,
    "CONSUMER": Span.SPAN_KIND_CONSUMER,
}
_STATUSES: Final = {"UNSET": Status.STATUS_CODE_UNSET, "OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
_HEAD: Final = len(SPAN_HEAD_COLUMNS)
_PROMOTED: Final = tuple((_HEAD + index, p.attribute) for index, p in enumerate(PROMOTED))
_REST_AT: Final = SPAN_COLUMNS.index("attributes")
_EVENTS_AT: Final = SPAN_COLUMNS.index("events")
_LINKS_AT: Final = SPAN_COLUMNS.index("links")
_INT64: Final = 2**63


def encode_rows(rows: Sequence[Row]) -> bytes:
    """The serialized OTLP request of ``spans`` rows (grouped by service and scope).

    Raises:
        Exception: A row that OTLP cannot carry (the caller counts it as unconvertible).
    """
    request = ExportTraceServiceRequest()
    groups: dict[tuple[Any, Any], Any] = {}
    for row in rows:
        key = (row[9], row[10])
        spans = groups.get(key)
        if spans is None:
            resource_spans = request.resource_spans.add()
            if row[9] is not None:
                kv = resource_spans.resource.attributes.add()
                kv.key = "service.name"
                kv.value.string_value = row[9]
            scope_spans = resource_spans.scope_spans.add()
            if row[10] is not None:
                scope_spans.scope.name = row[10]
            spans = groups[key] = scope_spans.spans
        _span(spans.add(), row)
    return bytes(request.SerializeToString())


def _span(span: Any, row: Row) -> None:
    span.trace_id = bytes.fromhex(row[0])
    span.span_id = bytes.fromhex(row[1])
    if row[2]:
        span.parent_span_id = bytes.fromhex(row[2])
    span.name = row[3]
    span.kind = _KINDS.get(row[4], Span.SPAN_KIND_INTERNAL)
    span.start_time_unix_nano = row[5]
    span.end_time_unix_nano = row[6]
    code = _STATUSES.get(row[7], Status.STATUS_CODE_UNSET)
    if code or row[8]:
        span.status.code = code
        if row[8]:
            span.status.message = row[8]
    attributes = span.attributes
    for index, key in _PROMOTED:
        value = row[index]
        if value is not None:
            kv = attributes.add()
            kv.key = key
            _set(kv.value, value)
    if row[_REST_AT] is not None:
        for key, value in json.loads(row[_REST_AT]).items():
            kv = attributes.add()
            kv.key = key
            _set(kv.value, value)
    if row[_EVENTS_AT] is not None:
        for event in json.loads(row[_EVENTS_AT]):
            added = span.events.add()
            added.name = event.get("name") or ""
            added.time_unix_nano = event.get("time_unix_nano") or 0
            for key, value in (event.get("attributes") or {}).items():
                kv = added.attributes.add()
                kv.key = key
                _set(kv.value, value)
    if row[_LINKS_AT] is not None:
        for link in json.loads(row[_LINKS_AT]):
            added = span.links.add()
            added.trace_id = bytes.fromhex(link["trace_id"])
            added.span_id = bytes.fromhex(link["span_id"])
            for key, value in (link.get("attributes") or {}).items():
                kv = added.attributes.add()
                kv.key = key
                _set(kv.value, value)


def _set(target: AnyValue, value: Any) -> None:
    """Write ``value`` (a JSON value) into an ``AnyValue``; ``None`` leaves it empty."""
    kind = type(value)
    if kind is str:
        target.string_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is int:
        if -_INT64 <= value < _INT64:
            target.int_value = value
        else:  # OTLP integers are 64-bit; the JSON rest kept the digits
            target.string_value = str(value)
    elif kind is float:
        target.double_value = value
    elif kind is list:
        values = target.array_value.values
        target.array_value.SetInParent()
        for item in value:
            _set(values.add(), item)
    elif kind is dict:
        target.kvlist_value.SetInParent()
        for key, item in value.items():
            kv = target.kvlist_value.values.add()
            kv.key = key
            _set(kv.value, item)
    elif value is not None:
        target.string_value = str(value)
