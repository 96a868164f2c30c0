"""The one place where trio (host loop, libp2p) and asyncio (aiohttp) meet.

trio-asyncio runs an asyncio loop inside trio. ``to_trio`` lets asyncio code (aiohttp
handlers) await a trio function; ``to_aio`` lets trio code await an asyncio function. Each
crossing costs a few microseconds, so callers cross once per frame batch, never per byte.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio_asyncio

T = TypeVar("T")


def to_trio(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Wrap a trio async function so asyncio code can await it."""
    return trio_asyncio.trio_as_aio(fn)  # type: ignore[no-any-return]


def to_aio(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Wrap an asyncio async function so trio code can await it."""
    return trio_asyncio.aio_as_trio(fn)  # type: ignore[no-any-return]


@asynccontextmanager
async def open_asyncio_loop() -> Any:
    async with trio_asyncio.open_loop() as loop:
        yield loop
