"""Routing by place: the entry's own site first while its load is comparable (routing/place.py),
and the Balancer applying it with site labels from the table."""

from __future__ import annotations

import random

import pytest
from test_routing import PIDS, snapshot

from opentela.gateway.balancer import Balancer
from opentela.routing.place import RTT_PER_REQUEST_S, SITE_FACTOR, site_order
from opentela.routing.plan import plan
from opentela.table.record import NodeRecord, Service

SITES = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "x": ""}
ALL = ["b1", "a1", "x", "b2", "a2"]


def no_rtt(_pid: str) -> float | None:
    return None


def order_of(est: dict[str, float], rtt=no_rtt, weights=None, own: str = "A", cands=ALL):
    return site_order(cands, SITES, own, est, weights or {}, rtt)


def test_equal_load_local_first_keeping_the_policy_order() -> None:
    out = order_of({})
    assert out == ["a1", "x", "a2", "b1", "b2"]  # unlabelled counts as local


def test_busy_local_spills_to_remote_and_retries_come_back() -> None:
    est = {"a1": 8, "a2": 8, "x": 8}
    out = order_of(est)
    assert out == ["b1", "b2", "a1", "x", "a2"]  # every candidate: retries may cross sites


def test_the_threshold_is_the_documented_rule() -> None:
    rtt = lambda _p: 0.040  # noqa: E731
    cands = ["a1", "b1"]
    slack = 0.040 / RTT_PER_REQUEST_S  # 4 requests
    # local wait (n+1) <= SITE_FACTOR * (0+1) + slack: local kept up to n = 4.
    limit = int(SITE_FACTOR + slack - 1)
    assert order_of({"a1": limit}, rtt, cands=cands)[0] == "a1"
    assert order_of({"a1": limit + 1}, rtt, cands=cands)[0] == "b1"


def test_rtt_widens_the_margin() -> None:
    cands = ["a1", "b1"]
    est = {"a1": 3}
    assert order_of(est, cands=cands)[0] == "b1"  # 4 > 1.5 with no RTT known
    assert order_of(est, lambda _p: 0.030, cands=cands)[0] == "a1"  # 4 <= 1.5 + 3


def test_rates_enter_the_comparison() -> None:
    cands = ["a1", "b1"]
    rtt = lambda _p: 0.020  # noqa: E731  # worth 2 requests
    slow_here = {"a1": 0.4, "b1": 1.6}
    # Equal rates: one queued locally, wait 2 <= 1.5 * 1 + 2: local.
    assert order_of({"a1": 1}, rtt, cands=cands)[0] == "a1"
    # Local 4x slower: wait 2 / 0.4 = 5 > 1.5 * (1 / 1.6) + 2: remote ...
    assert order_of({"a1": 1}, rtt, slow_here, cands=cands)[0] == "b1"
    # ... but idle it still wins: 1 / 0.4 = 2.5 <= 2.94.
    assert order_of({}, rtt, slow_here, cands=cands)[0] == "a1"


@pytest.mark.parametrize(
    ("own", "cands"),
    [("", ALL), ("A", ["b1", "b2"]), ("A", ["a1", "a2", "x"]), ("C", ["x"])],
)
def test_unchanged_without_own_site_or_without_both_kinds(own: str, cands: list[str]) -> None:
    est = {p: 9.0 for p in cands}
    assert order_of(est, own=own, cands=cands) == cands


def test_an_entry_in_an_unknown_site_sees_every_labelled_replica_as_remote() -> None:
    out = site_order(["a1", "b1", "x"], SITES, "C", {}, {}, no_rtt)
    assert out == ["x", "a1", "b1"]


# -- through the Balancer ---------------------------------------------------------------------


def rec(i: int, site: str) -> NodeRecord:
    labels = {"site": site} if site else {}
    svc = Service("llm", "ready", ("model=m",))
    return NodeRecord(PIDS[i], 1, 0.0, role="worker", services=(svc,), labels=labels)


@pytest.mark.parametrize("policy", ["random", "round-robin", "least-loaded", "affinity"])
def test_balancer_prefers_its_own_site_at_equal_load(policy: str) -> None:
    snap = snapshot(rec(0, "bristen"), rec(1, "clariden"), rec(2, "clariden"))
    b = Balancer(policy, random.Random(0), site="bristen", rtt=lambda _p: 0.03)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(20):
        out = b.arrange(snap, plan(snap, "m", rng=b.rng), body, {})
        assert out[0].peer_id == PIDS[0]
        assert len(out) == 3


def test_balancer_crosses_sites_when_the_local_replica_is_busy() -> None:
    snap = snapshot(rec(0, "bristen"), rec(1, "clariden"))
    b = Balancer("least-loaded", random.Random(0), site="bristen", rtt=lambda _p: 0.02)
    firsts = []
    held = []
    for _ in range(10):  # nothing finishes: our own requests pile up
        out = b.arrange(snap, plan(snap, "m", rng=b.rng), {}, {})
        firsts.append(out[0].peer_id)
        held.append(b.start(out[0].peer_id))
    # Local kept while (n+1) <= 1.5 * (remote n + 1) + 2, then both share the rest.
    assert firsts[:3] == [PIDS[0]] * 3
    assert PIDS[1] in firsts[3:]


def test_balancer_without_site_is_unchanged() -> None:
    snap = snapshot(rec(0, "bristen"), rec(1, "clariden"))
    a = Balancer("random", random.Random(7))
    b = Balancer("random", random.Random(7), site="")
    for _ in range(10):
        pa = a.arrange(snap, plan(snap, "m", rng=random.Random(1)), {}, {})
        pb = b.arrange(snap, plan(snap, "m", rng=random.Random(1)), {}, {})
        assert pa == pb
