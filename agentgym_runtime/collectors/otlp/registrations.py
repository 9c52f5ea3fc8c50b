"""Training registrations travel in the store: the one scheduler of a deployment learns them there.

A worker decorated with ``train_online(schedule=...)`` that does not own the store (it sends to
a collector, or to the elected owner of its home) records its registration as a span,
``agentgym.training.register``, carrying the agent and its ``TrainingConfig`` as JSON. The span
takes the path every span takes (batch, OTLP, spool until acknowledged, written once), so a
registration reaches the store exactly when the worker's episodes do, and stays there: a
collector restarted later, or a worker that takes the home over, finds every schedule again
without the workers re-registering. The owner of the store (``agentgym collect`` or the
elected worker) runs a :class:`RegistrationFollower` that reads registrations newer than the
last one it saw and hands each agent's latest config to its scheduler.

Why the store and not a request to the collector: a request is lost when the collector is
down or restarting, and the workers would need to know when to send it again; the store is
where the deployment's durable state already is, and the span pipeline already guarantees
delivery.

Example:
    >>> from agentgym_runtime.collectors.store import TraceStore
    >>> store = TraceStore(":memory:")
    >>> seen = []
    >>> follower = RegistrationFollower(store, lambda agent, config: seen.append(agent))
    >>> follower.poll()
    0
    >>> store.close()
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from agentgym_runtime.collectors.store import TraceStore

logger = logging.getLogger("agentgym_runtime.collector")

#: Name of the span that records a ``train_online(schedule=...)`` registration.
REGISTRATION_SPAN: Final = "agentgym.training.register"
#: Its attributes: the agent, and the ``TrainingConfig`` as JSON.
REGISTRATION_AGENT: Final = "agentgym.training.agent"
REGISTRATION_CONFIG: Final = "agentgym.training.config"

#: How far before the newest registration seen each poll looks again (late, spooled arrivals).
_LOOKBACK_NS: Final = 600 * 1_000_000_000

_QUERY: Final = f"""
SELECT start_unix_nano, attributes->>'$."{REGISTRATION_AGENT}"', attributes->>'$."{REGISTRATION_CONFIG}"'
FROM spans
WHERE name = '{REGISTRATION_SPAN}' AND start_unix_nano > ?
ORDER BY start_unix_nano
"""


def registration_attributes(agent: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The attributes of the span that records ``agent``'s training registration.

    Example:
        >>> registration_attributes("support", {"agent": "support", "schedule": "1h"})[REGISTRATION_AGENT]
        'support'
    """
    return {REGISTRATION_AGENT: agent, REGISTRATION_CONFIG: json.dumps(dict(config), sort_keys=True)}


def record_registration(tracer: Any, agent: str, config: Mapping[str, Any]) -> None:
    """Record ``agent``'s registration as a span through ``tracer`` (our scope: it goes to the store)."""
    tracer.start_span(REGISTRATION_SPAN, attributes=registration_attributes(agent, config)).end()


class RegistrationFollower:
    """Hand the registrations recorded in ``store`` to ``on_config``, each once, the latest per agent.

    Args:
        store: The store this process owns.
        on_config: Called with ``(agent, config as a dict)`` for each new registration.
        is_owner: Whether this process owns the store now (polls do nothing while it does not).
        interval_s: How often :meth:`start`'s thread polls.
    """

    def __init__(
        self,
        store: TraceStore,
        on_config: Callable[[str, dict[str, Any]], None],
        *,
        is_owner: Callable[[], bool] = lambda: True,
        interval_s: float = 1.0,
    ) -> None:
        self.store = store
        self._on_config = on_config
        self._is_owner = is_owner
        self._interval = interval_s
        self._seen = _LOOKBACK_NS
        self._applied: dict[str, tuple[int, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> int:
        """Read registrations recorded since the last poll; how many agents got a new config."""
        if not self._is_owner():
            return 0
        # Look back a while: a registration spooled by a worker arrives after later ones.
        rows = self.store.query(_QUERY, [self._seen - _LOOKBACK_NS])
        latest: dict[str, tuple[int, str]] = {}
        for start, agent, config in rows:
            self._seen = max(self._seen, int(start))
            if agent and config and int(start) > self._applied.get(str(agent), (-1, ""))[0]:
                latest[str(agent)] = (int(start), str(config))
        changed = 0
        for agent, (start, text) in latest.items():
            if self._applied.get(agent, (-1, ""))[1] == text:
                self._applied[agent] = (start, text)
                continue  # a worker restarted with the same schedule: nothing to change
            try:
                config = json.loads(text)
                if not isinstance(config, dict):
                    raise TypeError("not an object")
                self._on_config(agent, config)
            except Exception as exc:  # a bad registration must not stop the others
                logger.warning("agentgym: ignoring the training registration of %r: %s", agent, exc)
                continue
            self._applied[agent] = (start, text)
            changed += 1
        return changed

    def start(self) -> RegistrationFollower:
        """Poll from a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="agentgym-registrations", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll()
            except Exception as exc:  # the store closing at shutdown, a transient lock
                logger.debug("agentgym: reading training registrations failed: %s", exc)
