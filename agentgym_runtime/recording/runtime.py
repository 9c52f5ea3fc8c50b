"""The Runtime: owns the settings, the span pipeline, the store and the status file.

There is one default runtime per process, created on first use from the
environment (``AGENTGYM_*``) or by :func:`agentgym_runtime.configure`.
Reconfiguring flushes and shuts down the previous pipeline before the new one
takes over; the tracer-provider attachment is made once and re-pointed.

The Runtime is the recording pipeline only. The policy router and the training
scheduler are built around it by :mod:`agentgym_runtime.services`, which plugs in
through three seams that this module defines and never looks behind:
``policy_resolver`` (who pins an episode's policy), lifecycle hooks
(:meth:`Runtime.add_hook`) and the factory of the default runtime
(:func:`set_runtime_factory`). Nothing here imports the services.

Example:
    >>> import agentgym_runtime as agentgym
    >>> rt = agentgym.configure(store=":memory:", service_name="doc")
    >>> rt.settings.service_name
    'doc'
    >>> agentgym.shutdown()
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanContext

from agentgym_runtime import semconv
from agentgym_runtime._version import __version__
from agentgym_runtime.collectors.otlp.pipeline import build_exporter
from agentgym_runtime.collectors.processor import EpisodeSpanProcessor, resolve_provider, router_for
from agentgym_runtime.collectors.stats import PipelineStats
from agentgym_runtime.collectors.store import TraceStore
from agentgym_runtime.config import Settings, settings_from_environment
from agentgym_runtime.recording.context import Episode, current_agent_var, current_episode_var
from agentgym_runtime.recording.files import atomic_write_json, ensure_private_dir
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.serialization import Serializer
from agentgym_runtime.recording.signals import install_sigterm_exit

logger = logging.getLogger("agentgym_runtime")

PolicyResolver = Callable[[str, str | None], Policy]
"""``(agent, session_id) -> Policy`` pinned when an episode (or an agent's turn) starts."""

RuntimeFactory = Callable[[Settings | None], "Runtime"]
"""Builds a (not yet started) runtime from settings (``None``: from the environment)."""

Stage = Literal["start", "stop", "close"]
"""When a lifecycle hook runs: ``start``, after the pipeline is built; ``stop``, when shutdown
begins, before the last flush (stop producing); ``close``, after the pipeline stopped and before
the store closes (last writes)."""

_RECENT_EPISODES = 10_000


def baseline_policy(agent: str, session_id: str | None) -> Policy:
    """The resolver of a runtime nobody wired: every agent runs as written (version 0).

    Example:
        >>> baseline_policy("support", None).version
        0
    """
    return Policy.baseline(agent)


def _stamp_current() -> dict[str, str | int] | None:
    episode = current_episode_var.get()
    if episode is None:
        return None
    scope = current_agent_var.get()
    return {
        semconv.EPISODE_ID: episode.id,
        semconv.POLICY_VERSION: scope.policy_version if scope else episode.policy_version,
        semconv.GEN_AI_AGENT_NAME: scope.name if scope else episode.agent,
    }


class Runtime:
    """Everything one configuration of agentgym-runtime owns.

    Args:
        settings: The settings; read from the environment when omitted.

    Example:
        >>> rt = Runtime(Settings(store=":memory:")).start()
        >>> rt.stats()["spans_lost"]
        0
        >>> rt.shutdown()
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or settings_from_environment()
        self.serializer = Serializer(
            self.settings.max_attribute_bytes, self.settings.secret_pattern(), self.settings.redactor()
        )
        self.pipeline_stats = PipelineStats()
        self.store = TraceStore(self.settings.store_path)
        # The services replace it with the policy router's; tests and hosts may set their own.
        self.policy_resolver: PolicyResolver = baseline_policy
        self.last_episode: Episode | None = None
        self._last_by_thread: dict[int, Episode] = {}
        self.host_provider = False
        self._exporter: Any = None  # a DuckDBSpanExporter or a CollectorSpanExporter: both retry_pending()
        self._batch: BatchSpanProcessor | None = None
        self._router: EpisodeSpanProcessor | None = None
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._lock = threading.RLock()
        self._started = False
        self._closed = False
        self._status_at = 0.0
        self._logged_errors: set[str] = set()
        self._recent: OrderedDict[str, SpanContext] = OrderedDict()
        self._hooks: dict[Stage, list[tuple[str, Callable[[], None]]]] = {"start": [], "stop": [], "close": []}

    def add_hook(self, stage: Stage, where: str, hook: Callable[[], None]) -> None:
        """Run ``hook`` at ``stage`` of this runtime's life (see :data:`Stage`).

        ``start`` hooks run after the pipeline is built, and their failures propagate out of
        :meth:`start`; ``stop`` and ``close`` hooks are guarded (a failure is an internal error
        reported as ``where``), so that shutdown always flushes and closes the store.

        Example:
            >>> rt = Runtime(Settings(store=":memory:"))
            >>> rt.add_hook("close", "doc", lambda: print("closing"))
            >>> rt.start().shutdown()
            closing
        """
        self._hooks[stage].append((where, hook))

    def _run_hooks(self, stage: Stage) -> None:
        for where, hook in list(self._hooks[stage]):
            if stage == "start":
                hook()
                continue
            try:
                hook()
            except Exception as exc:
                self.internal_error(where, exc)

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> Runtime:
        """Build the pipeline and attach it to the tracer provider (idempotent)."""
        with self._lock:
            if self._started:
                return self
            settings = self.settings
            # In-process writer, elected owner of a shared home, or client of a collector.
            self._exporter = build_exporter(settings, self.store, self.pipeline_stats, self.publish_status)
            self._batch = BatchSpanProcessor(
                self._exporter,
                max_queue_size=settings.max_queue_size,
                schedule_delay_millis=settings.schedule_delay_ms,
                max_export_batch_size=settings.max_export_batch_size,
                export_timeout_millis=settings.export_timeout_ms,
            )
            provider, self.host_provider = resolve_provider(
                settings.service_name, install_global=settings.install_global_provider
            )
            self._provider = provider
            self._router = router_for(provider, _stamp_current)
            self._router.set_pipeline(self._batch, self.pipeline_stats)
            self._tracer = provider.get_tracer(semconv.SCOPE_NAME, __version__)
            self._started = True
            self._closed = False
            _register_process_hooks()
            install_sigterm_exit(enabled=settings.handle_sigterm)  # SIGTERM flushes like any exit
        self._run_hooks("start")
        return self

    @property
    def started(self) -> bool:
        """Whether the pipeline is running."""
        return self._started

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer for our own spans (starts the runtime on first use)."""
        tracer = self._tracer
        if tracer is None:
            self.start()
            tracer = self._tracer
            assert tracer is not None
        return tracer

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Write everything recorded so far; ``False`` if some of it could not be written yet."""
        if not self._started or self._batch is None or self._exporter is None:
            return True
        flushed = self._batch.force_flush(int(timeout_s * 1000))
        written = self._exporter.retry_pending()
        self.publish_status(force=True)
        return bool(flushed and written)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Flush, stop the pipeline and close the store; safe to call twice."""
        with self._lock:
            if not self._started or self._closed:
                return
            self._closed = True
            self._run_hooks("stop")
            try:
                self.flush(timeout_s)
            finally:
                if self._router is not None:
                    self._router.set_pipeline(None, None)
                if self._batch is not None:
                    self._batch.shutdown()  # type: ignore[no-untyped-call]
                self.publish_status(force=True)
                self._run_hooks("close")
                self.store.close()
                self._started = False
                self._tracer = None

    def collector_endpoint(self) -> str | None:
        """Where another process owns the store (reads go there); ``None`` if this process owns it."""
        describe = getattr(self._exporter, "describe", None)
        if describe is None:
            return None
        info = describe()
        return None if info["local"] else info["endpoint"]

    # --- observability of the middleware itself ------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters of the recording pipeline (see :class:`PipelineStats`)."""
        queued = 0
        batch = self._batch
        if batch is not None:
            # The SDK keeps no public queue length; this is informational only.
            inner = getattr(batch, "_batch_processor", None)
            queue = getattr(inner, "_queue", None)
            if queue is not None:
                queued = len(queue)
        return self.pipeline_stats.snapshot(queued=queued)

    def internal_error(self, where: str, exc: BaseException) -> None:
        """Log (once per place) and count a failure inside the middleware.

        Raises:
            BaseException: ``exc`` again when ``strict`` is set (tests).
        """
        self.pipeline_stats.add(internal_errors=1)
        if self.settings.strict:
            raise exc
        key = f"{where}:{type(exc).__name__}"
        if key not in self._logged_errors:
            self._logged_errors.add(key)
            logger.warning("agentgym: internal error in %s (the agent is not affected): %r", where, exc, exc_info=exc)

    def publish_status(self, force: bool = False) -> None:
        """Write ``status.json`` for ``agentgym status`` (at most once a second unless forced)."""
        now = time.time()
        if not force and now - self._status_at < 1.0:
            return
        self._status_at = now
        if self.settings.store_path == ":memory:":
            return
        payload = {
            "pid": os.getpid(),
            "service_name": self.settings.service_name,
            "store": self.settings.store_path,
            "updated_at": now,
            "version": __version__,
            "stats": self.stats(),
        }
        path = self.settings.status_path
        try:
            ensure_private_dir(path.parent)
            atomic_write_json(path, payload, durable=False)  # mode 0600: the home is private
        except OSError:
            logger.debug("agentgym: cannot write %s", path, exc_info=True)

    def resolve_policy(self, agent: str, session_id: str | None) -> Policy:
        """The policy to pin for ``agent`` now; the baseline if the resolver fails."""
        try:
            policy = self.policy_resolver(agent, session_id)
        except Exception as exc:
            self.internal_error("policy resolution", exc)
            return Policy.baseline(agent)
        return policy if isinstance(policy, Policy) else Policy.baseline(agent)

    # --- episode bookkeeping -------------------------------------------------------------
    def remember_episode(self, episode: Episode, span_context: SpanContext | None) -> None:
        """Keep the latest episodes' span contexts, so feedback can link to them."""
        self.last_episode = episode
        thread = threading.get_ident()
        with self._lock:
            self._last_by_thread[thread] = episode
            if len(self._last_by_thread) > 1024:  # threads come and go: forget the oldest
                self._last_by_thread.pop(next(iter(self._last_by_thread)))
        if span_context is None:
            return
        with self._lock:
            self._recent[episode.id] = span_context
            if len(self._recent) > _RECENT_EPISODES:
                self._recent.popitem(last=False)

    def last_episode_in_thread(self) -> Episode | None:
        """The episode that most recently finished on the calling thread."""
        return self._last_by_thread.get(threading.get_ident())

    def recent_episode_context(self, episode_id: str) -> SpanContext | None:
        """The span context of a recent episode of this process, if remembered."""
        return self._recent.get(episode_id)

    def reset_after_fork(self) -> None:
        """Make the child of a fork usable: drop the parent's DuckDB handle and locks."""
        self._lock = threading.RLock()
        self.store.reset_after_fork()


_default: Runtime | None = None
_default_lock = threading.Lock()
_hooks_registered = False
_factory: RuntimeFactory = Runtime


def set_runtime_factory(factory: RuntimeFactory | None) -> None:
    """Build default runtimes with ``factory`` from now on (``None``: a plain :class:`Runtime`).

    :mod:`agentgym_runtime.services` installs itself here when it is imported, so that the
    default runtime gets its policy router and training scheduler wired before it starts,
    while this module never imports the services (dependency inversion).
    """
    global _factory
    _factory = factory or Runtime


def get_runtime() -> Runtime:
    """The process's default runtime, created from the environment on first use."""
    runtime = _default
    if runtime is None:
        with _default_lock:
            runtime = _default
            if runtime is None:
                runtime = _factory(None).start()
                _set_default(runtime)
    return runtime


def peek_runtime() -> Runtime | None:
    """The default runtime if one exists (never creates one)."""
    return _default


def _set_default(runtime: Runtime | None) -> None:
    global _default
    _default = runtime


def replace_runtime(settings: Settings) -> Runtime:
    """Shut down the current default runtime and start one with ``settings``."""
    with _default_lock:
        old = _default
        if old is not None:
            old.shutdown()
        runtime = _factory(settings)
        if settings.enabled:
            runtime.start()
        _set_default(runtime)
        return runtime


def _shutdown_at_exit() -> None:
    runtime = _default
    if runtime is not None:
        try:
            runtime.shutdown(timeout_s=10.0)
        except Exception:  # never turn interpreter exit into a traceback
            logger.debug("agentgym: shutdown at exit failed", exc_info=True)


def _after_fork_in_child() -> None:
    runtime = _default
    if runtime is not None:
        runtime.reset_after_fork()


def _register_process_hooks() -> None:
    global _hooks_registered
    if _hooks_registered:
        return
    _hooks_registered = True
    atexit.register(_shutdown_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
