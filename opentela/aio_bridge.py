"""The one place where trio (host loop, libp2p) and asyncio (aiohttp) meet.

trio-asyncio runs an asyncio loop inside trio. ``to_trio`` lets asyncio code (aiohttp
handlers) await a trio function; ``to_aio`` lets trio code await an asyncio function. Callers
cross once per frame batch, never per byte.

``to_trio`` is the request path's crossing (once per forwarded request), so it is our own:
trio-asyncio's ``trio_as_aio`` cost 58 µs of CPU per call on the 2-core bench machine; a
task started in a nursery that lives as long as the loop plus an asyncio future cost 30 µs
(docs/benchmarks.md, December data plane). Semantics are the same: the result or exception comes back, and
cancelling the awaiting asyncio task cancels the trio task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
import trio_asyncio

T = TypeVar("T")

_nursery: trio.Nursery | None = None  # where to_trio starts its tasks (open_asyncio_loop)


def to_trio(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Wrap a trio async function so asyncio code can await it."""

    async def call(*args: Any) -> T:
        nursery = _nursery
        if nursery is None:
            raise RuntimeError("to_trio needs the loop of aio_bridge.open_asyncio_loop")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                try:
                    result = await fn(*args)
                except Exception as exc:
                    if not fut.done():
                        fut.set_exception(exc)
                    return
                except BaseException:  # Cancelled (ours or the loop's), KeyboardInterrupt
                    if not fut.done():
                        fut.cancel()
                    raise
                if not fut.done():
                    fut.set_result(result)
            if not fut.done():  # cancelled before fn ran
                fut.cancel()

        nursery.start_soon(run)
        try:
            return await fut
        except asyncio.CancelledError:
            scope.cancel()
            raise

    return call


def to_aio(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Wrap an asyncio async function so trio code can await it."""
    return trio_asyncio.aio_as_trio(fn)  # type: ignore[no-any-return]


@asynccontextmanager
async def open_asyncio_loop() -> Any:
    global _nursery
    async with trio_asyncio.open_loop() as loop, trio.open_nursery() as nursery:
        _nursery = nursery
        try:
            yield loop
        finally:
            _nursery = None
            nursery.cancel_scope.cancel()
