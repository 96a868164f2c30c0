"""Keeps the node's advertised service true to the backend: probe, withdraw, restore.

The probe and load loops run for the node's lifetime: a ``--subprocess`` backend that exits is
restarted (``supervisor.py``) and must be advertised again, with its models, once it answers.
The ``status`` (pending/ready) and ``framework`` labels follow the same probe. A follower of
a multi-node replica (``platform/labels.py``) watches its backend but advertises no service.
"""

from __future__ import annotations

import structlog
import trio

from ..aio_bridge import to_aio
from ..platform.labels import backend_labels
from ..table.record import READY, Service
from ..table.sync import TableSync
from .backend import Backend, BackendError
from .health import Health, force_down, load_worth_publishing, observe
from .metrics import BackendLoad
from .serve import ForwardServer

PROBE_UP_S = 2.0  # probe period while healthy
PROBE_DOWN_S = 1.0  # faster while down/starting, so a backend that comes up is used at once
LOAD_TICK_S = 0.25  # how often load is sampled (publishing is rate-limited separately)
IDLE_METRICS_S = 1.0  # how often an idle backend's metrics are read (busy: every tick)
METRICS_PATHS = ("/metrics", "/slots")  # where backends expose their queue, tried in order

log = structlog.get_logger("opentela.worker")


class WorkerAgent:
    def __init__(
        self,
        sync: TableSync,
        server: ForwardServer,
        backend: Backend,
        service_name: str,
        extra_groups: tuple[str, ...] = (),
        *,
        advertise: bool = True,
        fixed_labels: frozenset[str] = frozenset(),
    ) -> None:
        self.sync = sync
        self.advertise = advertise
        """False on a follower of a multi-node replica: its backend is watched (status label,
        restarts) but no service is advertised and nothing is served; only the leader serves."""
        self.fixed_labels = fixed_labels  # keys set by --label: status/framework stay the user's
        self.server = server
        self.backend = backend
        self.service_name = service_name
        self.extra_groups = extra_groups
        self.health = Health()
        self._reachable: bool | None = None  # last probe outcome that was logged
        self._exits = 0  # backend exits seen; a probe that spans one is stale
        self._last_models: tuple[str, ...] = ()
        self.published_load = 0
        self._published_at = 0.0
        self._metrics_path: str | None = None  # found on first success; None = not probed yet
        self._metrics_missing = False
        self.backend_load: BackendLoad | None = None  # as last scraped (opentela's /metrics)

    def service(self) -> Service:
        # A down service keeps naming its last models, so entry nodes can answer "503, retry"
        # (it exists, no replica is up) rather than "404, no such model". Routing only ever
        # picks services whose status is ready.
        groups = tuple(f"model={m}" for m in (self.health.models or self._last_models))
        groups += tuple(g for g in self.extra_groups if g not in groups)
        return Service(self.service_name, READY if self.health.up else "down", groups)

    def current_load(self, backend_queue: int | None) -> int:
        """Requests this replica is working on or holding: ours in flight, or the backend's
        own running + waiting count when it reports one (it also sees other clients)."""
        return max(self.server.in_flight, backend_queue or 0)

    async def _backend_queue(self) -> int | None:
        if self._metrics_missing or not self.health.up:
            return None
        paths = (self._metrics_path,) if self._metrics_path else METRICS_PATHS
        for path in paths:
            assert path is not None
            load = await to_aio(self.backend.read_load)(path)
            if load is not None:
                self._metrics_path = path
                self.backend_load = load
                return load.total
        if self._metrics_path is None:
            self._metrics_missing = True  # never ask again; our own in-flight count it is
            log.info("backend.no_load_metrics", tried=list(METRICS_PATHS))
        return None

    async def run_load(self) -> None:
        """Sample load; publish it when it changed enough (``load_worth_publishing``).

        Our own in-flight count is read every tick (free); the backend's metrics (an HTTP
        GET through the asyncio bridge and a parse of its Prometheus page, tens of KB on
        vLLM) every tick only while there is load, else every ``IDLE_METRICS_S``: four
        requests a second to an idle backend were an idle worker's most expensive wake-up.
        Load from other clients of the backend is still seen within a second."""
        queue: int | None = None
        read_at = -IDLE_METRICS_S
        while True:
            await trio.sleep(LOAD_TICK_S)
            now = trio.current_time()
            if metrics_due(now - read_at, self.server.in_flight, self.published_load, queue):
                queue, read_at = await self._backend_queue(), now
            current = self.current_load(queue)
            now = trio.current_time()
            if load_worth_publishing(self.published_load, current, now - self._published_at):
                self.published_load, self._published_at = current, now
                self.sync.publish_load(current, direct_to=self.server.recent_clients(now))

    def _publish(self) -> None:
        self.server.available = self.health.up and self.advertise
        if self.health.models:
            self._last_models = self.health.models
        self.published_load = self.current_load(None)
        labels = backend_labels(
            self.sync.own.labels,
            self.fixed_labels,
            up=self.health.up,
            framework=self.backend.framework,
        )
        services = (self.service(),) if self.advertise else ()
        self.sync.update(services=services, load=self.published_load, labels=labels)
        if not self.advertise:
            log.info("service.not_advertised", reason="follower", backend_up=self.health.up)
        elif self.health.up:
            log.info(
                "service.advertised", service=self.service_name, models=list(self.health.models)
            )
        else:
            log.warning("service.withdrawn", service=self.service_name)

    def backend_up(self) -> bool:
        return self.health.up

    def stopping(self) -> bool:
        return self.server.draining

    def on_backend_exit(self, code: int) -> None:
        """The backend process died: withdraw at once (entries answer 503 + Retry-After with
        its last models) instead of waiting for probes; they go on, to see it come back."""
        self._exits += 1
        self.health, changed = force_down(self.health)
        if changed:
            self._publish()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.run_load)
            task_status.started()
            await self._run_health()
            nursery.cancel_scope.cancel()

    def _log_probe(self, error: str | None) -> None:
        """One line when the probe outcome changes (reachable ↔ not), never one per probe."""
        reachable = error is None
        if reachable == self._reachable:
            return
        url = f"{self.backend.base_url}/v1/models"
        if reachable:
            log.info("backend.probe_ok", url=url)
        elif self._reachable is None:
            log.info("backend.probe_failed", url=url, error=error)  # still starting, probably
        else:
            log.warning("backend.probe_failed", url=url, error=error)
        self._reachable = reachable

    async def _run_health(self) -> None:
        while True:
            exits = self._exits
            try:
                models: tuple[str, ...] | None = await to_aio(self.backend.list_models)()
                self._log_probe(None)
            except BackendError as exc:
                self._log_probe(str(exc))
                models = None
            if exits != self._exits:
                models = None  # answered by the process that just died: not news
            self.health, changed = observe(self.health, models)
            if changed:
                self._publish()
            await trio.sleep(PROBE_UP_S if self.health.up else PROBE_DOWN_S)


def metrics_due(since_s: float, in_flight: int, published: int, queue: int | None) -> bool:
    """Whether this load tick reads the backend's metrics: each tick while anything is in
    flight, published as load, or queued at the backend; every ``IDLE_METRICS_S`` at idle."""
    return bool(in_flight or published or queue) or since_s >= IDLE_METRICS_S
