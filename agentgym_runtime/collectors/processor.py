"""Attach agentgym-runtime to an OpenTelemetry ``TracerProvider``.

One :class:`EpisodeSpanProcessor` is added per provider (the SDK cannot remove a
processor, so reconfiguring swaps what it delegates to instead). It

* stamps every span that *starts* inside an episode (ours, or another library's,
  e.g. AutoGen's native ``execute_tool`` spans) with the episode id, policy
  version and agent name, so foreign spans are attributed without any patching;
* forwards to the store only spans that belong to an episode or come from our
  own instrumentation scope; the host's other spans stay with the host's
  exporters. A forwarded span is turned into its ``spans`` row as it ends
  (``rows.span_record``), so the batch queue holds one tuple per span instead of
  the span's objects (the garbage collector's work on them cost the agent's
  thread more than the conversion does);
* in the store owner of a shared home, appends that row to the process's crash journal
  (:mod:`.journal`) before queueing it, so a SIGKILL cannot take it with the queue.

If the host application already installed an SDK ``TracerProvider``, we join
it and its exporters keep receiving everything; otherwise we install one.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from agentgym_runtime import semconv
from agentgym_runtime.collectors.exporter import DuckDBSpanExporter
from agentgym_runtime.collectors.journal import Journal
from agentgym_runtime.collectors.rows import SpanRows, span_record
from agentgym_runtime.collectors.stats import PipelineStats

logger = logging.getLogger("agentgym_runtime.processor")

StampFn = Callable[[], dict[str, str | int] | None]
"""Returns the attributes to stamp on a span starting now (``None`` outside an episode)."""


class EpisodeSpanProcessor(SpanProcessor):
    """Stamp episode context on starting spans and route episode spans to the store pipeline.

    Args:
        stamp: Gives the current episode's attributes, or ``None``.
    """

    def __init__(self, stamp: StampFn) -> None:
        self._stamp = stamp
        self._pipeline: SpanProcessor | None = None
        self._stats: PipelineStats | None = None
        self._records = False
        self._journal: Journal | None = None

    def set_pipeline(self, pipeline: SpanProcessor | None, stats: PipelineStats | None) -> None:
        """Route from now on to ``pipeline`` (``None`` stops routing).

        A pipeline that ends in an exporter that ``accepts_records`` (the in-process
        :class:`DuckDBSpanExporter`, the collector client) receives each span as a
        :class:`~agentgym_runtime.collectors.rows.SpanRecord`; any other pipeline receives the
        spans themselves. An exporter with a ``journal`` (the owner of a shared home, or a
        process that may become it) has each span journaled as it ends while the journal is
        active; the span then travels as its record too, and an episode root or feedback span
        as the :class:`~agentgym_runtime.collectors.rows.SpanRows` built for the journal.
        """
        exporter = getattr(pipeline, "span_exporter", None)
        self._records = isinstance(exporter, DuckDBSpanExporter) or getattr(exporter, "accepts_records", False) is True
        journal = getattr(exporter, "journal", None)
        self._journal = journal if isinstance(journal, Journal) else None
        self._pipeline = pipeline
        self._stats = stats

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        """Stamp the current episode's attributes on a foreign span."""
        scope = span.instrumentation_scope
        if scope is not None and scope.name == semconv.SCOPE_NAME:
            return  # our own spans carry their attributes from creation
        try:
            attributes = self._stamp()
            if attributes:
                existing = span.attributes or {}
                span.set_attributes({k: v for k, v in attributes.items() if k not in existing})
        except Exception:  # never let stamping break another library's span
            logger.debug("agentgym: stamping a span failed", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        """Hand an episode span (or one of ours) to the store pipeline."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        scope = span.instrumentation_scope
        # Our own scope first: it is the common case and needs no attribute view.
        if (scope is not None and scope.name == semconv.SCOPE_NAME) or semconv.EPISODE_ID in (span.attributes or {}):
            stats = self._stats
            if stats is not None:
                stats.incr_enqueued()
            record = None
            journal = self._journal
            journaling = journal is not None and journal.active
            if self._records or journaling:
                try:
                    record = span_record(span)
                except Exception:  # the writer converts the span itself (and counts it if that fails too)
                    logger.debug("agentgym: converting a span as it ended failed", exc_info=True)
            item: object = span if record is None else record
            if journaling:
                # Before queueing: once journaled, the row survives a SIGKILL of this process.
                assert journal is not None
                if record is not None:
                    journal.write_record(record)
                else:
                    built = journal.write_span(span)
                    if built is not None and self._records:
                        item = SpanRows(built)  # the writer takes these rows as they are
            # A record instead of the span: one tuple waits in the queue, not the span's ~10
            # objects, which kept the garbage collector busy on the agent's thread.
            pipeline.on_end(cast("ReadableSpan", item))

    def shutdown(self) -> None:
        """Shut the current pipeline down (called by the provider's own shutdown)."""
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the current pipeline."""
        pipeline = self._pipeline
        return pipeline.force_flush(timeout_millis) if pipeline is not None else True


_attached: weakref.WeakKeyDictionary[TracerProvider, EpisodeSpanProcessor] = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


def resolve_provider(service_name: str, *, install_global: bool) -> tuple[TracerProvider, bool]:
    """Find the SDK provider to join, installing ours if the host has none.

    Returns:
        The provider and whether it is the host's own (``True``) or ours.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current, not getattr(current, "_agentgym_owned", False)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider._agentgym_owned = True  # type: ignore[attr-defined]
    if install_global and isinstance(current, trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:  # lost a race with the host
            return resolve_provider(service_name, install_global=False)
    return provider, False


def router_for(provider: TracerProvider, stamp: StampFn) -> EpisodeSpanProcessor:
    """The one :class:`EpisodeSpanProcessor` of ``provider``, added on first use."""
    with _attach_lock:
        router = _attached.get(provider)
        if router is None:
            router = EpisodeSpanProcessor(stamp)
            provider.add_span_processor(router)
            _attached[provider] = router
        return router
