r"""agentgym's own body for ``POST /v1/traces``: a batch's store rows as Arrow IPC.

A worker already turns every span into its ``spans`` row as it ends (``rows.span_record``),
exactly the row the collector would derive from OTLP. Encoding those rows back into OTLP
(the SDK's pure-Python encoder: ~29 µs a span on the worker) only for the collector to decode
them into the same rows again (~10 µs a span, in Python) was most of the cost of the
collector path. So, when both sides have pyarrow and the collector says it accepts it
(``/v1/status`` lists :data:`CONTENT_TYPE` under ``formats``), a worker sends the rows
themselves, column by column, and the collector inserts the Arrow tables as they are.
Standard OTLP (protobuf, JSON) stays accepted from every other sender.

Body (``Content-Type: application/vnd.agentgym.rows+arrow``)::

    b"AGRW1\n"  then, for spans, episodes, feedback in that order:
    <length u32 little-endian><an Arrow IPC stream of that table's rows>   (length 0: no rows)

Each stream's schema must be exactly :func:`~agentgym_runtime.collectors.rows.arrow_schema`
of its table; ``NOT NULL`` columns hold no null, trace and span ids are lowercase hex of
32 and 16 characters, and buffers are not compressed (a compressed buffer would be
inflated before any bound could be checked). Anything else is refused with a
:class:`~.decode.MalformedPayloadError` that says why (``400``). The same authentication,
size limits, rate limits, dedupe (the batch id is a hash of the span ids, the same as for
the OTLP of the same rows) and acknowledgement after commit apply as for OTLP.

Example:
    >>> from agentgym_runtime.collectors.rows import RowBatch, arrow_ready
    >>> _ = arrow_ready(30)
    >>> body = encode_batch(RowBatch())
    >>> body is None or decode_batch(body).span_count == 0
    True
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Final

from agentgym_runtime.collectors.otlp.decode import MalformedPayloadError
from agentgym_runtime.collectors.rows import RowBatch, arrow_schema, table_to_arrow
from agentgym_runtime.collectors.schema import EPISODE_COLUMNS, FEEDBACK_COLUMNS, SPAN_HEAD_COLUMNS

CONTENT_TYPE: Final = "application/vnd.agentgym.rows+arrow"
MAGIC: Final = b"AGRW1\n"
TABLES: Final = ("spans", "episodes", "feedback")

_LENGTH = struct.Struct("<I")
_NOT_NULL: Final = {
    "spans": tuple(name for name, sql in SPAN_HEAD_COLUMNS if "NOT NULL" in sql),
    "episodes": tuple(name for name, sql in EPISODE_COLUMNS if "NOT NULL" in sql),
    "feedback": tuple(name for name, sql in FEEDBACK_COLUMNS if "NOT NULL" in sql),
}
_HEX_IDS: Final = (("trace_id", 32), ("span_id", 16), ("parent_span_id", 16))


@dataclass(slots=True)
class RowTables:
    """The Arrow tables of one request, by store table (only tables with rows are present)."""

    tables: dict[str, Any] = field(default_factory=dict)

    @property
    def span_count(self) -> int:
        """Spans in the request."""
        table = self.tables.get("spans")
        return 0 if table is None else int(table.num_rows)

    @property
    def episode_count(self) -> int:
        """Episodes in the request."""
        table = self.tables.get("episodes")
        return 0 if table is None else int(table.num_rows)


_warm: list[bool] = []


def available() -> bool:
    """Whether this process can encode and decode the format (pyarrow is installed).

    The first call also loads what checking a body needs (``pyarrow.compute``, the id
    patterns: ~0.2 s), so that the collector's first rows request does not pay for it.
    """
    if arrow_schema("spans", wait=True) is None:
        return False
    if not _warm:
        _check(table_to_arrow("spans", []), "spans")
        _warm.append(True)
    return True


def encode_batch(batch: RowBatch) -> bytes | None:
    """The body for ``batch``; ``None`` without pyarrow (or while it is still being imported).

    Raises:
        Exception: pyarrow's error for a value its column type cannot hold (the caller sends
            OTLP instead).
    """
    parts = [MAGIC]
    for table, rows in (("spans", batch.spans), ("episodes", batch.episodes), ("feedback", batch.feedback)):
        if not rows:
            parts.append(_LENGTH.pack(0))
            continue
        arrow = table_to_arrow(table, rows)
        if arrow is None:
            return None
        stream = _ipc_stream(arrow)
        parts += [_LENGTH.pack(len(stream)), stream]
    return b"".join(parts)


def _ipc_stream(table: Any) -> bytes:
    import pyarrow as pa  # type: ignore[import-untyped]

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_batch(body: bytes) -> RowTables:
    """The tables of a body (see the module doc), checked.

    Raises:
        MalformedPayloadError: Not this format, a schema that is not the store's, a null in a
            ``NOT NULL`` column, an id that is not hex of the right length, compressed buffers,
            or a truncated or damaged stream.
    """
    if arrow_schema("spans", wait=True) is None:
        raise MalformedPayloadError(f"this collector cannot read {CONTENT_TYPE} (pyarrow is not installed)")
    if not body.startswith(MAGIC):
        raise MalformedPayloadError(f"{CONTENT_TYPE} body must start with {MAGIC!r}")
    view = memoryview(body)
    at = len(MAGIC)
    out = RowTables()
    for table in TABLES:
        if at + _LENGTH.size > len(body):
            raise MalformedPayloadError(f"{CONTENT_TYPE} body ends before the {table} section")
        (length,) = _LENGTH.unpack_from(body, at)
        at += _LENGTH.size
        if at + length > len(body):
            raise MalformedPayloadError(f"{CONTENT_TYPE} body: the {table} section is cut short")
        if length:
            arrow = _read_stream(view[at : at + length], table)
            _check(arrow, table)
            if arrow.num_rows:
                out.tables[table] = arrow
        at += length
    if at != len(body):
        raise MalformedPayloadError(f"{CONTENT_TYPE} body has {len(body) - at} bytes after the feedback section")
    return out


def _read_stream(data: memoryview, table: str) -> Any:
    import pyarrow as pa

    expected = arrow_schema(table)
    try:
        reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(data))
        schema = pa.ipc.read_schema(reader.read_next_message())
        if not schema.equals(expected, check_metadata=False):
            raise MalformedPayloadError(
                f"{CONTENT_TYPE}: the {table} schema is not the store's: got {_describe(schema)}, "
                f"want {_describe(expected)}"
            )
        batches = []
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                break
            if message.type != "record batch":
                raise MalformedPayloadError(f"{CONTENT_TYPE}: the {table} stream holds a {message.type} message")
            if _compressed(message.metadata.to_pybytes()):
                raise MalformedPayloadError(f"{CONTENT_TYPE}: compressed Arrow buffers are not accepted")
            batches.append(pa.ipc.read_record_batch(message, expected))
        return pa.Table.from_batches(batches, schema=expected)
    except MalformedPayloadError:
        raise
    except Exception as exc:  # pyarrow's ArrowInvalid / IOError / IndexError on damaged bytes
        raise MalformedPayloadError(
            f"{CONTENT_TYPE}: the {table} section is not a valid Arrow IPC stream: {exc}"
        ) from None


def _describe(schema: Any) -> str:
    return ", ".join(f"{f.name} {f.type}" for f in schema)


def _check(arrow: Any, table: str) -> None:
    import pyarrow.compute as pc  # type: ignore[import-untyped]

    for name in _NOT_NULL[table]:
        if arrow.column(name).null_count:
            raise MalformedPayloadError(f"{CONTENT_TYPE}: {table}.{name} holds a null (the column is NOT NULL)")
    if table != "spans":
        return
    for name, width in _HEX_IDS:
        column = arrow.column(name)
        valid = pc.match_substring_regex(column, f"^[0-9a-f]{{{width}}}$")
        if pc.sum(pc.invert(valid)).as_py():  # nulls (parent_span_id) count as neither
            raise MalformedPayloadError(f"{CONTENT_TYPE}: spans.{name} must be {width} lowercase hex characters")


# --- the one flatbuffer field read by hand: RecordBatch.compression ---------------------------
# Message { version: short; header_type: ubyte; header: union; bodyLength: long; ... }
# RecordBatch { length: long; nodes: [FieldNode]; buffers: [Buffer]; compression: BodyCompression; ... }


def _field(buf: bytes, table: int, index: int) -> int | None:
    """The absolute position of field ``index`` of the flatbuffer table at ``table`` (``None``: absent)."""
    vtable = table - int.from_bytes(buf[table : table + 4], "little", signed=True)
    size = int.from_bytes(buf[vtable : vtable + 2], "little")
    slot = 4 + 2 * index
    if slot + 2 > size:
        return None
    offset = int.from_bytes(buf[vtable + slot : vtable + slot + 2], "little")
    return table + offset if offset else None


def _compressed(metadata: bytes) -> bool:
    """Whether a record-batch message's metadata declares compressed buffers."""
    try:
        root = int.from_bytes(metadata[0:4], "little")
        header = _field(metadata, root, 2)
        if header is None:
            return False
        record_batch = header + int.from_bytes(metadata[header : header + 4], "little")
        return _field(metadata, record_batch, 3) is not None
    except (IndexError, ValueError):
        return True  # unreadable metadata: refuse rather than guess
