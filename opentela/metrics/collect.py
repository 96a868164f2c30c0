"""Metrics read at scrape time from what the node keeps anyway: its stats, its table, its
worker side. Nothing here is counted twice: the counters are the components' own.

Scrapes are rare (every 15-60 s) and these are a few dozen lines, so they are formatted
afresh each time; only the request series (``requests.py``) are large enough to need caching.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from ..routing.plan import models
from ..table.store import Snapshot
from . import catalog as c
from .catalog import MAX_MODELS, Metric
from .exposition import render_values

REPLICA_MEMORY_S = 3600.0
"""A model that had a replica this recently shows ``opentela_model_replicas 0`` (so an alert
can fire on it); after that it is forgotten."""


def _get(d: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)  # type: ignore[assignment]
    return d


class ReplicaMemory:
    """Models seen with replicas within ``REPLICA_MEMORY_S``: gone models read as 0, not as
    absent (an absent series cannot fire ``== 0``)."""

    def __init__(self, limit: int = MAX_MODELS) -> None:
        self.limit = limit
        self.seen: dict[str, float] = {}

    def counts(self, current: Mapping[str, int], now: float) -> dict[str, int]:
        for model in current:
            if model in self.seen or len(self.seen) < self.limit:
                self.seen[model] = now
        for model, at in list(self.seen.items()):
            if now - at > REPLICA_MEMORY_S:
                del self.seen[model]
        return {m: current.get(m, 0) for m in sorted(self.seen)}


class NodeCollector:
    """Formats the scrape-time metrics. ``stats`` is the node's ``/v1/dnt/stats`` source;
    ``worker`` its worker side (``WorkerSide``) or None; ``forwarder`` its ``Forwarder``."""

    def __init__(
        self,
        stats: Callable[[], dict[str, Any]],
        snapshot: Callable[[], Snapshot],
        info: Callable[[], dict[str, str]],
        forwarder: Any,
        worker: Any | None,
        http_in_flight: Callable[[], int],
        fleet: Any | None = None,
    ) -> None:
        self.stats = stats
        self.snapshot = snapshot
        self.info = info
        self.forwarder = forwarder
        self.worker = worker
        self.http_in_flight = http_in_flight
        self.fleet = fleet
        self.replicas = ReplicaMemory()

    def render(self, now_wall: float) -> str:
        st = self.stats()
        snap = self.snapshot()
        values: list[tuple[Metric, Any]] = [
            *self._entry(st),
            *self._worker(),
            *self._pool(st, snap, now_wall),
            *self._relay(st),
            *self._fleet(now_wall),
        ]
        return "".join(render_values(m, v) for m, v in values)

    def _entry(self, st: dict[str, Any]) -> list[tuple[Metric, Any]]:
        fwd = self.forwarder.stats
        return [
            (c.HTTP_IN_FLIGHT, self.http_in_flight()),
            (c.FORWARD_IN_FLIGHT, self.forwarder.in_flight()),
            (c.FAILOVERS, {(reason,): n for reason, n in sorted(fwd.failovers.items())}),
            (
                c.RETRIES,
                {("stale_stream",): fwd.stale_streams, ("relay_failed",): fwd.relay_retries},
            ),
            (c.EXHAUSTED, fwd.failed),
        ]

    def _worker(self) -> list[tuple[Metric, Any]]:
        w = self.worker
        if w is None:
            return []
        load = w.agent.backend_load
        counts = sorted(w.server.counts.items())
        return [
            (c.WORKER_REQUESTS, {key: n for key, n in counts}),
            (c.WORKER_IN_FLIGHT, w.server.in_flight),
            (c.BACKEND_UP, 1 if w.agent.health.up else 0),
            (c.BACKEND_RUNNING, load.running if load is not None else None),
            (c.BACKEND_WAITING, load.waiting if load is not None else None),
        ]

    def _pool(self, st: dict[str, Any], snap: Snapshot, now: float) -> list[tuple[Metric, Any]]:
        info = self.info()
        states = Counter(e.state for e in snap.entries.values())
        statuses = Counter(e.record.status for e in snap.entries.values())
        replicas = self.replicas.counts({m: len(p) for m, p in models(snap).items()}, now)
        mem, table = st.get("membership", {}), st.get("table", {})
        return [
            (c.NODE_INFO, {tuple(info[k] for k in c.NODE_INFO.labels): 1}),
            (c.MEMBERS, {(s,): n for s, n in sorted(states.items())}),
            (c.SUSPICIONS, mem.get("suspicions")),
            (c.DEATHS, mem.get("deaths")),
            (c.REFUTATIONS, mem.get("refutations")),
            (c.RECORDS, {(s,): n for s, n in sorted(statuses.items())}),
            (c.REJECTIONS, table.get("rejected")),
            (c.SYNCS, table.get("syncs")),
            (c.REPLICAS, {(m,): n for m, n in replicas.items()}),
            (
                c.CONTROL_SENT,
                {
                    ("membership",): mem.get("bytes_sent", 0),
                    ("table",): table.get("bytes_sent", 0) + table.get("gossip_bytes_sent", 0),
                },
            ),
            (
                c.CONTROL_RECEIVED,
                {
                    ("membership",): mem.get("bytes_received", 0),
                    ("table",): table.get("bytes_received", 0)
                    + table.get("gossip_bytes_received", 0),
                },
            ),
            (c.CONNECTIONS, st.get("connections")),
            (c.CONNECTIONS_CLOSED, st.get("connections_closed")),
        ]

    def _relay(self, st: dict[str, Any]) -> list[tuple[Metric, Any]]:
        reach = st.get("reach")
        if not isinstance(reach, Mapping):
            return []
        service = reach.get("relay_service") or {}
        offering = bool(service.get("offering"))
        return [
            (c.RELAY_CLIENTS, service.get("clients") if offering else None),
            (c.RELAY_STREAMS, service.get("active_streams") if offering else None),
            (c.RELAYED, service.get("relayed") if offering else None),
            (c.RELAY_BYTES, service.get("relayed_bytes") if offering else None),
            (c.RELAY_REFUSED, service.get("refused")),
            (c.RELAYS_HELD, len(reach.get("relays") or ())),
            (c.RELAYED_OPENED, _get(reach, "relayed", "relayed_opened")),
        ]

    def _fleet(self, now: float) -> list[tuple[Metric, Any]]:
        f = self.fleet
        if f is None:
            return []
        jobs = Counter((j.model, j.state or "SUBMITTED") for j in f.jobs.values())
        return [
            (c.FLEET_DESIRED, {(v.model,): v.want for v in f.views}),
            (c.FLEET_JOBS, {key: n for key, n in sorted(jobs.items())}),
            (c.FLEET_HELD, {(m.id,): f.held.get(m.id, 0) for m in f.spec.models}),
            (c.FLEET_SUBMITTED, f.stats.get("submitted", 0)),
            (c.FLEET_CANCELLED, f.stats.get("cancelled", 0)),
            (c.FLEET_START_FAILURES, f.stats.get("start_failures", 0)),
            (c.FLEET_GPU_HOURS, f.gpu_hours_today(now)),
            (c.FLEET_GPU_HOURS_LIMIT, f.spec.max_gpu_hours_per_day),
            (c.FLEET_JOB_LIMIT, f.spec.max_jobs),
        ]
