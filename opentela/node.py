"""Composition root: one trio nursery, components started in order, SIGTERM/SIGINT → leave.

Order: identity → asyncio loop (for aiohttp) → libp2p host → pool membership (SWIM, table,
admission: ``pool_member.py``) → worker side (if a backend is configured: ``worker/side.py``)
→ HTTP gateway → joining. Stop (``stop_node``, bounded by ``--drain-timeout``): drain, leave
(tombstone: peers drop us at once), stop the gateway, stop the backend, close the host.
"""

from __future__ import annotations

import os
import platform
import random
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import structlog
import trio

from . import __version__
from .aio_bridge import open_asyncio_loop, to_aio
from .closed_pool import ClosedPool, ClosedPoolError
from .config import Config
from .edge.workers import HttpWorkers, joined_or_timeout, until_parent_exits
from .fleet.runtime import Fleet
from .fleet.spec import FleetError
from .fleet.spec import load as load_fleet
from .gateway.app import Gateway, NodeView
from .gateway.auth import AuthGate
from .gateway.balancer import Balancer
from .gateway.forward import Forwarder
from .gateway.usage import UsageRecorder, UsageWriter
from .metrics.collect import NodeCollector
from .metrics.endpoint import NodeMetrics
from .metrics.requests import RequestMetrics
from .overlay import identity, pnet
from .overlay.host import Host, open_host
from .platform import slurm
from .platform.gpu import detect_gpus
from .platform.labels import is_follower, node_labels
from .platform.walltime import run_walltime
from .pool_member import PoolMember
from .reach.reachability import initial_reachability
from .stop_budget import StopBudget, Watchdog
from .table.record import DRAINING, PRIVATE, READY, Gpu, NodeRecord, Service
from .table.sync import TableSync
from .worker.serve import ForwardServer
from .worker.side import WorkerSide

STOP_HANDLERS_S = 1.0  # HTTP handlers still running after the drain get this long

log = structlog.get_logger("opentela.node")


def successor_serves(sync: TableSync) -> bool:
    """Another live, ready node advertises every model we serve: safe to hand over."""
    mine = set(sync.own.models)
    if not mine:
        return True
    snap = sync.store.snapshot(trio.current_time())
    return any(
        mine <= set(e.record.models)
        for pid, e in snap.entries.items()
        if pid != snap.self_id and e.routable
    )


async def drain(
    sync: TableSync,
    server: ForwardServer | None,
    forwarder: Forwarder,
    budget: StopBudget,
    also: Callable[[], None],
    scope: trio.CancelScope,
) -> None:
    """Advertise ``draining`` (peers stop sending new work at once), refuse new forwarded
    requests (entries retry them elsewhere), and let in-flight ones finish until the budget's
    drain deadline; ``scope`` is cancelled by a second signal. ``also`` starts whatever else
    drains at the same time (the node's HTTP workers)."""
    sync.update(status=DRAINING)
    also()
    if server is not None:
        server.draining = True

    def busy() -> int:
        return (server.in_flight if server is not None else 0) + forwarder.in_flight()

    log.info(
        "node.draining", in_flight=busy(), timeout_s=round(budget.deadline_s - budget.started_s, 3)
    )
    with scope:
        scope.deadline = budget.drain_until_s
        while busy():
            await trio.sleep(0.05)
    now = trio.current_time()
    log.info(
        "node.drained",
        waited_s=round(now - budget.started_s, 3),
        unfinished=busy(),
        timed_out=scope.cancelled_caught and not budget.cut_short,
        interrupted=budget.cut_short,
    )


async def stop_node(
    budget: StopBudget,
    signals: AsyncIterator[int],
    drain: Callable[[trio.CancelScope], Awaitable[None]],
    leave: Callable[[], Awaitable[None]],
    shutdown: list[Callable[[], Awaitable[None]]],
) -> None:
    """Drain, leave, shut down, all within ``budget`` (``--drain-timeout``); a second signal
    cuts the rest to about a second, and a watchdog ends the process if a step overruns."""
    watchdog = Watchdog()

    def arm() -> None:
        watchdog.arm(time.monotonic() + budget.remaining(trio.current_time()))

    arm()
    drain_scope = trio.CancelScope()
    with trio.CancelScope(deadline=budget.deadline_s) as stop_scope:
        async with trio.open_nursery() as stopping:

            async def second_signal() -> None:
                async for sig in signals:
                    now = trio.current_time()
                    budget.cut(now)
                    stop_scope.deadline = budget.deadline_s
                    drain_scope.cancel()
                    arm()
                    log.warning(
                        "node.stop_cut_short",
                        signal=signal.Signals(sig).name,
                        remaining_s=round(budget.remaining(now), 3),
                    )

            stopping.start_soon(second_signal)
            await drain(drain_scope)
            await leave()
            for step in shutdown:
                await step()
            stopping.cancel_scope.cancel()
    if stop_scope.cancelled_caught:
        log.warning("node.stop_deadline", detail="shutdown steps cut at the --drain-timeout bound")


def node_metrics(
    member: PoolMember,
    forwarder: Forwarder,
    worker: WorkerSide | None,
    stats: Callable[[], dict[str, Any]],
    fleet: Fleet | None,
) -> NodeMetrics:
    """The metrics component (``/metrics``): counters the components keep, read at scrape."""
    requests = RequestMetrics()

    def info() -> dict[str, str]:
        own = member.sync.own
        return {
            "peer_id": own.peer_id,
            "role": own.role,
            "version": __version__,
            "site": own.labels.get("site", ""),
            "reachability": own.reachability,
        }

    collector = NodeCollector(
        stats, member.snapshot, info, forwarder, worker, lambda: requests.in_flight, fleet
    )
    return NodeMetrics(requests, collector, member.snapshot)


def node_fleet(cfg: Config, member: PoolMember, forwarder: Forwarder) -> Fleet | None:
    """The fleet component (``--fleet``): Slurm jobs for the catalogued models."""
    if not cfg.fleet:
        return None
    try:
        spec = load_fleet(cfg.fleet)
    except FleetError as exc:
        raise StartupError(str(exc)) from exc

    def bootstrap() -> list[str]:
        own = member.sync.own
        return [a if "/p2p/" in a else f"{a}/p2p/{own.peer_id}" for a in own.addrs]

    return Fleet(
        spec, member.snapshot, bootstrap, forwarder.last_sent.get, cfg.fleet_hold_timeout_s
    )


class StartupError(Exception):
    """The node cannot start (port taken, unreadable identity...): a message for the user."""


def check_port_free(host: str, port: int, what: str) -> None:
    """Bind once before starting: py-libp2p does not report a listen failure, so a node would
    otherwise announce an address another process owns."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: connections of a previous life in TIME_WAIT must not count; a live
        # listener still does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise StartupError(
                f"cannot listen for {what} on {host}:{port}: {exc.strerror}"
            ) from exc


def node_store(cfg: Config, closed: ClosedPool | None) -> Any:
    """The node's one store (``<home>/opentela.db``, or ``--db``): join tokens on a granting
    node, API keys with ``--auth required``, usage always. A granting node's closed pool has it
    open already. Close it with :func:`close_node_store`. A SQLite store loads SQLAlchemy on
    first use (``store/lazy.py``): most workers never touch theirs (13.6 MB of RSS)."""
    if closed is not None and closed.store is not None:
        return closed.store
    from .store import StoreError
    from .store.lazy import open_node_store

    try:
        return open_node_store(cfg.db or cfg.home_path)
    except StoreError as exc:
        raise StartupError(f"cannot open the node's store: {exc}") from exc


def close_node_store(store: Any, closed: ClosedPool | None) -> None:
    if store is not None and (closed is None or store is not closed.store):
        store.close()  # the closed pool closes its own


def open_pool_warning(cfg: Config) -> None:
    if not cfg.authority and not cfg.p2p_host.startswith("127.") and cfg.p2p_host != "::1":
        log.warning(
            "node.open_pool",
            p2p=f"{cfg.p2p_host}:{cfg.p2p_port}",
            detail="anyone who reaches this port can join the pool and claim any model; "
            "close it with --authority (docs/security.md)",
        )


def own_record(
    cfg: Config, peer_id: str, host: Host, job: slurm.SlurmJob | None, extra: dict[str, str]
) -> NodeRecord:
    http_host = (
        cfg.public_addr
        if cfg.public_addr and not cfg.public_addr.startswith("/")
        else cfg.http_host
    )
    http_host = f"[{http_host}]" if ":" in http_host else http_host
    gpus = tuple(Gpu(g.name, g.total_memory_mib, g.used_memory_mib) for g in detect_gpus(log))
    now = time.time()
    labels = node_labels(
        cfg, job, os.environ, now, hostname=socket.gethostname(), arch=platform.machine()
    )
    # A follower of a multi-node replica advertises no service: only its leader serves.
    serves = cfg.backend_url and not is_follower(labels)
    reach = initial_reachability(cfg, job is not None)
    return NodeRecord(
        peer_id=peer_id,
        version=int(time.time() * 1000),
        timestamp=now,
        role=cfg.effective_role,
        status=READY,
        # Nobody can dial a private node: an address would only invite dials that time out
        # (or, where it happens to work, connections that bypass its relays).
        addrs=() if reach == PRIVATE else tuple(host.addrs()),
        http_addr=f"http://{http_host}:{cfg.http_port}",
        services=(Service(cfg.service_name or "llm", "down", ()),) if serves else (),
        gpus=gpus,
        software=f"opentela/{__version__}",
        extra=extra,
        labels=labels,
        reachability=reach,
    )


async def wait_for_stop(
    signals: AsyncIterator[int],
    cfg: Config,
    job: slurm.SlurmJob | None,
    worker: WorkerSide | None,
    member: PoolMember,
    http_worker: bool = False,
) -> None:
    """Until a signal (SIGTERM from scancel, Slurm's limit or Kubernetes; SIGINT; Slurm's early
    warning ``--signal=B:USR1@N``), the Slurm walltime, a backend that will not run again, or
    (``http_worker``) the end of the node whose HTTP worker this process is."""
    stop = trio.Event()

    def start_drain(reason: str) -> None:
        if not stop.is_set():
            log.info("node.stopping", reason=reason)
            stop.set()

    async def first_signal() -> None:
        async for sig in signals:
            start_drain(signal.Signals(sig).name)
            return

    async with trio.open_nursery() as waiters:
        waiters.start_soon(first_signal)
        if worker is not None:
            waiters.start_soon(worker.until_stop, start_drain)
        if http_worker:
            waiters.start_soon(until_parent_exits, start_drain)
        if job is not None:
            waiters.start_soon(
                partial(
                    run_walltime,
                    job,
                    drain_before_s=cfg.slurm_drain_before_s,
                    drain_timeout_s=cfg.drain_timeout,
                    resubmit_script=cfg.slurm_resubmit,
                    resubmit_before_s=cfg.slurm_resubmit_before_s,
                    successor_ready=lambda: successor_serves(member.sync),
                    start_drain=start_drain,
                )
            )
        await stop.wait()
        waiters.cancel_scope.cancel()


async def run(cfg: Config, http_worker: bool = False) -> int:
    """Run the node until it is stopped; the exit code is non-zero when its backend failed
    for good (``--subprocess.restart``), so a Slurm job that ran it ends as failed.
    ``http_worker``: this process is an extra HTTP process of a node (``edge/``): the port is
    the parent's, shared, and it listens once it joined, so it never answers from an empty
    table.

    Components, in start order: the pool membership (SWIM, table, admission), the worker side
    (when a backend is configured), the HTTP gateway, then joining. Stop: drain, leave, then
    the gateway and the worker shut down, all within ``--drain-timeout``."""
    if not http_worker:
        check_port_free(cfg.http_host, cfg.http_port, "HTTP (--http-port)")
    check_port_free(cfg.p2p_host, cfg.p2p_port, "libp2p (--p2p-port)")
    try:
        key = identity.load_or_create(cfg.home_path)
    except identity.IdentityError as exc:
        raise StartupError(str(exc)) from exc
    peer_id = identity.peer_id(key)
    job = await trio.to_thread.run_sync(slurm.detect, dict(os.environ), slurm.run_command)
    if job is not None:
        log.info("slurm.job", job=job.job_id, end_time=job.end_time, partition=job.partition)
    open_pool_warning(cfg)
    swarm_key = pnet.load_swarm_key(cfg.swarm_key) if cfg.swarm_key else None
    worker: WorkerSide | None = None
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
        async with (
            open_asyncio_loop(),
            open_host(
                key, cfg.p2p_host, cfg.p2p_port, cfg.public_addr, swarm_key=swarm_key
            ) as host,
        ):
            try:
                closed = ClosedPool(cfg, host, peer_id) if cfg.authority else None
            except ClosedPoolError as exc:
                raise StartupError(str(exc)) from exc
            store = node_store(cfg, closed)
            initial = own_record(cfg, peer_id, host, job, closed.record_extra() if closed else {})
            rng = random.Random()
            member = PoolMember(cfg, host, key, initial, rng, closed)
            async with trio.open_nursery() as nursery:
                await member.start(nursery)
                if cfg.backend_url:
                    worker = WorkerSide(cfg, member.sync, peer_id)
                    await worker.start(host, nursery)
                balancer = Balancer(
                    cfg.routing_policy,
                    rng,
                    site=initial.labels.get("site", ""),
                    rtt=member.rtt,
                )
                forwarder = Forwarder(
                    member.streams,
                    peer_id,
                    cfg.read_timeout,
                    worker.backend.session if worker else None,
                    cfg.backend_url,
                    local_ready=worker.ready if worker else (lambda: False),
                    balancer=balancer,
                    local_allow_paths=cfg.service_allow_path,
                    local_bridge=worker.backend.bridge_request if worker else None,
                )

                def stats() -> dict[str, Any]:
                    s = forwarder.stats
                    return {
                        "peer_id": peer_id,
                        "role": cfg.effective_role,
                        "forward": {
                            "requests": s.requests,
                            "retries": s.retries,
                            "failed": s.failed,
                            "client_gone": s.client_gone,
                            "stale_streams": s.stale_streams,
                            "relay_retries": s.relay_retries,
                            "streams_opened": member.streams.opened,
                            "streams_idle": member.streams.idle_count(),
                        },
                        **member.stats,
                        **edge.stats,
                        **({"worker": worker.stats} if worker is not None else {}),
                    }

                view = NodeView(
                    peer_id=peer_id,
                    version=__version__,
                    snapshot=member.snapshot,
                    addrs=host.addrs,
                    connected=host.connected_peers,
                    stats=stats,
                    now=trio.current_time,
                    last_heard=member.membership.last_heard,
                    # A node with bootstraps or a remembered pool is ready once it has a live
                    # peer; a first node at once.
                    joined=member.joined,
                )
                fleet = node_fleet(cfg, member, forwarder)
                if fleet is not None:
                    await nursery.start(fleet.run)
                # Usage is counted with --auth off too (key "-", owner "anonymous").
                usage_store = lambda: store  # noqa: E731
                usage = UsageWriter(usage_store)
                # Rate windows: the store's minutes plus what this node has not written yet.
                auth = AuthGate(cfg.auth, cfg.auth_models, lambda: store, pending=usage.pending)
                gateway = Gateway(
                    view,
                    forwarder,
                    balancer,
                    cfg.max_body_bytes,
                    auth,
                    usage=UsageRecorder(usage.add),
                    usage_store=usage_store,
                    metrics=node_metrics(member, forwarder, worker, stats, fleet),
                    fleet=fleet,
                )
                try:
                    edge = HttpWorkers(cfg, peer_id)
                except identity.IdentityError as exc:
                    raise StartupError(f"--http-workers: {exc}") from exc
                if http_worker:  # listen once joined: never answer from an empty table
                    await member.start_joining(nursery)
                    await joined_or_timeout(member.joined)
                await to_aio(gateway.serve)(
                    cfg.http_host,
                    cfg.http_port,
                    STOP_HANDLERS_S,
                    reuse_port=http_worker or cfg.http_workers > 1,
                )
                log.info(
                    "node.ready",
                    peer_id=peer_id,
                    role=cfg.effective_role,
                    http=f"http://{cfg.http_host}:{cfg.http_port}",
                    p2p=host.addrs(),
                    backend=cfg.backend_url or None,
                )
                if not http_worker:
                    await member.start_joining(nursery)
                await edge.start(nursery)
                await wait_for_stop(signals, cfg, job, worker, member, http_worker)
                await stop_node(
                    budget := StopBudget.start(cfg.drain_timeout, trio.current_time()),
                    signals,
                    drain=partial(
                        drain,
                        member.sync,
                        worker.server if worker else None,
                        forwarder,
                        budget,
                        edge.signal_stop,
                    ),
                    leave=partial(member.leave, budget),
                    shutdown=[
                        partial(edge.wait_stopped, budget.deadline_s),
                        to_aio(gateway.close),
                        to_aio(usage.flush),  # after close: every handler has counted
                        *(worker.shutdown_steps() if worker else []),
                    ],
                )
                nursery.cancel_scope.cancel()
            member.close()
            close_node_store(store, closed)
    failed = worker is not None and worker.failed
    log.info("node.stopped", peer_id=peer_id, backend_failed=failed)
    return 1 if failed else 0
