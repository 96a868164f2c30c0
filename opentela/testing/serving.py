"""Running local test servers: a free port to put them on, and the serve-until-signal loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys

from aiohttp import web


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to 0, read it back, close)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
