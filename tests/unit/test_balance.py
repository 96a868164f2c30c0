"""Policies that order one tier's replicas, and the prefix key affinity hashes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from opentela.routing.balance import (
    DEFAULT_C,
    POLICIES,
    BalanceState,
    HashRing,
    Policy,
    RingCache,
    RoundRobin,
    affinity,
    least_loaded,
    order,
    prefix_key,
    shuffled,
)

PEERS = [f"12D3KooWPeer{i:02d}" for i in range(8)]
KEYS = [f"p:key number {i}" for i in range(4000)]


def test_policy_names() -> None:
    assert POLICIES == ("random", "round-robin", "least-loaded", "affinity")
    assert Policy("least-loaded") is Policy.LEAST_LOADED
    with pytest.raises(ValueError):
        order("fastest", PEERS, {}, None, random.Random(0), BalanceState())


@pytest.mark.parametrize("policy", list(Policy))
def test_every_policy_returns_a_permutation(policy: Policy) -> None:
    state, rng = BalanceState(), random.Random(1)
    est = {p: float(i % 3) for i, p in enumerate(PEERS)}
    for i in range(50):
        cands = PEERS[: 1 + i % len(PEERS)]
        out = order(policy, [*cands, cands[0]], est, f"k{i}", rng, state)  # duplicate dropped
        assert sorted(out) == sorted(cands)
    assert order(policy, [], est, "k", rng, state) == []


@pytest.mark.parametrize("policy", list(Policy))
def test_absent_candidate_is_never_returned(policy: Policy) -> None:
    """plan() filters draining/suspect/dead peers out; nothing brings them back, even when
    they would otherwise win (least loaded, or the key's owner)."""
    state, rng = BalanceState(), random.Random(2)
    gone = PEERS[3]
    est = {p: 9.0 for p in PEERS} | {gone: 0.0}
    ring = HashRing(PEERS)
    owned = [k for k in KEYS[:400] if ring.walk(k)[0] == gone]
    assert owned
    cands = [p for p in PEERS if p != gone]
    for k in owned:
        assert gone not in order(policy, cands, est, k, rng, state)


def test_random_is_uniform_and_seeded() -> None:
    firsts = Counter(shuffled(PEERS[:4], random.Random(i))[0] for i in range(4000))
    assert set(firsts) == set(PEERS[:4])
    assert all(800 < n < 1200 for n in firsts.values())
    # Input order does not matter for a given seed.
    assert shuffled(PEERS, random.Random(7)) == shuffled(PEERS[::-1], random.Random(7))


def test_round_robin_rotates_per_candidate_set() -> None:
    rr = RoundRobin()
    a, b, c = PEERS[:3]
    assert rr.order([a, b, c]) == [a, b, c]
    assert rr.order([c, b, a]) == [b, c, a]  # same set, any order: same counter
    assert rr.order([a, b]) == [a, b]  # another set has its own counter
    assert rr.order([a, b, c]) == [c, a, b]
    assert rr.order([a, b, c]) == [a, b, c]
    firsts = Counter(rr.order(PEERS)[0] for _ in range(80))
    assert set(firsts.values()) == {10}


def test_round_robin_forgets_old_sets() -> None:
    rr = RoundRobin(max_sets=2)
    rr.order(PEERS[:2])
    rr.order(PEERS[:3])
    rr.order(PEERS[:4])  # evicts PEERS[:2]
    assert rr.order(PEERS[:2]) == PEERS[:2]


def test_least_loaded_is_best_of_two_then_ascending() -> None:
    est = {p: float(10 - i) for i, p in enumerate(PEERS)}  # last peer is the least loaded
    for seed in range(200):
        out = least_loaded(PEERS, est, random.Random(seed))
        assert est[out[0]] <= est[out[1]]
        assert [est[p] for p in out[2:]] == sorted(est[p] for p in out[2:])
        assert out[0] != PEERS[0]  # the most loaded peer can never win a pair
    # The global minimum only wins when drawn: about 2/N of the time, not always (no herding).
    wins = sum(least_loaded(PEERS, est, random.Random(s))[0] == PEERS[-1] for s in range(4000))
    assert 0.15 < wins / 4000 < 0.35


def test_least_loaded_missing_estimates_count_as_zero() -> None:
    est = {PEERS[0]: 5.0}
    out = least_loaded(PEERS[:2], est, random.Random(0))
    assert out == [PEERS[1], PEERS[0]]


def test_affinity_is_deterministic_and_independent_of_rng_and_order() -> None:
    est = {p: float(i % 2) for i, p in enumerate(PEERS)}
    s1, s2 = BalanceState(), BalanceState()
    ring = HashRing(PEERS)
    for k in KEYS[:200]:
        a = order("affinity", PEERS, est, k, random.Random(1), s1)
        b = order("affinity", PEERS[::-1], dict(reversed(est.items())), k, random.Random(2), s2)
        assert a == b == affinity(PEERS, est, k, ring=ring)


def test_affinity_spreads_keys_evenly() -> None:
    ring = HashRing(PEERS)
    owners = Counter(ring.walk(k)[0] for k in KEYS)
    share = len(KEYS) / len(PEERS)
    assert all(0.7 * share < n < 1.3 * share for n in owners.values()), owners


def test_affinity_remaps_about_one_nth_when_a_peer_leaves() -> None:
    rings = RingCache()
    before = {k: affinity(PEERS, {}, k, ring=rings.get(PEERS))[0] for k in KEYS}
    gone = PEERS[5]
    rest = [p for p in PEERS if p != gone]
    after = {k: affinity(rest, {}, k, ring=rings.get(rest))[0] for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    # Exactly the departed peer's keys move; everyone else keeps theirs.
    assert all(before[k] == gone for k in moved)
    assert len(moved) == sum(1 for k in KEYS if before[k] == gone)
    assert 0.5 / len(PEERS) < len(moved) / len(KEYS) < 1.5 / len(PEERS)
    # And a peer joining takes about 1/(N+1) of the keys, only for itself.
    joined = [*PEERS, "12D3KooWNewcomer"]
    again = {k: affinity(joined, {}, k, ring=rings.get(joined))[0] for k in KEYS}
    stolen = [k for k in KEYS if again[k] != before[k]]
    assert all(again[k] == "12D3KooWNewcomer" for k in stolen)
    assert 0.5 / len(joined) < len(stolen) / len(KEYS) < 1.5 / len(joined)


def test_affinity_skips_an_overloaded_owner_clockwise() -> None:
    key = KEYS[0]
    walk = HashRing(PEERS).walk(key)
    owner, second, third = walk[0], walk[1], walk[2]
    # Mean of (12, 12, 0 x 6) = 3; bound = 1.25 * 4 = 5.
    est = {p: 0.0 for p in PEERS} | {owner: 12.0, second: 12.0}
    out = affinity(PEERS, est, key)
    assert out[0] == third
    assert out[-2:] == [owner, second]  # over the bound: last, least loaded first
    # At the bound exactly, the owner still takes it.
    est = {p: 0.0 for p in PEERS} | {owner: 1.0}
    assert DEFAULT_C * (1 / len(PEERS) + 1) >= 1.0
    assert affinity(PEERS, est, key)[0] == owner


def test_affinity_bound_uses_c() -> None:
    key = KEYS[1]
    owner = HashRing(PEERS[:2]).walk(key)[0]
    other = next(p for p in PEERS[:2] if p != owner)
    est = {owner: 4.0, other: 1.0}  # mean 2.5: bound 4.375 at c=1.25, 3.85 at c=1.1
    assert affinity(PEERS[:2], est, key, c=1.25)[0] == owner
    assert affinity(PEERS[:2], est, key, c=1.1)[0] == other
    # c < 1 can reject everyone: then it is least-loaded order.
    est = {owner: 1.0, other: 1.0}
    assert sorted(affinity(PEERS[:2], est, key, c=0.1)) == sorted(PEERS[:2])


def test_affinity_bounds_the_load_it_creates() -> None:
    """Place many same-key requests one by one, feeding back the load: the hot key spills
    over instead of piling onto its owner."""
    load = dict.fromkeys(PEERS, 0.0)
    state = BalanceState()
    for _ in range(400):
        target = order("affinity", PEERS, load, "p:one hot prompt", random.Random(0), state)[0]
        load[target] += 1
    mean = sum(load.values()) / len(PEERS)
    assert max(load.values()) <= DEFAULT_C * (mean + 1) + 1


def test_affinity_without_key_is_least_loaded() -> None:
    est = {p: float(i) for i, p in enumerate(PEERS)}
    out = order("affinity", PEERS, est, None, random.Random(3), BalanceState())
    assert out == least_loaded(PEERS, est, random.Random(3))


def test_ring_cache_reuses_and_evicts() -> None:
    cache = RingCache(max_sets=2)
    r1 = cache.get(PEERS[:3])
    assert cache.get(PEERS[2::-1]) is r1
    cache.get(PEERS[:4])
    cache.get(PEERS[:5])
    assert cache.get(PEERS[:3]) is not r1
    # A ring for other peers is rebuilt rather than trusted.
    assert affinity(PEERS[:2], {}, "k", ring=r1)[0] in PEERS[:2]


# -- prefix_key --------------------------------------------------------------------------------


def test_session_header_wins_in_any_case() -> None:
    body = {"user": "u1", "messages": [{"role": "user", "content": "hi"}]}
    assert prefix_key(body, {"x-session-id": " abc "}) == "s:abc"
    assert prefix_key(body, {"X-Otela-Session": "xyz"}) == "s:xyz"
    assert prefix_key(body, {"X-Session-ID": ""}) == "u:u1"


def test_user_field() -> None:
    assert prefix_key({"user": "alice", "prompt": "x"}, {}) == "u:alice"
    assert prefix_key({"user": 5, "prompt": "x"}, {}) == "p:x"


def test_chat_prefix_is_system_then_first_user() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": [{"type": "image_url"}, {"type": "text", "text": "Q1"}]},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
        ]
    }
    assert prefix_key(body, {}) == "p:You are terse.\nAnswer in French.\nQ1"
    # Later turns do not change the key: a conversation stays where its prefix is cached.
    shorter = {"messages": body["messages"][:3]}
    assert prefix_key(shorter, {}) == prefix_key(body, {})


def test_prefix_is_cut_at_k() -> None:
    long = "word " * 200
    key = prefix_key({"messages": [{"role": "system", "content": long}]}, {}, k=50)
    assert key == "p:" + long[:50]
    a = prefix_key({"messages": [{"role": "user", "content": long + "tail one"}]}, {})
    b = prefix_key({"messages": [{"role": "user", "content": long + "tail two"}]}, {})
    assert a == b


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("once upon", "p:once upon"),
        (["first", "second"], "p:first"),
        ([1, 2, 3], "p:1 2 3"),
        ([[4, 5], [6]], "p:4 5"),
        ([], None),
        ("   ", None),
        (None, None),
        ({"weird": 1}, None),
    ],
)
def test_completion_prompts(prompt: object, expected: str | None) -> None:
    assert prefix_key({"prompt": prompt}, {}) == expected


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": "nope"},
        {"messages": [None, 3, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "user", "content": None}]},
        {"input": "embeddings are not keyed"},
    ],
)
def test_nothing_usable_is_none(body: dict) -> None:
    assert prefix_key(body, {}) is None
