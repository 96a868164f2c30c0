"""How to open a stream to a peer: directly, or through one of the relays (pure).

A private node cannot be dialed; it holds connections to a few reachable nodes (its relays,
named in its record) and is reached through them. A private node may still dial out, so a
public peer is dialed directly, once: a failed dial is remembered for ``DIAL_RETRY_S`` and
meanwhile the stream goes through a relay (the target's, or our own: a relay can dial a public
node we cannot). So no node dials an unreachable peer in a loop, and a private node never
dials another private one at all.

The order of relays: the one that carried the last stream to this peer (it worked), then
relays we already hold a connection to (no dial), then the rest in the record's order; a relay
that failed is tried last for ``RELAY_RETRY_S``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PRIVATE = "private"  # a record's ``reachability`` (``table/record.py``; the overlay is below it)
DIAL_RETRY_S = 60.0  # a failed (or still running) direct dial is not repeated for this long
RELAY_RETRY_S = 30.0  # a relay that failed goes to the back of the order for this long
MAX_REMEMBERED = 4096  # peers remembered (bounded memory whatever comes and goes)


@dataclass(frozen=True, slots=True)
class PeerReach:
    """What the table says about reaching a peer."""

    reachability: str
    relays: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    direct: bool
    relays: tuple[str, ...] = ()


def plan_route(
    peer_id: str,
    *,
    self_id: str,
    connected: bool,
    target: PeerReach | None,
    own_relays: Sequence[str],
    is_connected: Callable[[str], bool],
    dial_failed: bool,
    last_relay: str | None,
    failed_relays: frozenset[str],
) -> Route:
    """The ways to try, in order. ``dial_failed``: a direct dial to ``peer_id`` failed (or is
    under way) recently. ``own_relays``: our relays when we are private (they may dial a public
    target for us), else empty."""
    private = target is not None and target.reachability == PRIVATE
    relays: list[str] = []
    if private:
        relays.extend(target.relays)  # type: ignore[union-attr]
    elif not connected:
        relays.extend(own_relays)
    relays = [r for r in dict.fromkeys(relays) if r not in (peer_id, self_id)]
    first = [last_relay] if last_relay in relays else []
    held = [r for r in relays if r not in first and is_connected(r)]
    rest = [r for r in relays if r not in first and r not in held]
    ordered = first + held + rest
    ordered = [r for r in ordered if r not in failed_relays] + [
        r for r in ordered if r in failed_relays
    ]
    # A connection in hand is always used first (a private peer that dialed us is reachable
    # over it); a private peer is never dialed; a public one not while its dial is failing,
    # unless there is no other way.
    direct = connected or (not private and (not dial_failed or not ordered))
    return Route(direct=direct, relays=tuple(ordered))


class RouteMemory:
    """What the host remembers between streams: failed dials, failed relays, and which relay
    carried the last stream to each peer. Times are trio times passed in."""

    def __init__(self) -> None:
        self._dial: OrderedDict[str, float] = OrderedDict()
        self._relay_failed: OrderedDict[str, float] = OrderedDict()
        self._via: OrderedDict[str, str] = OrderedDict()

    @staticmethod
    def _put(d: OrderedDict, key: str, value: object) -> None:
        d.pop(key, None)
        d[key] = value
        while len(d) > MAX_REMEMBERED:
            d.popitem(last=False)

    def dial_started(self, peer_id: str, now: float) -> None:
        self._put(self._dial, peer_id, now)

    def dial_ok(self, peer_id: str) -> None:
        self._dial.pop(peer_id, None)

    def dial_failing(self, peer_id: str, now: float) -> bool:
        t = self._dial.get(peer_id)
        return t is not None and now - t < DIAL_RETRY_S

    def relay_failed(self, relay_id: str, now: float) -> None:
        self._put(self._relay_failed, relay_id, now)

    def failed_relays(self, now: float) -> frozenset[str]:
        return frozenset(r for r, t in self._relay_failed.items() if now - t < RELAY_RETRY_S)

    def relayed(self, peer_id: str, relay_id: str) -> None:
        self._relay_failed.pop(relay_id, None)
        self._put(self._via, peer_id, relay_id)

    def via(self, peer_id: str) -> str | None:
        return self._via.get(peer_id)

    def forget_via(self, peer_id: str) -> None:
        self._via.pop(peer_id, None)
