"""Fall back to the incumbent policy when a routed LLM endpoint fails (shared by the framework adapters).

A policy that sets ``llm`` (endpoint, model, LoRA adapter) routes the agent's LLM calls to its own
model. When such a call fails because that model cannot be reached (see
:func:`is_endpoint_failure`), the adapter:

1. reports the failure with :func:`agentgym_runtime.policy.router.fallback_to_incumbent` (the
   router counts it, rolls the version back after ``RouterConfig.fallback_failures`` failures,
   re-pins the incumbent and marks the agent span with ``agentgym.policy.fallback_from``); the
   episode keeps the incumbent for its later LLM calls (:func:`resume_fallback`), so a dead
   endpoint costs one failed call per episode;
2. retries the same call **once** under the incumbent policy and returns that result;
3. if the incumbent fails too with an endpoint failure, re-raises the *original* error object,
   so the host sees what the routed call raised (an error of another kind raised by the retry,
   e.g. a ``ValueError`` in the host's own model code, propagates as it is).

Anything else (a ``TypeError`` / ``ValueError`` from the host's code, cancellation, a policy
without ``llm``, a seeded or baseline policy) propagates unchanged and is never retried.
Streams fall back only while nothing has been yielded: once the host received a chunk, a
failure propagates.

The adapters call :func:`call_with_fallback`, :func:`acall_with_fallback`,
:func:`stream_with_fallback` or :func:`astream_with_fallback` with an ``attempt(policy)``
function that makes the call under the given policy; they check ``policy.llm`` first, so a
policy that routes nothing costs one attribute check.

Example:
    >>> from agentgym_runtime.recording.policy import LLMConfig, Policy
    >>> routed = Policy(agent="bot", version=2, llm=LLMConfig(endpoint="http://10.0.0.9/v1"))
    >>> call_with_fallback(routed, lambda policy: f"served by v{policy.version}")
    'served by v2'
    >>> is_endpoint_failure(ConnectionRefusedError()), is_endpoint_failure(ValueError("bad input"))
    (True, False)
"""

from __future__ import annotations

import socket
import threading
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import nullcontext
from typing import TypeVar

from agentgym_runtime import services
from agentgym_runtime.adapters.streams import aiterate_within
from agentgym_runtime.policy.router import fallback_to_incumbent
from agentgym_runtime.recording.context import AgentScope, Episode, current_agent_var, current_episode_var
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.runtime import get_runtime

T = TypeVar("T")

#: Exception classes (by top-level package and class name, anywhere in the error's MRO) that mean
#: "the endpoint could not be reached or did not answer": connection refused or reset, DNS,
#: timeouts, broken HTTP framing. Matched by name so that no client library is imported here.
_TRANSPORT_ERRORS: Mapping[str, frozenset[str]] = {
    # APITimeoutError derives from APIConnectionError; litellm's errors derive from openai's.
    "openai": frozenset({"APIConnectionError"}),
    "anthropic": frozenset({"APIConnectionError"}),
    "httpx": frozenset({"TransportError"}),
    "httpcore": frozenset({"NetworkError", "TimeoutException", "ProtocolError"}),
    "requests": frozenset({"ConnectionError", "Timeout"}),
    "urllib3": frozenset({"TimeoutError", "NewConnectionError", "MaxRetryError", "ProtocolError"}),
    "aiohttp": frozenset({"ClientConnectionError"}),
    "urllib": frozenset({"URLError"}),
}
#: Packages whose errors may carry an HTTP status that decides the matter (litellm's errors carry
#: one too, and derive from openai's).
_CLIENT_PACKAGES = frozenset(_TRANSPORT_ERRORS) | {"litellm"}
#: HTTP statuses that say the routed endpoint cannot serve (server errors, overload, the model or
#: adapter not deployed there, a key that endpoint refuses). 400 / 413 / 422 are left out: they
#: are about the request itself, which the incumbent would be sent as well.
_ENDPOINT_STATUSES = frozenset({401, 403, 404, 408, 429})
#: Per running episode, (agent, failed version) -> the incumbent it fell back to (see
#: :func:`resume_fallback`); entries go with the episode object.
_fallbacks: weakref.WeakKeyDictionary[Episode, dict[tuple[str, int], Policy]] = weakref.WeakKeyDictionary()
_fallbacks_lock = threading.Lock()
#: How many explicit ``raise ... from`` links are followed (a framework wrapping a client error,
#: e.g. CrewAI raising ``ValueError`` from openai's ``NotFoundError``).
_MAX_CAUSES = 4


def _http_status(error: BaseException) -> int | None:
    try:
        for attribute in ("status_code", "status", "code"):
            value = getattr(error, attribute, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
        response = getattr(error, "response", None)
        for attribute in ("status_code", "status"):
            value = getattr(response, attribute, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    except Exception:  # a client's lazy property may raise; then there is no status to read
        return None
    return None


def _is_endpoint_failure(error: BaseException) -> bool:
    if isinstance(error, ConnectionError | TimeoutError | socket.gaierror):
        return True  # asyncio.TimeoutError and socket.timeout are TimeoutError on 3.11
    client_classes = [
        (cls.__module__.partition(".")[0], cls.__name__)
        for cls in type(error).__mro__
        if cls.__module__.partition(".")[0] in _CLIENT_PACKAGES
    ]
    if not client_classes:
        return False  # the host's own error (ValueError, TypeError, KeyError, ...)
    status = _http_status(error)
    if status is not None:
        return status >= 500 or status in _ENDPOINT_STATUSES
    return any(name in _TRANSPORT_ERRORS.get(package, ()) for package, name in client_classes)


def is_endpoint_failure(error: BaseException) -> bool:
    """Whether ``error`` means the LLM endpoint could not serve the call (so a fallback may help).

    Counts: the built-in ``ConnectionError`` (refused, reset, broken pipe), ``TimeoutError``
    (``asyncio.TimeoutError`` included) and ``socket.gaierror`` (DNS); the transport errors of
    the usual HTTP / LLM clients (openai, anthropic, litellm, httpx, httpcore, requests, urllib3,
    aiohttp, urllib), recognised by class name without importing them; and HTTP status errors
    of those clients with status 401, 403, 404, 408, 429 or 5xx. An error raised ``from`` such an
    error counts too. Everything else, notably the host's own ``TypeError`` / ``ValueError`` and
    any ``BaseException`` that is not an ``Exception`` (cancellation), does not.

    Example:
        >>> is_endpoint_failure(TimeoutError()), is_endpoint_failure(TypeError("bug"))
        (True, False)
        >>> try:
        ...     try:
        ...         raise ConnectionResetError("peer reset")
        ...     except ConnectionResetError as exc:
        ...         raise RuntimeError("model call failed") from exc
        ... except RuntimeError as wrapped:
        ...     is_endpoint_failure(wrapped)
        True
    """
    current: BaseException | None = error
    for _ in range(_MAX_CAUSES + 1):
        if current is None or not isinstance(current, Exception):
            return False
        if _is_endpoint_failure(current):
            return True
        current = current.__cause__
    return False


def fallback_policy(policy: Policy, error: BaseException) -> Policy | None:
    """The incumbent to retry ``policy``'s failed LLM call with, or ``None`` to let ``error`` propagate.

    Only a policy that routes the model (``llm`` set), pinned for the agent acting now (not a
    seeded one), failing with an endpoint failure falls back; the failure is then reported to
    the router (see :func:`agentgym_runtime.policy.router.fallback_to_incumbent`).

    Example:
        >>> from agentgym_runtime.recording.policy import LLMConfig
        >>> routed = Policy(agent="bot", version=2, llm=LLMConfig(model="tuned"))
        >>> fallback_policy(routed, ValueError("the host's bug")) is None
        True
    """
    if policy.llm is None or not is_endpoint_failure(error):
        return None
    scope = current_agent_var.get()
    if scope is None or (scope.policy.agent, scope.policy.version) != (policy.agent, policy.version):
        return None  # outside an episode, or a policy the router did not pin (seeded agents)
    try:
        incumbent = fallback_to_incumbent(error, services.current().router)
    except Exception as exc:
        get_runtime().internal_error("policy fallback", exc)
        return None
    episode = current_episode_var.get()
    if incumbent is not None and episode is not None:
        with _fallbacks_lock:
            _fallbacks.setdefault(episode, {})[(policy.agent, policy.version)] = incumbent
    return incumbent


def resume_fallback(policy: Policy) -> Policy:
    """``policy``, or the incumbent the current episode already fell back to from it.

    :func:`fallback_to_incumbent` re-pins the incumbent in the context where the call failed, but
    frameworks run steps in copies of the context (LangGraph runs every node in its own), so a
    later LLM call of the same episode would pin the failed version again and hit the dead
    endpoint once per call. Adapters call this for a routed policy (``llm`` set) when they pick the
    policy of an LLM call: an episode that fell back keeps the incumbent (re-pinned in this
    context, so the call's spans carry its version) for the rest of the episode.

    Example:
        >>> from agentgym_runtime.recording.policy import LLMConfig
        >>> routed = Policy(agent="bot", version=2, llm=LLMConfig(model="tuned"))
        >>> resume_fallback(routed) is routed  # outside an episode nothing fell back
        True
    """
    episode = current_episode_var.get()
    if episode is None:
        return policy
    with _fallbacks_lock:
        done = _fallbacks.get(episode)
        incumbent = done.get((policy.agent, policy.version)) if done else None
    if incumbent is None:
        return policy
    scope = current_agent_var.get()
    if scope is not None and (scope.policy.agent, scope.policy.version) == (policy.agent, policy.version):
        current_agent_var.set(AgentScope(scope.name, incumbent))
    return incumbent


def call_with_fallback(policy: Policy, attempt: Callable[[Policy], T]) -> T:
    """``attempt(policy)``; on an endpoint failure, ``attempt(incumbent)`` once (module docstring).

    Example:
        >>> from agentgym_runtime.recording.policy import LLMConfig
        >>> call_with_fallback(Policy(agent="a", version=1, llm=LLMConfig(model="m")), lambda p: p.version)
        1
    """
    try:
        return attempt(policy)
    except Exception as exc:
        incumbent = fallback_policy(policy, exc)
        if incumbent is None:
            raise
        failure = exc
    try:
        return attempt(incumbent)
    except Exception as second:
        if not is_endpoint_failure(second):
            raise
    # Raised outside the handler so the retry's error is not chained onto the original.
    raise failure


async def acall_with_fallback(policy: Policy, attempt: Callable[[Policy], Awaitable[T]]) -> T:
    """The ``async`` form of :func:`call_with_fallback`.

    Example:
        >>> import asyncio
        >>> from agentgym_runtime.recording.policy import LLMConfig
        >>> async def answer(policy):
        ...     return policy.version
        >>> asyncio.run(acall_with_fallback(Policy(agent="a", version=1, llm=LLMConfig(model="m")), answer))
        1
    """
    try:
        return await attempt(policy)
    except Exception as exc:
        incumbent = fallback_policy(policy, exc)
        if incumbent is None:
            raise
        failure = exc
    try:
        return await attempt(incumbent)
    except Exception as second:
        if not is_endpoint_failure(second):
            raise
    raise failure


def _first(attempt: Callable[[Policy], Iterable[T]], policy: Policy) -> tuple[Iterator[T], list[T]]:
    """Start ``attempt(policy)`` and take its first item (none: an empty stream)."""
    iterator = iter(attempt(policy))
    for item in iterator:
        return iterator, [item]
    return iterator, []


def stream_with_fallback(policy: Policy, attempt: Callable[[Policy], Iterable[T]]) -> Iterator[T]:
    """Stream ``attempt(policy)``; fall back (once) only if it fails before its first item.

    Example:
        >>> from agentgym_runtime.recording.policy import LLMConfig
        >>> list(stream_with_fallback(Policy(agent="a", version=1, llm=LLMConfig(model="m")), lambda p: "ab"))
        ['a', 'b']
    """
    fallback: tuple[Exception, Policy] | None = None
    try:
        iterator, first = _first(attempt, policy)
    except Exception as exc:
        incumbent = fallback_policy(policy, exc)
        if incumbent is None:
            raise
        fallback = (exc, incumbent)
    if fallback is not None:
        failure, incumbent = fallback
        retried: tuple[Iterator[T], list[T]] | None = None
        try:
            retried = _first(attempt, incumbent)
        except Exception as second:
            if not is_endpoint_failure(second):
                raise
        if retried is None:
            raise failure  # outside the handler: the retry's error is not chained onto it
        iterator, first = retried
    if first:
        yield first[0]
        yield from iterator  # from here on a failure reaches the host: it has seen output


async def _afirst(attempt: Callable[[Policy], AsyncIterable[T]], policy: Policy) -> tuple[AsyncIterator[T], list[T]]:
    """Start ``attempt(policy)`` and await its first item (none: an empty stream)."""
    iterator = attempt(policy).__aiter__()
    try:
        return iterator, [await iterator.__anext__()]
    except StopAsyncIteration:
        return iterator, []


async def astream_with_fallback(
    policy: Policy, attempt: Callable[[Policy], AsyncIterable[T]]
) -> AsyncGenerator[T, None]:
    """The ``async`` form of :func:`stream_with_fallback`.

    Example:
        >>> import asyncio
        >>> from agentgym_runtime.recording.policy import LLMConfig
        >>> async def chunks(policy):
        ...     yield "a"
        ...     yield "b"
        >>> async def collect():
        ...     routed = Policy(agent="a", version=1, llm=LLMConfig(model="m"))
        ...     return [c async for c in astream_with_fallback(routed, chunks)]
        >>> asyncio.run(collect())
        ['a', 'b']
    """
    fallback: tuple[Exception, Policy] | None = None
    try:
        iterator, first = await _afirst(attempt, policy)
    except Exception as exc:
        incumbent = fallback_policy(policy, exc)
        if incumbent is None:
            raise
        fallback = (exc, incumbent)
    if fallback is not None:
        failure, incumbent = fallback
        retried: tuple[AsyncIterator[T], list[T]] | None = None
        try:
            retried = await _afirst(attempt, incumbent)
        except Exception as second:
            if not is_endpoint_failure(second):
                raise
        if retried is None:
            raise failure
        iterator, first = retried
    if first:
        yield first[0]
    # Closes the model's stream when the consumer stops early.
    async for item in aiterate_within(nullcontext, iterator):
        yield item


__all__ = [
    "acall_with_fallback",
    "astream_with_fallback",
    "call_with_fallback",
    "fallback_policy",
    "is_endpoint_failure",
    "resume_fallback",
    "stream_with_fallback",
]
