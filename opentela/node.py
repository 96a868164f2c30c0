"""Composition root: one trio nursery, components started in order, SIGTERM/SIGINT → leave.

Order: identity → asyncio loop (for aiohttp) → libp2p host → table sync → worker (if a backend
is configured) → HTTP gateway → bootstrap. Stop: publish the leave tombstone (peers drop us at
once), stop the gateway, stop the backend subprocess, close the host.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any

import aiohttp
import structlog
import trio
from aiohttp import web

from . import __version__
from .aio_bridge import open_asyncio_loop, to_aio
from .closed_pool import GRANTS_EXTRA, ClosedPool, ClosedPoolError
from .config import Config, bootstrap_problem
from .gateway.app import Gateway, NodeView
from .gateway.balancer import Balancer
from .gateway.forward import Forwarder
from .overlay import identity, pnet
from .overlay.host import Host, open_host
from .overlay.membership import (
    Effect,
    MemberDown,
    MemberLeft,
    Membership,
    MembershipConfig,
    MemberSuspect,
    MemberUp,
    Refuted,
)
from .overlay.membership.runtime import MembershipRuntime
from .overlay.redial import peer_of
from .overlay.rejoin import Rejoiner
from .overlay.streams import StreamPool
from .platform import slurm
from .platform.gpu import detect_gpus
from .platform.walltime import run_walltime
from .stop_budget import StopBudget, Watchdog
from .table.record import DRAINING, LEFT, READY, Gpu, NodeRecord, Service
from .table.store import ALIVE, DEAD, GONE, SUSPECT, TableStore
from .table.sync import TableSync
from .worker.agent import WorkerAgent
from .worker.backend import Backend
from .worker.serve import PROTOCOL as FORWARD_PROTOCOL
from .worker.serve import ForwardServer
from .worker.supervisor import BackendSupervisor

STOP_HANDLERS_S = 1.0  # HTTP handlers still running after the drain get this long

log = structlog.get_logger("opentela.node")


async def fetch_bootstrap_url(url: str) -> list[str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, s.get(url) as r:
        data = json.loads(await r.read())
    addrs = data.get("bootstraps") if isinstance(data, dict) else None
    if not isinstance(addrs, list):
        raise ValueError(f"{url} did not return {{'bootstraps': [...]}}")
    good = []
    for a in (str(a) for a in addrs):
        problem = bootstrap_problem(a)
        if problem:
            log.warning("bootstrap.url_entry_ignored", url=url, addr=a, reason=problem)
        else:
            good.append(a)
    return good


def pool_view(sync: TableSync) -> dict[str, tuple[tuple[str, ...], str]]:
    """Each other member as the rejoin memory sees it: its addresses, and alive, dead or left."""
    store, now, out = sync.store, trio.current_time(), {}
    for pid, signed in store.records().items():
        if pid == store.self_id:
            continue
        rec = signed.record
        if rec.status == LEFT or store.liveness(pid) == GONE:
            state = "left"
        else:
            state = "alive" if store.alive(pid, now) else "dead"
        out[pid] = (rec.addrs, state)
    return out


def granting_peers(sync: TableSync, bootstraps: tuple[str, ...]) -> list[str]:
    """Where a member renews its grant: live nodes that grant (their record says so), then its
    bootstrap peers."""
    snap = sync.store.snapshot(trio.current_time())
    out = [
        pid
        for pid, e in snap.entries.items()
        if pid != snap.self_id and e.alive and e.record.extra.get(GRANTS_EXTRA) == "1"
    ]
    out += [p for p in (peer_of(a) for a in bootstraps) if p and p not in out]
    return out


class Liveness:
    """Carries membership verdicts to the one place routing reads them (the table store), and
    fails the streams of a peer declared dead so waiting requests are retried at once."""

    def __init__(self, host: Host, pool: StreamPool, store: TableStore) -> None:
        self.host = host
        self.pool = pool
        self.store = store

    def on_effect(self, effect: Effect) -> None:
        now = trio.current_time()
        store = self.store
        if isinstance(effect, MemberUp):
            if effect.addrs:
                self.host.add_peer_addrs(effect.member_id, list(effect.addrs))
            self.host.unblock(effect.member_id)
            if store.liveness(effect.member_id) != ALIVE:
                log.info("member.up", peer=effect.member_id, incarnation=effect.incarnation)
            store.set_liveness(effect.member_id, ALIVE, now)
        elif isinstance(effect, MemberSuspect):
            log.info("member.suspect", peer=effect.member_id)
            store.set_liveness(effect.member_id, SUSPECT, now)
        elif isinstance(effect, MemberDown | MemberLeft):
            left = isinstance(effect, MemberLeft)
            log.warning("member.left" if left else "member.down", peer=effect.member_id)
            store.set_liveness(effect.member_id, GONE if left else DEAD, now)
            self.pool.abort_peer(
                effect.member_id, f"peer {effect.member_id[-8:]} is {'gone' if left else 'dead'}"
            )
        elif isinstance(effect, Refuted):
            log.warning("member.refuted", accuser=effect.accuser, incarnation=effect.incarnation)


def slurm_extra(job: slurm.SlurmJob | None) -> dict[str, str]:
    """Slurm facts published in the record (shown by /v1/dnt/table and ``table``)."""
    if job is None:
        return {}
    out = {
        "slurm.job": job.job_id,
        "slurm.partition": job.partition,
        "slurm.cluster": job.cluster,
        "slurm.nodes": job.node_list,
    }
    if job.end_time is not None:
        out["slurm.end"] = str(int(job.end_time))
    return {k: v for k, v in out.items() if v}


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
    scope: trio.CancelScope,
) -> None:
    """Advertise ``draining`` (peers stop sending new work at once), refuse new forwarded
    requests (entries retry them elsewhere), and let in-flight ones finish until the budget's
    drain deadline; ``scope`` is cancelled by a second signal."""
    sync.update(status=DRAINING)
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


async def leave(
    rejoiner: Rejoiner, swim: MembershipRuntime, sync: TableSync, budget: StopBudget
) -> None:
    """Remember the pool (for the next start), then tell it we are gone: membership's leave
    and the table's tombstone, which peers honour at once."""
    rejoiner.save(time.time())
    swim.leave()
    await sync.leave(timeout_s=min(2.0, 0.5 * budget.remaining(trio.current_time())))


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


async def run(cfg: Config) -> int:
    """Run the node until it is stopped; the exit code is non-zero when its backend failed
    for good (``--subprocess.restart``), so a Slurm job that ran it ends as failed."""
    check_port_free(cfg.http_host, cfg.http_port, "HTTP (--http-port)")
    check_port_free(cfg.p2p_host, cfg.p2p_port, "libp2p (--p2p-port)")
    try:
        key = identity.load_or_create(cfg.home_path)
    except identity.IdentityError as exc:
        raise StartupError(str(exc)) from exc
    peer_id = identity.peer_id(key)
    gpus = tuple(Gpu(g.name, g.total_memory_mib, g.used_memory_mib) for g in detect_gpus(log))
    job = await trio.to_thread.run_sync(slurm.detect, dict(os.environ), slurm.run_command)
    if job is not None:
        log.info("slurm.job", job=job.job_id, end_time=job.end_time, partition=job.partition)
    role = cfg.effective_role
    services = (Service(cfg.service_name or "llm", "down", ()),) if cfg.backend_url else ()
    http_host = (
        cfg.public_addr
        if cfg.public_addr and not cfg.public_addr.startswith("/")
        else cfg.http_host
    )
    stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    with trio.open_signal_receiver(*stop_signals) as signals:
        async with (
            open_asyncio_loop(),
            open_host(
                key,
                cfg.p2p_host,
                cfg.p2p_port,
                cfg.public_addr,
                swarm_key=pnet.load_swarm_key(cfg.swarm_key) if cfg.swarm_key else None,
            ) as host,
        ):
            initial = NodeRecord(
                peer_id=peer_id,
                version=int(time.time() * 1000),
                timestamp=time.time(),
                role=role,
                status=READY,
                addrs=tuple(host.addrs()),
                http_addr=f"http://{f'[{http_host}]' if ':' in http_host else http_host}:"
                f"{cfg.http_port}",
                services=services,
                gpus=gpus,
                software=f"opentela/{__version__}",
                extra=slurm_extra(job),
            )
            try:
                closed = ClosedPool(cfg, host, peer_id) if cfg.authority else None
            except ClosedPoolError as exc:
                raise StartupError(str(exc)) from exc
            if closed is not None:
                initial = replace(initial, extra={**initial.extra, **closed.record_extra()})
            elif not cfg.p2p_host.startswith("127.") and cfg.p2p_host != "::1":
                log.warning(
                    "node.open_pool",
                    p2p=f"{cfg.p2p_host}:{cfg.p2p_port}",
                    detail="anyone who reaches this port can join the pool and claim any "
                    "model; close it with --authority (docs/security.md)",
                )
            rng = random.Random()
            membership = Membership(
                peer_id,
                MembershipConfig(
                    probe_interval_s=cfg.probe_interval,
                    probe_timeout_s=0.4 * cfg.probe_interval,
                    # Milliseconds since the epoch: a restarted node outranks its old self.
                    initial_incarnation=int(time.time() * 1000),
                ),
                trio.current_time(),
                addrs=host.addrs(),
            )
            pool = StreamPool(host, FORWARD_PROTOCOL)
            sync = TableSync(
                host,
                key,
                initial,
                rng=rng,
                # Every peer the table learns of is handed to membership to probe.
                on_peer=lambda r: swim.join(r.peer_id, list(r.addrs)),
                admit=closed.admit if closed is not None else None,
            )
            if closed is not None:
                host.gate = closed.gate
                closed.start_own(
                    on_grant=lambda blob: sync.update(grant=blob),
                    granting_peers=lambda: granting_peers(sync, cfg.bootstrap),
                )
            liveness = Liveness(host, pool, sync.store)
            swim = MembershipRuntime(host, membership, liveness.on_effect, rng)
            async with trio.open_nursery() as nursery:
                await nursery.start(swim.run)
                await nursery.start(sync.run)
                if closed is not None:
                    await nursery.start(closed.run)
                backend: Backend | None = None
                agent: WorkerAgent | None = None
                supervisor: BackendSupervisor | None = None
                if cfg.backend_url:
                    backend = Backend(cfg.backend_url, cfg.service_api_key)
                    await to_aio(backend.open)()
                    server = ForwardServer(
                        backend, cfg.service_name or "llm", peer_id, cfg.service_allow_path
                    )
                    host.set_handler(FORWARD_PROTOCOL, server.handle)
                    agent = WorkerAgent(
                        sync, server, backend, cfg.service_name or "llm", cfg.service_identity_group
                    )
                    if cfg.subprocess:
                        supervisor = BackendSupervisor(
                            cfg.subprocess, cfg.subprocess_restart, agent
                        )
                        await nursery.start(supervisor.run)
                    await nursery.start(agent.run)
                balancer = Balancer(cfg.routing_policy, rng)
                forwarder = Forwarder(
                    pool,
                    peer_id,
                    cfg.read_timeout,
                    backend.session if backend else None,
                    cfg.backend_url,
                    local_ready=(lambda: agent.server.available) if agent else (lambda: False),
                    balancer=balancer,
                    local_allow_paths=cfg.service_allow_path,
                )

                async def join_via(addr: str) -> str:
                    pid = await host.connect(addr)
                    if closed is not None:
                        await closed.ensure_member(pid)
                    swim.join(pid, [addr])
                    await sync.join(pid)
                    return pid

                rejoiner = Rejoiner(
                    peer_id,
                    cfg.home_path,
                    list(cfg.bootstrap),
                    join_via,
                    alive=lambda pid: sync.store.alive(pid, trio.current_time()),
                    live_peers=lambda: len(sync.peers()),
                    view=lambda: pool_view(sync),
                    rng=rng,
                    bootstrap_url=cfg.bootstrap_url,
                    fetch_url=to_aio(fetch_bootstrap_url),
                )

                def stats() -> dict[str, Any]:
                    s = forwarder.stats
                    out: dict[str, Any] = {
                        "peer_id": peer_id,
                        "role": role,
                        "forward": {
                            "requests": s.requests,
                            "retries": s.retries,
                            "failed": s.failed,
                            "client_gone": s.client_gone,
                            "streams_opened": pool.opened,
                            "streams_idle": pool.idle_count(),
                        },
                        "table": dict(sync.stats),
                        "rejoin": dict(rejoiner.stats),
                        **({"admission": closed.stats} if closed is not None else {}),
                        "membership": {
                            **swim.stats,
                            "alive": len(membership.alive_ids()),
                            "suspect": len(membership.suspect_ids()),
                            "incarnation": membership.incarnation,
                        },
                    }
                    if agent is not None:
                        out["worker"] = {
                            "in_flight": agent.server.in_flight,
                            "served": agent.server.served,
                            "cancelled": agent.server.cancelled,
                            "backend_up": agent.health.up,
                            **({"backend": supervisor.stats} if supervisor else {}),
                        }
                    return out

                view = NodeView(
                    peer_id=peer_id,
                    version=__version__,
                    snapshot=lambda: sync.store.snapshot(trio.current_time()),
                    addrs=host.addrs,
                    connected=host.connected_peers,
                    stats=stats,
                    now=trio.current_time,
                    last_heard=membership.last_heard,
                    # A node with bootstraps or a remembered pool is ready once it has a live
                    # peer; a first node at once.
                    joined=rejoiner.joined,
                )
                gateway = Gateway(view, forwarder, balancer, cfg.max_body_bytes)
                runner = gateway.runner(
                    # Handlers still running after the drain get this long, then are cancelled:
                    # the stop as a whole is bounded by --drain-timeout (stop_budget.py).
                    shutdown_timeout=STOP_HANDLERS_S,
                )
                await to_aio(runner.setup)()
                site = web.TCPSite(runner, cfg.http_host, cfg.http_port, reuse_address=True)
                await to_aio(site.start)()
                log.info(
                    "node.ready",
                    peer_id=peer_id,
                    role=role,
                    http=f"http://{cfg.http_host}:{cfg.http_port}",
                    p2p=host.addrs(),
                    backend=cfg.backend_url or None,
                )
                await nursery.start(rejoiner.run)
                stop = trio.Event()

                def start_drain(reason: str) -> None:
                    if not stop.is_set():
                        log.info("node.stopping", reason=reason)
                        stop.set()

                async def first_signal() -> None:
                    # SIGTERM (scancel, Slurm's time limit, Kubernetes), SIGINT, and Slurm's
                    # early warning --signal=B:USR1@N all start the same drain.
                    async for sig in signals:
                        start_drain(signal.Signals(sig).name)
                        return

                async with trio.open_nursery() as waiters:
                    waiters.start_soon(first_signal)
                    if supervisor is not None:  # backend not restarted: drain and exit
                        waiters.start_soon(supervisor.until_stop, start_drain)
                    if job is not None:
                        waiters.start_soon(
                            partial(
                                run_walltime,
                                job,
                                drain_before_s=cfg.slurm_drain_before_s,
                                drain_timeout_s=cfg.drain_timeout,
                                resubmit_script=cfg.slurm_resubmit,
                                resubmit_before_s=cfg.slurm_resubmit_before_s,
                                successor_ready=lambda: successor_serves(sync),
                                start_drain=start_drain,
                            )
                        )
                    await stop.wait()
                    waiters.cancel_scope.cancel()
                server = agent.server if agent is not None else None
                await stop_node(
                    budget := StopBudget.start(cfg.drain_timeout, trio.current_time()),
                    signals,
                    drain=partial(drain, sync, server, forwarder, budget),
                    leave=partial(leave, rejoiner, swim, sync, budget),
                    shutdown=[
                        to_aio(runner.cleanup),
                        *([supervisor.stop] if supervisor is not None else []),
                        *([to_aio(backend.close)] if backend is not None else []),
                    ],
                )
                nursery.cancel_scope.cancel()
            if closed is not None:
                closed.close()
    failed = supervisor is not None and supervisor.failed
    log.info("node.stopped", peer_id=peer_id, backend_failed=failed)
    return 1 if failed else 0
