"""Episode lifecycle: open the ``invoke_agent`` span, bind the context, close and reward.

:class:`AgentRun` is shared by the decorator, every adapter's proxy and the
``agentgym.episode()`` context manager. A run that starts while an episode is
already active becomes a *turn* of another agent inside that episode (a child
``invoke_agent`` span), which is how teams and crews keep one episode with
per-agent attribution.

Automatic instrumentation of the agent frameworks a process imported is plugged in from above
(:func:`add_instrumenter`, which :mod:`agentgym_runtime.adapters` calls when it is loaded): the
recording core never imports the adapters.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agentgym_runtime import semconv
from agentgym_runtime.recording.capture import reconcile, record_exception
from agentgym_runtime.recording.context import (
    AgentScope,
    Episode,
    current_agent_var,
    current_episode_var,
    last_episode_var,
)
from agentgym_runtime.recording.rewards import RewardFn, RewardSource, compute_reward
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.semconv import EpisodeStatus


@dataclass(slots=True)
class AgentOptions:
    """How an agent is recorded: what the decorator's keyword arguments configure."""

    name: str
    scenario: Any = None
    reward: RewardFn | RewardSource | None = None
    framework: str | None = None
    entrypoint: str | None = None
    session_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)

    @property
    def scenario_name(self) -> str | None:
        """The scenario's name, whether given as a name or an object."""
        if self.scenario is None:
            return None
        return self.scenario if isinstance(self.scenario, str) else getattr(self.scenario, "name", None)

    @property
    def reward_source(self) -> RewardFn | RewardSource | None:
        """The explicit reward, else the scenario object's reward, else ``None`` (reliability)."""
        if self.reward is not None:
            return self.reward
        if self.scenario is not None and not isinstance(self.scenario, str) and isinstance(self.scenario, RewardSource):
            return self.scenario
        return None


class AgentRun:
    """One invocation of an agent: an episode of its own, or a turn inside the current one.

    Use :meth:`enter` / :meth:`exit` around the agent's own code; for generators, call
    :meth:`activate` / :meth:`deactivate` around each step (context variables cannot stay
    set across ``yield`` into foreign code).
    """

    __slots__ = (
        "_input",
        "_metadata",
        "_options",
        "_otel_token",
        "_owns",
        "_runtime",
        "_scope",
        "_session_id",
        "_span",
        "_tokens",
        "episode",
    )

    def __init__(
        self,
        runtime: Runtime,
        options: AgentOptions,
        *,
        call_input: Any = None,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._runtime = runtime
        self._options = options
        self._input = call_input
        self._session_id = session_id or options.session_id
        self._metadata = {**options.metadata, **(metadata or {})}
        self.episode: Episode | None = None
        self._span: Span | None = None
        self._owns = False
        self._tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = []
        self._scope: AgentScope | None = None
        self._otel_token: contextvars.Token[otel_context.Context] | None = None

    # --- start / finish ----------------------------------------------------------------
    def start(self) -> Episode:
        """Create the episode (or join the current one) and open the agent span."""
        runtime, options = self._runtime, self._options
        parent = current_episode_var.get()
        serializer = runtime.serializer
        if parent is None:
            if runtime.settings.auto_instrument:
                _auto_instrument(runtime)
            policy = runtime.resolve_policy(options.name, self._session_id)
            episode = Episode(
                options.name,
                session_id=self._session_id,
                metadata=self._metadata,
                policy=policy,
                scenario=options.scenario_name,
                framework=options.framework,
                entrypoint=options.entrypoint,
            )
            episode.input = self._input
            episode.runtime_id = id(runtime)
            self._owns = True
        else:
            episode = parent
            if episode.agent == _UNNAMED:
                # An ``agentgym.episode()`` block takes the identity of the first agent run in it:
                # its name, policy, scenario, reward, entrypoint and framework.
                episode.agent = options.name
                episode.policy = runtime.resolve_policy(options.name, episode.session_id)
                episode.adopted_options = options
                episode.scenario = options.scenario_name
                episode.entrypoint = options.entrypoint
                episode.framework = options.framework
                if episode.input is None:
                    episode.input = self._input
                if episode.root_span is not None:
                    adopted: dict[str, Any] = {
                        semconv.GEN_AI_AGENT_NAME: options.name,
                        semconv.POLICY_VERSION: episode.policy.version,
                    }
                    for key, value in (
                        (semconv.EPISODE_SCENARIO, options.scenario_name),
                        (semconv.EPISODE_ENTRYPOINT, options.entrypoint),
                        (semconv.FRAMEWORK, options.framework),
                    ):
                        if value:
                            adopted[key] = value
                    if self._input is not None and runtime.settings.capture_content:
                        adopted[semconv.EPISODE_INPUT] = runtime.serializer.to_json(self._input)
                    episode.root_span.set_attributes(adopted)
            policy = (
                episode.policy
                if options.name == episode.agent
                else runtime.resolve_policy(options.name, episode.session_id)
            )
        self.episode = episode
        self._scope = AgentScope(options.name, policy)
        version = policy.version
        attributes: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.OP_INVOKE_AGENT,
            semconv.GEN_AI_AGENT_NAME: options.name,
            semconv.EPISODE_ID: episode.id,
            semconv.POLICY_VERSION: version,
        }
        if options.framework:
            attributes[semconv.FRAMEWORK] = options.framework
        if self._owns:
            attributes[semconv.EPISODE_ROOT] = True
            if episode.session_id:
                attributes[semconv.EPISODE_SESSION_ID] = episode.session_id
                attributes[semconv.GEN_AI_CONVERSATION_ID] = episode.session_id
            if options.scenario_name:
                attributes[semconv.EPISODE_SCENARIO] = options.scenario_name
            if options.entrypoint:
                attributes[semconv.EPISODE_ENTRYPOINT] = options.entrypoint
            if episode.metadata:
                attributes[semconv.EPISODE_METADATA] = serializer.to_json(episode.metadata)
            if self._input is not None and runtime.settings.capture_content:
                attributes[semconv.EPISODE_INPUT] = serializer.to_json(self._input)
        self._span = runtime.tracer.start_span(
            semconv.agent_span_name(options.name), kind=SpanKind.INTERNAL, attributes=attributes
        )
        if self._owns:
            episode.root_span = self._span
        return episode

    def activate(self) -> None:
        """Bind the episode, agent and span to the current context."""
        assert self.episode is not None
        assert self._span is not None
        self._tokens = [
            (current_episode_var, current_episode_var.set(self.episode)),
            (current_agent_var, current_agent_var.set(self._scope)),
        ]
        self._otel_token = otel_context.attach(trace.set_span_in_context(self._span))

    def deactivate(self) -> None:
        """Undo :meth:`activate` (in the same context it ran in)."""
        if self._otel_token is not None:
            otel_context.detach(self._otel_token)
            self._otel_token = None
        for var, token in reversed(self._tokens):
            var.reset(token)
        self._tokens = []

    def finish(self, *, output: Any = None, error: BaseException | None = None, cancelled: bool = False) -> None:
        """Close the agent span; for the episode's owner, reconcile, reward and close the episode."""
        episode, span, runtime = self.episode, self._span, self._runtime
        if episode is None or span is None:
            return
        try:
            if self._owns:
                self._finish_episode(episode, span, output, error, cancelled)
            elif error is not None:
                record_exception(span, error, runtime)  # redacted; a raising __str__ is safe
                span.set_status(Status(StatusCode.ERROR, runtime.serializer.text(error)))
                span.set_attribute(semconv.ERROR_TYPE, type(error).__qualname__)
        finally:
            span.end()
            if self._owns:
                runtime.remember_episode(episode, span.get_span_context())
                last_episode_var.set(episode)

    def _finish_episode(
        self, episode: Episode, span: Span, output: Any, error: BaseException | None, cancelled: bool
    ) -> None:
        runtime = self._runtime
        token = otel_context.attach(trace.set_span_in_context(span))
        ep_token = current_episode_var.set(episode)
        try:
            reconcile(episode, framework=self._options.framework, runtime=runtime)
        except Exception as exc:
            runtime.internal_error("reconcile", exc)
        finally:
            current_episode_var.reset(ep_token)
            otel_context.detach(token)
        episode.ended_at = time.time()
        episode.output = output
        if cancelled:
            episode.status = EpisodeStatus.CANCELLED
        elif error is not None:
            episode.status = EpisodeStatus.ERROR
            episode.error_type = type(error).__qualname__
            record_exception(span, error, runtime)  # redacted; a raising __str__ is safe
            span.set_status(Status(StatusCode.ERROR, runtime.serializer.text(error)))
            span.set_attribute(semconv.ERROR_TYPE, episode.error_type)
        else:
            episode.status = EpisodeStatus.OK
        try:
            options = episode.adopted_options if self._options.name == _UNNAMED else None
            reward_source = (options or self._options).reward_source
            episode.reward = compute_reward(episode, output, reward_source)
        except Exception as exc:
            runtime.internal_error("reward", exc)
        reliability = episode.tool_reliability
        attributes: dict[str, Any] = {
            semconv.EPISODE_STATUS: episode.status.value,
            semconv.EPISODE_TOOL_CALLS: episode.tool_calls,
            semconv.EPISODE_TOOL_FAILURES: episode.tool_failures,
            semconv.EPISODE_LLM_CALLS: episode.llm_calls,
            semconv.EPISODE_INPUT_TOKENS: episode.input_tokens,
            semconv.EPISODE_OUTPUT_TOKENS: episode.output_tokens,
        }
        if reliability is not None:
            attributes[semconv.EPISODE_TOOL_RELIABILITY] = reliability
        if episode.reward is not None:
            attributes[semconv.EPISODE_REWARD] = episode.reward
        if episode.metadata:
            attributes[semconv.EPISODE_METADATA] = runtime.serializer.to_json(episode.metadata)
        if output is not None and runtime.settings.capture_content:
            attributes[semconv.EPISODE_OUTPUT] = runtime.serializer.to_json(output)
        span.set_attributes(attributes)

    # --- convenience for straight-line code ------------------------------------------------
    def enter(self) -> Episode:
        """:meth:`start` then :meth:`activate`."""
        episode = self.start()
        self.activate()
        return episode

    def exit(self, *, output: Any = None, error: BaseException | None = None, cancelled: bool = False) -> None:
        """:meth:`deactivate` then :meth:`finish`."""
        try:
            self.deactivate()
        finally:
            self.finish(output=output, error=error, cancelled=cancelled)


_UNNAMED = "default"

#: Called (guarded) whenever an episode of its own starts and ``settings.auto_instrument`` is on.
_instrumenters: list[Callable[[], object]] = []


def add_instrumenter(instrument: Callable[[], object]) -> None:
    """Call ``instrument()`` whenever a new episode starts (with ``settings.auto_instrument`` on).

    The adapters register their ``auto_instrument`` here when they are loaded, so that a
    decorated function running a framework's agent is captured without wrapping the agent.
    Registering the same function twice has no effect; a failure is an internal error.

    Example:
        >>> add_instrumenter(lambda: None)  # doctest: +SKIP
    """
    if instrument not in _instrumenters:
        _instrumenters.append(instrument)


def _auto_instrument(runtime: Runtime) -> None:
    for instrument in list(_instrumenters):
        try:
            instrument()
        except Exception as exc:
            runtime.internal_error("auto-instrument", exc)
