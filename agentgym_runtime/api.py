"""The functions of the public API (re-exported by ``agentgym_runtime``).

Example:
    >>> import agentgym_runtime as agentgym
    >>> _ = agentgym.configure(store=":memory:")
    >>> with agentgym.episode(agent="doc", session_id="s-1") as ep:
    ...     pass
    >>> agentgym.last_episode() is ep, ep.status.value
    (True, 'ok')
    >>> agentgym.shutdown()
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Link, SpanKind

# Importing the adapters plugs auto-instrumentation into the episodes that episode() opens.
import agentgym_runtime.adapters  # noqa: F401
from agentgym_runtime import semconv, services
from agentgym_runtime.collectors.export import ExportResult, export_store
from agentgym_runtime.collectors.reliability import reliability_rows
from agentgym_runtime.config import Settings
from agentgym_runtime.errors import ConfigurationError, EpisodeNotFoundError, StoreUnavailableError
from agentgym_runtime.policy.registry import PolicyInfo, PolicyState
from agentgym_runtime.policy.trained import TrainedPolicy
from agentgym_runtime.recording.capture import LlmCall, ToolDefinition, start_llm_call
from agentgym_runtime.recording.context import Episode, current_episode_var, current_policy, last_episode_var
from agentgym_runtime.recording.episodes import _UNNAMED, AgentOptions, AgentRun
from agentgym_runtime.recording.import_guard import refuse_while_importing
from agentgym_runtime.recording.policy import Demonstration, LLMConfig, Policy
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.services import Services


def configure(**settings: Any) -> Services:
    """Configure agentgym-runtime for this process; unspecified settings come from ``AGENTGYM_*``.

    Calling it again flushes and replaces the previous configuration.

    Args:
        **settings: Any field of :class:`~agentgym_runtime.config.Settings`: ``home``, ``store``,
            ``service_name``, ``capture_content``, ``redact``, ``max_attribute_bytes``, ``enabled``, ...

    Returns:
        The services now in use: the recording runtime (``settings``, ``store``, ``flush``,
        ``stats``), the policy ``router`` and registry (``policies``) and the training ``scheduler``.

    Raises:
        ConfigurationError: A setting is unknown or has an invalid value (the message names it).

    Example:
        >>> import agentgym_runtime as agentgym
        >>> agentgym.configure(home="/tmp/agentgym-doc", capture_content=False).settings.capture_content
        False
        >>> agentgym.shutdown()
    """
    from pydantic import ValidationError

    refuse_while_importing("called agentgym.configure()")
    try:
        parsed = Settings(**settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ConfigurationError(f"invalid agentgym settings: {problems}") from None
    return services.configure(parsed)


@contextmanager
def episode(
    session_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    agent: str | None = None,
) -> Iterator[Episode]:
    """Group everything inside the block into one episode (or join the current one).

    Agents called inside the block become turns of this episode. An exception leaving the
    block marks the episode ``error`` and propagates unchanged.

    Args:
        session_id: Conversation or user session (sticky canary routing, grouping).
        metadata: Stored with the episode.
        agent: The episode's agent name; default: the first agent invoked inside it.

    Example:
        >>> import agentgym_runtime as agentgym
        >>> with agentgym.episode(agent="support", metadata={"ticket": 42}) as ep:
        ...     ep.metadata["ticket"]
        42
    """
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ConfigurationError(f"metadata must be a mapping, got {type(metadata).__name__}")
    refuse_while_importing(f"opened an episode of agent {agent or _UNNAMED!r}")
    runtime = services.current().runtime
    run = AgentRun(runtime, AgentOptions(name=agent or _UNNAMED), session_id=session_id, metadata=metadata)
    current = run.enter()
    try:
        yield current
    except BaseException as exc:
        run.exit(error=exc, cancelled=isinstance(exc, GeneratorExit | KeyboardInterrupt))
        raise
    run.exit()


@contextmanager
def llm_call(
    *,
    model: str | None,
    provider: str | None = None,
    input_messages: Any = None,
    system_instructions: Any = None,
    tools: Sequence[ToolDefinition] | None = None,
) -> Iterator[LlmCall]:
    """Record one LLM call of a hand-written agent loop, and the tool calls the model requested.

    Opens the ``chat {model}`` span; inside the block, call ``finish(output_messages=...,
    requested=[RequestedToolCall.from_raw(name, call_id, raw_arguments), ...], input_tokens=...,
    output_tokens=...)`` once the model answered. The requested calls are then matched with the
    tool executions that follow (``@agentgym.tool`` / ``Toolbox.call``): one the agent never
    runs counts as ``not_executed``, malformed arguments as ``invalid_arguments``. Pass the
    ``tools`` offered to the model (``Toolbox.definitions()``) so that training replays know them.
    An exception leaving the block marks the call failed and propagates unchanged; a block left
    without ``finish`` records the call with no answer.

    Args:
        model: The model asked.
        provider: Who serves it (``gen_ai.provider.name``), e.g. ``"openai"``.
        input_messages: The messages sent (recorded when content capture is on).
        system_instructions: The system prompt sent, if separate from the messages.
        tools: The tool definitions offered (``{"name", "description", "parameters"}`` each).

    Example:
        >>> import agentgym_runtime as agentgym
        >>> with agentgym.episode(agent="doc") as ep:
        ...     with agentgym.llm_call(model="m", input_messages=[{"role": "user", "content": "hi"}]) as call:
        ...         call.finish(requested=[agentgym.RequestedToolCall.from_raw("lookup", "c1", '{"id": 1}')])
        >>> ep.llm_calls, ep.outcomes
        (1, {'not_executed': 1})
    """
    call = start_llm_call(
        model=model,
        provider=provider,
        input_messages=input_messages,
        system_instructions=system_instructions,
        tools=tools,
        runtime=services.current().runtime,
    )
    try:
        yield call
    except BaseException as exc:
        call.fail(exc)  # a no-op once finished
        raise
    call.finish()  # a no-op once finished


def reliability(agent: str | None = None, *, by: str = "tool") -> list[dict[str, Any]]:
    """Tool reliability as data: one row per agent and tool (or policy version, or day); flushes first.

    Each row holds ``agent``, ``key`` (the tool name, policy version or day), ``calls``,
    ``successes``, the count of each failure outcome (``unknown_tool``, ``invalid_arguments``,
    ``tool_error``, ``error_result``, ``not_executed``) and ``reliability`` (successes / calls).
    ``agentgym reliability`` prints the same numbers.

    Args:
        agent: Only this agent (default: every agent).
        by: ``"tool"``, ``"policy"`` or ``"day"``.

    Raises:
        ConfigurationError: ``by`` is none of those (the message lists them).

    Example:
        >>> import agentgym_runtime as agentgym, tempfile
        >>> _ = agentgym.configure(home=tempfile.mkdtemp())
        >>> @agentgym.tool
        ... def lookup(order_id: int) -> str:
        ...     return "shipped"
        >>> with agentgym.episode(agent="support"):
        ...     lookup(order_id=7)
        'shipped'
        >>> [(r["key"], r["calls"], r["reliability"]) for r in agentgym.reliability("support")]
        [('lookup', 1, 1.0)]
        >>> agentgym.shutdown()
    """
    current = services.current()
    current.flush()
    rows = reliability_rows(current.store, agent, by)
    for row in rows:
        row["reliability"] = row["successes"] / row["calls"] if row["calls"] else None
    return rows


def current_episode() -> Episode | None:
    """The episode the calling code runs in, or ``None``."""
    return current_episode_var.get()


def last_episode() -> Episode | None:
    """The episode that most recently finished in the calling context.

    That is the later of the last episode finished in this context and the last one finished
    on this thread (an episode run through ``asyncio.run`` finishes in a child context), so
    concurrent threads never see each other's episodes. Only episodes recorded since the
    last :func:`configure` count.
    """
    current = services.peek()
    if current is None:
        return None
    runtime = current.runtime
    candidates = [last_episode_var.get(), runtime.last_episode_in_thread()]
    finished = [e for e in candidates if e is not None and e.runtime_id == id(runtime)]
    if not finished:
        return None
    return max(finished, key=lambda e: e.ended_at or e.started_at)


def feedback(
    episode_id: str | Episode,
    value: float | bool | None,
    name: str = "user_rating",
    comment: str | None = None,
    *,
    label: str | None = None,
) -> str:
    """Attach a score (user rating, thumbs up/down, grader score) to a recorded episode.

    Stored as a ``gen_ai.evaluation.result`` span and a row of the ``feedback`` table.

    Args:
        episode_id: The episode (or its id).
        value: The score; booleans become 1.0 / 0.0. ``None`` only with a ``label``.
        name: What kind of feedback (``gen_ai.evaluation.name``).
        comment: Free text, stored (redacted) with it.
        label: A categorical verdict, e.g. ``"helpful"``.

    Returns:
        The feedback id.

    Raises:
        ConfigurationError: A value or name that cannot be stored.
        EpisodeNotFoundError: No episode with that id was recorded.

    Example:
        >>> import agentgym_runtime as agentgym
        >>> with agentgym.episode(agent="doc") as ep:
        ...     pass
        >>> len(agentgym.feedback(ep, True, name="thumbs"))
        32
    """
    target = episode_id.id if isinstance(episode_id, Episode) else episode_id
    if not isinstance(target, str) or not target.strip():
        raise ConfigurationError(f"episode_id must be a non-empty string or an Episode, got {episode_id!r}")
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"feedback name must be a non-empty string, got {name!r}")
    score: float | None
    if value is None:
        if label is None:
            raise ConfigurationError("feedback needs a value, a label, or both")
        score = None
    elif isinstance(value, bool):
        score = 1.0 if value else 0.0
    elif isinstance(value, int | float):
        try:
            score = float(value)
        except OverflowError:  # an int past float range (10**400): refused, never clamped silently
            raise ConfigurationError(
                f"feedback value must fit a float (|value| < 1.8e308), got an integer of {int(value).bit_length()} bits"
            ) from None
        if not math.isfinite(score):
            raise ConfigurationError(f"feedback value must be a finite number, got {value!r}")
    else:
        raise ConfigurationError(f"feedback value must be a number or a bool, got {type(value).__name__}")
    runtime = services.current().runtime
    link_context = runtime.recent_episode_context(target)
    if link_context is None and not _episode_recorded(runtime, target):
        raise EpisodeNotFoundError(f"no episode {target!r} has been recorded")
    feedback_id = uuid.uuid4().hex
    attributes: dict[str, Any] = {
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_EVALUATION,
        semconv.GEN_AI_EVALUATION_NAME: name,
        semconv.FEEDBACK_ID: feedback_id,
        semconv.FEEDBACK_TARGET_EPISODE: target,
        semconv.EPISODE_ID: target,
    }
    if score is not None:
        attributes[semconv.GEN_AI_EVALUATION_SCORE_VALUE] = score
    if label is not None:
        attributes[semconv.GEN_AI_EVALUATION_SCORE_LABEL] = runtime.serializer.text(label)
    if comment is not None:
        attributes[semconv.FEEDBACK_COMMENT] = runtime.serializer.text(comment)
    links = [Link(link_context)] if link_context is not None else []
    # A root span of its own: feedback arrives later, outside whatever the caller is doing.
    span = runtime.tracer.start_span(
        semconv.FEEDBACK_SPAN_NAME,
        context=otel_context.Context(),
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        links=links,
    )
    span.end()
    return feedback_id


def _episode_recorded(runtime: Runtime, episode_id: str) -> bool:
    try:
        query = "SELECT count(*) FROM episodes WHERE episode_id = ?"
        rows = runtime.store.query(query, [episode_id])
        if rows and rows[0][0]:
            return True
        runtime.flush()
        rows = runtime.store.query(query, [episode_id])
        return bool(rows and rows[0][0])
    except StoreUnavailableError:
        return True  # cannot check now (store locked or unwritable): accept rather than lose it


def flush(timeout_s: float = 30.0) -> bool:
    """Write everything recorded so far to the store; ``False`` if part of it could not be.

    Example:
        >>> import agentgym_runtime as agentgym
        >>> agentgym.flush()
        True
    """
    return services.current().flush(timeout_s)


def shutdown(timeout_s: float = 30.0) -> None:
    """Flush and stop recording (also done automatically at interpreter exit)."""
    current = services.peek()
    if current is not None:
        current.shutdown(timeout_s)


def stats() -> dict[str, Any]:
    """Counters of the recording pipeline: spans enqueued, written, pending, lost, failures."""
    return services.current().stats()


def sql(query: str, params: Sequence[Any] | None = None, *, arrow: bool = False) -> Any:
    """Run a read-only SQL query on the trace store, also while the service records.

    In the process that owns the store the query runs on it directly; in the other workers
    of a shared home (or with ``AGENTGYM_COLLECTOR_ENDPOINT``) it is routed to the owner.

    Args:
        query: One ``SELECT`` statement (tables ``episodes``, ``spans``, ``feedback``; views
            ``tool_calls``, ``reliability``, ``llm_calls``).
        params: Values for ``?`` placeholders.
        arrow: Return a ``pyarrow.Table`` instead of a list of dicts.

    Raises:
        ConfigurationError: Not a single read statement, or the query failed (DuckDB's reason).

    Example:
        >>> import agentgym_runtime as agentgym
        >>> _ = agentgym.configure(store=":memory:")
        >>> agentgym.sql("SELECT count(*) AS n FROM episodes WHERE agent = ?", params=["bot"])
        [{'n': 0}]
        >>> agentgym.shutdown()
    """
    from agentgym_runtime.collectors.otlp.query import sql_via

    runtime = services.current().runtime
    runtime.flush()
    return sql_via(
        runtime.store,
        runtime.collector_endpoint(),
        query,
        params,
        token=runtime.settings.collector_token,
        arrow=arrow,
    )


def export(
    path: str | Path,
    format: str = "parquet",
    agent: str | None = None,
    since: datetime | timedelta | str | None = None,
) -> ExportResult:
    """Export recorded traces for offline analysis (flushes first).

    Args:
        path: A ``.parquet`` file (spans), a directory (Parquet of every table), or a file
            for ``jsonl`` / ``otlp-json``.
        format: ``"parquet"``, ``"jsonl"`` (chat format, one episode a line) or ``"otlp-json"``.
        agent: Only this agent's episodes.
        since: Only what started since then: a datetime, a timedelta, ISO text, or ``"6h"``.

    Returns:
        What was written.

    Example:
        >>> import agentgym_runtime as agentgym, tempfile, os
        >>> result = agentgym.export(os.path.join(tempfile.mkdtemp(), "episodes.jsonl"), format="jsonl")
        >>> result.format
        'jsonl'
    """
    current = services.current()
    current.flush()
    return export_store(current.store, path, format, agent=agent, since=since)


def register_policy(
    agent_name: str,
    *,
    system_prompt: str | None = None,
    tool_descriptions: Mapping[str, str] | None = None,
    demonstrations: list[Demonstration | Mapping[str, Any]] | None = None,
    llm: LLMConfig | Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    trainer: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    parent_version: int | None = None,
    adapter_dir: str | Path | None = None,
) -> Policy:
    """Register a new version of an agent's policy as a ``candidate`` (nothing serves it yet).

    The version is written as an artifact under ``<home>/policies/<agent>/v<N>/`` (JSON, and the
    safetensors files of ``adapter_dir``, with sha256 digests) and recorded in the ``policies`` table.

    Args:
        agent_name: The agent (as named by ``train_online``).
        system_prompt: Replaces the agent's system prompt.
        tool_descriptions: Per tool name, the description the model sees.
        demonstrations: Few-shot examples (``Demonstration`` or dicts with input/tool_calls/output).
        llm: Model routing (endpoint, model, sampling, adapter).
        metadata: Free-form data stored with it.
        trainer: What produced it (default ``"manual"``).
        metrics: Numbers measured when it was produced.
        parent_version: The version it derives from (default: the live one).
        adapter_dir: A directory whose ``*.safetensors`` files are copied into the artifact's ``adapter/``.

    Returns:
        The new policy (its ``version`` is the next free number).

    Raises:
        ConfigurationError: An invalid agent name or field.
        PolicyArtifactError: ``adapter_dir`` is unusable.

    Example:
        >>> import agentgym_runtime as agentgym, tempfile
        >>> _ = agentgym.configure(home=tempfile.mkdtemp())
        >>> agentgym.register_policy("support", system_prompt="Look the order up first.").ref
        'support@v1'
        >>> agentgym.shutdown()
    """
    return services.current().policies.register(
        agent_name,
        system_prompt=system_prompt,
        tool_descriptions=tool_descriptions,
        demonstrations=demonstrations,
        llm=llm,
        metadata=metadata,
        trainer=trainer,
        metrics=metrics,
        parent_version=parent_version,
        adapter_dir=adapter_dir,
        actor="api",
    )


def promote(
    agent_name: str, version: int | str, *, canary: float | None = None, reason: str | None = None
) -> PolicyState:
    """Make ``version`` live now, or with ``canary=share`` start serving it to that share of sessions.

    Every new call of the agent (in this process at once, in other processes within a second)
    pins the new version; calls already running keep theirs.

    Raises:
        PolicyNotFoundError: Unknown agent or version (the message lists what exists).
        PolicyArtifactError: The artifact is corrupt or tampered with (the current policy stays live).
        PolicyConflictError: It is live already, or another change won a race with this one.

    Example:
        >>> import agentgym_runtime as agentgym, tempfile
        >>> _ = agentgym.configure(home=tempfile.mkdtemp())
        >>> v1 = agentgym.register_policy("support", system_prompt="Be exact.")
        >>> agentgym.promote("support", v1.version).live
        1
        >>> agentgym.shutdown()
    """
    registry = services.current().policies
    expected = registry.state(agent_name).sequence
    if canary is not None:
        return registry.start_canary(
            agent_name, version, canary, actor="api", reason=reason or "manual canary", expected_sequence=expected
        )
    return registry.promote(
        agent_name, version, actor="api", reason=reason or "manual promotion", expected_sequence=expected
    )


def rollback(agent_name: str, *, reason: str | None = None) -> PolicyState:
    """Roll back the agent's canary if it has one, else its live version (to the previous live one).

    Raises:
        PolicyNotFoundError: Unknown agent.
        PolicyConflictError: Nothing to roll back, or another change won a race with this one.

    Example:
        >>> import agentgym_runtime as agentgym, tempfile
        >>> _ = agentgym.configure(home=tempfile.mkdtemp())
        >>> _ = agentgym.promote("support", agentgym.register_policy("support", system_prompt="x").version)
        >>> agentgym.rollback("support").live
        0
        >>> agentgym.shutdown()
    """
    registry = services.current().policies
    expected = registry.state(agent_name).sequence
    return registry.rollback(agent_name, actor="api", reason=reason or "manual rollback", expected_sequence=expected)


def policies(agent_name: str) -> list[PolicyInfo]:
    """Every version of the agent's policy with its status, oldest first (v0 is the baseline).

    Raises:
        PolicyNotFoundError: No policies registered for the agent (the message lists those that are).

    Example:
        >>> import agentgym_runtime as agentgym, tempfile
        >>> _ = agentgym.configure(home=tempfile.mkdtemp())
        >>> _ = agentgym.register_policy("support", system_prompt="x")
        >>> [(p.version, p.status.value) for p in agentgym.policies("support")]
        [(0, 'live'), (1, 'candidate')]
        >>> agentgym.shutdown()
    """
    return services.current().policies.policies(agent_name)


def served_model(default: str | None = None) -> str | None:
    """The model name the current call should send: the pinned policy's ``llm.model``, else ``default``.

    With an inference server configured (``AGENTGYM_INFERENCE_SERVER_URL``), a version that carries
    a LoRA adapter is served there under its own name (``support-v3-<digest>``): read this per call
    to send that name, and the agent's own model otherwise (the baseline, a version without
    adapter, outside an episode, or after a rollback). The server's OpenAI-compatible URL is the
    policy's ``llm.endpoint``.

    Example:
        >>> import agentgym_runtime as agentgym, tempfile
        >>> _ = agentgym.configure(home=tempfile.mkdtemp())
        >>> with agentgym.episode(agent="support"):
        ...     agentgym.served_model("Qwen/Qwen2.5-0.5B-Instruct")
        'Qwen/Qwen2.5-0.5B-Instruct'
        >>> agentgym.shutdown()
    """
    policy = current_policy()
    if policy is not None and policy.llm is not None and policy.llm.model:
        return policy.llm.model
    return default


def load_policy(ref: str) -> TrainedPolicy:
    """Load a registered policy to seed a fresh agent: ``"agent@v3"``, ``"agent@live"``, ``"agent@canary"``.

    A bare ``"agent"`` means its live version.

    Returns:
        A :class:`~agentgym_runtime.policy.trained.TrainedPolicy` with ``to_langchain``,
        ``to_autogen``, ``to_crewai``, ``to_ag2`` and ``apply``.

    Raises:
        PolicyNotFoundError: Unknown agent or version (the message lists what exists).
        PolicyArtifactError: The artifact is corrupt or tampered with.

    Example:
        >>> import agentgym_runtime as agentgym, tempfile
        >>> _ = agentgym.configure(home=tempfile.mkdtemp())
        >>> _ = agentgym.register_policy("support", system_prompt="Be exact.")
        >>> agentgym.load_policy("support@v1").system_prompt
        'Be exact.'
        >>> agentgym.shutdown()
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigurationError(f"a policy reference looks like 'agent@v3' or 'agent@live', got {ref!r}")
    agent, _, which = ref.strip().partition("@")
    registry = services.current().policies
    version = registry.resolve_ref(agent, which or "live")
    policy = registry.load(agent, version)
    return TrainedPolicy(policy, registry.artifact_path(agent, version) if version else None)


__all__ = [
    "configure",
    "current_episode",
    "current_policy",
    "episode",
    "export",
    "feedback",
    "flush",
    "last_episode",
    "llm_call",
    "load_policy",
    "policies",
    "promote",
    "register_policy",
    "reliability",
    "rollback",
    "served_model",
    "shutdown",
    "stats",
]
