"""Turning what a handler returns into the protocol's layered outcome.

A handler (task subscriber, RPC subscriber, worker task function) may return a plain value, a
coroutine (awaited, no layer), or a future (``concurrent.futures.Future`` or an asyncio future of
the running loop). Each future is one *layer*: the receiver reports "pending" and waits for it,
and what it resolves to is treated the same way again (KIWIPY_CONTRACT §5).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from typing import Any, Awaitable, Callable


# The protocol has no "cancelled" RPC response kind, and the coordinator turns a nil error text
# into "" — so a cancelled level travels as an error reply with this exact text (tasks use exit
# code -1 instead). Receivers also treat a nil error text as cancelled.
CANCELLED_TEXT = "tatzelwurm:cancelled"


class LevelCancelled(Exception):
    """The future of one layer was cancelled (the sender's future at that level is cancelled)."""


def is_future(obj: Any) -> bool:
    return isinstance(obj, concurrent.futures.Future) or asyncio.isfuture(obj)


async def await_future(fut: Any) -> Any:
    """Await a concurrent or asyncio future without ever cancelling it ourselves.

    If the future is cancelled raise :class:`LevelCancelled`; if *we* are cancelled, the
    ``CancelledError`` propagates and the handler's future is left alone."""
    afut = asyncio.wrap_future(fut) if isinstance(fut, concurrent.futures.Future) else fut
    try:
        return await asyncio.shield(afut)
    except asyncio.CancelledError:
        if afut.cancelled():
            raise LevelCancelled() from None
        raise


async def resolve_layers(value: Any, on_pending: Callable[[], Awaitable[None] | None]) -> Any:
    """Unwrap ``value`` to a plain value: coroutines are awaited, each future gives one call of
    ``on_pending`` before it is awaited. Exceptions (and :class:`LevelCancelled`) propagate."""
    while True:
        if is_future(value):
            pending = on_pending()
            if pending is not None:
                await pending
            value = await await_future(value)
        elif inspect.isawaitable(value):
            value = await value
        else:
            return value


def error_text(exc: BaseException) -> str:
    """The text carried over the wire for an exception: ``Type: message`` (only text crosses)."""
    msg = str(exc)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
