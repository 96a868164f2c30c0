"""The replicated table's pure parts: record encoding, signatures, merge, digests, liveness."""

from __future__ import annotations

import random

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from opentela.overlay import identity
from opentela.table import signing
from opentela.table.digest import difference, digest, digest_hash
from opentela.table.merge import merge, newer
from opentela.table.record import (
    DRAINING,
    LEFT,
    READY,
    RECORD_FORMAT,
    Gpu,
    NodeRecord,
    RecordError,
    Service,
)
from opentela.table.signing import (
    InvalidRecord,
    SignedRecord,
    peer_id_from_public_key,
    public_key_bytes,
    sign,
    verify,
    verify_wire,
)
from opentela.table.store import TableStore

# Keys are made once: every test and every hypothesis example reuses them.
KEYS = [Ed25519PrivateKey.generate() for _ in range(4)]
PIDS = [identity.peer_id(k) for k in KEYS]
KEY_OF = dict(zip(PIDS, KEYS, strict=True))


def rec(pid: str, version: int = 1, **kw: object) -> NodeRecord:
    return NodeRecord(peer_id=pid, version=version, timestamp=1000.0 + version, **kw)  # type: ignore[arg-type]


def signed(pid: str, version: int = 1, **kw: object) -> SignedRecord:
    return sign(rec(pid, version, **kw), KEY_OF[pid])


def raw_items(r: NodeRecord) -> list:
    return msgpack.unpackb(r.encode(), raw=False)


def pack_items(items: list) -> bytes:
    return msgpack.packb(items, use_bin_type=True)


def sign_body(body: bytes, key: Ed25519PrivateKey) -> list[bytes]:
    """A [body, pub, sig] triple with a valid signature over arbitrary bytes."""
    return [body, public_key_bytes(key), key.sign(signing._DOMAIN + body)]


FULL = NodeRecord(
    peer_id=PIDS[0],
    version=42,
    timestamp=1700000000.25,
    role="worker",
    status=DRAINING,
    addrs=("/ip4/10.0.0.1/tcp/43905", "/ip4/10.0.0.2/tcp/43905"),
    http_addr="http://10.0.0.1:8092",
    services=(
        Service("llm", READY, ("model=a", "model=b", "model=*")),
        Service("embed", "down", ("all",)),
    ),
    gpus=(Gpu("A100", 81920, 0), Gpu("H100", 81559, 79000)),
    load=3,
    software="opentela/0.1.0",
    extra={"site": "hpc1", "queue": "gpu"},
)


# -- record -----------------------------------------------------------------------------------


class TestRecord:
    def test_round_trip_full(self) -> None:
        back = NodeRecord.decode(FULL.encode())
        assert back == FULL
        assert back.extra == FULL.extra  # extra is compare=False: check it explicitly
        assert back.services[0].identity_groups == ("model=a", "model=b", "model=*")
        assert back.gpus[1] == Gpu("H100", 81559, 79000)

    def test_round_trip_minimal(self) -> None:
        r = NodeRecord(PIDS[1], 0, 0.0)
        back = NodeRecord.decode(r.encode())
        assert back == r
        assert back.extra == {}
        assert back.services == () and back.gpus == () and back.addrs == ()

    def test_encoding_is_canonical(self) -> None:
        # extra is sorted, so dict insertion order does not change the signed bytes.
        a = NodeRecord(PIDS[0], 1, 0.0, extra={"b": "2", "a": "1"})
        b = NodeRecord(PIDS[0], 1, 0.0, extra={"a": "1", "b": "2"})
        assert a.encode() == b.encode()
        assert NodeRecord.decode(FULL.encode()).encode() == FULL.encode()

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\xc1",  # never-used msgpack byte
            b"\xff" * 10,  # trailing data
            b"garbage that is not msgpack \x00\x01",
            msgpack.packb([RECORD_FORMAT]),
            msgpack.packb([RECORD_FORMAT + 1, *([0] * 12)]),
            msgpack.packb({"peer_id": "x"}),
            msgpack.packb({1: 2}),
            msgpack.packb("a string"),
            msgpack.packb([]),
            msgpack.packb([1] * 13),
            msgpack.packb([1, "p", "not-an-int", 0.0, "r", "ready", [], "", [], [], 0, "", []]),
            msgpack.packb([1, "p", 1, 0.0, "r", "ready", [], "", [["svc"]], [], 0, "", []]),
            msgpack.packb([1, "p", 1, 0.0, "r", "ready", [], "", [], [["g", "x", 0]], 0, "", []]),
        ],
    )
    def test_decode_garbage_raises_record_error(self, data: bytes) -> None:
        with pytest.raises(RecordError):
            NodeRecord.decode(data)

    @pytest.mark.parametrize("index", [2, 10])  # version, load
    def test_decode_infinite_int_field_raises_record_error(self, index: int) -> None:
        items = raw_items(NodeRecord(PIDS[0], 1, 0.0))
        items[index] = float("inf")
        with pytest.raises(RecordError):
            NodeRecord.decode(pack_items(items))

    @pytest.mark.parametrize("status", ["", "up", "READY", "gone"])
    def test_unknown_status_rejected(self, status: str) -> None:
        data = NodeRecord(PIDS[0], 1, 0.0, status=status).encode()
        with pytest.raises(RecordError, match="status"):
            NodeRecord.decode(data)

    @pytest.mark.parametrize("status", [READY, DRAINING, LEFT])
    def test_known_statuses_accepted(self, status: str) -> None:
        assert (
            NodeRecord.decode(NodeRecord(PIDS[0], 1, 0.0, status=status).encode()).status == status
        )

    def test_models_only_from_ready_services_deduplicated(self) -> None:
        r = NodeRecord(
            PIDS[0],
            1,
            0.0,
            services=(
                Service("a", READY, ("model=x", "model=*", "all", "model=y")),
                Service("b", "down", ("model=z",)),
                Service("c", READY, ("model=y", "model=w")),
            ),
        )
        assert r.models == ("x", "y", "w")
        assert Service("s", READY, ("model=*", "all")).models == ()


# -- signing ----------------------------------------------------------------------------------


class TestSigning:
    def test_signed_record_verifies(self) -> None:
        s = sign(FULL, KEY_OF[FULL.peer_id])
        v = verify(s.pack())
        assert v.record == FULL
        assert v.body == s.body == FULL.encode()
        assert v.signature == s.signature
        assert verify_wire(s.wire()).record == FULL
        assert verify(tuple(s.pack())).record == FULL

    def test_refuses_to_sign_for_another_peer(self) -> None:
        with pytest.raises(InvalidRecord):
            sign(rec(PIDS[1]), KEYS[0])

    def test_tampered_body_rejected(self) -> None:
        s = signed(PIDS[0], 5)
        tampered = rec(PIDS[0], 6).encode()
        with pytest.raises(InvalidRecord, match="signature"):
            verify([tampered, s.public_key, s.signature])
        flipped = bytearray(s.body)
        flipped[-1] ^= 1
        with pytest.raises(InvalidRecord):
            verify([bytes(flipped), s.public_key, s.signature])

    def test_tampered_signature_rejected(self) -> None:
        s = signed(PIDS[0], 5)
        sig = bytearray(s.signature)
        sig[0] ^= 0x80
        with pytest.raises(InvalidRecord):
            verify([s.body, s.public_key, bytes(sig)])
        with pytest.raises(InvalidRecord):
            verify([s.body, s.public_key, s.signature[:-1]])

    def test_wrong_public_key_rejected(self) -> None:
        s = signed(PIDS[0], 5)
        with pytest.raises(InvalidRecord):
            verify([s.body, public_key_bytes(KEYS[1]), s.signature])
        with pytest.raises(InvalidRecord):
            verify([s.body, b"short", s.signature])

    def test_spoofed_author_rejected(self) -> None:
        # An attacker signs (validly, with its own key) a record claiming a victim's peer id.
        attacker, victim = KEYS[1], PIDS[0]
        body = rec(victim, 10**12).encode()
        with pytest.raises(InvalidRecord, match="signed by"):
            verify(sign_body(body, attacker))

    @pytest.mark.parametrize(
        "packed",
        [None, b"x", [], [b"a", b"b"], [b"a", b"b", b"c", b"d"], [b"a", "b", b"c"], {"a": 1}],
    )
    def test_malformed_triples_rejected(self, packed: object) -> None:
        with pytest.raises(InvalidRecord):
            verify(packed)

    @pytest.mark.parametrize("data", [b"", b"\xc1", msgpack.packb([b"a"]) + b"extra"])
    def test_verify_wire_garbage(self, data: bytes) -> None:
        with pytest.raises(InvalidRecord):
            verify_wire(data)

    @pytest.mark.parametrize(
        "body",
        [b"\x93\x01\x02\x03", NodeRecord(PIDS[0], 1, 0.0, status="bogus").encode()],
        ids=["short-array", "unknown-status"],
    )
    def test_signed_malformed_body_raises_invalid_record(self, body: bytes) -> None:
        with pytest.raises(InvalidRecord):
            verify(sign_body(body, KEYS[0]))

    def test_signed_malformed_body_is_at_least_a_record_error(self) -> None:
        with pytest.raises(RecordError):
            verify(sign_body(b"\x93\x01\x02\x03", KEYS[0]))

    def test_signature_is_domain_separated(self) -> None:
        # A plain signature over the body bytes (no domain prefix) must not verify.
        body = rec(PIDS[0]).encode()
        with pytest.raises(InvalidRecord):
            verify([body, public_key_bytes(KEYS[0]), KEYS[0].sign(body)])

    def test_peer_id_matches_libp2p(self) -> None:
        from libp2p.crypto.ed25519 import create_new_key_pair
        from libp2p.peer.id import ID

        for key in KEYS:
            kp = create_new_key_pair(identity.seed(key))
            assert kp.public_key.to_bytes() == public_key_bytes(key)
            assert peer_id_from_public_key(public_key_bytes(key)) == str(
                ID.from_pubkey(kp.public_key)
            )

    def test_peer_id_requires_32_bytes(self) -> None:
        with pytest.raises(InvalidRecord):
            peer_id_from_public_key(b"\x00" * 31)
        assert peer_id_from_public_key(b"\x00" * 32).startswith("12D3KooW")


# -- merge ------------------------------------------------------------------------------------

# A pool of signed records: versions 0..4 per author, two distinct bodies per version (so
# equal-version ties with different bytes exist). Signed once, drawn from by hypothesis.
POOL: list[SignedRecord] = [
    sign(rec(pid, v, load=variant), KEY_OF[pid])
    for pid in PIDS
    for v in range(5)
    for variant in range(2)
]


def view(table: dict[str, SignedRecord]) -> dict[str, tuple[int, bytes]]:
    return {pid: (s.record.version, s.signature) for pid, s in table.items()}


def expected(records: list[SignedRecord]) -> dict[str, tuple[int, bytes]]:
    best: dict[str, SignedRecord] = {}
    for r in records:
        cur = best.get(r.record.peer_id)
        key = (r.record.version, r.signature, r.body)
        if cur is None or key > (cur.record.version, cur.signature, cur.body):
            best[r.record.peer_id] = r
    return view(best)


records_st = st.lists(st.sampled_from(POOL), min_size=0, max_size=25)


class TestMerge:
    @settings(max_examples=75, deadline=None)
    @given(records=records_st, data=st.data())
    def test_any_order_any_batching_converges(
        self, records: list[SignedRecord], data: st.DataObject
    ) -> None:
        perm = data.draw(st.permutations(records))
        cuts = sorted(data.draw(st.lists(st.integers(0, len(perm)), max_size=5)))
        table: dict[str, SignedRecord] = {}
        prev = 0
        for cut in [*cuts, len(perm)]:
            table, _ = merge(table, perm[prev:cut])
            prev = cut
        one_shot, _ = merge({}, records)
        assert view(table) == view(one_shot) == expected(records)

    @settings(max_examples=50, deadline=None)
    @given(a=records_st, b=records_st)
    def test_merging_tables_is_commutative(
        self, a: list[SignedRecord], b: list[SignedRecord]
    ) -> None:
        ta, _ = merge({}, a)
        tb, _ = merge({}, b)
        ab, _ = merge(ta, tb.values())
        ba, _ = merge(tb, ta.values())
        assert view(ab) == view(ba)

    @settings(max_examples=50, deadline=None)
    @given(records=records_st)
    def test_idempotent(self, records: list[SignedRecord]) -> None:
        table, _ = merge({}, records)
        again, changed = merge(table, records)
        assert view(again) == view(table)
        assert changed == []
        twice, changed = merge(table, table.values())
        assert view(twice) == view(table) and changed == []

    @settings(max_examples=50, deadline=None)
    @given(records=records_st)
    def test_changed_are_exactly_improvements(self, records: list[SignedRecord]) -> None:
        base = {PIDS[0]: POOL[4]}  # author 0, version 2
        table, changed = merge(base, records)
        for r in changed:
            assert r in records
        # Everything that ended in the table and was not in base was reported as changed.
        for pid, s in table.items():
            if base.get(pid) is not s:
                assert s in changed

    def test_older_never_replaces_newer(self) -> None:
        new, old = signed(PIDS[0], 7), signed(PIDS[0], 6)
        table, changed = merge({PIDS[0]: new}, [old])
        assert table[PIDS[0]] is new and changed == []
        table, changed = merge({}, [new, old])
        assert table[PIDS[0]] is new and changed == [new]
        table, changed = merge({}, [old, new])
        assert table[PIDS[0]] is new and changed == [old, new]

    def test_does_not_mutate_input(self) -> None:
        base = {PIDS[0]: signed(PIDS[0], 1)}
        snapshot = dict(base)
        merge(base, [signed(PIDS[0], 2), signed(PIDS[1], 1)])
        assert base == snapshot

    def test_equal_version_tie_break_is_deterministic(self) -> None:
        a = signed(PIDS[0], 3, load=1)
        b = signed(PIDS[0], 3, load=2)
        assert a.body != b.body
        winner = a if a.signature > b.signature else b
        loser = b if winner is a else a
        assert newer(winner, loser) and not newer(loser, winner)
        assert not newer(winner, winner)
        assert newer(winner, None)
        for order in ([a, b], [b, a]):
            table, _ = merge({}, order)
            assert table[PIDS[0]] is winner
        table, changed = merge({PIDS[0]: winner}, [loser])
        assert table[PIDS[0]] is winner and changed == []


# -- digest -----------------------------------------------------------------------------------


class TestDigest:
    def test_digest_maps_author_to_version(self) -> None:
        table, _ = merge({}, [signed(PIDS[0], 3), signed(PIDS[1], 9)])
        assert digest(table) == {PIDS[0]: 3, PIDS[1]: 9}
        assert digest({}) == {}

    @pytest.mark.parametrize(
        ("local", "remote", "want", "send"),
        [
            ({}, {}, [], []),
            ({"a": 1}, {"a": 1}, [], []),
            ({"a": 1}, {"a": 2}, ["a"], []),
            ({"a": 2}, {"a": 1}, [], ["a"]),
            ({}, {"a": 0}, ["a"], []),
            ({"a": 0}, {}, [], ["a"]),
            (
                {"a": 1, "b": 5, "c": 3, "e": 0},
                {"a": 2, "b": 5, "c": 1, "d": 7},
                ["a", "d"],
                ["c", "e"],
            ),
        ],
    )
    def test_difference(self, local: dict, remote: dict, want: list, send: list) -> None:
        assert difference(local, remote) == (want, send)

    @settings(max_examples=75, deadline=None)
    @given(
        local=st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 5)),
        remote=st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 5)),
    )
    def test_difference_reconciles(self, local: dict, remote: dict) -> None:
        want, send = difference(local, remote)
        assert want == sorted(want) and send == sorted(send)
        assert not set(want) & set(send)
        # After pulling `want` and pushing `send`, both sides hold the per-author max.
        merged = {p: max(local.get(p, -1), remote.get(p, -1)) for p in {*local, *remote}}
        new_local = {**local, **{p: remote[p] for p in want}}
        new_remote = {**remote, **{p: local[p] for p in send}}
        assert new_local == new_remote == merged

    def test_digest_hash_equal_iff_digests_equal(self) -> None:
        examples = [
            {},
            {PIDS[0]: 1},
            {PIDS[0]: 2},
            {PIDS[1]: 1},
            {PIDS[0]: 1, PIDS[1]: 1},
            {PIDS[0]: 1, PIDS[1]: 2},
            {PIDS[0]: 1, PIDS[1]: 1, PIDS[2]: 1},
            {PIDS[0]: 2**63, PIDS[3]: 0},
        ]
        for a in examples:
            for b in examples:
                assert (digest_hash(a) == digest_hash(b)) == (a == b), (a, b)
        assert len(digest_hash({PIDS[0]: 1})) == 16

    def test_digest_hash_ignores_insertion_order(self) -> None:
        a = {PIDS[0]: 1, PIDS[1]: 2, PIDS[2]: 3}
        b = dict(reversed(list(a.items())))
        assert digest_hash(a) == digest_hash(b)

    @pytest.mark.parametrize("version", [-1, -(2**63), 2**63])
    def test_out_of_range_version_is_rejected_at_the_door(self, version: int) -> None:
        # Digests encode versions as unsigned 63-bit integers: a record outside that range
        # must never reach a table (it could not be hashed, or would outrank every real one).
        with pytest.raises(InvalidRecord, match="non-negative"):
            verify(signed(PIDS[0], version).pack())
        with pytest.raises(RecordError, match="non-negative"):
            NodeRecord.decode(rec(PIDS[0], version).encode())

    def test_extreme_valid_versions_are_accepted_and_hashable(self) -> None:
        for version in (0, 2**63 - 1):
            s = verify(signed(PIDS[0], version).pack())
            assert s.record.version == version
            table, _ = merge({}, [s])
            assert digest(table) == {PIDS[0]: version}
            assert len(digest_hash(digest(table))) == 16


# -- store ------------------------------------------------------------------------------------

SELF, OTHER, THIRD = PIDS[0], PIDS[1], PIDS[2]


class TestStore:
    def make(self) -> TableStore:
        store = TableStore(SELF, ttl_s=30.0, tombstone_s=300.0)
        store.apply([signed(SELF, 1)], now_s=0.0)
        return store

    def test_default_tombstone_is_ten_ttls(self) -> None:
        assert TableStore(SELF, ttl_s=3.0).tombstone_s == 30.0

    def test_apply_returns_changes_and_get(self) -> None:
        store = self.make()
        r1, r2 = signed(OTHER, 1), signed(OTHER, 2)
        assert store.apply([r1], 0.0) == [r1]
        assert store.apply([r1], 1.0) == []
        assert store.apply([r2, r1], 2.0) == [r2]
        assert store.get(OTHER) is r2
        assert store.get(THIRD) is None
        assert set(store.records()) == {SELF, OTHER}

    def test_ttl_liveness(self) -> None:
        store = self.make()
        store.apply([signed(OTHER, 1)], now_s=100.0)
        assert store.alive(OTHER, 100.0)
        assert store.alive(OTHER, 129.9)
        assert store.alive(OTHER, 130.0)  # exactly ttl: still alive
        assert not store.alive(OTHER, 130.01)
        assert not store.alive(THIRD, 100.0)  # unknown

    def test_hearing_a_newer_version_refreshes(self) -> None:
        store = self.make()
        store.apply([signed(OTHER, 1)], 0.0)
        store.apply([signed(OTHER, 2)], 25.0)
        assert store.alive(OTHER, 50.0)
        # A replay of an old record does not count as hearing from the author.
        store.apply([signed(OTHER, 1)], 50.0)
        assert not store.alive(OTHER, 56.0)

    def test_snapshot_liveness_and_routable(self) -> None:
        store = self.make()
        store.apply([signed(OTHER, 1), signed(THIRD, 1, status=DRAINING)], 0.0)
        snap = store.snapshot(10.0)
        assert {e.record.peer_id for e in snap.routable()} == {SELF, OTHER}
        assert snap.entries[THIRD].alive and not snap.entries[THIRD].routable
        assert snap.entries[OTHER].last_seen_s == 0.0
        later = store.snapshot(40.0)
        assert not later.entries[OTHER].alive
        assert {e.record.peer_id for e in later.routable()} == {SELF}

    def test_left_is_not_alive_nor_routable(self) -> None:
        store = self.make()
        store.apply([signed(OTHER, 1)], 0.0)
        store.apply([signed(OTHER, 2, status=LEFT)], 1.0)
        assert not store.alive(OTHER, 1.0)
        entry = store.snapshot(1.0).entries[OTHER]
        assert not entry.alive and not entry.routable
        # A tombstone wins over the older live record arriving late.
        store.apply([signed(OTHER, 1)], 2.0)
        assert store.get(OTHER).record.status == LEFT

    def test_own_left_record_is_not_alive(self) -> None:
        store = self.make()
        store.apply([signed(SELF, 2, status=LEFT)], 0.0)
        assert not store.alive(SELF, 0.0)

    def test_self_always_alive(self) -> None:
        store = self.make()
        assert store.alive(SELF, 0.0)
        assert store.alive(SELF, 1e9)
        assert store.snapshot(1e9).entries[SELF].routable

    def test_expire_drops_after_tombstone_time(self) -> None:
        store = self.make()
        store.apply([signed(OTHER, 1)], 0.0)
        store.apply([signed(THIRD, 1, status=LEFT)], 100.0)
        assert store.expire(300.0) == []
        assert store.get(OTHER) is not None
        assert store.expire(300.5) == [OTHER]
        assert store.get(OTHER) is None
        assert OTHER not in store.snapshot(300.5).entries
        assert store.expire(400.5) == [THIRD]
        assert store.get(THIRD) is None
        assert store.expire(1e9) == []  # self is never dropped
        assert store.get(SELF) is not None

    def test_snapshot_invalidated_by_apply_and_expire(self) -> None:
        store = self.make()
        s1 = store.snapshot(5.0)
        assert store.snapshot(5.5) is s1  # cached within the same second
        store.apply([signed(OTHER, 1)], 5.5)
        s2 = store.snapshot(5.5)
        assert OTHER in s2.entries
        store.expire(1000.0)
        assert OTHER not in store.snapshot(1000.0).entries

    def test_snapshot_recomputes_liveness_each_second(self) -> None:
        store = self.make()
        store.apply([signed(OTHER, 1)], 0.0)
        assert store.snapshot(30.0).entries[OTHER].alive
        assert not store.snapshot(31.0).entries[OTHER].alive

    @settings(max_examples=30, deadline=None)
    @given(seed=st.integers(0, 2**32))
    def test_stores_fed_in_any_order_agree(self, seed: int) -> None:
        rng = random.Random(seed)
        records = rng.sample(POOL, 12)
        a, b = TableStore(SELF, 30.0), TableStore(SELF, 30.0)
        a.apply(records, 0.0)
        shuffled = records[:]
        rng.shuffle(shuffled)
        for r in shuffled:
            b.apply([r], 0.0)
        assert view(a.records()) == view(b.records())
        assert digest_hash(digest(a.records())) == digest_hash(digest(b.records()))
