"""Per-peer limits: what one peer may cost this node. Pure (``now`` is passed in).

Every protocol handler serves many peers; one member that floods (a bug, or hostile) must hit
its own limit and leave the node serving everyone else. The limits here are far above what a
well-behaved node does (see each constant's reason) so they only ever bind a misbehaving peer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MAX_STREAMS_PER_PEER = 512
"""Concurrent inbound streams from one peer, all protocols: a worker serving 256 forwarded
requests (``worker/serve``) plus membership, table and admission streams stays below it."""
TABLE_RATE_PER_S = 50.0
"""Table messages per second from one peer: anti-entropy is 3 messages per 5 s, a push per
record change; 50/s is a whole pool restarting at once."""
TABLE_BURST = 200
"""Table messages a peer may send at once: the pushes of a node joining a 200-node pool."""
GOSSIP_RATE_PER_S = 50.0
"""Table gossip messages per second from one peer: a node sends ``fanout`` (3) per 0.2 s in
all, so one peer sends us ~1/s on average; direct load updates from a worker we forward to
add at most 2/s. 50/s only binds a flood."""
GOSSIP_BURST = 200
"""Gossip messages a peer may send at once (a backlog flushed after a stall)."""
SWIM_RATE_PER_S = 200.0
"""Membership messages per second from one peer: SWIM sends a few per protocol period (0.2 s
at the fastest), indirect probes included; beyond, messages are dropped as UDP would."""
SWIM_BURST = 400
"""Membership messages a peer may send at once (a backlog flushed after a stall)."""
LOG_EVERY_S = 60.0
"""A peer over a limit is logged at most once per this period, not once per message."""
MAX_TRACKED_PEERS = 4096
"""Peers whose buckets and log times are remembered; the oldest are forgotten (a forgotten
peer starts again with a full bucket, which only a peer cycling 4096 identities can exploit)."""


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; each message takes one."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class PeerRate:
    """One token bucket per peer, bounded in the number of peers it remembers."""

    def __init__(self, rate: float, burst: int, max_peers: int = MAX_TRACKED_PEERS) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_peers = max_peers
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.refused = 0

    def allow(self, peer_id: str, now: float) -> bool:
        bucket = self._buckets.get(peer_id)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            self._buckets[peer_id] = bucket
            if len(self._buckets) > self.max_peers:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(peer_id)
        if bucket.take(now):
            return True
        self.refused += 1
        return False


class PeerSlots:
    """Concurrent things (streams) per peer, at most ``limit`` each. ``acquire`` says whether
    one more is allowed (and counts it); every successful acquire needs one ``release``."""

    def __init__(self, limit: int = MAX_STREAMS_PER_PEER) -> None:
        self.limit = limit
        self.active: dict[str, int] = {}
        self.refused = 0

    def acquire(self, peer_id: str) -> bool:
        n = self.active.get(peer_id, 0)
        if n >= self.limit:
            self.refused += 1
            return False
        self.active[peer_id] = n + 1
        return True

    def release(self, peer_id: str) -> None:
        n = self.active.get(peer_id, 0) - 1
        if n > 0:
            self.active[peer_id] = n
        else:
            self.active.pop(peer_id, None)


class LogOnce:
    """``should_log(key, now)``: true at most once per ``every_s`` per key (bounded memory)."""

    def __init__(self, every_s: float = LOG_EVERY_S, max_keys: int = MAX_TRACKED_PEERS) -> None:
        self.every_s = every_s
        self.max_keys = max_keys
        self._last: OrderedDict[str, float] = OrderedDict()

    def should_log(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        if len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True
