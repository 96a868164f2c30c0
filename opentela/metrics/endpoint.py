"""The node's metrics component: the request counters, the scrape-time collector and the
two routes, ``GET /metrics`` (Prometheus text) and ``GET /metrics/targets`` (http_sd)."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)

from ..table.store import Snapshot
from .collect import NodeCollector
from .exposition import CONTENT_TYPE
from .requests import RequestMetrics
from .targets import http_sd


def _process_registry() -> CollectorRegistry:
    """prometheus_client's process, platform and GC collectors (``process_*``, ``python_*``):
    a few dozen samples, formatted by the library itself."""
    reg = CollectorRegistry(auto_describe=False)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        reg.register(collector)
    return reg


class NodeMetrics:
    def __init__(
        self,
        requests: RequestMetrics,
        collector: NodeCollector,
        snapshot: Callable[[], Snapshot],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.requests = requests
        self.collector = collector
        self.snapshot = snapshot
        self.clock = clock
        self.process = _process_registry()
        self.scrapes = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/metrics/targets", self.targets)

    def text(self) -> str:
        return (
            self.requests.render()
            + self.collector.render(self.clock())
            + generate_latest(self.process).decode()
        )

    async def metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        resp = web.Response(body=self.text().encode(), headers={"Cache-Control": "no-store"})
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp

    async def targets(self, request: web.Request) -> web.Response:
        return web.json_response(http_sd(self.snapshot()), headers={"Cache-Control": "no-store"})

    @property
    def stats(self) -> dict[str, int]:
        return {"scrapes": self.scrapes}
