"""Signed load updates (table/load.py) and the store's load overlay."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.overlay import identity
from opentela.table.load import InvalidLoad, peek, sign_load, verify_load
from opentela.table.record import NodeRecord
from opentela.table.signing import sign
from opentela.table.store import TableStore


def test_a_load_update_is_small_and_verifies_as_its_author() -> None:
    key = Ed25519PrivateKey.generate()
    upd = sign_load(key, 1_700_000_000_000, 7)
    assert upd.author == identity.peer_id(key)
    assert len(upd.wire()) <= 120
    back = verify_load(upd.pack())
    assert (back.author, back.version, back.load) == (upd.author, upd.version, 7)
    assert peek(upd.pack()) == (upd.author, upd.version)


def test_a_tampered_or_malformed_update_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    packed = sign_load(key, 10, 3).pack()
    with pytest.raises(InvalidLoad, match="bad signature"):
        verify_load([packed[0], packed[1], 4, packed[3]])  # load changed after signing
    for bad in (None, [], [b"x", 1, 2, b"s"], [packed[0], -1, 2, packed[3]], "text"):
        with pytest.raises(InvalidLoad):
            verify_load(bad)


def test_the_store_keeps_the_newest_load_and_a_later_record_supersedes_it() -> None:
    key = Ed25519PrivateKey.generate()
    pid = identity.peer_id(key)
    store = TableStore("me", ttl_s=30)
    assert not store.apply_load(pid, 5, 3)  # no record of that author: not kept
    store.apply([sign(NodeRecord(peer_id=pid, version=10, timestamp=0.0, load=1), key)], 0.0)
    assert not store.apply_load(pid, 9, 3)  # older than its record
    assert store.apply_load(pid, 11, 4)
    assert not store.apply_load(pid, 11, 5)
    snap = store.snapshot(0.0)
    assert snap.load(pid) == (11, 4)
    store.apply([sign(NodeRecord(peer_id=pid, version=12, timestamp=0.0, load=2), key)], 1.0)
    assert store.snapshot(1.0).load(pid) == (12, 2)
