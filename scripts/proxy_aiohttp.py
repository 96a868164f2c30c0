#!/usr/bin/env python3
"""A single-hop aiohttp reverse proxy: the yardstick ``bench_overhead.py`` holds opentela to.

It is what a user would write instead of running a pool: one ``aiohttp.web`` server, one
keep-alive ``ClientSession`` to one upstream, every request forwarded as it came (method, path,
query, headers, body) and the answer streamed back chunk by chunk, so SSE passes through with
its timing. No routing, no retries, no auth: only what a single hop costs in Python, so the
two-node path can be judged against it on the same machine in the same run.

Usage::

    .venv/bin/python scripts/proxy_aiohttp.py --upstream http://127.0.0.1:8000 --port 0

It prints ``READY http://HOST:PORT`` once listening (like ``opentela.testing.fake_upstream``)
and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

import aiohttp
from aiohttp import web

# Hop-by-hop headers (RFC 9110 7.6.1) plus the ones aiohttp recomputes for its own framing.
_HOP = "connection keep-alive te trailer transfer-encoding upgrade host proxy-connection"
HOP = frozenset([*_HOP.split(), "proxy-authenticate", "proxy-authorization", "content-length"])
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "proxy_error", "code": "upstream_unreachable"}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


async def forward(request: web.Request) -> web.StreamResponse:
    """Send the request upstream as it came; copy the answer back as its bytes arrive."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    body = await request.read()
    url = request.app[UPSTREAM] + request.rel_url.raw_path_qs
    try:
        async with request.app[SESSION].request(
            request.method, url, headers=headers, data=body or None, allow_redirects=False
        ) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in HOP:
                    resp.headers.add(k, v)
            if up.content_length is not None:  # bytes pass through undecoded, so it holds
                resp.content_length = up.content_length
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        return _error(502, f"upstream unreachable: {type(exc).__name__}")


async def serve(upstream: str, host: str, port: int) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)  # no pool cap: c=64 is c=64
    app[SESSION] = aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
    )
    app[UPSTREAM] = upstream.rstrip("/")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        print(f"READY http://{host}:{runner.addresses[0][1]}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await app[SESSION].close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    a = p.parse_args(argv)
    if not a.upstream.startswith(("http://", "https://")):
        p.error("--upstream must be an http:// or https:// URL")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(a.upstream, a.host, a.port))


if __name__ == "__main__":
    sys.exit(main())
