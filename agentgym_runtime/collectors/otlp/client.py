"""The worker side: send finished spans to the collector over OTLP/HTTP, spool what fails.

:class:`CollectorSpanExporter` runs behind the runtime's ``BatchSpanProcessor`` like the
in-process writer does. Each batch is encoded with the OpenTelemetry SDK's own OTLP
encoder and POSTed to ``<endpoint>/v1/traces``; the collector answers only once the spans
are committed. A batch that is not acknowledged (collector down, restarting, overloaded,
or the process that owned the home just died) goes to the shared on-disk :class:`Spool`,
and a background thread delivers the spool, oldest first, as soon as a collector answers.
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
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from agentgym_runtime.collectors.otlp.spool import Spool
from agentgym_runtime.collectors.stats import PipelineStats

if TYPE_CHECKING:
    from agentgym_runtime.collectors.journal import Journal

logger = logging.getLogger("agentgym_runtime.collector")

EndpointFn = Callable[[], str | None]
"""Gives the collector's current endpoint (``http://host:port``), or ``None`` if none is known."""


class _Connection:
    """One keep-alive HTTP connection to the collector, reopened when the endpoint changes."""

    def __init__(self, token: str | None, timeout_s: float) -> None:
        self._token = token
        self._timeout = timeout_s
        self._endpoint: str | None = None
        self._con: http.client.HTTPConnection | None = None

    def post(self, endpoint: str, payload: bytes) -> tuple[int, str]:
        """POST an OTLP protobuf body; the status and, on failure, the reason."""
        if endpoint != self._endpoint or self._con is None:
            self.close()
            parts = urllib.parse.urlsplit(endpoint)
            factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            self._con = factory(parts.hostname or "127.0.0.1", parts.port, timeout=self._timeout)
            self._endpoint = endpoint
        headers = {"Content-Type": "application/x-protobuf"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            self._con.request("POST", "/v1/traces", body=payload, headers=headers)
            response = self._con.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return 0, f"{type(exc).__name__}: {exc}"
        if response.status != 200:
            return response.status, body.decode(errors="replace")[:200]
        return 200, ""

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


class CollectorSpanExporter(SpanExporter):
    """Export spans to an OTLP/HTTP collector, spooling to disk what is not acknowledged.

    Args:
        endpoint: Gives the collector's endpoint now (it moves when the home's owner changes).
        spool: Where unacknowledged batches wait.
        token: Bearer token for the collector.
        stats: The runtime's pipeline counters.
        timeout_s: Longest wait for one acknowledgement.
        drain_interval_s: How often the spool is retried while it holds something.
    """

    def __init__(
        self,
        endpoint: EndpointFn,
        *,
        spool: Spool,
        token: str | None = None,
        stats: PipelineStats | None = None,
        timeout_s: float = 30.0,
        drain_interval_s: float = 0.25,
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
        self.local: SpanExporter | None = None
        #: The process's crash journal, active once this process owns the home (see pipeline).
        self.journal: Journal | None = None
        self._drainer = threading.Thread(target=self._drain_loop, name="agentgym-spool", daemon=True)
        self._drainer.start()

    # --- SpanExporter ---------------------------------------------------------------------------
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Send ``spans``; spool them if the collector does not acknowledge them."""
        if not spans:
            return SpanExportResult.SUCCESS
        local = self.local
        if local is not None:  # this process owns the home now
            return local.export(spans)
        count = len(spans)
        self.stats.exporting(count)
        try:
            payload = encode_spans(spans).SerializeToString()
        except Exception as exc:
            self.stats.exporting(-count)
            self.stats.add(spans_unconvertible=count)
            self._log_once("encode", f"agentgym: could not encode {count} spans as OTLP: {exc!r}")
            return SpanExportResult.FAILURE
        try:
            endpoint = self._endpoint()
            status, reason = self._send.post(endpoint, payload) if endpoint else (0, "no collector known yet")
            if status == 200:
                self.stats.add(spans_written=count, write_batches=1)
                self.stats.wrote()
                self._forget_errors()
                return SpanExportResult.SUCCESS
            self._log_once(
                f"send:{status}",
                f"agentgym: the collector at {endpoint} did not take {count} spans ({status or 'unreachable'}: "
                f"{reason}); spooling them to {self.spool.directory}; the agent is not affected",
            )
            return self._keep(payload, count)
        finally:
            self.stats.exporting(-count)

    def _keep(self, payload: bytes, count: int) -> SpanExportResult:
        if self.spool.put(payload, spans=count):
            self._refresh_pending()
            self._wake.set()
            return SpanExportResult.SUCCESS
        self.stats.add(rows_dropped=count)
        self._log_once("spool-full", f"agentgym: the spool {self.spool.directory} is full; dropping {count} spans")
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
                status, _ = self._drain_con.post(endpoint, claim.payload)
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
        return {"endpoint": self._endpoint(), "local": self.local is not None, "spooled_spans": self.spool.spans()}
