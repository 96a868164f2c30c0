"""The entry node's routing memory: the load estimator and the policy's state, one per node.

Reads table snapshots (gossiped load per replica, and the newer load updates), counts this node's own requests to each
replica, and orders every tier of a plan under the configured policy. Never writes the table.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from ..routing.balance import BalanceState, Policy, order, prefix_key
from ..routing.estimate import LoadEstimator, Ticket
from ..routing.plan import Target, reorder
from ..table.store import Snapshot


class Balancer:
    def __init__(self, policy: str, rng: random.Random | None = None) -> None:
        self.policy = Policy(policy)
        self.rng = rng or random.Random()
        self.estimator = LoadEstimator()
        self.state = BalanceState()
        self._fed: Snapshot | None = None

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
            self.estimator.retain([e.record.peer_id for e in routable])
            for e in routable:
                self.estimator.on_record(e.record.peer_id, e.record.version, e.record.load)
        suspects = frozenset(e.record.peer_id for e in routable if e.suspect)
        key = prefix_key(dict(body or {}), headers) if self.policy is Policy.AFFINITY else None

        def order_ids(ids: list[str]) -> list[str]:
            for pid in ids:  # load updates arrive between snapshots: the candidates' newest
                self.estimator.on_record(pid, *snap.load(pid))
            estimates = self.estimator.estimates(ids)
            return order(self.policy, ids, estimates, key, self.rng, self.state)

        return reorder(targets, suspects, order_ids)

    def start(self, peer_id: str) -> Ticket:
        return self.estimator.on_start(peer_id)

    def finish(self, ticket: Ticket) -> None:
        self.estimator.on_finish(ticket)
