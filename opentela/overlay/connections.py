"""A bound on this node's libp2p connections (``--p2p.max-connections``).

Why: left alone, every node ends up connected to every other (SWIM probes every member, the
table reaches every peer, and py-libp2p's own auto-connector dials whatever its peerstore
holds, see ``host._no_auto_connect``). At a few hundred nodes that is memory and file
descriptors per node growing with the pool, and py-libp2p refuses dials beyond 300
connections. A connection is cheap to re-open on demand (measured on loopback: ~8 ms of CPU for
TCP + Noise + yamux + the first stream, against ~2.5 ms for a stream on an open connection), so
when over the cap the least recently used idle connections are closed:

- idle: no stream opened or written to, either way, for ``idle_s`` (``Host.last_active``), and
  no stream open on it except those of one-way protocols (SWIM, table gossip:
  ``overlay/peer_senders`` reopens them on the next message, retrying the message once) and
  streams a pool keeps for reuse;
- never a protected peer (the caller's: bootstrap peers, peers with requests in flight).

SWIM still probes every member: a closed connection is re-dialed by the next probe and lives
until it is idle again. So the bound holds once the pool is large enough that a node talks to
a given member less often than every ``idle_s`` (at ``--probe-interval 0.25``, a pair of
nodes exchanges a probe about every N/8 s): in a small pool every connection is in use, and
closing one would only buy a dial a second later. In a large one a node opens ~2 connections
per probe interval (its probe, and the probes it receives), each kept ``idle_s``: with the
defaults that is ~24 connections, below the default cap of 64. The cap is 64 rather than 32
because a pool of up to 64 then needs no reconnects at all, and reconnects are what a starved
machine fails first: in ``scripts/bench_membership.py --n 50`` on 2 busy cores, a cap of 32
kept the pool from converging (dials timed out, members were suspected), 64 did not. The decision
(:func:`to_close`) is pure; :class:`ConnectionBudget` drives it every ``interval_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog
import trio

from .host import Host

DEFAULT_MAX = 64
IDLE_S = 3.0  # a connection with no stream opened or written to for this long may be closed
INTERVAL_S = 1.0  # how often the count is checked (cheap: one pass over the connections)

log = structlog.get_logger("opentela.connections")


@dataclass(frozen=True, slots=True)
class Conn:
    peer_id: str
    last_active: float | None  # when a stream was last opened or written to; None: never
    streams: int  # open streams that would break (not one-way, not held idle for reuse)


def to_close(
    now: float, conns: Iterable[Conn], cap: int, protected: frozenset[str], idle_s: float
) -> list[str]:
    """The peers whose connections to close to get down to ``cap``, least recently used
    first; fewer (or none) when not enough are idle and unprotected."""
    conns = list(conns)
    excess = len(conns) - cap
    if excess <= 0:
        return []
    idle = [
        c
        for c in conns
        if c.peer_id not in protected
        and c.streams <= 0
        and (c.last_active is None or now - c.last_active >= idle_s)
    ]
    idle.sort(key=lambda c: (c.last_active if c.last_active is not None else -1e18, c.peer_id))
    return [c.peer_id for c in idle[:excess]]


class ConnectionBudget:
    """Keeps ``host``'s connections at most ``max_connections`` (see module doc).

    ``one_way``: protocols whose open streams do not keep a connection. ``protected``: peers
    never closed. ``reusable(peer)``: streams to it held idle for reuse (a stream pool's), which
    ``release(peer)`` drops before its connection is closed."""

    def __init__(
        self,
        host: Host,
        max_connections: int = DEFAULT_MAX,
        *,
        one_way: frozenset[str] = frozenset(),
        protected: Callable[[], frozenset[str]] = frozenset,
        reusable: Callable[[str], int] = lambda peer: 0,
        release: Callable[[str], None] = lambda peer: None,
        idle_s: float = IDLE_S,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.host = host
        self.max_connections = max_connections
        self.one_way = one_way
        self.protected = protected
        self.reusable = reusable
        self.release = release
        self.idle_s = idle_s
        self.interval_s = interval_s
        self.closed = 0

    @property
    def stats(self) -> dict[str, int]:
        return {"connections": len(self.host.connected_peers()), "connections_closed": self.closed}

    def _conns(self) -> list[Conn]:
        return [
            Conn(pid, self.host.last_active(pid), n - self.reusable(pid))
            for pid, n in self.host.open_streams(self.one_way).items()
        ]

    def plan(self, now: float) -> list[str]:
        """Which connections to close now."""
        return to_close(now, self._conns(), self.max_connections, self.protected(), self.idle_s)

    async def sweep(self) -> int:
        closed = 0
        for pid in self.plan(trio.current_time()):
            # Closing awaits: the next victim may have been put to use meanwhile.
            now = trio.current_time()
            current = {c.peer_id: c for c in self._conns()}.get(pid)
            if current is None or not to_close(now, [current], 0, self.protected(), self.idle_s):
                continue
            self.release(pid)
            await self.host.close_peer(pid)
            closed += 1
        if closed:
            self.closed += closed
            log.debug("connections.closed", closed=closed, cap=self.max_connections)
        return closed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            await self.sweep()
