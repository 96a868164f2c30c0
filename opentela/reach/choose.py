"""Which reachable nodes a private node asks to relay for it (pure).

Candidates are the live, ready, public heads and relays of the table, plus the bootstrap peers
(which may not be in the table yet). Order: relays in use stay (a change costs every entry a
record update); then bootstrap peers (the operator named them), then ``--role relay`` nodes
before heads (they are there for it), then by measured round-trip time when known, then by a
hash of (our ID, theirs), so that private nodes spread over equally good relays instead of all
picking the same one. Candidates that failed lately wait out their backoff.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

WANTED = 2  # reservations a private node keeps: one relay may die without a gap
BACKOFF_S = (1.0, 30.0)  # after a failed reservation: first wait, cap (doubling)


@dataclass(frozen=True, slots=True)
class Candidate:
    peer_id: str
    role: str  # "relay" or "head"; bootstrap peers not in the table yet: ""
    bootstrap: bool = False
    rtt_s: float | None = None


def _spread(self_id: str, peer_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{self_id}/{peer_id}".encode(), digest_size=8).digest())


def choose(
    self_id: str,
    candidates: Iterable[Candidate],
    held: Iterable[str],
    backoff_until: Mapping[str, float],
    now: float,
    wanted: int = WANTED,
) -> list[str]:
    """The relays to try next (not held ones), best first, enough to reach ``wanted``."""
    held = set(held)
    need = wanted - len(held)
    if need <= 0:
        return []
    pool = {}
    for c in candidates:
        if c.peer_id == self_id or c.peer_id in held:
            continue
        if backoff_until.get(c.peer_id, 0.0) > now:
            continue
        prev = pool.get(c.peer_id)
        if prev is None or (c.bootstrap and not prev.bootstrap) or (c.role and not prev.role):
            pool[c.peer_id] = Candidate(
                c.peer_id,
                c.role or (prev.role if prev else ""),
                c.bootstrap or bool(prev and prev.bootstrap),
                c.rtt_s if c.rtt_s is not None else (prev.rtt_s if prev else None),
            )
    ranked = sorted(
        pool.values(),
        key=lambda c: (
            not c.bootstrap,
            c.role != "relay",
            c.rtt_s if c.rtt_s is not None else float("inf"),
            _spread(self_id, c.peer_id),
        ),
    )
    return [c.peer_id for c in ranked[:need]]


def next_backoff(previous_s: float | None) -> float:
    first, cap = BACKOFF_S
    return first if previous_s is None else min(cap, previous_s * 2)
