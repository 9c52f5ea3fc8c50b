"""The one wiring module: builds the runtime's services and hands each its narrow collaborators.

A :class:`Services` is one configuration of agentgym-runtime, put together:

* the recording :class:`~agentgym_runtime.recording.runtime.Runtime` (settings, the span
  pipeline into the DuckDB store, the tracer, the error sink ``internal_error``, ``flush``);
* the :class:`~agentgym_runtime.policy.registry.PolicyRegistry` on ``<home>/policies`` and the
  :class:`~agentgym_runtime.policy.router.PolicyRouter`, which becomes the runtime's
  ``policy_resolver``;
* the :class:`~agentgym_runtime.trainers.scheduler.TrainingScheduler`, started when an agent
  registered a training schedule.

Each service gets what it uses (the store, ``flush``, the error sink, the registry), never the
runtime, and none of them imports this module: it is the only place that knows them all. The
layers above (``api``, ``decorator``, ``tools``, ``adapters``, ``cli``, ``demo``) reach the
services of the process through :func:`current`. The recording core builds its default runtime
through a factory hook that this module installs when imported, so the router and the scheduler
are wired before the runtime starts, while the recording core never imports them.

Example:
    >>> import agentgym_runtime as agentgym
    >>> from agentgym_runtime import services
    >>> _ = agentgym.configure(store=":memory:", service_name="doc")
    >>> services.current().settings.service_name
    'doc'
    >>> services.current().router.resolve("support", None).version
    0
    >>> agentgym.shutdown()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentgym_runtime.config import Settings
from agentgym_runtime.recording.runtime import (
    PolicyResolver,
    Runtime,
    baseline_policy,
    get_runtime,
    peek_runtime,
    replace_runtime,
    set_runtime_factory,
)

if TYPE_CHECKING:
    from opentelemetry import trace

    from agentgym_runtime.collectors.otlp.registrations import RegistrationFollower
    from agentgym_runtime.collectors.store import TraceStore
    from agentgym_runtime.policy.registry import PolicyRegistry
    from agentgym_runtime.policy.router import PolicyRouter
    from agentgym_runtime.recording.policy import Policy
    from agentgym_runtime.trainers.scheduler import TrainingConfig, TrainingScheduler


class Services:
    """One configuration of agentgym-runtime: the recording runtime and the services around it.

    The policy router (with its registry) and the training scheduler are built on first use, so
    a process that only records never loads them. What :func:`agentgym_runtime.configure`
    returns.

    Args:
        runtime: The recording runtime to wire (started or not).

    Example:
        >>> from agentgym_runtime.config import Settings
        >>> svc = Services(Runtime(Settings(store=":memory:")).start())
        >>> svc.runtime.resolve_policy("bot", None).version  # resolved by the router now
        0
        >>> svc.has_scheduler
        False
        >>> svc.shutdown()
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = threading.RLock()
        self._router: PolicyRouter | None = None
        self._scheduler: TrainingScheduler | None = None
        self._registrations: RegistrationFollower | None = None
        if runtime.policy_resolver is baseline_policy:  # a resolver set by the host stays
            runtime.policy_resolver = self._resolve
        runtime.add_hook("start", "training schedules", self._start_schedules)
        # Stop the jobs first (their runs are marked failed), then flush; the registry's last
        # mirror into the store goes after the pipeline stopped and before the store closes.
        runtime.add_hook("stop", "training scheduler shutdown", self._stop_scheduler)
        runtime.add_hook("stop", "policy router close", self._stop_router)
        runtime.add_hook("close", "policy registry close", self._close_registry)
        if runtime.started:
            self._start_schedules()

    # --- the services -------------------------------------------------------------------------
    @property
    def router(self) -> PolicyRouter:
        """The policy router (created on first use, with the registry on ``<home>/policies``)."""
        router = self._router
        if router is None:
            with self._lock:
                if self._router is None:
                    from agentgym_runtime.policy.registry import PolicyRegistry

                    runtime = self.runtime
                    registry = PolicyRegistry(
                        runtime.settings.policies_dir,
                        store=runtime.store if runtime.settings.enabled else None,
                        on_error=runtime.internal_error,
                    )
                    self._router = build_router(
                        registry,
                        runtime.settings,
                        store=runtime.store,
                        flush=runtime.flush,
                        on_error=runtime.internal_error,
                    )
                router = self._router
        return router

    @property
    def policies(self) -> PolicyRegistry:
        """The policy registry (``<home>/policies``, mirrored into the store)."""
        return self.router.registry

    @property
    def scheduler(self) -> TrainingScheduler:
        """The background retraining scheduler (created on first use)."""
        with self._lock:
            if self._scheduler is None:
                from agentgym_runtime.trainers.scheduler import TrainingScheduler

                runtime = self.runtime
                self._scheduler = TrainingScheduler(
                    runtime.settings,
                    store=runtime.store,
                    registry=self.policies,
                    on_error=runtime.internal_error,
                    flush=runtime.flush,
                    router=self.router,
                )
            return self._scheduler

    @property
    def has_scheduler(self) -> bool:
        """Whether the scheduler was created (without creating it)."""
        return self._scheduler is not None

    def training_registered(self, agent: str, config: TrainingConfig | None) -> None:
        """Follow a ``train_online(schedule=...)`` registration (``config``) or removal (``None``)."""
        if config is not None:
            if self.runtime.started:
                self._record_registration(config)
            if self.runtime.started and self.runtime.collector_endpoint() is None:
                self.scheduler.add_agent(config)
        elif self.has_scheduler:
            self.scheduler.remove_agent(agent)

    def _resolve(self, agent: str, session_id: str | None) -> Policy:
        return self.router.resolve(agent, session_id)

    def _start_schedules(self) -> None:
        from agentgym_runtime.trainers.scheduler import registered_training, set_registration_listener

        # Registrations made from now on reach this configuration's scheduler.
        set_registration_listener(_follow_registrations)
        for config in registered_training().values():
            self._record_registration(config)
        settings = self.runtime.settings
        if settings.collector_endpoint or (settings.share_home and self.runtime.store.path != ":memory:"):
            self.follow_registrations()  # this process may own the shared store, now or after a takeover
        if self.runtime.collector_endpoint() is not None:
            return  # another process owns the store: it runs the deployment's one scheduler
        if registered_training():  # agents decorated before this runtime started
            self.scheduler.start()

    def follow_registrations(self, interval_s: float = 1.0) -> None:
        """While this process owns the store, schedule the agents that other processes registered.

        Workers that send to a collector (or to the elected owner of their home) record each
        ``train_online(schedule=...)`` registration in the store
        (:mod:`~agentgym_runtime.collectors.otlp.registrations`); the owner's scheduler reads them.
        """
        from agentgym_runtime.collectors.otlp.registrations import RegistrationFollower

        with self._lock:
            if self._registrations is not None:
                return
            runtime = self.runtime
            self._registrations = RegistrationFollower(
                runtime.store,
                self._registered_elsewhere,
                is_owner=lambda: runtime.started and runtime.collector_endpoint() is None,
                interval_s=interval_s,
            ).start()

    def _registered_elsewhere(self, agent: str, document: dict[str, Any]) -> None:
        from agentgym_runtime.trainers.scheduler import TrainingConfig

        config = TrainingConfig.model_validate(document)
        scheduler = self.scheduler
        if scheduler.configs.get(agent) != config:
            scheduler.add_agent(config)
        scheduler.start()

    def _record_registration(self, config: TrainingConfig) -> None:
        if config.schedule is None or not self.runtime.settings.enabled:
            return
        from agentgym_runtime.collectors.otlp.registrations import record_registration

        try:
            record_registration(self.runtime.tracer, config.agent, config.model_dump(mode="json"))
        except Exception as exc:
            self.runtime.internal_error("training registration", exc)

    def _stop_scheduler(self) -> None:
        registrations, self._registrations = self._registrations, None
        if registrations is not None:
            registrations.stop()
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown()  # kills running jobs; their runs are marked failed first

    def _stop_router(self) -> None:
        if self._router is not None:
            self._router.close()  # background gate evaluations end before the store closes

    def _close_registry(self) -> None:
        if self._router is not None:
            self._router.registry.close()  # the last policy mirror; the store is never reopened

    # --- the recording runtime, for callers of configure() ---------------------------------------
    @property
    def settings(self) -> Settings:
        """The settings in use."""
        return self.runtime.settings

    @property
    def store(self) -> TraceStore:
        """The DuckDB trace store."""
        return self.runtime.store

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer for agentgym's own spans."""
        return self.runtime.tracer

    @property
    def started(self) -> bool:
        """Whether the recording pipeline is running."""
        return self.runtime.started

    @property
    def host_provider(self) -> bool:
        """Whether spans go to the host application's own tracer provider."""
        return self.runtime.host_provider

    @property
    def policy_resolver(self) -> PolicyResolver:
        """``(agent, session_id) -> Policy`` pinned when an episode starts (the router by default).

        Set it to route policies yourself (tests, or a host with its own rollout system).
        """
        return self.runtime.policy_resolver

    @policy_resolver.setter
    def policy_resolver(self, resolver: PolicyResolver) -> None:
        self.runtime.policy_resolver = resolver

    def stats(self) -> dict[str, Any]:
        """Counters of the recording pipeline (see :meth:`Runtime.stats`)."""
        return self.runtime.stats()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Write everything recorded so far; ``False`` if some of it could not be written yet."""
        return self.runtime.flush(timeout_s)

    def internal_error(self, where: str, exc: BaseException) -> None:
        """Log (once per place) and count a failure inside the middleware."""
        self.runtime.internal_error(where, exc)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the scheduler, flush, stop the pipeline and close the store; safe to call twice."""
        self.runtime.shutdown(timeout_s)


def build_router(
    registry: PolicyRegistry,
    settings: Settings,
    *,
    store: TraceStore,
    flush: Callable[[], bool] | None = None,
    on_error: Callable[[str, BaseException], None] | None = None,
) -> PolicyRouter:
    """A policy router on ``registry`` with the gate settings of ``settings``.

    The one place a router is built: the serving configuration's own (:attr:`Services.router`)
    and the one ``agentgym policies evaluate`` runs over a read-only store.

    Example:
        >>> import tempfile
        >>> from agentgym_runtime.collectors.store import TraceStore
        >>> from agentgym_runtime.policy.registry import PolicyRegistry
        >>> router = build_router(PolicyRegistry(tempfile.mkdtemp()), Settings(), store=TraceStore(":memory:"))
        >>> router.resolve("bot", None).version
        0
    """
    from agentgym_runtime.policy.router import PolicyRouter, RouterConfig

    return PolicyRouter(registry, RouterConfig.from_settings(settings), store=store, flush=flush, on_error=on_error)


_current: Services | None = None
_current_lock = threading.RLock()


def _services_for(runtime: Runtime) -> Services:
    global _current
    with _current_lock:
        if _current is None or _current.runtime is not runtime:
            # Also adopts a default runtime the recording core built before this module loaded.
            _current = Services(runtime)
        return _current


def _build(settings: Settings | None) -> Runtime:
    runtime = Runtime(settings)
    _services_for(runtime)
    return runtime


def _follow_registrations(agent: str, config: TrainingConfig | None) -> None:
    services = peek()
    if services is not None:
        services.training_registered(agent, config)


def current() -> Services:
    """The services of this process's default runtime (created from ``AGENTGYM_*`` on first use).

    Example:
        >>> from agentgym_runtime import services
        >>> services.current().policies.root.name
        'policies'
    """
    return _services_for(get_runtime())


def peek() -> Services | None:
    """The current services if a default runtime exists (never creates one).

    Example:
        >>> from agentgym_runtime import services
        >>> isinstance(services.peek(), Services | None)
        True
    """
    runtime = peek_runtime()
    return None if runtime is None else _services_for(runtime)


def configure(settings: Settings) -> Services:
    """Shut down the current configuration and start one with ``settings``.

    Example:
        >>> from agentgym_runtime import services
        >>> services.configure(Settings(store=":memory:")).settings.store_path
        ':memory:'
        >>> services.current().shutdown()
    """
    return _services_for(replace_runtime(settings))


set_runtime_factory(_build)
