"""This node's membership in the pool, as one component: SWIM membership, the signed table and
its sync, the stream pool, rejoining (bootstraps, remembered members), reachability (relays,
``reach/``) and, in a closed pool, admission. The node starts it, joins through it, asks it
for stats and leaves through it.

Liveness has one path: membership verdicts go to the table store (``Liveness``), where routing
reads them; a peer declared dead has its streams failed so waiting requests retry at once.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import aiohttp
import structlog
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .aio_bridge import to_aio
from .closed_pool import GRANTS_EXTRA, ClosedPool
from .config import Config, bootstrap_problem
from .overlay.connections import ConnectionBudget
from .overlay.host import Host
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
from .reach.reachability import Reachability
from .stop_budget import StopBudget
from .table.record import LEFT, NodeRecord
from .table.store import ALIVE, DEAD, GONE, SUSPECT, Snapshot, TableStore
from .table.sync import TableSync
from .worker.serve import PROTOCOL as FORWARD_PROTOCOL

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


class PoolMember:
    def __init__(
        self,
        cfg: Config,
        host: Host,
        key: Ed25519PrivateKey,
        initial: NodeRecord,
        rng: random.Random,
        closed: ClosedPool | None,
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.peer_id = host.peer_id
        self.closed = closed
        self.membership = Membership(
            self.peer_id,
            MembershipConfig(
                probe_interval_s=cfg.probe_interval,
                probe_timeout_s=0.4 * cfg.probe_interval,
                # Milliseconds since the epoch: a restarted node outranks its old self.
                initial_incarnation=int(time.time() * 1000),
            ),
            trio.current_time(),
            # A private node announces no address (``node.own_record``).
            addrs=list(initial.addrs),
        )
        self.streams = StreamPool(host, FORWARD_PROTOCOL)
        self.sync = TableSync(
            host,
            key,
            initial,
            rng=rng,
            # Every peer the table learns of is handed to membership to probe.
            on_peer=lambda r: self.swim.join(r.peer_id, list(r.addrs)),
            admit=closed.admit if closed is not None else None,
        )
        if closed is not None:
            host.gate = closed.gate
            closed.start_own(
                on_grant=lambda blob: self.sync.update(grant=blob),
                granting_peers=lambda: granting_peers(self.sync, cfg.bootstrap),
            )
        self.liveness = Liveness(host, self.streams, self.sync.store)
        self.swim = MembershipRuntime(host, self.membership, self.liveness.on_effect, rng)
        bootstrap_peers = frozenset(p for p in map(peer_of, cfg.bootstrap) if p)
        self.connections = ConnectionBudget(
            host,
            cfg.p2p_max_connections,
            # Streams of one-way protocols reopen on the next message: they keep no connection.
            one_way=frozenset({self.swim.senders.protocol, self.sync.senders.protocol}),
            protected=lambda: bootstrap_peers | self.streams.busy_peers(),
            reusable=self.streams.idle_for,
            release=lambda pid: self.streams.abort_peer(pid, "idle connection closed"),
        )
        # Public or private; relaying for others, or reached through relays (``reach/``).
        self.reach = Reachability(
            cfg,
            host,
            self.sync,
            alive=lambda pid: self.sync.store.alive(pid, trio.current_time()),
            rtt=self.rtt,
            joined=self.joined,
            bootstrap_peers=bootstrap_peers,
        )
        self.rejoiner = Rejoiner(
            self.peer_id,
            cfg.home_path,
            list(cfg.bootstrap),
            self.join_via,
            alive=lambda pid: self.sync.store.alive(pid, trio.current_time()),
            live_peers=lambda: len(self.sync.peers()),
            view=lambda: pool_view(self.sync),
            rng=rng,
            bootstrap_url=cfg.bootstrap_url,
            fetch_url=to_aio(fetch_bootstrap_url),
        )

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.swim.run)
        await nursery.start(self.sync.run)
        await nursery.start(self.connections.run)
        if self.closed is not None:
            await nursery.start(self.closed.run)
        await self.reach.start(nursery)

    async def start_joining(self, nursery: trio.Nursery) -> None:
        """Dial bootstraps and remembered members (once the node can serve what it learns)."""
        await nursery.start(self.rejoiner.run)

    async def join_via(self, addr: str) -> str:
        pid = await self.host.connect(addr)
        if self.closed is not None:
            await self.closed.ensure_member(pid)
        self.swim.join(pid, [addr])
        await self.sync.join(pid)
        return pid

    def rtt(self, peer_id: str) -> float | None:
        """Round-trip time to ``peer_id`` measured by membership probes (None: not yet)."""
        rtt = getattr(self.membership, "rtt", None)
        return rtt(peer_id) if rtt is not None else None

    def snapshot(self) -> Snapshot:
        return self.sync.store.snapshot(trio.current_time())

    def joined(self) -> bool:
        return self.rejoiner.joined()

    async def leave(self, budget: StopBudget) -> None:
        """Remember the pool (for the next start), then tell it we are gone: membership's leave
        and the table's tombstone, which peers honour at once."""
        self.rejoiner.save(time.time())
        self.swim.leave()
        await self.sync.leave(timeout_s=min(2.0, 0.5 * budget.remaining(trio.current_time())))

    def close(self) -> None:
        if self.closed is not None:
            self.closed.close()

    @property
    def stats(self) -> dict[str, Any]:
        m = self.membership
        return {
            **self.connections.stats,
            "table": dict(self.sync.stats),
            "rejoin": dict(self.rejoiner.stats),
            **self.reach.stats,
            **({"admission": self.closed.stats} if self.closed is not None else {}),
            "membership": {
                **self.swim.stats,
                "alive": len(m.alive_ids()),
                "suspect": len(m.suspect_ids()),
                "incarnation": m.incarnation,
                **m.rtt_stats(),  # round trips measured by the probes (none extra sent)
            },
        }
