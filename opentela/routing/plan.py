"""Turn a request into an ordered list of attempts: best tier first, shuffled within a tier.

Retries walk down this list, so a failed attempt never returns to a peer already tried and
never leaves the tiers the client allowed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..table.store import Snapshot
from .match import tier
from .restrict import Restriction


@dataclass(frozen=True)
class Target:
    peer_id: str
    service: str
    tier: int


def plan(
    snap: Snapshot,
    model: str | None,
    *,
    service: str | None = None,
    allowed_tier: int = 1,
    rng: random.Random,
    exclude: frozenset[str] = frozenset(),
    restrict: Restriction | None = None,
) -> list[Target]:
    """``restrict``: the client's header restrictions (``restrict.py``); only services it
    admits are candidates."""
    by_tier: dict[int, list[Target]] = {}
    for entry in snap.routable():
        pid = entry.record.peer_id
        if pid in exclude:
            continue
        best: Target | None = None
        for svc in entry.record.services:
            if svc.status != "ready" or (service is not None and svc.name != service):
                continue
            if restrict is not None and not restrict.admits(
                svc.identity_groups, entry.record.labels
            ):
                continue
            t = tier(svc.identity_groups, model)
            if t is not None and t <= allowed_tier and (best is None or t < best.tier):
                best = Target(pid, svc.name, t)
        if best is not None:
            by_tier.setdefault(best.tier, []).append(best)
    suspects = {e.record.peer_id for e in snap.routable() if e.suspect}
    out: list[Target] = []
    for t in sorted(by_tier):
        group = sorted(by_tier[t], key=lambda x: x.peer_id)
        rng.shuffle(group)
        # A suspect member is tried only after every member nobody suspects.
        out.extend(x for x in group if x.peer_id not in suspects)
        out.extend(x for x in group if x.peer_id in suspects)
    return out


def reorder(
    targets: list[Target], suspects: frozenset[str], order_ids: Callable[[list[str]], list[str]]
) -> list[Target]:
    """Apply a balancing policy inside each tier (and inside each liveness class: suspects
    still go last), keeping the tier order that the client's fallback allows."""
    out: list[Target] = []
    groups: dict[tuple[int, bool], list[Target]] = {}
    for t in targets:
        groups.setdefault((t.tier, t.peer_id in suspects), []).append(t)
    for key in sorted(groups):
        by_id = {t.peer_id: t for t in groups[key]}
        out.extend(by_id[pid] for pid in order_ids(list(by_id)))
    return out


def models(snap: Snapshot) -> dict[str, list[str]]:
    """model id → peers serving it (routable only): the pool's ``/v1/models``."""
    out: dict[str, list[str]] = {}
    for entry in snap.routable():
        for m in entry.record.models:
            out.setdefault(m, []).append(entry.record.peer_id)
    return out
