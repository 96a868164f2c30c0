"""This node's reachability as one component: whether it is public or private, the relay
service it offers when public (heads and ``--role relay``), the reservations it holds when
private, and, with ``--reachability auto``, the dial-back check that corrects a wrong guess.

``auto`` starts from what is known in advance: a Slurm job without ``--public-addr`` is private
(compute nodes can dial out, not be dialed); anything else public. A public guess is then put
to peers (``reach/dialback.py``): if they answer and none can connect, the node turns private,
reserves relays and says so in its record; it checks again every ``RECHECK_S``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import structlog
import trio

from ..config import Config
from ..overlay.host import Host
from ..overlay.route import PeerReach
from ..table.record import PRIVATE, PUBLIC, READY
from ..table.sync import TableSync
from .choose import Candidate
from .client import RelayClient
from .dialback import ASK, DialBack, verdict
from .relay import RelayService

RELAY_ROLES = ("head", "relay")
FIRST_CHECK_S = 1.0  # after joining, before the first dial-back
RETRY_S = 30.0  # no peer could answer: ask again
RECHECK_S = 600.0

log = structlog.get_logger("opentela.reach")


def initial_reachability(cfg: Config, in_slurm: bool) -> str:
    if cfg.reachability in (PUBLIC, PRIVATE):
        return cfg.reachability
    return PRIVATE if in_slurm and not cfg.public_addr else PUBLIC


def advertised_port(addrs: list[str], default: int) -> int:
    for a in addrs:
        m = re.search(r"/tcp/(\d+)", a)
        if m:
            return int(m.group(1))
    return default


class Reachability:
    def __init__(
        self,
        cfg: Config,
        host: Host,
        sync: TableSync,
        *,
        alive: Callable[[str], bool],
        rtt: Callable[[str], float | None],
        joined: Callable[[], bool],
        bootstrap_peers: frozenset[str],
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.sync = sync
        self.alive = alive
        self.rtt = rtt
        self.joined = joined
        self.bootstrap_peers = bootstrap_peers
        self.state = sync.own.reachability
        self.service = RelayService(
            host,
            offering=lambda: self.state == PUBLIC and cfg.effective_role in RELAY_ROLES,
            is_private=lambda pid: getattr(self._reach_of(pid), "reachability", "") == PRIVATE,
        )
        self.client = RelayClient(host, self._candidates, alive, self._relays_changed)
        self.dialback = DialBack(host, self._announced)
        self._nursery: trio.Nursery | None = None
        self._client_scope: trio.CancelScope | None = None
        host.reach_of = self._reach_of
        host.own_relays = lambda: self.client.relays if self.state == PRIVATE else ()

    def _reach_of(self, peer_id: str) -> PeerReach | None:
        signed = self.sync.store.get(peer_id)
        if signed is None:
            return None
        rec = signed.record
        return PeerReach(rec.reachability, rec.relays)

    def _announced(self, peer_id: str) -> tuple[str, ...]:
        signed = self.sync.store.get(peer_id)
        return signed.record.addrs if signed is not None else ()

    def _candidates(self) -> list[Candidate]:
        store, now = self.sync.store, trio.current_time()
        out: list[Candidate] = []
        known: set[str] = set()
        for pid, signed in store.records().items():
            rec = signed.record
            known.add(pid)
            if (
                pid != store.self_id
                and rec.role in RELAY_ROLES
                and rec.reachability == PUBLIC
                and rec.status == READY
                and store.alive(pid, now)
            ):
                out.append(Candidate(pid, rec.role, pid in self.bootstrap_peers, self.rtt(pid)))
        # Bootstrap peers the table has not told us about yet (the first minute of a job).
        out += [Candidate(p, "", True) for p in self.bootstrap_peers if p not in known]
        return out

    def _relays_changed(self, relays: tuple[str, ...]) -> None:
        if self.state == PRIVATE and relays != self.sync.own.relays:
            self.sync.update(relays=relays)

    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.service.start()
        self.dialback.start()
        if self.state == PRIVATE:
            await self._start_client()
        if self.cfg.reachability == "auto" and self.state == PUBLIC:
            nursery.start_soon(self._check_loop)

    async def _start_client(self) -> None:
        assert self._nursery is not None

        async def run_client(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self._client_scope = scope
                await self.client.run(task_status=task_status)

        await self._nursery.start(run_client)

    async def _check_loop(self) -> None:
        while not self.joined():
            await trio.sleep(0.5)
        await trio.sleep(FIRST_CHECK_S)
        while self.state == PUBLIC:
            result = await self.check()
            await trio.sleep(RETRY_S if result is None else RECHECK_S)

    async def check(self) -> bool | None:
        """Ask up to ``ASK`` public peers to dial us back; turn private if none could."""
        store = self.sync.store
        peers = []
        for pid in self.host.connected_peers():
            signed = store.get(pid)
            if signed is not None and signed.record.reachability == PUBLIC:
                peers.append(pid)
        port = advertised_port(self.host.addrs(), self.cfg.p2p_port)
        answers = [await self.dialback.ask(pid, port) for pid in peers[:ASK]]
        result = verdict(answers)
        if result is False:
            log.warning(
                "reach.private",
                port=port,
                asked=len(answers),
                detail="peers cannot connect to this node: it is reached through relays "
                "(set --reachability public or --public-addr if that is wrong)",
            )
            self.state = PRIVATE
            self.sync.update(reachability=PRIVATE, relays=self.client.relays, addrs=())
            await self._start_client()
        return result

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "reach": {
                "reachability": self.state,
                "relays": list(self.client.relays) if self.state == PRIVATE else [],
                "relay_client": dict(self.client.stats),
                "relay_service": self.service.snapshot(),
                "relayed": dict(self.host.relay_stats),
                "dialback": dict(self.dialback.stats),
            }
        }
