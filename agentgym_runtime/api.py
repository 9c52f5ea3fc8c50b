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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Link, SpanKind

from agentgym_runtime import semconv
from agentgym_runtime.collectors.export import ExportResult, export_store
from agentgym_runtime.config import Settings
from agentgym_runtime.context import Episode, current_agent_var, current_episode_var, last_episode_var
from agentgym_runtime.episodes import _UNNAMED, AgentOptions, AgentRun
from agentgym_runtime.errors import ConfigurationError, EpisodeNotFoundError, StoreUnavailableError
from agentgym_runtime.policy.model import Policy
from agentgym_runtime.runtime import Runtime, get_runtime, peek_runtime, replace_runtime


def configure(**settings: Any) -> Runtime:
    """Configure agentgym-runtime for this process; unspecified settings come from ``AGENTGYM_*``.

    Calling it again flushes and replaces the previous configuration.

    Args:
        **settings: Any field of :class:`~agentgym_runtime.config.Settings`: ``home``, ``store``,
            ``service_name``, ``capture_content``, ``redact``, ``max_attribute_bytes``, ``enabled``, ...

    Returns:
        The runtime now in use.

    Raises:
        ConfigurationError: A setting is unknown or has an invalid value (the message names it).

    Example:
        >>> import agentgym_runtime as agentgym
        >>> agentgym.configure(home="/tmp/agentgym-doc", capture_content=False).settings.capture_content
        False
        >>> agentgym.shutdown()
    """
    from pydantic import ValidationError

    try:
        parsed = Settings(**settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ConfigurationError(f"invalid agentgym settings: {problems}") from None
    return replace_runtime(parsed)


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
    runtime = get_runtime()
    run = AgentRun(runtime, AgentOptions(name=agent or _UNNAMED), session_id=session_id, metadata=metadata)
    current = run.enter()
    try:
        yield current
    except BaseException as exc:
        run.exit(error=exc, cancelled=isinstance(exc, GeneratorExit | KeyboardInterrupt))
        raise
    run.exit()


def current_policy() -> Policy | None:
    """The policy pinned for the agent running now (``None`` outside an episode).

    Plain-Python agents read it to apply prompt, demonstrations and model routing themselves;
    framework adapters apply it for you.

    Example:
        >>> import agentgym_runtime as agentgym
        >>> with agentgym.episode(agent="doc"):
        ...     agentgym.current_policy().version
        0
    """
    scope = current_agent_var.get()
    if scope is not None:
        return scope.policy
    current = current_episode_var.get()
    return current.policy if current is not None else None


def current_episode() -> Episode | None:
    """The episode the calling code runs in, or ``None``."""
    return current_episode_var.get()


def last_episode() -> Episode | None:
    """The episode that most recently finished in this context (else in this process)."""
    found = last_episode_var.get()
    if found is not None:
        return found
    runtime = peek_runtime()
    return runtime.last_episode if runtime is not None else None


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
        score = float(value)
        if not math.isfinite(score):
            raise ConfigurationError(f"feedback value must be a finite number, got {value!r}")
    else:
        raise ConfigurationError(f"feedback value must be a number or a bool, got {type(value).__name__}")
    runtime = get_runtime()
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
        attributes[semconv.GEN_AI_EVALUATION_SCORE_LABEL] = str(label)
    if comment is not None:
        attributes[semconv.FEEDBACK_COMMENT] = runtime.serializer.redact_text(runtime.serializer.truncate(str(comment)))
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
    return get_runtime().flush(timeout_s)


def shutdown(timeout_s: float = 30.0) -> None:
    """Flush and stop recording (also done automatically at interpreter exit)."""
    runtime = peek_runtime()
    if runtime is not None:
        runtime.shutdown(timeout_s)


def stats() -> dict[str, Any]:
    """Counters of the recording pipeline: spans enqueued, written, pending, lost, failures."""
    return get_runtime().stats()


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
    runtime = get_runtime()
    runtime.flush()
    return export_store(runtime.store, path, format, agent=agent, since=since)
