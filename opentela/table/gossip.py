"""Which table news goes to whom, and when: bounded fan-out gossip. Sans-I/O.

Pushing every change to every peer costs each node one message per peer per change, so the
table's cost per node grew with the pool. Here a node sends at most ``fanout`` messages per
``interval_s`` (to random live peers), each carrying a batch of rumors, whatever the pool's
size; a node that accepts a rumor as news queues it in turn, so it spreads epidemically and
reaches all ``n`` nodes after O(log n) intervals. Anti-entropy (``sync.py``) repairs the rare
node that gossip missed.

Two kinds of rumor, with different worth:

``RECORD``
    a signed record (a join, a status or service change, a tombstone). Rare and must reach
    everyone: each node sends it ``retransmit_mult * ceil(log10(n + 1))`` times (memberlist's
    retransmit limit: the chance that a node is missed falls like ``e**-transmissions``).
``LOAD``
    a small signed load update. Frequent and only a hint (each entry also counts its own
    requests, and workers tell their recent entries directly): each node forwards it once per
    chosen peer of one interval, ``load_transmits`` times, and loads never crowd out records.

Queues are latest-wins per (kind, author): a newer rumor about an author replaces the one still
queued, so a burst of load changes costs one rumor, not one per change. Messages are bounded in
bytes (``max_message_bytes``); what does not fit waits for the next interval.

Pure: the caller passes time, the live peers and an ``rng``, and carries out the ``Send``s.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgpack

RECORD, LOAD = "record", "load"
_PRIORITY = {RECORD: 0, LOAD: 1}

DEFAULT_FANOUT = 3
DEFAULT_INTERVAL_S = 0.2
DEFAULT_RETRANSMIT_MULT = 3
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
ITEM_OVERHEAD = 16  # msgpack framing of one rumor in a message: (author, version) header
POOL_LOAD_RATE = 7.0
"""Load rumors per second the whole pool gossips (on average): each node forwards each one
``load_transmits`` times (~110 bytes), so this sets the load part of every node's traffic,
~2.1 KB/s, whatever the pool's size (``scripts/bench_scale.py``: with SWIM's ~1 KB/s and the
direct updates to entries, ~3.6 KB/s per node at N = 1,000, under the 4 KB/s target)."""
LOAD_MIN_GOSSIP_S = 0.5  # a worker gossips its load at most this often, even in a small pool


def load_gossip_interval(n_members: int) -> float:
    """How often one worker may gossip its load: the pool shares ``POOL_LOAD_RATE``."""
    return max(LOAD_MIN_GOSSIP_S, n_members / POOL_LOAD_RATE)


@dataclass(frozen=True, slots=True)
class Rumor:
    kind: str  # RECORD or LOAD
    author: str
    version: int
    data: bytes  # the signed item, as it goes on the wire

    @property
    def size(self) -> int:
        return len(self.data) + ITEM_OVERHEAD


@dataclass(frozen=True, slots=True)
class Send:
    to_id: str
    rumors: tuple[Rumor, ...]


def encode_message(rumors: Iterable[Rumor]) -> bytes:
    """The body of one ``/opentela/gossip/1`` message: ``{"r": [[author, version, record],
    ...], "l": [load update, ...]}``, empty lists left out. Records carry their (author,
    version) beside the signed bytes so a receiver drops copies before decoding them."""
    rumors = list(rumors)
    msg: dict[str, list] = {}
    if records := [[r.author, r.version, r.data] for r in rumors if r.kind == RECORD]:
        msg["r"] = records
    if loads := [r.data for r in rumors if r.kind == LOAD]:
        msg["l"] = loads
    return msgpack.packb(msg, use_bin_type=True)


def encode_direct(load_update: bytes) -> bytes:
    """A worker's load update sent straight to an entry: ``{"d": [update]}``, applied by the
    receiver and never passed on (so the worker's full rate stays off the pool's budget)."""
    return msgpack.packb({"d": [load_update]}, use_bin_type=True)


@dataclass(slots=True)
class _Item:
    rumor: Rumor
    source: str | None  # who told us (not told back); None for our own news
    transmits: int
    order: int


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """``retransmit_mult * ceil(log10(n + 1))``: one more multiple per tenfold growth."""
    return retransmit_mult * max(1, math.ceil(math.log10(max(0, n) + 1)))


class Gossip:
    """One node's outgoing rumors. Not thread-safe: feed it from one task."""

    def __init__(
        self,
        *,
        fanout: int = DEFAULT_FANOUT,
        interval_s: float = DEFAULT_INTERVAL_S,
        retransmit_mult: int = DEFAULT_RETRANSMIT_MULT,
        load_transmits: int | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        now_s: float = 0.0,
    ) -> None:
        if fanout < 1 or interval_s <= 0 or retransmit_mult < 1:
            raise ValueError("need fanout >= 1, interval_s > 0, retransmit_mult >= 1")
        self.fanout = fanout
        self.interval_s = interval_s
        self.retransmit_mult = retransmit_mult
        self.load_transmits = fanout if load_transmits is None else load_transmits
        self.max_message_bytes = max_message_bytes
        self._items: dict[tuple[str, str], _Item] = {}
        self._order = 0
        self._next_s = now_s

    def __len__(self) -> int:
        return len(self._items)

    def pending(self) -> list[Rumor]:
        return [it.rumor for it in self._sorted()]

    def offer(self, rumor: Rumor, source: str | None = None) -> bool:
        """Queue news the caller has accepted (verified, newer than what it had). A rumor no
        newer than the one already queued about the same author is ignored (returns False)."""
        key = (rumor.kind, rumor.author)
        old = self._items.get(key)
        if old is not None and old.rumor.version >= rumor.version:
            return False
        self._order += 1
        self._items[key] = _Item(rumor, source, 0, self._order)
        return True

    def drop(self, author: str) -> None:
        """Forget whatever is queued about ``author`` (it was forgotten or banned)."""
        for kind in _PRIORITY:
            self._items.pop((kind, author), None)

    def next_deadline_s(self) -> float:
        return self._next_s if self._items else math.inf

    def tick(
        self, now_s: float, peers: Sequence[str], rng: random.Random, n_members: int | None = None
    ) -> list[Send]:
        """Once per interval: up to ``fanout`` messages, to distinct random ``peers``.

        ``n_members`` (default: ``len(peers) + 1``) sizes the record retransmit limit.
        """
        if not self._items or now_s < self._next_s:
            return []
        self._next_s = now_s + self.interval_s
        if not peers:
            return []
        n = n_members if n_members is not None else len(peers) + 1
        limits = {RECORD: retransmit_limit(self.retransmit_mult, n), LOAD: self.load_transmits}
        chosen = rng.sample(list(peers), min(self.fanout, len(peers)))
        out: list[Send] = []
        for to in chosen:
            batch: list[Rumor] = []
            left = self.max_message_bytes
            for item in self._sorted():
                r = item.rumor
                if to in (item.source, r.author) or r.size > left:
                    continue
                batch.append(r)
                left -= r.size
                item.transmits += 1
                if item.transmits >= limits[r.kind]:
                    del self._items[(r.kind, r.author)]
            if batch:
                out.append(Send(to, tuple(batch)))
        if len(peers) <= 2:
            # A rumor nobody can take (the only peers are its source and author) is spent.
            for key, item in list(self._items.items()):
                if set(peers) <= {item.source, item.rumor.author}:
                    del self._items[key]
        return out

    def _sorted(self) -> list[_Item]:
        # Records first, then fewest transmissions (fresh news overtakes old), then newest.
        return sorted(
            self._items.values(),
            key=lambda it: (_PRIORITY[it.rumor.kind], it.transmits, -it.order),
        )
