"""The collector's HTTP server: OTLP/HTTP ``/v1/traces`` in, status and SQL reads out.

A Starlette app served by uvicorn. Safety: it listens on loopback unless told otherwise,
and refuses to listen anywhere else without a bearer token; request bodies are bounded
(compressed and decompressed), requests are rate-limited per client, a malformed body gets
``400`` with the reason (counted), and a full write queue ``429`` with ``Retry-After``.

Routes:
    ``POST /v1/traces``: an OTLP ``ExportTraceServiceRequest`` (protobuf or JSON, gzip or not),
    or agentgym's own rows as Arrow IPC (:mod:`.rows_wire`, what agentgym workers send when
    both sides have pyarrow); answered once the spans are committed.
    ``GET /v1/status``: the collector's counters, the store it owns and the body ``formats`` it reads.
    ``POST /v1/sql``: ``{"sql": ..., "params": [...]}`` → ``{"columns": [...], "rows": [...]}``
    (``"format": "arrow"`` answers an Arrow IPC stream).

Example:
    >>> from agentgym_runtime.collectors.store import TraceStore
    >>> collector = Collector(TraceStore(":memory:"))
    >>> collector.app.routes[0].path
    '/v1/traces'
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from agentgym_runtime.collectors.otlp import rows_wire
from agentgym_runtime.collectors.otlp.decode import (
    JSON,
    PROTOBUF,
    MalformedPayloadError,
    decode_request,
    inflate,
    request_rows,
)
from agentgym_runtime.collectors.otlp.query import run_sql, run_sql_arrow
from agentgym_runtime.collectors.otlp.sink import Overloaded, SinkStats, StoreSink, batch_id, spans_id
from agentgym_runtime.collectors.rows import preload_arrow
from agentgym_runtime.collectors.store import TraceStore
from agentgym_runtime.errors import ConfigurationError, MissingExtraError

logger = logging.getLogger("agentgym_runtime.collector")

#: The standard OTLP/HTTP port.
DEFAULT_PORT = 4318


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one client may send.

    Attributes:
        max_body_bytes: Largest request body as sent (``413`` past it).
        max_decompressed_bytes: Largest body once gunzipped (``400``).
        requests_per_s: Sustained requests per second per client address (``429``).
        burst: Requests a client may send at once above the sustained rate.
        max_queued_spans: Spans waiting to be written before requests get ``429``.
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_decompressed_bytes: int = 64 * 1024 * 1024
    requests_per_s: float = 5_000.0
    burst: int = 10_000
    max_queued_spans: int = 200_000


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0"), is_loopback("localhost")
        (True, False, True)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _RateLimiter:
    """A token bucket per client address."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        tokens, at = self._buckets.get(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:  # clients come and go: forget them all rather than grow
            self._buckets.clear()
        return True


class Collector:
    """The OTLP/HTTP collector over one store.

    Args:
        store: The store this process owns.
        token: Bearer token every request must carry (required off loopback).
        limits: Request bounds.
    """

    def __init__(self, store: TraceStore, *, token: str | None = None, limits: Limits | None = None) -> None:
        try:
            from starlette.applications import Starlette
            from starlette.routing import Route
        except ImportError as exc:
            raise MissingExtraError("the OTLP collector", "collector", "starlette") from exc
        self.store = store
        self.token = token
        self.limits = limits or Limits()
        self.stats = SinkStats()
        self.sink = StoreSink(store, max_queued_spans=self.limits.max_queued_spans, stats=self.stats)
        self._rate = _RateLimiter(self.limits.requests_per_s, self.limits.burst)
        self.started_at = time.time()
        preload_arrow()  # rows bodies are read with pyarrow, imported off the request path
        self.app = Starlette(
            routes=[
                Route("/v1/traces", self._traces, methods=["POST"]),
                Route("/v1/status", self._status, methods=["GET"]),
                Route("/v1/sql", self._sql, methods=["POST"]),
            ]
        )

    # --- request handlers ---------------------------------------------------------------------
    def _refuse(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if self.token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                self.stats.add(unauthorized=1)
                return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        client = request.client.host if request.client else "?"
        if not self._rate.allow(client):
            self.stats.add(rate_limited=1)
            return JSONResponse({"error": "rate limit exceeded"}, status_code=429, headers={"Retry-After": "1"})
        return None

    async def _traces(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        refused = self._refuse(request)
        if refused is not None:
            return refused
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            self.stats.add(too_large=1)
            return JSONResponse({"error": f"body over {self.limits.max_body_bytes} bytes"}, status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.limits.max_body_bytes:
                self.stats.add(too_large=1)
                return JSONResponse({"error": f"body over {self.limits.max_body_bytes} bytes"}, status_code=413)
        content_type = request.headers.get("content-type", PROTOBUF)
        kind = content_type.split(";")[0].strip().lower()
        payload = bytes(body)
        try:
            if kind == rows_wire.CONTENT_TYPE:
                rows: Any = rows_wire.decode_batch(
                    inflate(
                        payload, request.headers.get("content-encoding"), max_bytes=self.limits.max_decompressed_bytes
                    )
                )
            else:
                decoded = decode_request(
                    payload,
                    content_type,
                    request.headers.get("content-encoding"),
                    max_bytes=self.limits.max_decompressed_bytes,
                )
                rows = request_rows(decoded)
        except MalformedPayloadError as exc:
            self.stats.add(malformed=1)
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            # Keyed by its spans, not its bytes: the same batch may come again in the other encoding.
            body_id = batch_id(payload)
            future = self.sink.submit(spans_id(rows) or body_id, rows, also=(body_id,))
        except Overloaded as exc:
            return JSONResponse(
                {"error": str(exc)}, status_code=429, headers={"Retry-After": str(max(1, round(exc.retry_after_s)))}
            )
        try:
            await asyncio.wrap_future(future)
        except MalformedPayloadError as exc:  # the store refused this request's own rows
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Exception as exc:  # the store could not be written: the client keeps the batch
            return JSONResponse({"error": f"store unavailable: {exc}"}, status_code=503, headers={"Retry-After": "1"})
        if kind in (JSON, rows_wire.CONTENT_TYPE):
            return Response(b"{}", media_type=JSON)
        return Response(b"", media_type=PROTOBUF)  # an empty ExportTraceServiceResponse

    async def _status(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        refused = self._refuse(request)
        if refused is not None:
            return refused
        # In a thread: the first answer may wait for pyarrow's import (``formats``).
        return JSONResponse(await asyncio.to_thread(self.status))

    async def _sql(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        refused = self._refuse(request)
        if refused is not None:
            return refused
        try:
            document = json.loads(await request.body())
            query = document["sql"]
            params = document.get("params") or []
            if not isinstance(query, str) or not isinstance(params, list):
                raise TypeError("sql must be a string and params a list")
        except (ValueError, KeyError, TypeError) as exc:
            self.stats.add(malformed=1)
            return JSONResponse({"error": f'send {{"sql": "...", "params": [...]}}: {exc}'}, status_code=400)
        try:
            if document.get("format") == "arrow":
                table = await asyncio.to_thread(run_sql_arrow, self.store, query, params)
                return Response(_arrow_ipc(table), media_type="application/vnd.apache.arrow.stream")
            columns, rows = await asyncio.to_thread(run_sql, self.store, query, params)
        except ConfigurationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        payload = json.dumps({"columns": columns, "rows": rows}, default=str)
        return Response(payload, media_type=JSON)

    def status(self) -> dict[str, Any]:
        """What ``/v1/status`` answers: the store, the process and the writer's counters."""
        return {
            "pid": os.getpid(),
            "store": self.store.path,
            "started_at": self.started_at,
            "queued_spans": self.sink.queued_spans,
            "formats": self.formats(),
            "stats": self.stats.snapshot(),
        }

    def formats(self) -> list[str]:
        """The ``/v1/traces`` body types this collector reads (agentgym's rows need pyarrow)."""
        extra = [rows_wire.CONTENT_TYPE] if rows_wire.available() else []
        return [PROTOBUF, JSON, *extra]


def _arrow_ipc(table: Any) -> bytes:
    import pyarrow as pa  # type: ignore[import-untyped]

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _absorb(signum: int, frame: Any) -> None:
    logger.info("agentgym collector: stopped by signal %d", signum)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: any free port).

    Raises:
        ConfigurationError: The address is taken or invalid.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from None
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


class CollectorServer:
    """Serve a :class:`Collector` with uvicorn, in a background thread or the calling one.

    Args:
        collector: What to serve.
        host: Address to listen on (loopback by default).
        port: Port (``0``: any free one; see :attr:`endpoint`).

    Raises:
        ConfigurationError: A non-loopback ``host`` without a token.
    """

    def __init__(self, collector: Collector, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        if not is_loopback(host) and not collector.token:
            raise ConfigurationError(
                f"listening on {host} exposes the trace store: set a bearer token "
                "(--token or AGENTGYM_COLLECTOR_TOKEN) or listen on 127.0.0.1"
            )
        try:
            import uvicorn
        except ImportError as exc:
            raise MissingExtraError("the OTLP collector", "collector", "uvicorn") from exc
        self.collector = collector
        self._socket = bind(host, port)
        bound = self._socket.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.endpoint = f"http://{shown}:{bound[1]}"
        config = uvicorn.Config(
            collector.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            limit_concurrency=4096,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> CollectorServer:
        """Serve from a daemon thread; returns once the server accepts connections."""
        self.collector.sink.start()
        self._thread = threading.Thread(target=self._serve, name="agentgym-collector-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def run(self) -> None:
        """Serve from the calling thread until SIGINT/SIGTERM, then write what is queued."""
        self.collector.sink.start()
        # uvicorn raises the signal that stopped it again once it has shut down, and the default
        # action would end the process before the caller's cleanup (the scheduler's jobs, the
        # store): the signal has done its work by then, so it is absorbed here.
        previous = {sig: signal.signal(sig, _absorb) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._serve()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.collector.sink.close()

    def _serve(self) -> None:
        self._server.run(sockets=[self._socket])

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and write what is queued."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.collector.sink.close(timeout_s)
        self._socket.close()
