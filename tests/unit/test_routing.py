"""Identity-group tiers and the ordered attempt plan built from a table snapshot."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.overlay import identity
from opentela.routing.match import ALL, EXACT, WILDCARD, max_tier, tier
from opentela.routing.plan import Target, models, plan
from opentela.table.record import DRAINING, LEFT, READY, NodeRecord, Service
from opentela.table.signing import sign
from opentela.table.store import Snapshot, TableStore

KEYS = [Ed25519PrivateKey.generate() for _ in range(12)]
PIDS = [identity.peer_id(k) for k in KEYS]
KEY_OF = dict(zip(PIDS, KEYS, strict=True))
TTL = 30.0


# -- match ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "model", "expected"),
    [
        (("model=a",), "a", EXACT),
        (("model=a",), "b", None),
        (("model=*",), "a", WILDCARD),
        (("all",), "a", ALL),
        (("model=a", "model=*", "all"), "a", EXACT),
        (("all", "model=*"), "a", WILDCARD),
        (("model=b", "all"), "a", ALL),
        (("model=a", "all"), "b", ALL),
        ((), "a", None),
        ((), None, None),
        ([], "a", None),
        (("model=a",), None, EXACT),
        (("all",), None, EXACT),
        (("something-else",), None, EXACT),
        (("something-else",), "a", None),
        (["model=a"], "a", EXACT),
        (("model=a/b:c",), "a/b:c", EXACT),
        (("model=A",), "a", None),  # model ids are case-sensitive
    ],
)
def test_tier(groups: tuple[str, ...], model: str | None, expected: int | None) -> None:
    assert tier(groups, model) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", 1),
        ("1", 2),
        ("2", 3),
        ("3", 3),
        ("99", 3),
        ("-1", 1),
        ("abc", 1),
        ("", 1),
        (" 1 ", 2),
        ("1.5", 1),
        (None, 1),
    ],
)
def test_max_tier(header: str | None, expected: int) -> None:
    assert max_tier(header) == expected


def test_tier_constants() -> None:
    assert (EXACT, WILDCARD, ALL) == (1, 2, 3)


# -- plan -------------------------------------------------------------------------------------


def node(i: int, *services: Service, status: str = READY, version: int = 1) -> NodeRecord:
    return NodeRecord(PIDS[i], version, 0.0, role="worker", status=status, services=services)


def svc(*groups: str, name: str = "llm", status: str = READY) -> Service:
    return Service(name, status, groups)


def snapshot(
    *records: NodeRecord, now: float = 10.0, seen: dict[int, float] | None = None
) -> Snapshot:
    """Self is PIDS[11] (a head with no services); others heard at ``seen[i]`` (default now)."""
    store = TableStore(PIDS[11], ttl_s=TTL)
    store.apply([sign(NodeRecord(PIDS[11], 1, 0.0), KEY_OF[PIDS[11]])], now)
    for r in records:
        i = PIDS.index(r.peer_id)
        store.apply([sign(r, KEY_OF[r.peer_id])], (seen or {}).get(i, now))
    return store.snapshot(now)


def pids(targets: list[Target]) -> list[str]:
    return [t.peer_id for t in targets]


MIXED = [
    node(0, svc("model=a")),
    node(1, svc("model=a")),
    node(2, svc("model=*")),
    node(3, svc("model=*")),
    node(4, svc("all")),
    node(5, svc("all")),
    node(6, svc("model=b")),
    node(7, svc()),  # empty groups: never selected
]


def test_tiers_ordered_exact_wildcard_all() -> None:
    snap = snapshot(*MIXED)
    out = plan(snap, "a", allowed_tier=3, rng=random.Random(1))
    assert [t.tier for t in out] == [1, 1, 2, 2, 3, 3]
    assert set(pids(out[:2])) == {PIDS[0], PIDS[1]}
    assert set(pids(out[2:4])) == {PIDS[2], PIDS[3]}
    assert set(pids(out[4:])) == {PIDS[4], PIDS[5]}
    assert all(t.service == "llm" for t in out)


@pytest.mark.parametrize(("allowed", "count"), [(1, 2), (2, 4), (3, 6)])
def test_only_allowed_tiers(allowed: int, count: int) -> None:
    out = plan(snapshot(*MIXED), "a", allowed_tier=allowed, rng=random.Random(0))
    assert len(out) == count
    assert all(t.tier <= allowed for t in out)


def test_default_allowed_tier_is_exact_only() -> None:
    out = plan(snapshot(*MIXED), "a", rng=random.Random(0))
    assert {t.tier for t in out} == {1}


def test_unknown_model_exact_only_is_empty_but_fallback_finds_wildcards() -> None:
    snap = snapshot(*MIXED)
    assert plan(snap, "zzz", allowed_tier=1, rng=random.Random(0)) == []
    out = plan(snap, "zzz", allowed_tier=3, rng=random.Random(0))
    assert set(pids(out)) == {PIDS[2], PIDS[3], PIDS[4], PIDS[5]}


def test_no_model_goes_to_any_provider_with_groups() -> None:
    out = plan(snapshot(*MIXED), None, rng=random.Random(0))
    assert set(pids(out)) == {PIDS[i] for i in range(7)}
    assert {t.tier for t in out} == {EXACT}


def test_each_peer_appears_once_at_its_best_tier() -> None:
    snap = snapshot(
        node(0, svc("all", name="generic"), svc("model=a", name="special")),
        node(1, svc("model=*", name="x"), svc("all", name="y")),
    )
    out = plan(snap, "a", allowed_tier=3, rng=random.Random(0))
    assert out == [Target(PIDS[0], "special", EXACT), Target(PIDS[1], "x", WILDCARD)]


def test_unroutable_nodes_and_down_services_never_planned() -> None:
    now = 100.0
    snap = snapshot(
        node(0, svc("model=a")),  # good
        node(1, svc("model=a"), status=DRAINING),
        node(2, svc("model=a"), status=LEFT),
        node(3, svc("model=a")),  # stale: last heard beyond TTL
        node(4, svc("model=a", status="down")),
        node(5, svc("model=a", status="down", name="dead"), svc("all", name="alive")),
        node(6, svc("model=a", status=DRAINING)),
        now=now,
        seen={3: now - TTL - 1},
    )
    for allowed in (1, 2, 3):
        out = plan(snap, "a", allowed_tier=allowed, rng=random.Random(0))
        expected = [Target(PIDS[0], "llm", EXACT)]
        if allowed == 3:
            expected.append(Target(PIDS[5], "alive", ALL))
        assert out == expected
    assert set(plan(snap, None, allowed_tier=3, rng=random.Random(0))) == {
        Target(PIDS[0], "llm", EXACT),
        Target(PIDS[5], "alive", EXACT),
    }


def test_node_just_within_ttl_is_planned() -> None:
    now = 100.0
    snap = snapshot(node(0, svc("model=a")), now=now, seen={0: now - TTL})
    assert pids(plan(snap, "a", rng=random.Random(0))) == [PIDS[0]]


def test_exclude() -> None:
    snap = snapshot(*MIXED)
    out = plan(
        snap, "a", allowed_tier=3, rng=random.Random(0), exclude=frozenset({PIDS[0], PIDS[4]})
    )
    assert set(pids(out)) == {PIDS[1], PIDS[2], PIDS[3], PIDS[5]}
    everyone = frozenset(PIDS)
    assert plan(snap, "a", allowed_tier=3, rng=random.Random(0), exclude=everyone) == []


def test_service_filter() -> None:
    snap = snapshot(
        node(0, svc("model=a", name="llm")),
        node(1, svc("model=a", name="embed")),
        node(2, svc("model=a", name="embed"), svc("model=a", name="llm")),
    )
    rng = random.Random(0)
    assert sorted(plan(snap, "a", service="llm", rng=rng), key=lambda t: t.peer_id) == sorted(
        [Target(PIDS[0], "llm", 1), Target(PIDS[2], "llm", 1)], key=lambda t: t.peer_id
    )
    assert set(pids(plan(snap, "a", service="embed", rng=rng))) == {PIDS[1], PIDS[2]}
    assert plan(snap, "a", service="nope", rng=rng) == []
    assert len(plan(snap, "a", rng=rng)) == 3


def test_shuffle_uses_rng_deterministically() -> None:
    many = [node(i, svc("model=a")) for i in range(10)]
    snap = snapshot(*many)
    a = plan(snap, "a", rng=random.Random(1234))
    b = plan(snap, "a", rng=random.Random(1234))
    assert a == b
    # Different seeds produce different orders (at least one of several), same members.
    orders = {tuple(pids(plan(snap, "a", rng=random.Random(seed)))) for seed in range(10)}
    assert len(orders) > 1
    assert all(set(o) == set(pids(a)) for o in orders)


def test_shuffle_independent_of_table_insertion_order() -> None:
    many = [node(i, svc("model=a")) for i in range(8)]
    a = plan(snapshot(*many), "a", rng=random.Random(7))
    b = plan(snapshot(*reversed(many)), "a", rng=random.Random(7))
    assert a == b


def test_shuffle_stays_within_tier() -> None:
    snap = snapshot(*MIXED)
    for seed in range(20):
        out = plan(snap, "a", allowed_tier=3, rng=random.Random(seed))
        assert [t.tier for t in out] == sorted(t.tier for t in out)


def test_empty_snapshot() -> None:
    snap = snapshot()
    assert plan(snap, "a", allowed_tier=3, rng=random.Random(0)) == []
    assert models(snap) == {}


def test_models_union_of_routable_ready() -> None:
    now = 100.0
    snap = snapshot(
        node(0, svc("model=a", "model=b")),
        node(1, svc("model=b", "model=*"), svc("model=c", name="other")),
        node(2, svc("model=d", status="down")),
        node(3, svc("model=e"), status=DRAINING),
        node(4, svc("model=f")),  # stale
        node(5, svc("all", "model=*")),
        now=now,
        seen={4: 0.0},
    )
    got = {m: sorted(p) for m, p in models(snap).items()}
    assert got == {
        "a": [PIDS[0]],
        "b": sorted([PIDS[0], PIDS[1]]),
        "c": [PIDS[1]],
    }
