"""Entry-side load estimate per replica: the gossiped load plus what we sent since.

Each worker publishes ``load`` (requests it is running or has queued) in its record, sampled
when it signs version V. An entry node learns V some time later and keeps routing meanwhile, so
the number alone goes stale exactly when it matters: a burst of requests from this entry would
all see the same low load and pile onto one replica. The estimate corrects for our own part::

    estimate = max(L - finished_old, open_old) + open_new

``L``
    the load published in the newest version received from that peer;
``open_new``
    our requests to that peer started *after* we received V and not finished yet: the worker
    cannot have counted them in L, so they are added;
``open_old`` / ``finished_old``
    our requests started *before* we received V, still open / finished since we received V.
    They are assumed counted in L (they were sent before the record reached us), so each one
    that finishes takes one off L; the ones still open are a floor, since we know for certain
    they are outstanding. With no requests of ours the floor is 0.

Error bounds (all from timing, none accumulate past the next record, because every new
version resets the bookkeeping; a worker re-samples its load for every version it signs):

* requests of ours sent between the worker's sampling of V and our receipt of V are assumed
  counted but were not: an *under*-estimate of at most our send rate to that peer * (sampling
  to signing + gossip delay), normally milliseconds, up to an anti-entropy round (~2 s) when
  the push was lost;
* requests of ours that finished at the worker before it sampled V but whose completion we saw
  after receiving V are subtracted twice: another under-estimate, bounded by our completion
  rate * the same window; the ``open_old`` floor and the floor at 0 cap it;
* other entry nodes' traffic since V is invisible: the estimate lags by their net arrivals
  since V, bounded by their rate * the record's age (the refresh period, 10 s, or less when
  workers publish on change). Policies that use the estimate (power-of-two choices, bounded
  loads) are chosen because they stay good under such stale, shared information.

Pure: no clock and no I/O. The caller feeds records in the order it receives them and brackets
each forwarded request with ``on_start``/``on_finish`` (always, also on failure and cancel).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Ticket:
    """One forwarded request, as returned by ``on_start``; opaque apart from ``peer_id``."""

    peer_id: str
    epoch: int
    serial: int


@dataclass
class _Peer:
    version: int = -1
    load: int = 0
    # Bumped every time a newer record arrives; a ticket remembers the epoch it started in.
    epoch: int = 0
    open_new: int = 0
    open_old: int = 0
    finished_old: int = 0
    open: set[int] = field(default_factory=set)


class LoadEstimator:
    """Per entry node, one instance shared by all requests (not thread-safe; one event loop)."""

    def __init__(self) -> None:
        self._peers: dict[str, _Peer] = {}
        self._serial = 0

    def on_record(self, peer_id: str, version: int, load: int) -> bool:
        """A record from ``peer_id`` was received. Returns whether it was newer than the last
        one: repeats and older versions (relayed copies, anti-entropy) change nothing, so it is
        safe to call for every record of every snapshot."""
        p = self._peers.setdefault(peer_id, _Peer())
        if version <= p.version:
            return False
        p.version, p.load, p.epoch = version, max(0, int(load)), p.epoch + 1
        # Everything still open was started before this record arrived: assumed counted in it.
        p.open_old += p.open_new
        p.open_new = 0
        p.finished_old = 0
        return True

    def on_start(self, peer_id: str) -> Ticket:
        """A request is being forwarded to ``peer_id`` now (before its first byte is sent)."""
        p = self._peers.setdefault(peer_id, _Peer())
        self._serial += 1
        p.open.add(self._serial)
        p.open_new += 1
        return Ticket(peer_id, p.epoch, self._serial)

    def on_finish(self, ticket: Ticket) -> None:
        """The request ended, however it ended. Idempotent; unknown tickets are ignored."""
        p = self._peers.get(ticket.peer_id)
        if p is None or ticket.serial not in p.open:
            return
        p.open.discard(ticket.serial)
        if ticket.epoch == p.epoch:
            p.open_new -= 1
        else:
            p.open_old -= 1
            p.finished_old += 1

    def estimate(self, peer_id: str) -> float:
        """Requests believed to be running or queued at ``peer_id``; 0 for unknown peers."""
        p = self._peers.get(peer_id)
        if p is None:
            return 0.0
        return float(max(p.load - p.finished_old, p.open_old) + p.open_new)

    def estimates(self, peer_ids: Iterable[str]) -> dict[str, float]:
        return {pid: self.estimate(pid) for pid in peer_ids}

    def in_flight(self, peer_id: str) -> int:
        """This entry's own open requests to ``peer_id`` (any epoch)."""
        p = self._peers.get(peer_id)
        return 0 if p is None else len(p.open)

    def forget(self, peer_id: str) -> None:
        """Drop a peer the table forgot. Its open tickets finish as no-ops; a later record
        starts it afresh (the store's version floor keeps old versions from coming back)."""
        self._peers.pop(peer_id, None)

    def retain(self, peer_ids: Iterable[str]) -> None:
        """Forget every peer not in ``peer_ids`` that has no open request (bounds memory)."""
        keep = set(peer_ids)
        for pid in [q for q, p in self._peers.items() if q not in keep and not p.open]:
            del self._peers[pid]
