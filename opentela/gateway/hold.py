"""Requests for a catalogued model with no replica wait here while the fleet starts one
(scale from zero), instead of being refused.

Bounded by ``--fleet.hold-timeout``: then 503 with ``Retry-After`` and a message that says
the model is starting; at once when the fleet gave up starting it (its job script fails). A streaming client gets its response head at once and an SSE comment
every ``KEEPALIVE_S`` (proxies and SDKs keep an active stream open; comments are not events,
so clients ignore them); the answer is then written into that same response
(``forward.SINK_KEY``). A client that gives up cancels only its own wait: the handler is
cancelled, the hold count drops, the job the fleet submitted keeps starting for the others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..routing.plan import Target
from .errors import ApiError, sse_error_event
from .forward import SINK_KEY

POLL_S = 0.2
KEEPALIVE_S = 10.0
RETRY_AFTER_S = 30
FAILING_RETRY_AFTER_S = 300


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


async def wait_for_targets(
    request: web.Request,
    fleet: Any,
    model: str,
    find: Callable[[], list[Target]],
    stream: bool,
    keepalive_s: float = KEEPALIVE_S,
) -> list[Target]:
    """The targets once a replica of ``model`` is ready. Raises ``ApiError`` (503) when none
    is within the hold timeout; a stream whose head was already sent gets the error as an
    SSE event instead and ``HoldExpired`` is raised with its response."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + fleet.hold_timeout_s
    next_ping = loop.time()
    sink: web.StreamResponse | None = None
    fleet.hold(model, +1)
    try:
        while True:
            targets = find()
            if targets:
                return targets
            now = loop.time()
            failing = fleet.failing(model)
            if failing is not None or now >= deadline:
                if failing is not None:  # waiting longer would not help
                    message = f"model {model!r} cannot start right now: {failing}"
                    code, retry = "model_start_failed", FAILING_RETRY_AFTER_S
                else:
                    message = (
                        f"model {model!r} is starting: no replica became ready within "
                        f"{_minutes(fleet.hold_timeout_s)}; retry in a moment"
                    )
                    code, retry = "model_starting", RETRY_AFTER_S
                if sink is not None:
                    await sink.write(sse_error_event(message, "service_unavailable", code))
                    await sink.write_eof()
                    raise HoldExpired(sink)
                raise ApiError(
                    503, message, "service_unavailable", code, **{"Retry-After": str(retry)}
                )
            if stream and now >= next_ping:
                if sink is None:
                    sink = web.StreamResponse(
                        status=200,
                        headers={
                            "Content-Type": "text/event-stream",
                            "Cache-Control": "no-cache",
                            "X-Otela-Held": "starting",
                        },
                    )
                    await sink.prepare(request)
                    request[SINK_KEY] = sink
                await sink.write(f": waiting for a replica of {model} to start\n\n".encode())
                next_ping = now + keepalive_s
            await asyncio.sleep(POLL_S)
    finally:
        fleet.hold(model, -1)


class HoldExpired(Exception):
    """The hold timed out after the stream's head was sent: the response is complete."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("hold expired")
        self.response = response


async def into_sink(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """A held stream's answer: the forwarder wrote streamed answers into the sink already;
    a whole answer (one batch, or an error as JSON) is written into it here."""
    sink = request.get(SINK_KEY)
    if sink is None or resp is sink:
        return resp
    body = resp.body if isinstance(resp, web.Response) else None
    data = bytes(body) if isinstance(body, bytes | bytearray) else b""
    if resp.status < 400 and "text/event-stream" in resp.headers.get("Content-Type", ""):
        await sink.write(data)
    else:
        try:
            message = json.loads(data)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"the replica answered {resp.status}"
        await sink.write(sse_error_event(str(message)))
    await sink.write_eof()
    return sink
