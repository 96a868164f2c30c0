"""The retransmit-limited broadcast queue (memberlist's ``TransmitLimitedQueue``). Sans-I/O.

Membership news never gets a message of its own: it rides on the Pings, Acks and PingReqs the
failure detector sends anyway, a few updates per message (see ``take``). Each update is sent
``retransmit_limit(retransmit_mult, n)`` times and then dropped. Every node that learns
something new queues it again, so news spreads epidemically and reaches all ``n`` nodes with
high probability after O(log n) transmissions per node, while per-node traffic stays bounded by
the piggyback budget whatever ``n`` is.

Only the newest update about a member is worth sending: queueing one replaces whatever was
queued about that member. The state machine only queues updates it has just accepted, so the
update queued last is always the newest one.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from .messages import Update, update_size


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times each update is sent: ``retransmit_mult * ceil(log10(n + 1))``.

    The log10 term grows the limit by one multiple per tenfold growth of the cluster: 1 up to 9
    nodes, 2 up to 99. (memberlist's ``retransmitLimit`` in util.go.)
    """
    return retransmit_mult * math.ceil(math.log10(max(0, n) + 1))


@dataclass(slots=True)
class _Item:
    update: Update
    size: int
    transmits: int
    order: int  # insertion counter; higher = newer


class BroadcastQueue:
    """Updates waiting to be piggybacked, at most one per member."""

    def __init__(self, retransmit_mult: int) -> None:
        self.retransmit_mult = retransmit_mult
        self._items: dict[str, _Item] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, update: Update) -> None:
        """Queue ``update``, replacing any older one about the same member."""
        self._order += 1
        self._items[update.member] = _Item(update, update_size(update), 0, self._order)

    def pending(self) -> list[Update]:
        """Queued updates in the order ``take`` would pick them (for tests and debugging)."""
        return [item.update for item in self._sorted()]

    def _sorted(self) -> list[_Item]:
        # Ordering rule: fewest transmissions first, so fresh news overtakes news that has
        # already been sent a few times; among equals, newest first, because a newer update
        # is more likely to be news to the receiver. (memberlist's ``limitedBroadcast.Less``.)
        return sorted(self._items.values(), key=lambda it: (it.transmits, -it.order))

    def take(self, max_bytes: int, n_members: int, exclude: Collection[str] = ()) -> list[Update]:
        """Pack as many updates as fit in ``max_bytes``, counting one transmission for each.

        An update that does not fit is skipped, not a stopper: a smaller one behind it may
        still fit. Updates that reach their retransmit limit (for a cluster of ``n_members``,
        ourselves included) are dropped from the queue. Updates about members in ``exclude``
        are left alone (the caller already put fresher news about them in the message).
        """
        limit = retransmit_limit(self.retransmit_mult, n_members)
        out: list[Update] = []
        left = max_bytes
        for item in self._sorted():
            if item.size > left or item.update.member in exclude:
                continue
            out.append(item.update)
            left -= item.size
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.update.member]
        return out
