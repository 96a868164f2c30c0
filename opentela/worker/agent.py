"""Keeps the node's advertised service true to the backend: probe, withdraw, restore."""

from __future__ import annotations

import structlog
import trio

from ..aio_bridge import to_aio
from ..table.record import READY, Service
from ..table.sync import TableSync
from .backend import Backend, BackendError
from .health import Health, force_down, observe
from .serve import ForwardServer

PROBE_UP_S = 2.0  # probe period while healthy
PROBE_DOWN_S = 1.0  # faster while down/starting, so a backend that comes up is used at once

log = structlog.get_logger("opentela.worker")


class WorkerAgent:
    def __init__(
        self,
        sync: TableSync,
        server: ForwardServer,
        backend: Backend,
        service_name: str,
        extra_groups: tuple[str, ...] = (),
    ) -> None:
        self.sync = sync
        self.server = server
        self.backend = backend
        self.service_name = service_name
        self.extra_groups = extra_groups
        self.health = Health()
        self.backend_exited = False
        self._last_models: tuple[str, ...] = ()

    def service(self) -> Service:
        # A down service keeps naming its last models, so entry nodes can answer "503, retry"
        # (it exists, no replica is up) rather than "404, no such model". Routing only ever
        # picks services whose status is ready.
        groups = tuple(f"model={m}" for m in (self.health.models or self._last_models))
        groups += tuple(g for g in self.extra_groups if g not in groups)
        return Service(self.service_name, READY if self.health.up else "down", groups)

    def _publish(self) -> None:
        self.server.available = self.health.up
        if self.health.models:
            self._last_models = self.health.models
        self.sync.update(services=(self.service(),), load=self.server.in_flight)
        if self.health.up:
            log.info(
                "service.advertised", service=self.service_name, models=list(self.health.models)
            )
        else:
            log.warning("service.withdrawn", service=self.service_name)

    def on_backend_exit(self, code: int) -> None:
        self.backend_exited = True
        self.health, changed = force_down(self.health)
        if changed:
            self._publish()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self.backend_exited:
            try:
                models: tuple[str, ...] | None = await to_aio(self.backend.list_models)()
            except BackendError as exc:
                if self.health.up or self.health.failures == 0:
                    log.info("backend.probe_failed", error=str(exc))
                models = None
            if self.backend_exited:
                break
            self.health, changed = observe(self.health, models)
            if changed:
                self._publish()
            await trio.sleep(PROBE_UP_S if self.health.up else PROBE_DOWN_S)
