"""Grants (``access/grant``), the admission cache (``access/admission``) and how a record in a
closed pool is admitted and its claims bounded (``table/admitted``)."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.access import grant as grants
from opentela.access.admission import LOG_EVERY_S, Admission
from opentela.access.grant import Grant, GrantInvalid, allowed_groups
from opentela.overlay import identity
from opentela.table.admitted import admit_record
from opentela.table.record import NodeRecord, Service
from opentela.table.signing import sign

AUTH = Ed25519PrivateKey.generate()
OTHER_AUTH = Ed25519PrivateKey.generate()
NODE = Ed25519PrivateKey.generate()
NODE_ID = identity.peer_id(NODE)
NOW = 1_800_000_000.0


def grant_for(peer: str = NODE_ID, models=("alice/*",), roles=("worker",), ttl=3600.0, key=AUTH):
    return grants.issue(
        key, Grant(peer, "alice", tuple(models), tuple(roles), "tok_1", NOW, NOW + ttl)
    )


def test_a_grant_verifies_for_its_peer_until_it_expires() -> None:
    g = grants.verify(grant_for(), AUTH.public_key(), NODE_ID, NOW + 10)
    assert g.owner == "alice" and g.covers("alice/llama") and not g.covers("bob/llama")
    with pytest.raises(GrantInvalid, match="expired"):
        grants.verify(grant_for(), AUTH.public_key(), NODE_ID, NOW + 3600)


@pytest.mark.parametrize(
    ("blob", "peer", "reason"),
    [
        (grant_for(key=OTHER_AUTH), NODE_ID, "not signed by this pool's authority"),
        (grant_for(peer="12D3KooWsomeoneelse"), NODE_ID, "is for"),
        (b"", NODE_ID, "no grant"),
        (b"\x93\x01\x02", NODE_ID, "malformed"),
        (b"x" * 5000, NODE_ID, "bounded"),
    ],
)
def test_invalid_grants_say_why(blob: bytes, peer: str, reason: str) -> None:
    with pytest.raises(GrantInvalid, match=reason):
        grants.verify(blob, AUTH.public_key(), peer, NOW)


def test_a_tampered_grant_fails() -> None:
    blob = bytearray(grant_for())
    blob[10] ^= 1
    with pytest.raises(GrantInvalid):
        grants.verify(bytes(blob), AUTH.public_key(), NODE_ID, NOW)


def test_wildcard_groups_need_a_grant_for_every_model() -> None:
    g = grants.verify(grant_for(), AUTH.public_key(), NODE_ID, NOW)
    keep, refused = allowed_groups(g, ("model=alice/x", "model=bob/y", "model=*", "all"))
    assert keep == ("model=alice/x",) and refused == ["model=bob/y", "model=*", "all"]
    star = grants.verify(grant_for(models=("*",)), AUTH.public_key(), NODE_ID, NOW)
    assert allowed_groups(star, ("model=*", "all", "model=bob/y"))[1] == []


def test_admission_caches_verification_and_keeps_the_longest_grant() -> None:
    adm = Admission(AUTH.public_key(), "self")
    assert not adm.admitted(NODE_ID, NOW)
    long, short = grant_for(ttl=7200), grant_for(ttl=60)
    adm.admit(NODE_ID, long, NOW)
    adm.admit(NODE_ID, short, NOW)  # an older copy relayed late does not shorten it
    assert adm.admitted(NODE_ID, NOW + 3600)
    assert not adm.admitted(NODE_ID, NOW + 7200)
    assert adm.forget_expired(NOW + 7200) == [NODE_ID]
    # A cached blob still checks peer and expiry.
    with pytest.raises(GrantInvalid):
        adm.verify("12D3KooWother", long, NOW)
    with pytest.raises(GrantInvalid, match="expired"):
        adm.verify(NODE_ID, short, NOW + 61)
    assert adm.admitted("self", NOW)


def test_verification_is_cached_per_blob() -> None:
    adm = Admission(AUTH.public_key(), "self")
    blob = grant_for()
    t0 = time.perf_counter()
    for _ in range(2000):
        adm.verify(NODE_ID, blob, NOW)
    per_check = (time.perf_counter() - t0) / 2000
    assert per_check < 20e-6, f"{per_check * 1e6:.1f} µs per cached check"


def test_refusals_are_logged_once_per_peer_per_minute() -> None:
    adm = Admission(AUTH.public_key(), "self")
    assert adm.should_log("p", 0.0)
    assert not adm.should_log("p", LOG_EVERY_S - 1)
    assert adm.should_log("q", 1.0)
    assert adm.should_log("p", LOG_EVERY_S + 0.1)


def record(services, grant: bytes = b"", role: str = "worker") -> NodeRecord:
    return NodeRecord(NODE_ID, 1, NOW, role=role, services=services, grant=grant)


def test_record_without_a_valid_grant_is_rejected() -> None:
    adm = Admission(AUTH.public_key(), "self")
    svc = (Service("llm", "ready", ("model=alice/x",)),)
    assert admit_record(adm, sign(record(svc), NODE), 0.0, NOW) is None
    assert admit_record(adm, sign(record(svc, grant_for(key=OTHER_AUTH)), NODE), 0.0, NOW) is None
    assert admit_record(adm, sign(record(svc, grant_for(roles=("head",))), NODE), 0.0, NOW) is None


def test_claims_outside_the_grant_are_ignored_but_the_signed_bytes_stay() -> None:
    adm = Admission(AUTH.public_key(), "self")
    svc = (Service("llm", "ready", ("model=alice/x", "model=bob/y", "model=*")),)
    signed = sign(record(svc, grant_for(ttl=100)), NODE)
    got = admit_record(adm, signed, 50.0, NOW)
    assert got is not None
    assert got.record.models == ("alice/x",)
    assert got.record.services[0].identity_groups == ("model=alice/x",)
    assert got.body == signed.body and got.signature == signed.signature  # relayed unchanged
    assert got.admitted_until_s == pytest.approx(150.0)
    assert adm.admitted(NODE_ID, NOW)


def test_grant_survives_the_record_round_trip() -> None:
    rec = record((), grant_for())
    assert NodeRecord.decode(rec.encode()).grant == rec.grant
    assert NodeRecord.decode(record(()).encode()).grant == b""


def test_a_record_leaves_routing_when_its_grant_expires() -> None:
    from opentela.table.store import TableStore

    adm = Admission(AUTH.public_key(), "self")
    svc = (Service("llm", "ready", ("model=alice/x",)),)
    got = admit_record(adm, sign(record(svc, grant_for(ttl=10)), NODE), 100.0, NOW)
    assert got is not None
    store = TableStore("self", ttl_s=30.0)
    store.apply([got], 100.0)
    assert store.snapshot(105.0).entries[NODE_ID].routable
    assert not store.snapshot(110.0).entries[NODE_ID].routable
