"""Run a callable inside an :class:`~agentgym_runtime.recording.episodes.AgentRun`, never changing its result.

The four shapes of agent entry point (plain, coroutine, generator, async
generator) each get one runner here, shared by the decorator and by every
adapter's proxy. Whatever the middleware does before or after the call is
guarded: if it fails, the failure is logged and counted, and the agent's own
return value or exception passes through untouched.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from enum import Enum
from typing import Any, TypeVar

from agentgym_runtime.recording.episodes import AgentOptions, AgentRun
from agentgym_runtime.recording.import_guard import refuse_while_importing
from agentgym_runtime.recording.runtime import Runtime, get_runtime

T = TypeVar("T")

_CANCELLED = (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)


class CallKind(Enum):
    """The shape of an entry point."""

    SYNC = "sync"
    ASYNC = "async"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async_generator"

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> CallKind:
        """Infer the shape of ``fn`` from how it is defined."""
        target = inspect.unwrap(fn)
        if inspect.isasyncgenfunction(target):
            return cls.ASYNC_GENERATOR
        if inspect.iscoroutinefunction(target):
            return cls.ASYNC
        if inspect.isgeneratorfunction(target):
            return cls.GENERATOR
        call = getattr(target, "__call__", None)  # noqa: B004 - callable objects with async __call__
        if call is not None and not inspect.isfunction(target) and inspect.iscoroutinefunction(call):
            return cls.ASYNC
        return cls.SYNC


def _begin(options: AgentOptions, call_input: Any, *, per_step: bool) -> tuple[Runtime | None, AgentRun | None]:
    """Open a run: bound to this context for a call, or unbound for a generator (bound per step)."""
    refuse_while_importing(f"ran agent {options.name!r}")
    runtime = get_runtime()
    if not runtime.settings.enabled:
        return None, None
    run = AgentRun(runtime, options, call_input=call_input)
    try:
        (run.start if per_step else run.enter)()
    except Exception as exc:
        runtime.internal_error("episode start", exc)
        return runtime, None
    return runtime, run


def _end(
    runtime: Runtime, run: AgentRun, *, per_step: bool, output: Any = None, error: BaseException | None = None
) -> None:
    """Close a run opened by :func:`_begin` (``per_step`` as there), guarding the host from failures."""
    close = run.finish if per_step else run.exit
    try:
        close(output=output, error=error, cancelled=isinstance(error, _CANCELLED))
    except Exception as exc:
        runtime.internal_error("episode end", exc)


def _step_guard(runtime: Runtime, action: Callable[[], None], where: str) -> bool:
    try:
        action()
        return True
    except Exception as exc:
        runtime.internal_error(where, exc)
        return False


class _StepBinding:
    """Binds a generator's run to the current context for one step (sync and async generators alike).

    A plain class rather than ``@contextmanager``: a step's ``StopIteration`` must pass through
    ``__exit__`` untouched.
    """

    __slots__ = ("bound", "run", "runtime")

    def __init__(self, runtime: Runtime, run: AgentRun) -> None:
        self.runtime = runtime
        self.run = run
        self.bound = False

    def __enter__(self) -> None:
        self.bound = _step_guard(self.runtime, self.run.activate, "episode bind")

    def __exit__(self, *exc_info: object) -> None:
        if self.bound:
            _step_guard(self.runtime, self.run.deactivate, "episode unbind")


def call_sync(
    options: AgentOptions, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], call_input: Any
) -> T:
    """Call ``fn`` inside an episode and return exactly what it returns."""
    runtime, run = _begin(options, call_input, per_step=False)
    if runtime is None or run is None:
        return fn(*args, **kwargs)
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        _end(runtime, run, per_step=False, error=exc)
        raise
    _end(runtime, run, per_step=False, output=result)
    return result


async def call_async(
    options: AgentOptions,
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call_input: Any,
) -> T:
    """Await ``fn`` inside an episode and return exactly what it returns."""
    runtime, run = _begin(options, call_input, per_step=False)
    if runtime is None or run is None:
        return await fn(*args, **kwargs)
    try:
        result = await fn(*args, **kwargs)
    except BaseException as exc:
        _end(runtime, run, per_step=False, error=exc)
        raise
    _end(runtime, run, per_step=False, output=result)
    return result


def iterate_sync(
    options: AgentOptions,
    fn: Callable[..., Iterator[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call_input: Any,
) -> Iterator[T]:
    """Drive the generator ``fn`` returns inside one episode, binding it around each step."""
    runtime, run = _begin(options, call_input, per_step=True)
    if runtime is None or run is None:
        yield from fn(*args, **kwargs)
        return
    items: list[Any] = []
    step = _StepBinding(runtime, run)
    try:
        with step:
            iterator = iter(fn(*args, **kwargs))
    except BaseException as exc:
        _end(runtime, run, per_step=True, error=exc)
        raise
    error: BaseException | None = None
    try:
        while True:
            try:
                with step:
                    item = next(iterator)
            except StopIteration:
                break
            _remember(items, item)
            yield item
    except BaseException as exc:
        error = exc
        raise
    finally:
        close = getattr(iterator, "close", None)
        if error is not None and close is not None:
            try:
                close()
            except Exception:
                pass
        _end(runtime, run, per_step=True, output=items if error is None else None, error=error)


async def iterate_async(
    options: AgentOptions,
    fn: Callable[..., AsyncIterator[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call_input: Any,
) -> AsyncIterator[T]:
    """Drive the async generator ``fn`` returns inside one episode, binding it around each step."""
    runtime, run = _begin(options, call_input, per_step=True)
    if runtime is None or run is None:
        async for item in fn(*args, **kwargs):
            yield item
        return
    items: list[Any] = []
    step = _StepBinding(runtime, run)
    try:
        with step:
            iterator = fn(*args, **kwargs).__aiter__()
    except BaseException as exc:
        _end(runtime, run, per_step=True, error=exc)
        raise
    error: BaseException | None = None
    try:
        while True:
            try:
                with step:
                    item = await iterator.__anext__()
            except StopAsyncIteration:
                break
            _remember(items, item)
            yield item
    except BaseException as exc:
        error = exc
        raise
    finally:
        aclose = getattr(iterator, "aclose", None)
        if error is not None and aclose is not None:
            try:
                await aclose()
            except Exception:
                pass
        _end(runtime, run, per_step=True, output=items if error is None else None, error=error)


_MAX_REMEMBERED_ITEMS = 256


def _remember(items: list[Any], item: Any) -> None:
    # The streamed output recorded on the episode is bounded; the caller still gets every item.
    if len(items) < _MAX_REMEMBERED_ITEMS:
        items.append(item)


def run_kind(
    kind: CallKind,
    options: AgentOptions,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call_input: Any,
) -> Any:
    """Dispatch to the runner for ``kind``."""
    if kind is CallKind.ASYNC:
        return call_async(options, fn, args, kwargs, call_input)
    if kind is CallKind.GENERATOR:
        return iterate_sync(options, fn, args, kwargs, call_input)
    if kind is CallKind.ASYNC_GENERATOR:
        return iterate_async(options, fn, args, kwargs, call_input)
    return call_sync(options, fn, args, kwargs, call_input)
