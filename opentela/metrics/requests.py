"""What the entry side counts as requests happen: statuses by route and model, latencies,
tokens, streams that ended badly.

Two hooks feed it: the aiohttp middleware (outermost, so the status is what the client got,
error answers included) and the usage listener (``UsageRecorder.listeners``), which sees each
model call's timings and tokens once it is over. Everything here runs on the node's asyncio
loop; nothing is computed at scrape time but the join of cached lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .catalog import (
    COMPLETION_TOKENS,
    DURATION,
    HTTP_REQUESTS,
    PROMPT_TOKENS,
    STREAM_ERRORS,
    TTFB,
    TTFT,
    USAGE_ESTIMATED,
)
from .exposition import BoundedLabel, Family

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MODEL_KEY = "otela.model"
"""``request[MODEL_KEY]``: the model a request was routed to (set once targets were found),
the ``model`` label of its series; requests that never reached routing carry ``""``."""
UNMATCHED = "unmatched"  # the route label of a path no route matches (a 404)


def route_of(request: web.Request) -> str:
    """The route template (``/v1/p2p/{peer}/{tail}``), never the raw path: a client sending
    random paths must not create series."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else UNMATCHED


class RequestMetrics:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.model = BoundedLabel()
        self.in_flight = 0
        self.requests = Family(HTTP_REQUESTS)
        self.ttfb = Family(TTFB)
        self.ttft = Family(TTFT)
        self.duration = Family(DURATION)
        self.prompt_tokens = Family(PROMPT_TOKENS)
        self.completion_tokens = Family(COMPLETION_TOKENS)
        self.estimated = Family(USAGE_ESTIMATED)
        self.stream_errors = Family(STREAM_ERRORS)
        self.families = (
            self.requests,
            self.ttfb,
            self.ttft,
            self.duration,
            self.prompt_tokens,
            self.completion_tokens,
            self.estimated,
            self.stream_errors,
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.in_flight += 1
        status = 499  # cancelled: the client went away before the answer
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            status = 500
            raise
        finally:
            self.in_flight -= 1
            model = request.get(MODEL_KEY)
            model = self.model(model) if model else ""
            self.requests.counter(model, route_of(request), str(status)).inc()

    def observe(self, obs: Any) -> None:
        """A ``UsageRecorder`` listener: one finished model call (a ``UsageObserver``)."""
        status, row = obs.status, obs.row
        if status is None or status >= 400 or row is None:
            return  # no answer, or an error answer: counted by status only
        model = self.model(obs.model)
        end = self.clock()
        if obs.first_byte is not None:
            self.ttfb.histogram(model).observe(max(0.0, obs.first_byte - obs.started))
        sse = obs.sse
        if sse is not None and obs.first_token is not None:
            self.ttft.histogram(model).observe(max(0.0, obs.first_token - obs.started))
        if obs.complete and status < 300:
            self.duration.histogram(model).observe(max(0.0, end - obs.started))
        if row.estimated:
            self.estimated.counter(model).inc()
        else:
            self.prompt_tokens.counter(model).inc(row.prompt_tokens)
            self.completion_tokens.counter(model).inc(row.completion_tokens)
        if sse is not None:
            if sse.error:
                self.stream_errors.counter(model, "error_event").inc()
            elif not obs.complete:
                self.stream_errors.counter(model, "cut").inc()

    def render(self) -> str:
        return "".join(f.render() for f in self.families)
