"""Liveness through relays: ages carried with records, and no resurrection of forgotten authors."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.overlay.identity import peer_id
from opentela.table.record import NodeRecord
from opentela.table.signing import sign
from opentela.table.store import TableStore

KEYS = [Ed25519PrivateKey.generate() for _ in range(2)]
SELF, OTHER = (peer_id(k) for k in KEYS)


def rec(version: int):
    return sign(NodeRecord(OTHER, version, 0.0), KEYS[1])


def test_relayed_record_keeps_its_age() -> None:
    store = TableStore(SELF, ttl_s=30)
    store.apply([rec(1)], now_s=100.0, age_s={OTHER: 25.0})
    assert store.alive(OTHER, 104.0)
    assert not store.alive(OTHER, 106.0)  # 25 s old when relayed + 6 s > 30 s TTL
    assert store.age(OTHER, 104.0) == 29.0


def test_forgotten_author_is_not_resurrected_by_an_old_copy() -> None:
    store = TableStore(SELF, ttl_s=30, tombstone_s=60)
    store.apply([rec(5)], now_s=0.0)
    assert store.expire(now_s=61.0) == [OTHER]
    assert store.apply([rec(5)], now_s=62.0) == []  # a peer still holding it pushes it back
    assert store.get(OTHER) is None
    assert store.apply([rec(6)], now_s=63.0)  # the author itself, alive again, is accepted
    assert store.alive(OTHER, 63.0)


def test_floors_are_forgotten_eventually() -> None:
    store = TableStore(SELF, ttl_s=30, tombstone_s=60)
    store.apply([rec(5)], now_s=0.0)
    store.expire(now_s=61.0)
    store.expire(now_s=200.0)
    assert store.apply([rec(5)], now_s=201.0)
