"""The local copy of the table plus the liveness of each author.

Liveness is written in one place, ``set_liveness``, by the membership protocol (SWIM), and
read by routing through ``snapshot()``. A peer the membership protocol has not reached yet
(its record arrived through someone else) counts as alive for ``ttl_s`` after that record
arrived, so a new node is usable at once yet never routed to for long unless it is reachable.
Times are the *receiver's* clock, so skewed clocks between sites never make a live node look
stale.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .merge import merge
from .record import LEFT, READY, NodeRecord
from .signing import SignedRecord

ALIVE, SUSPECT, DEAD, GONE = "alive", "suspect", "dead", "left"


@dataclass(frozen=True)
class Entry:
    signed: SignedRecord
    last_seen_s: float
    alive: bool
    suspect: bool = False
    liveness: str | None = None  # the membership verdict (alive, suspect, dead, left), if any

    @property
    def state(self) -> str:
        """What a person is told: alive or suspect while routable-by-liveness, else ``left``
        (its tombstone arrived, or membership heard it say goodbye) or ``dead``."""
        if self.alive:
            return SUSPECT if self.suspect else ALIVE
        return GONE if self.record.status == LEFT or self.liveness == GONE else DEAD

    @property
    def record(self) -> NodeRecord:
        return self.signed.record

    @property
    def routable(self) -> bool:
        return self.alive and self.record.status == READY


@dataclass(frozen=True)
class Snapshot:
    """An immutable view for routing and the HTTP API."""

    self_id: str
    entries: dict[str, Entry]
    loads: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """The store's live (version, load) of each author's newest load update: shared, not
    copied, so load news (several per second) never rebuilds a snapshot."""

    def routable(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.routable]

    def load(self, peer_id: str) -> tuple[int, int]:
        """(version, load) of the newest load we know for ``peer_id``: its record's, or a
        later load update's (both versions come from the author's one counter)."""
        e = self.entries.get(peer_id)
        rec = (e.record.version, e.record.load) if e is not None else (-1, 0)
        upd = self.loads.get(peer_id)
        return upd if upd is not None and upd[0] > rec[0] else rec


class TableStore:
    """Mutable owner of the table; everything else reads ``Snapshot`` objects."""

    def __init__(self, self_id: str, ttl_s: float, tombstone_s: float | None = None) -> None:
        self.self_id = self_id
        self.ttl_s = ttl_s
        self.tombstone_s = tombstone_s if tombstone_s is not None else 10 * ttl_s
        self._records: dict[str, SignedRecord] = {}
        self._seen: dict[str, float] = {}
        self._floor: dict[str, int] = {}
        self._floor_at: dict[str, float] = {}
        self._liveness: dict[str, tuple[str, float]] = {}
        self.loads: dict[str, tuple[int, int]] = {}  # author -> (version, load) of updates
        self._snapshot: Snapshot | None = None
        self._snapshot_at = 0

    def apply(
        self,
        records: Iterable[SignedRecord],
        now_s: float,
        age_s: Mapping[str, float] | None = None,
    ) -> list[SignedRecord]:
        """Merge verified records; return those that were new to us.

        ``age_s`` is how long ago the sender itself last heard from each author (0 for a record
        pushed by its author). A record relayed from a peer that has not heard from its author
        for a while is therefore not mistaken for a fresh one, and a forgotten author's old
        record (below its ``floor``) is never resurrected by a peer that still holds it.
        """
        fresh = [r for r in records if r.record.version > self._floor.get(r.record.peer_id, -1)]
        self._records, changed = merge(self._records, fresh)
        for rec in changed:
            pid = rec.record.peer_id
            age = max(0.0, (age_s or {}).get(pid, 0.0))
            self._seen[pid] = now_s - age
        if changed:
            self._snapshot = None
        return changed

    def load_version(self, peer_id: str) -> int:
        """The newest version we hold of ``peer_id``'s load (record or update); -1 if none."""
        rec = self._records.get(peer_id)
        upd = self.loads.get(peer_id)
        return max(rec.record.version if rec else -1, upd[0] if upd else -1)

    def apply_load(self, peer_id: str, version: int, load: int) -> bool:
        """A verified load update; kept only for an author we hold a record of (so load news
        cannot make anyone known) and only when newer than its record and earlier updates."""
        rec = self._records.get(peer_id)
        if rec is None or rec.record.status == LEFT or version <= self.load_version(peer_id):
            return False
        self.loads[peer_id] = (version, load)
        return True

    def age(self, peer_id: str, now_s: float) -> float:
        """Seconds since we last heard news from ``peer_id`` (0 for ourselves)."""
        if peer_id == self.self_id:
            return 0.0
        return max(0.0, now_s - self._seen.get(peer_id, now_s))

    def get(self, peer_id: str) -> SignedRecord | None:
        return self._records.get(peer_id)

    def records(self) -> dict[str, SignedRecord]:
        return dict(self._records)

    def set_liveness(self, peer_id: str, state: str, now_s: float) -> None:
        """The membership protocol's verdict: alive, suspect, dead or left."""
        if self._liveness.get(peer_id, ("", 0.0))[0] != state:
            self._liveness[peer_id] = (state, now_s)
            self._snapshot = None

    def liveness(self, peer_id: str) -> str | None:
        entry = self._liveness.get(peer_id)
        return entry[0] if entry else None

    def alive(self, peer_id: str, now_s: float) -> bool:
        rec = self._records.get(peer_id)
        if rec is None or rec.record.status == LEFT:
            return False
        if peer_id == self.self_id:
            return True
        if now_s >= rec.admitted_until_s:
            return False  # its grant expired: out of routing at once
        state = self._liveness.get(peer_id)
        if state is not None:
            return state[0] in (ALIVE, SUSPECT)
        return now_s - self._seen.get(peer_id, -1e18) <= self.ttl_s

    def expire(self, now_s: float) -> list[str]:
        """Forget tombstones and long-dead authors; return the dropped ids."""

        def gone(pid: str, seen: float) -> bool:
            state = self._liveness.get(pid)
            if state is not None:
                return state[0] in (DEAD, GONE) and now_s - state[1] > self.tombstone_s
            return now_s - seen > self.tombstone_s

        dropped = [
            pid for pid, seen in self._seen.items() if pid != self.self_id and gone(pid, seen)
        ]
        for pid in dropped:
            rec = self._records.pop(pid, None)
            self.loads.pop(pid, None)
            self._seen.pop(pid, None)
            self._liveness.pop(pid, None)
            if rec is not None:
                self._floor[pid] = rec.record.version
                self._floor_at[pid] = now_s
        # Floors only need to outlive every peer's copy of the record; then forget them too.
        for pid in [p for p, t in self._floor_at.items() if now_s - t > self.tombstone_s]:
            self._floor.pop(pid, None)
            self._floor_at.pop(pid, None)
        if dropped:
            self._snapshot = None
        return dropped

    def snapshot(self, now_s: float) -> Snapshot:
        # Cached between changes; liveness is recomputed at most once per second.
        snap = self._snapshot
        if snap is not None and self._snapshot_at == int(now_s):
            return snap
        entries = {
            pid: Entry(
                s,
                self._seen.get(pid, now_s),
                self.alive(pid, now_s),
                self._liveness.get(pid, ("", 0.0))[0] == SUSPECT,
                self.liveness(pid),
            )
            for pid, s in self._records.items()
        }
        snap = Snapshot(self.self_id, entries, self.loads)
        self._snapshot, self._snapshot_at = snap, int(now_s)
        return snap
