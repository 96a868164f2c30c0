"""Run a test upstream's aiohttp runner until SIGINT/SIGTERM, announcing its real address."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from aiohttp import web


async def serve_until_signal(runner: web.AppRunner, host: str, port: int) -> None:
    """Print ``READY http://HOST:PORT`` (the real port when 0 let the OS choose) once
    listening, then serve until a signal; always clean up."""
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        sys.stdout.write(f"READY http://{host}:{runner.addresses[0][1]}\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()
