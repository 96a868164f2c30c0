"""Pure parts of reaching private nodes: the route order, the route memory, relay choice,
relay limits, the dial-back verdict and the initial reachability."""

from __future__ import annotations

import pytest

from opentela.config import Config
from opentela.overlay import route as rt
from opentela.overlay.route import PeerReach, RouteMemory, plan_route
from opentela.reach.choose import BACKOFF_S, Candidate, choose, next_backoff
from opentela.reach.dialback import verdict
from opentela.reach.limits import ByteBucket, RelayLimits
from opentela.reach.reachability import advertised_port, initial_reachability
from opentela.table import record


def _plan(peer="T", **kw):
    args = dict(
        self_id="ME",
        connected=False,
        target=None,
        own_relays=(),
        is_connected=lambda _p: False,
        dial_failed=False,
        last_relay=None,
        failed_relays=frozenset(),
    )
    args.update(kw)
    return plan_route(peer, **args)


def test_private_constant_matches_the_record() -> None:
    assert rt.PRIVATE == record.PRIVATE


def test_unknown_or_public_peer_is_dialed_directly() -> None:
    assert _plan() == rt.Route(direct=True, relays=())
    assert _plan(target=PeerReach("public")) == rt.Route(direct=True, relays=())


def test_private_peer_is_never_dialed() -> None:
    r = _plan(target=PeerReach("private", ("R1", "R2")))
    assert r == rt.Route(direct=False, relays=("R1", "R2"))
    # ...and with no relay named yet there is no way at all (never a dial).
    assert _plan(target=PeerReach("private", ())) == rt.Route(direct=False, relays=())


def test_a_connection_in_hand_comes_first() -> None:
    r = _plan(connected=True, target=PeerReach("private", ("R1",)))
    assert r.direct and r.relays == ("R1",)


def test_relay_order_last_used_then_held_then_failed_last() -> None:
    r = _plan(
        target=PeerReach("private", ("R1", "R2", "R3", "R4")),
        is_connected=lambda p: p == "R3",
        last_relay="R2",
        failed_relays=frozenset({"R2", "R1"}),
    )
    # R2 carried the last stream but failed since: it goes back with the failed ones.
    assert r.relays == ("R3", "R4", "R2", "R1")


def test_relays_never_include_the_target_or_ourselves() -> None:
    r = _plan(target=PeerReach("private", ("T", "ME", "R1", "R1")))
    assert r.relays == ("R1",)


def test_private_node_reaches_a_public_peer_through_its_own_relays_after_a_failed_dial() -> None:
    fresh = _plan(target=PeerReach("public"), own_relays=("R1",))
    assert fresh.direct and fresh.relays == ("R1",)
    failing = _plan(target=PeerReach("public"), own_relays=("R1",), dial_failed=True)
    assert not failing.direct and failing.relays == ("R1",)
    # With no relay at all, a failing dial is still the only way: tried again.
    assert _plan(target=PeerReach("public"), dial_failed=True).direct


def test_route_memory_dial_cache_expires() -> None:
    m = RouteMemory()
    m.dial_started("P", 100.0)
    assert m.dial_failing("P", 100.0 + rt.DIAL_RETRY_S - 1)
    assert not m.dial_failing("P", 100.0 + rt.DIAL_RETRY_S + 1)
    m.dial_started("P", 200.0)
    m.dial_ok("P")
    assert not m.dial_failing("P", 200.5)


def test_route_memory_relays() -> None:
    m = RouteMemory()
    m.relay_failed("R1", 10.0)
    assert m.failed_relays(10.0 + rt.RELAY_RETRY_S - 1) == {"R1"}
    assert m.failed_relays(10.0 + rt.RELAY_RETRY_S + 1) == frozenset()
    m.relay_failed("R1", 50.0)
    m.relayed("P", "R1")  # it worked again
    assert m.via("P") == "R1" and m.failed_relays(51.0) == frozenset()
    m.forget_via("P")
    assert m.via("P") is None


def test_route_memory_is_bounded() -> None:
    m = RouteMemory()
    for i in range(rt.MAX_REMEMBERED + 10):
        m.dial_started(f"P{i}", 0.0)
    assert not m.dial_failing("P0", 1.0) and m.dial_failing(f"P{rt.MAX_REMEMBERED + 9}", 1.0)


def test_choose_prefers_bootstraps_then_relays_then_rtt() -> None:
    cands = [
        Candidate("H-far", "head", rtt_s=0.05),
        Candidate("H-near", "head", rtt_s=0.01),
        Candidate("R", "relay", rtt_s=0.09),
        Candidate("B", "", bootstrap=True),
    ]
    assert choose("ME", cands, (), {}, 0.0, wanted=4) == ["B", "R", "H-near", "H-far"]
    assert choose("ME", cands, ("B",), {}, 0.0, wanted=2) == ["R"]
    assert choose("ME", cands, ("B", "R"), {}, 0.0, wanted=2) == []


def test_choose_skips_backoff_and_self_and_merges_duplicates() -> None:
    cands = [Candidate("B", "", bootstrap=True), Candidate("B", "relay"), Candidate("ME", "relay")]
    assert choose("ME", cands, (), {"B": 5.0}, 4.0) == []
    assert choose("ME", cands, (), {"B": 5.0}, 6.0) == ["B"]


def test_choose_spreads_private_nodes_over_equal_relays() -> None:
    cands = [Candidate(f"R{i}", "relay") for i in range(8)]
    firsts = {choose(f"node{n}", cands, (), {}, 0.0, wanted=1)[0] for n in range(64)}
    assert len(firsts) >= 5  # not every private node on the same relay


def test_backoff_doubles_to_a_cap() -> None:
    first, cap = BACKOFF_S
    waits = [next_backoff(None)]
    for _ in range(10):
        waits.append(next_backoff(waits[-1]))
    assert waits[0] == first and waits[-1] == cap and waits == sorted(waits)


def test_relay_limits_count_and_release() -> None:
    lim = RelayLimits(max_streams_per_origin=2, max_streams_per_target=3, max_streams=4)
    assert lim.open("A", "T") is None and lim.open("A", "T") is None
    assert "your node" in (lim.open("A", "T") or "")
    assert lim.open("B", "T") is None
    assert "T"[-8:] in (lim.open("C", "T") or "")
    assert lim.open("C", "U") is None
    assert "carries 4" in (lim.open("D", "V") or "")
    lim.close("A", "T")
    assert lim.open("D", "V") is None
    for o, t in (("A", "T"), ("B", "T"), ("C", "U"), ("D", "V")):
        lim.close(o, t)
    assert lim.streams == 0 and not lim.by_target


def test_byte_bucket_throttles_beyond_the_burst() -> None:
    b = ByteBucket(rate=1000.0, burst=500.0, tokens=500.0, updated=0.0)
    assert b.take(400, 0.0) == 0.0
    assert b.take(300, 0.0) == pytest.approx(0.2)  # 200 bytes of debt at 1000 B/s
    assert b.take(0, 1.0) == 0.0  # the debt is paid and the bucket refills


def test_relay_limits_wait_counts_both_peers() -> None:
    lim = RelayLimits(rate=1000.0, burst=1000.0)
    assert lim.wait_for(("A", "T"), 1000, 0.0) == 0.0
    assert lim.wait_for(("B", "T"), 500, 0.0) == pytest.approx(0.5)  # T's bucket is empty


def test_dialback_verdict() -> None:
    assert verdict([]) is None and verdict([None, None]) is None
    assert verdict([False, None]) is False
    assert verdict([False, True]) is True


def test_initial_reachability() -> None:
    assert initial_reachability(Config(), in_slurm=False) == "public"
    assert initial_reachability(Config(), in_slurm=True) == "private"
    assert initial_reachability(Config(public_addr="10.0.0.5"), in_slurm=True) == "public"
    assert initial_reachability(Config(reachability="private"), in_slurm=False) == "private"
    assert initial_reachability(Config(reachability="public"), in_slurm=True) == "public"


def test_advertised_port() -> None:
    assert advertised_port(["/ip4/10.0.0.1/tcp/4001/p2p/X"], 9) == 4001
    assert advertised_port([], 9) == 9


def test_record_round_trips_reachability_and_rejects_junk() -> None:
    r = record.NodeRecord("p", 1, 1.0, reachability="private", relays=("R1", "R2"))
    back = record.NodeRecord.decode(r.encode())
    assert back.reachability == "private" and back.relays == ("R1", "R2")
    # An old-style record (no new fields) still decodes, as public.
    old = record.NodeRecord("p", 1, 1.0)
    assert len(old.encode()) < len(r.encode())
    assert record.NodeRecord.decode(old.encode()).reachability == "public"
    bad = record.NodeRecord("p", 1, 1.0, reachability="sideways")
    with pytest.raises(record.RecordError):
        record.NodeRecord.decode(bad.encode())
    many = record.NodeRecord("p", 1, 1.0, relays=tuple(f"R{i}" for i in range(20)))
    with pytest.raises(record.RecordError):
        record.NodeRecord.decode(many.encode())


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"reachability": "sometimes"}, "must be auto, public or private"),
        ({"role": "relay", "reachability": "private"}, "relay must be reachable"),
        ({"role": "relay", "service_port": 8000}, "relay is a node without a model"),
        ({"role": "gateway"}, "must be head, relay or worker"),
    ],
)
def test_reachability_settings_are_checked(kw: dict, match: str) -> None:
    from opentela.config import ConfigError, validate

    with pytest.raises(ConfigError, match=match):
        validate(Config(**kw))
