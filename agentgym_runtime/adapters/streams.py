"""Generators that run each step inside a context (a context variable must not stay set across ``yield``).

Example:
    >>> from contextlib import nullcontext
    >>> list(iterate_within(nullcontext, iter("ab")))
    ['a', 'b']
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

T = TypeVar("T")


def iterate_within(enter: Callable[[], AbstractContextManager[Any]], iterator: Iterator[T]) -> Iterator[T]:
    """Yield ``iterator``'s items, each step taken inside a fresh ``enter()`` context.

    A context variable must not stay set across ``yield`` (the consumer's code would see it), so
    generators the adapters hand back bind their context per step.

    Example:
        >>> from contextlib import nullcontext
        >>> list(iterate_within(nullcontext, iter("ab")))
        ['a', 'b']
    """
    while True:
        with enter():
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


async def aiterate_within(
    enter: Callable[[], AbstractContextManager[Any]], iterator: AsyncIterator[T]
) -> AsyncGenerator[T, None]:
    """The ``async`` form of :func:`iterate_within` (closes ``iterator`` when the consumer stops).

    Example:
        >>> import asyncio
        >>> from contextlib import nullcontext
        >>> async def items():
        ...     yield 1
        >>> async def collect():
        ...     return [i async for i in aiterate_within(nullcontext, items())]
        >>> asyncio.run(collect())
        [1]
    """
    try:
        while True:
            with enter():
                try:
                    item = await iterator.__anext__()
                except StopAsyncIteration:
                    return
            yield item
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


__all__ = ["aiterate_within", "iterate_within"]
