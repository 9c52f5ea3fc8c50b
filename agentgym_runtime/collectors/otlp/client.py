"""The worker side: send finished spans to the collector over OTLP/HTTP, spool what fails.

:class:`CollectorSpanExporter` runs behind the runtime's ``BatchSpanProcessor`` like the
in-process writer does, and like it receives each span as the ``spans`` row made as it ended
(``rows.span_record``). On the exporter thread a batch's rows are encoded and POSTed to
``<endpoint>/v1/traces``; the collector answers only once the spans are committed. The body is
agentgym's own rows as Arrow IPC (:mod:`.rows_wire`) when the collector lists that format in
``/v1/status`` (asked once per endpoint) and pyarrow is here; otherwise standard OTLP protobuf
built from the rows (:mod:`.encode`), which any OTLP receiver reads. A batch that is not
acknowledged (collector down, restarting, overloaded, or the process that owned the home just
died) goes to the shared on-disk :class:`Spool` as it was encoded, and a background thread
delivers the spool, oldest first, as soon as a collector answers (a spooled rows batch goes as
OTLP to a collector that does not read rows). A batch the collector refuses for what it holds
(``400``, ``413``) is set aside in the spool's ``rejected/`` and counted as dropped: sent again
it would be refused again, and spooled it would hold back every batch behind it.
When this process becomes the owner of the home itself (:mod:`.election`), batches go
straight to its local writer.

Example:
    >>> import tempfile
    >>> exporter = CollectorSpanExporter(lambda: None, spool=Spool(tempfile.mkdtemp()))
    >>> exporter.export([]).name
    'SUCCESS'
    >>> exporter.shutdown()
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from agentgym_runtime import semconv
from agentgym_runtime.collectors.otlp import rows_wire
from agentgym_runtime.collectors.otlp.decode import PROTOBUF, MalformedPayloadError
from agentgym_runtime.collectors.otlp.encode import encode_rows
from agentgym_runtime.collectors.otlp.spool import REJECTED, Spool
from agentgym_runtime.collectors.rows import RowBatch, SpanRecord, SpanRows, preload_arrow, span_rows
from agentgym_runtime.collectors.stats import PipelineStats

if TYPE_CHECKING:
    from agentgym_runtime.collectors.journal import Journal

logger = logging.getLogger("agentgym_runtime.collector")

#: Answers that refuse the body itself (malformed, rows the store refuses, too large).
REFUSED: frozenset[int] = frozenset({400, 413})

EndpointFn = Callable[[], str | None]
"""Gives the collector's current endpoint (``http://host:port``), or ``None`` if none is known."""


class _Connection:
    """One keep-alive HTTP connection to the collector, reopened when the endpoint changes."""

    def __init__(self, token: str | None, timeout_s: float) -> None:
        self._token = token
        self._timeout = timeout_s
        self._endpoint: str | None = None
        self._con: http.client.HTTPConnection | None = None

    def post(self, endpoint: str, payload: bytes, content_type: str = PROTOBUF) -> tuple[int, str]:
        """POST a ``/v1/traces`` body; the status and, on failure, the reason."""
        status, body = self.request(endpoint, "POST", "/v1/traces", payload, content_type)
        if status != 200:
            return status, body.decode(errors="replace")[:200]
        return 200, ""

    def request(
        self, endpoint: str, method: str, path: str, payload: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, bytes]:
        """One request on the kept-alive connection; ``(0, reason)`` if it could not be made."""
        if endpoint != self._endpoint or self._con is None:
            self.close()
            parts = urllib.parse.urlsplit(endpoint)
            factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            self._con = factory(parts.hostname or "127.0.0.1", parts.port, timeout=self._timeout)
            self._endpoint = endpoint
        headers = {"Content-Type": content_type} if content_type else {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            self._con.request(method, path, body=payload, headers=headers)
            response = self._con.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return 0, f"{type(exc).__name__}: {exc}".encode()
        return response.status, body

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


class CollectorSpanExporter(SpanExporter):
    """Export spans to an OTLP/HTTP collector, spooling to disk what is not acknowledged.

    Takes finished spans or the :class:`~agentgym_runtime.collectors.rows.SpanRecord` made
    of them as they ended (``accepts_records``: the span processor hands it records).

    Args:
        endpoint: Gives the collector's endpoint now (it moves when the home's owner changes).
        spool: Where unacknowledged batches wait.
        token: Bearer token for the collector.
        stats: The runtime's pipeline counters.
        timeout_s: Longest wait for one acknowledgement.
        drain_interval_s: How often the spool is retried while it holds something.
        rows_format: Send agentgym's Arrow rows to collectors that read them (``False``:
            always OTLP protobuf).
    """

    #: The span processor hands this exporter ``SpanRecord`` rows instead of spans.
    accepts_records = True

    def __init__(
        self,
        endpoint: EndpointFn,
        *,
        spool: Spool,
        token: str | None = None,
        stats: PipelineStats | None = None,
        timeout_s: float = 30.0,
        drain_interval_s: float = 0.25,
        rows_format: bool = True,
    ) -> None:
        self._endpoint = endpoint
        self.spool = spool
        self.stats = stats or PipelineStats()
        self._send = _Connection(token, timeout_s)
        self._drain_con = _Connection(token, timeout_s)
        self._drain_lock = threading.Lock()
        self._interval = drain_interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._logged: set[str] = set()
        self._rows_format = rows_format
        if rows_format:
            preload_arrow()
        #: endpoint -> whether the collector there reads agentgym's rows (asked once per endpoint).
        self._reads_rows: dict[str, bool] = {}
        self._probe_con = _Connection(token, timeout_s)
        self._probe_lock = threading.Lock()
        self.local: SpanExporter | None = None
        #: The process's crash journal, active once this process owns the home (see pipeline).
        self.journal: Journal | None = None
        self._drainer = threading.Thread(target=self._drain_loop, name="agentgym-spool", daemon=True)
        self._drainer.start()

    # --- SpanExporter ---------------------------------------------------------------------------
    def export(self, spans: Sequence[ReadableSpan | SpanRecord | SpanRows]) -> SpanExportResult:
        """Send ``spans`` (or their records); spool them if the collector does not acknowledge them."""
        if not spans:
            return SpanExportResult.SUCCESS
        local = self.local
        if local is not None:  # this process owns the home now
            return local.export(spans)  # type: ignore[arg-type]
        count = len(spans)
        self.stats.exporting(count)
        try:
            endpoint = self._endpoint()
            try:
                batch = span_rows(spans)
                rows = self._rows_format and _rows_allowed(spans) and self._reads_rows.get(endpoint or "", True)
                payload = rows_wire.encode_batch(batch) if rows else None
                content_type = rows_wire.CONTENT_TYPE
                if payload is None:  # OTLP: the peer reads only OTLP, pyarrow is missing or still loading
                    payload, content_type = encode_rows(batch.spans), PROTOBUF
            except Exception as exc:
                self.stats.add(spans_unconvertible=count)
                self._log_once("encode", f"agentgym: could not encode {count} spans: {exc!r}")
                return SpanExportResult.FAILURE
            if endpoint and content_type == rows_wire.CONTENT_TYPE and endpoint not in self._reads_rows:
                self._probe(endpoint)
                if not self._reads_rows.get(endpoint, True):
                    payload, content_type = encode_rows(batch.spans), PROTOBUF
            status, reason = self._post(self._send, endpoint, payload) if endpoint else (0, "no collector known yet")
            if status == 200:
                self.stats.add(spans_written=count, write_batches=1)
                self.stats.wrote()
                self._forget_errors()
                return SpanExportResult.SUCCESS
            if status in REFUSED:
                return self._set_aside(payload, count, endpoint, status, reason)
            self._log_once(
                f"send:{status}",
                f"agentgym: the collector at {endpoint} did not take {count} spans ({status or 'unreachable'}: "
                f"{reason}); spooling them to {self.spool.directory}; the agent is not affected",
            )
            return self._keep(payload, count)
        finally:
            self.stats.exporting(-count)

    def _post(self, con: _Connection, endpoint: str, payload: bytes) -> tuple[int, str]:
        """Send a body (rows or OTLP, told apart by its first bytes) the way ``endpoint`` reads it.

        A rows body goes as OTLP to a collector that does not read rows (an OTel Collector,
        an older agentgym). A rows body refused with a 4xx makes this process ask the
        collector again (it may have been replaced at the same address) before the batch is
        sent as OTLP.
        """
        if payload.startswith(rows_wire.MAGIC):
            if endpoint not in self._reads_rows:
                self._probe(endpoint)
            if self._reads_rows.get(endpoint, True):
                status, reason = con.post(endpoint, payload, rows_wire.CONTENT_TYPE)
                if not 400 <= status < 500 or status in (401, 413, 429):
                    return status, reason
                self._reads_rows.pop(endpoint, None)
                self._probe(endpoint)
                if self._reads_rows.get(endpoint, True):
                    return status, reason  # our collector refused these rows: not a format question
            try:
                payload = encode_rows(_rows_of(rows_wire.decode_batch(payload)).spans)
            except (MalformedPayloadError, ValueError, TypeError) as exc:
                return 400, f"cannot re-encode a rows batch as OTLP: {exc}"
        return con.post(endpoint, payload, PROTOBUF)

    def _probe(self, endpoint: str) -> None:
        """Ask the collector at ``endpoint`` which bodies it reads (kept until it is replaced)."""
        with self._probe_lock:
            if endpoint in self._reads_rows:
                return
            status, body = self._probe_con.request(endpoint, "GET", "/v1/status")
            if status == 0 or status in (401, 429) or status >= 500:
                return  # unreachable, refused or busy: ask again with the next batch
            reads = False
            if status == 200:
                try:
                    formats = json.loads(body).get("formats") or []
                    reads = rows_wire.CONTENT_TYPE in formats and rows_wire.available()
                except (ValueError, AttributeError):
                    reads = False
            self._reads_rows[endpoint] = reads

    def _keep(self, payload: bytes, count: int) -> SpanExportResult:
        if self.spool.put(payload, spans=count):
            self._refresh_pending()
            self._wake.set()
            return SpanExportResult.SUCCESS
        self.stats.add(rows_dropped=count)
        self._log_once("spool-full", f"agentgym: the spool {self.spool.directory} is full; dropping {count} spans")
        return SpanExportResult.FAILURE

    def _set_aside(
        self, payload: bytes, count: int, endpoint: str | None, status: int, reason: str
    ) -> SpanExportResult:
        self.spool.set_aside(payload, spans=count)
        self.stats.add(rows_dropped=count)
        self._log_once(
            f"refused:{status}",
            f"agentgym: the collector at {endpoint} refused {count} spans ({status}: {reason}); dropping them "
            f"(the request is kept in {self.spool.directory / REJECTED} if there is room)",
        )
        return SpanExportResult.FAILURE

    def retry_pending(self) -> bool:
        """Deliver the spool now; ``True`` once it is empty."""
        self.spool.release_stale()
        self._drain()
        local = self.local
        if local is not None and hasattr(local, "retry_pending"):
            return bool(local.retry_pending()) and not self.spool.files()
        return not self.spool.files()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver what the spool holds (within the timeout)."""
        deadline = time.monotonic() + timeout_millis / 1000
        while time.monotonic() < deadline:
            if self.retry_pending():
                return True
            time.sleep(0.05)
        return False

    def shutdown(self) -> None:
        """Stop the spool thread; what is still spooled stays on disk for the next process."""
        self._stop.set()
        self._wake.set()
        self.retry_pending()
        self._drainer.join(5.0)
        self._send.close()
        self._drain_con.close()
        self._probe_con.close()
        local = self.local
        if local is not None:
            local.shutdown()

    # --- the spool ------------------------------------------------------------------------------
    def _drain_loop(self) -> None:
        last_stale_check = 0.0
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            now = time.monotonic()
            if now - last_stale_check > 2.0:
                last_stale_check = now
                self.spool.release_stale()
            self._drain()

    def _drain(self) -> None:
        with self._drain_lock:
            while True:
                endpoint = self._endpoint()
                if not endpoint:
                    return
                claim = self.spool.claim()
                if claim is None:
                    self._refresh_pending()
                    return
                status, reason = self._post(self._drain_con, endpoint, claim.payload)
                if status in REFUSED:  # never deliverable: it must not hold back the batches behind it
                    self.spool.reject(claim)
                    self.stats.add(rows_dropped=claim.spans)
                    self._log_once(
                        f"refused:{status}",
                        f"agentgym: the collector at {endpoint} refused a spooled batch of {claim.spans} spans "
                        f"({status}: {reason}); set aside in {self.spool.directory / REJECTED}",
                    )
                    self._refresh_pending()
                    continue
                if status != 200:
                    self.spool.release(claim)
                    self._refresh_pending()
                    return
                self.spool.done(claim)
                self.stats.add(spans_written=claim.spans, write_batches=1)
                self._refresh_pending()

    def _refresh_pending(self) -> None:
        self.stats.set_pending(self.spool.spans())

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(message)

    def _forget_errors(self) -> None:
        if self._logged:
            self._logged.clear()
            logger.warning("agentgym: delivering spans to the collector again")

    def describe(self) -> dict[str, Any]:
        """Where spans go now (for status)."""
        endpoint = self._endpoint()
        return {
            "endpoint": endpoint,
            "local": self.local is not None,
            "spooled_spans": self.spool.spans(),
            "format": "rows" if endpoint and self._reads_rows.get(endpoint) else "otlp",
        }


def _rows_allowed(items: Sequence[ReadableSpan | SpanRecord | SpanRows]) -> bool:
    """Whether every item may travel as rows: foreign spans outside an episode need OTLP.

    The collector maps foreign GenAI spans (OpenInference, OpenLLMetry) when it decodes their
    OTLP; rows would skip that. The span processor hands this exporter only our spans and
    spans of an episode, so in the runtime this is always true.
    """
    for item in items:
        if isinstance(item, SpanRecord | SpanRows):
            continue
        scope = item.instrumentation_scope
        if (scope is None or scope.name != semconv.SCOPE_NAME) and semconv.EPISODE_ID not in (item.attributes or {}):
            return False
    return True


def _rows_of(tables: rows_wire.RowTables) -> RowBatch:
    """The Python rows of a decoded rows body (a spooled batch re-sent as OTLP)."""
    batch = RowBatch()
    spans = tables.tables.get("spans")
    if spans is not None:
        columns = [column.to_pylist() for column in spans.columns]
        batch.spans = list(zip(*columns, strict=True))
    return batch
