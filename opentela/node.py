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
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import aiohttp
import structlog
import trio
from aiohttp import web

from . import __version__
from .aio_bridge import open_asyncio_loop, to_aio
from .config import Config
from .gateway.app import Gateway, NodeView
from .gateway.balancer import Balancer
from .gateway.forward import Forwarder
from .overlay import identity
from .overlay.host import Host, StreamFailed, open_host
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
from .overlay.streams import StreamPool
from .platform import slurm
from .platform.gpu import detect_gpus
from .platform.walltime import run_walltime
from .table.record import DRAINING, READY, Gpu, NodeRecord, Service
from .table.store import ALIVE, DEAD, GONE, SUSPECT, TableStore
from .table.sync import TableSync
from .worker.agent import WorkerAgent
from .worker.backend import Backend
from .worker.serve import PROTOCOL as FORWARD_PROTOCOL
from .worker.serve import ForwardServer
from .worker.subprocess import run_backend

BOOTSTRAP_BACKOFF_S = (0.25, 10.0)  # first retry, cap
REBOOTSTRAP_CHECK_S = 5.0  # how often a node with no live peers retries its bootstraps

log = structlog.get_logger("opentela.node")


async def fetch_bootstrap_url(url: str) -> list[str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, s.get(url) as r:
        data = json.loads(await r.read())
    addrs = data.get("bootstraps") if isinstance(data, dict) else None
    if not isinstance(addrs, list):
        raise ValueError(f"{url} did not return {{'bootstraps': [...]}}")
    return [str(a) for a in addrs]


async def _bootstrap(cfg: Config, host: Host, sync: TableSync, swim: MembershipRuntime) -> None:
    """Join through any of the bootstraps; keep trying with backoff; rejoin if isolated."""
    delay = BOOTSTRAP_BACKOFF_S[0]
    while True:
        if sync.peers():
            delay = BOOTSTRAP_BACKOFF_S[0]
            await trio.sleep(REBOOTSTRAP_CHECK_S)
            continue
        addrs = list(cfg.bootstrap)
        if cfg.bootstrap_url:
            try:
                addrs += await to_aio(fetch_bootstrap_url)(cfg.bootstrap_url)
            except Exception as exc:
                log.warning("bootstrap.url_failed", url=cfg.bootstrap_url, error=str(exc))
        addrs = [a for a in addrs if f"/p2p/{host.peer_id}" not in a]
        if not addrs and not (cfg.bootstrap or cfg.bootstrap_url):
            return  # a standalone first node: others will join us
        for addr in addrs:
            try:
                pid = await host.connect(addr)
                swim.join(pid, [addr])
                await sync.join(pid)
                log.info("bootstrap.joined", via=addr, peers=len(sync.peers()))
                break
            except StreamFailed as exc:
                log.warning(
                    "bootstrap.retry", addr=addr, error=str(exc), retry_in_s=round(delay, 2)
                )
        else:
            await trio.sleep(delay)
            delay = min(delay * 2, BOOTSTRAP_BACKOFF_S[1])


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
    timeout_s: float,
    signals: AsyncIterator[int],
) -> None:
    """Advertise ``draining`` (peers stop sending new work at once), refuse new forwarded
    requests (entries retry them elsewhere), and let in-flight ones finish, for at most
    ``timeout_s``; a second signal cuts the wait short."""
    sync.update(status=DRAINING)
    if server is not None:
        server.draining = True

    def busy() -> int:
        return (server.in_flight if server is not None else 0) + forwarder.in_flight()

    log.info("node.draining", in_flight=busy(), timeout_s=timeout_s)
    start = trio.current_time()
    with trio.move_on_after(timeout_s) as scope:
        async with trio.open_nursery() as nursery:

            async def second_signal() -> None:
                async for _ in signals:
                    log.warning("node.drain_interrupted")
                    nursery.cancel_scope.cancel()

            nursery.start_soon(second_signal)
            while busy():
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    log.info(
        "node.drained",
        waited_s=round(trio.current_time() - start, 3),
        unfinished=busy(),
        timed_out=scope.cancelled_caught,
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


async def run(cfg: Config) -> None:
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
            open_host(key, cfg.p2p_host, cfg.p2p_port, cfg.public_addr) as host,
        ):
            initial = NodeRecord(
                peer_id=peer_id,
                version=int(time.time() * 1000),
                timestamp=time.time(),
                role=role,
                status=READY,
                addrs=tuple(host.addrs()),
                http_addr=f"http://{http_host}:{cfg.http_port}",
                services=services,
                gpus=gpus,
                software=f"opentela/{__version__}",
                extra=slurm_extra(job),
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
            )
            liveness = Liveness(host, pool, sync.store)
            swim = MembershipRuntime(host, membership, liveness.on_effect, rng)
            async with trio.open_nursery() as nursery:
                await nursery.start(swim.run)
                await nursery.start(sync.run)
                backend: Backend | None = None
                agent: WorkerAgent | None = None
                if cfg.backend_url:
                    backend = Backend(cfg.backend_url)
                    await to_aio(backend.open)()
                    server = ForwardServer(backend, cfg.service_name or "llm", peer_id)
                    host.set_handler(FORWARD_PROTOCOL, server.handle)
                    agent = WorkerAgent(
                        sync, server, backend, cfg.service_name or "llm", cfg.service_identity_group
                    )
                    if cfg.subprocess:
                        await nursery.start(run_backend, cfg.subprocess, agent.on_backend_exit)
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
                    # A node with bootstraps is ready once it reached one; a first node at once.
                    joined=lambda: not (cfg.bootstrap or cfg.bootstrap_url) or bool(sync.peers()),
                )
                gateway = Gateway(view, forwarder, balancer, cfg.max_body_bytes)
                runner = web.AppRunner(gateway.app(), access_log=None, handler_cancellation=True)
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
                nursery.start_soon(_bootstrap, cfg, host, sync, swim)
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
                await drain(sync, server, forwarder, cfg.drain_timeout, signals)
                swim.leave()
                await sync.leave()
                await to_aio(runner.cleanup)()
                if backend is not None:
                    await to_aio(backend.close)()
                nursery.cancel_scope.cancel()
    log.info("node.stopped", peer_id=peer_id)
