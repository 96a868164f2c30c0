"""The entry node's routing memory: load estimates, service rates and the policy's state.

Reads table snapshots (gossiped load per replica, and the newer load updates), counts this
node's own requests to each replica and times them (``routing/rate.py``: how fast each
replica drains requests), orders every tier of a plan under the configured policy, then by
place (``routing/place.py``: the entry's own ``site`` first while its replicas' load is
comparable). Never writes the table.

Constructor: ``site`` is this node's site label ("" : no place preference); ``rtt(peer_id)``
the round-trip time membership probes measured to a peer (seconds, None when unknown);
``clock`` the monotonic clock request durations are read from.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..routing.balance import BalanceState, Policy, order, prefix_key
from ..routing.estimate import LoadEstimator, Ticket
from ..routing.place import site_order
from ..routing.plan import Target, reorder
from ..routing.rate import ServiceRates
from ..table.store import Snapshot


@dataclass(frozen=True)
class Started:
    """One forwarded request, from ``Balancer.start`` to ``Balancer.finish``."""

    ticket: Ticket
    at_s: float

    @property
    def peer_id(self) -> str:
        return self.ticket.peer_id


class Balancer:
    def __init__(
        self,
        policy: str,
        rng: random.Random | None = None,
        *,
        site: str = "",
        rtt: Callable[[str], float | None] = lambda _pid: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = Policy(policy)
        self.rng = rng or random.Random()
        self.site = site
        self.rtt = rtt
        self.clock = clock
        self.estimator = LoadEstimator()
        self.rates = ServiceRates()
        self.state = BalanceState()
        self._fed: Snapshot | None = None
        # Only least-loaded, affinity and the place rule read service rates.
        self._weighs = self.policy in (Policy.LEAST_LOADED, Policy.AFFINITY) or bool(site)

    def arrange(
        self,
        snap: Snapshot,
        targets: list[Target],
        body: Mapping[str, Any] | None,
        headers: Mapping[str, str],
    ) -> list[Target]:
        routable = snap.routable()
        if snap is not self._fed:
            # Snapshots are immutable and rebuilt only when the table or liveness changes: feed
            # the estimator once per snapshot, not on every request.
            self._fed = snap
            ids = [e.record.peer_id for e in routable]
            self.estimator.retain(ids)
            self.rates.retain(snap.entries)
            for e in routable:
                self.estimator.on_record(e.record.peer_id, e.record.version, e.record.load)
        suspects = frozenset(e.record.peer_id for e in routable if e.suspect)
        key = prefix_key(dict(body or {}), headers) if self.policy is Policy.AFFINITY else None
        now = self.clock()

        def order_ids(ids: list[str]) -> list[str]:
            for pid in ids:  # load updates arrive between snapshots: the candidates' newest
                self.estimator.on_record(pid, *snap.load(pid))
            estimates = self.estimator.estimates(ids)
            weights = self.rates.weights(ids, now) if self._weighs else {}
            ordered = order(self.policy, ids, estimates, key, self.rng, self.state, weights)
            if not self.site:
                return ordered
            sites = {pid: _site(snap, pid) for pid in ids}
            return site_order(ordered, sites, self.site, estimates, weights, self.rtt)

        return reorder(targets, suspects, order_ids)

    def start(self, peer_id: str) -> Started:
        return Started(self.estimator.on_start(peer_id), self.clock())

    def finish(self, started: Started, ok: bool = False, decode_tps: float | None = None) -> None:
        """The request ended, however it ended (always called). ``ok``: with a successful
        answer, whose duration is then a sample of the replica's rate; ``decode_tps``: its
        tokens per second from first to last generated chunk, when it was streamed."""
        self.estimator.on_finish(started.ticket)
        if ok:
            now = self.clock()
            self.rates.observe(started.peer_id, now - started.at_s, decode_tps, now)


def _site(snap: Snapshot, peer_id: str) -> str:
    e = snap.entries.get(peer_id)
    return e.record.labels.get("site", "") if e is not None else ""
