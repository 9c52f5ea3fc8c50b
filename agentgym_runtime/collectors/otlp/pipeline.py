"""Choose the runtime's span exporter: in-process writer, elected owner, or collector client.

* ``AGENTGYM_COLLECTOR_ENDPOINT`` set: spans go to that collector (spool in ``<home>/spool``).
* A file store, ``share_home`` on and the ``collector`` extra installed: the processes of the
  home elect an owner (:mod:`.election`). The owner writes in-process, as a single process
  does, and serves OTLP on a loopback port for the others; the others send there.
* Otherwise (``:memory:``, sharing off, no extra): the in-process writer, as before.

The owner of a shared home journals its own spans as they end (:mod:`..journal`), and a
process that becomes the owner first replays what dead processes journaled and the store
lacks, so a SIGKILLed owner loses nothing it recorded.

Example:
    >>> from agentgym_runtime.config import Settings
    >>> from agentgym_runtime.collectors.store import TraceStore
    >>> type(build_exporter(Settings(store=":memory:"), TraceStore(":memory:"))).__name__
    'DuckDBSpanExporter'
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace.export import SpanExporter

from agentgym_runtime.collectors.exporter import DuckDBSpanExporter
from agentgym_runtime.collectors.journal import JOURNAL_DIR, Journal, replay_dead_journals
from agentgym_runtime.collectors.stats import PipelineStats
from agentgym_runtime.collectors.store import TraceStore

if TYPE_CHECKING:
    from agentgym_runtime.collectors.otlp.election import HomeLock, Watcher
    from agentgym_runtime.collectors.otlp.server import CollectorServer
    from agentgym_runtime.config import Settings

logger = logging.getLogger("agentgym_runtime.collector")


def collector_extra_installed() -> bool:
    """Whether Starlette and uvicorn (the ``collector`` extra) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("starlette", "uvicorn"))


class HomeOwner:
    """This process's part in the home: holds the lock and serves OTLP once it owns the store."""

    def __init__(self, settings: Settings, store: TraceStore) -> None:
        from agentgym_runtime.collectors.otlp.election import HomeLock

        self.settings = settings
        self.store = store
        self.lock: HomeLock = HomeLock(settings.home)
        self.server: CollectorServer | None = None
        self.watcher: Watcher | None = None
        self.drainer: SpanExporter | None = None
        self.journal: Journal | None = (
            Journal(settings.home / JOURNAL_DIR, max_bytes=settings.journal_max_mb * 1024 * 1024, active=False)
            if settings.journal
            else None
        )
        self._closed = False
        self._guard = threading.Lock()

    def serve(self) -> None:
        """Serve OTLP for the other processes of the home (the lock is held)."""
        from agentgym_runtime.collectors.otlp.election import publish_endpoint
        from agentgym_runtime.collectors.otlp.server import Collector, CollectorServer

        with self._guard:
            if self._closed or self.server is not None:
                return
            self.replay_journals()
            collector = Collector(self.store, token=self.settings.collector_token)
            self.server = CollectorServer(collector, host="127.0.0.1", port=0).start()
            publish_endpoint(self.settings.home, self.server.endpoint, store=self.store.path)
            # What the others spooled while no owner served (a previous owner died) drains into it.
            from agentgym_runtime.collectors.otlp.client import CollectorSpanExporter
            from agentgym_runtime.collectors.otlp.spool import Spool

            endpoint = self.server.endpoint
            self.drainer = CollectorSpanExporter(
                lambda: endpoint, spool=Spool(self.settings.home / "spool"), token=self.settings.collector_token
            )
            logger.info("agentgym: this process (owner of %s) serves OTLP at %s", self.store.path, self.server.endpoint)

    def replay_journals(self) -> None:
        """Write what dead processes of the home journaled and the store lacks (the lock is held)."""
        try:
            replay_dead_journals(self.settings.home, self.store, own=self.journal)
        except Exception:  # the files stay for the next owner; serving must not wait on them
            logger.warning("agentgym: replaying the journals of %s failed", self.settings.home, exc_info=True)

    def close(self) -> None:
        """Stop serving and give the home up."""
        with self._guard:
            self._closed = True
            server, self.server = self.server, None
        if self.watcher is not None:
            self.watcher.stop()
        if self.drainer is not None:
            self.drainer.shutdown()
        if server is not None:
            server.stop()
        if self.journal is not None:
            # After the last flush: a clean exit leaves no journal (rows not written stay in it).
            self.journal.close()
        self.lock.release()


class OwnerSpanExporter(DuckDBSpanExporter):
    """The in-process writer of the process that owns the home; stops serving on shutdown."""

    def __init__(self, owner: HomeOwner, store: TraceStore, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self.owner = owner

    def shutdown(self) -> None:
        """Stop serving the others, then write what is pending and give the home up."""
        try:
            if self.owner.server is not None:
                self.owner.server.collector.sink.close()
            super().shutdown()
        finally:
            self.owner.close()


def build_exporter(
    settings: Settings,
    store: TraceStore,
    stats: PipelineStats | None = None,
    on_write: Callable[[], None] | None = None,
) -> SpanExporter:
    """The exporter the runtime's batch processor should write through (see the module doc)."""
    stats = stats or PipelineStats()

    def local(journal: Journal | None = None) -> DuckDBSpanExporter:
        return DuckDBSpanExporter(
            store,
            stats=stats,
            max_pending_rows=settings.max_pending_rows,
            reopen_backoff_s=settings.reopen_backoff_s,
            on_write=on_write,
            journal=journal,
        )

    if settings.collector_endpoint:
        from agentgym_runtime.collectors.otlp.client import CollectorSpanExporter
        from agentgym_runtime.collectors.otlp.spool import Spool

        endpoint = settings.collector_endpoint
        return CollectorSpanExporter(
            lambda: endpoint, spool=Spool(settings.home / "spool"), token=settings.collector_token, stats=stats
        )
    if store.path == ":memory:" or not settings.share_home or not collector_extra_installed():
        return local()
    owner = HomeOwner(settings, store)
    if owner.lock.try_acquire():
        if owner.journal is not None:
            owner.journal.activate()
        # Serving starts in the background: importing uvicorn must not delay the first episode.
        threading.Thread(target=_serve_quietly, args=(owner,), name="agentgym-home-serve", daemon=True).start()
        return OwnerSpanExporter(
            owner,
            store,
            stats=stats,
            max_pending_rows=settings.max_pending_rows,
            reopen_backoff_s=settings.reopen_backoff_s,
            on_write=on_write,
            journal=owner.journal,
        )
    return _follower(settings, owner, stats, local)


def _serve_quietly(owner: HomeOwner) -> None:
    try:
        owner.serve()
    except Exception:
        logger.warning("agentgym: could not serve OTLP for the other processes of the home", exc_info=True)


def _follower(
    settings: Settings, owner: HomeOwner, stats: PipelineStats, local: Callable[..., DuckDBSpanExporter]
) -> SpanExporter:
    from agentgym_runtime.collectors.otlp.client import CollectorSpanExporter
    from agentgym_runtime.collectors.otlp.election import EndpointFile, Watcher
    from agentgym_runtime.collectors.otlp.spool import Spool

    class _FollowerExporter(CollectorSpanExporter):
        def shutdown(self) -> None:
            try:
                super().shutdown()
            finally:
                owner.close()

    exporter = _FollowerExporter(
        EndpointFile(settings.home), spool=Spool(settings.home / "spool"), token=settings.collector_token, stats=stats
    )
    # Inactive until this process owns the store; the span processor looks for it here.
    exporter.journal = owner.journal

    def take_over() -> None:
        # The owner died: this process owns the store now. Its own batches go to the local
        # writer (journaled from now on: the local writer settles the journal, so it must be
        # in place before the first journaled span is exported), and the spool (its own and
        # the others') drains into the server it starts, after the dead owner's journal.
        exporter.local = local(owner.journal)
        if owner.journal is not None:
            owner.journal.activate()
        owner.serve()
        exporter.retry_pending()

    owner.watcher = Watcher(owner.lock, take_over).start()
    return exporter
