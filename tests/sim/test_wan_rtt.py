"""Round trips from membership probes, and the timeouts they adapt (``membership/rtt.py``):
the formulas row by row, then the state machine driven by hand (no network, no clock)."""

from __future__ import annotations

import random

import pytest

from opentela.overlay.membership import messages as m
from opentela.overlay.membership.rtt import (
    DIRECT_CAP,
    MAX_SAMPLE,
    RttEstimate,
    direct_timeout_s,
    indirect_window_s,
    nack_timeout_s,
    observe,
    suspicion_allowance_s,
)
from opentela.overlay.membership.state import (
    MAX_PINGS_OUT,
    MemberDown,
    Membership,
    MembershipConfig,
    MemberSuspect,
    Send,
)
from opentela.overlay.membership.suspicion import suspicion_timeout

# The node's defaults: --probe-interval 0.25, probe timeout 0.4 of it (pool_member.py).
CFG = MembershipConfig(probe_interval_s=0.25, probe_timeout_s=0.1)
FIXED = MembershipConfig(probe_interval_s=0.25, probe_timeout_s=0.1, adapt_to_rtt=False)
RNG = random.Random(0)


def pid(i: int) -> str:
    return f"12D3KooW{i:044d}"


A, B, C, D = (pid(i) for i in range(4))


def sends(effects: list) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def known(node: Membership, *members: str) -> Membership:
    for mid in members:
        node.receive(mid, m.Ping(1, mid, 0), 0.0, RNG)
    return node


def est(srtt: float, var: float) -> RttEstimate:
    return RttEstimate(srtt, var)


# -- the estimator ------------------------------------------------------------------------------


def test_estimator_follows_rfc_6298() -> None:
    e = RttEstimate.first(0.08)
    assert (e.srtt_s, e.rttvar_s) == (0.08, 0.04)  # R, R/2
    e = e.update(0.12)
    assert e.rttvar_s == pytest.approx(0.75 * 0.04 + 0.25 * 0.04)  # |0.08 - 0.12| = 0.04
    assert e.srtt_s == pytest.approx(0.875 * 0.08 + 0.125 * 0.12)
    assert e.samples == 2
    for _ in range(60):
        e = e.update(0.08)
    assert e.srtt_s == pytest.approx(0.08, abs=1e-4)
    assert e.rttvar_s < 1e-4
    assert e.bound_s == pytest.approx(e.srtt_s + 4 * e.rttvar_s)


def test_samples_are_clamped_so_one_freak_does_not_stretch_everything() -> None:
    e = observe(None, 30.0, probe_interval_s=0.25)  # an Ack after a 30 s pause of the peer
    assert e.srtt_s == MAX_SAMPLE * 0.25
    assert observe(None, -1.0, 0.25).srtt_s == 0.0
    e = observe(RttEstimate(0.08, 0.002), 30.0, 0.25)
    assert e.srtt_s == pytest.approx(0.875 * 0.08 + 0.125 * 0.5)


@pytest.mark.parametrize(
    ("e", "expected"),
    [
        (None, 0.1),  # unknown: the configured probe timeout
        (est(0.001, 0.0005), 0.1),  # a LAN: the configured value, exactly
        (est(0.08, 0.005), 0.1),  # 0.08 + 0.02: just at the floor
        (est(0.09, 0.01), 0.13),  # a 40-50 ms link: srtt + 4 rttvar
        (est(0.3, 0.05), DIRECT_CAP * 0.25),  # slower than the interval: capped
    ],
)
def test_direct_timeout(e: RttEstimate | None, expected: float) -> None:
    assert direct_timeout_s(e, 0.1, 0.25) == pytest.approx(expected)


def test_direct_timeout_cap_never_goes_below_the_configured_timeout() -> None:
    assert direct_timeout_s(est(1.0, 0.1), 0.22, 0.25) == pytest.approx(0.22)


def test_indirect_window_is_two_of_the_longest_legs() -> None:
    lan, wan = est(0.001, 0.0005), est(0.08, 0.01)
    assert indirect_window_s(None, [None, None], 0.25) == 0.0  # nothing measured: no change
    assert indirect_window_s(lan, [lan], 0.25) == pytest.approx(2 * 0.003)
    # The target across the WAN, helpers next to us: the helper's leg to it is the slow one.
    assert indirect_window_s(wan, [lan, lan], 0.25) == pytest.approx(2 * 0.12)
    # ... or a helper across the WAN: its first leg is.
    assert indirect_window_s(lan, [lan, wan], 0.25) == pytest.approx(2 * 0.12)
    assert indirect_window_s(est(5.0, 1.0), [], 0.25) == pytest.approx(2 * 0.25)  # one leg cap


def test_nack_timer_and_suspicion_allowance() -> None:
    assert nack_timeout_s(None, 0.1, 0.25) == 0.1
    assert nack_timeout_s(est(0.001, 0.001), 0.1, 0.25) == 0.1
    assert nack_timeout_s(est(0.1, 0.01), 0.1, 0.25) == pytest.approx(0.14)
    assert suspicion_allowance_s(None, 0.25) == 0.0
    assert suspicion_allowance_s(est(0.08, 0.005), 0.25) == pytest.approx(0.2)
    assert suspicion_allowance_s(est(9.0, 1.0), 0.25) == pytest.approx(0.5)


# -- measuring, in the state machine -------------------------------------------------------------


def probe(node: Membership, t: float) -> Send:
    (ping,) = [s for s in sends(node.tick(t, RNG)) if isinstance(s.msg, m.Ping)]
    return ping


def test_a_direct_ack_to_our_probe_is_a_sample_and_a_relayed_one_is_not() -> None:
    node = known(Membership(A, CFG), B)
    assert node.rtt(B) is None and node.rtt_stats() == {"rtt_known": 0}
    ping = probe(node, 1.0)
    node.receive(B, m.Ack(ping.msg.seq, B), 1.08, RNG)
    assert node.rtt(B) == pytest.approx(0.08)
    assert node.rtt_stats() == {"rtt_known": 1, "srtt_min_ms": 80.0, "srtt_max_ms": 80.0}
    # The same seq again (a duplicate) is not a second sample.
    node.receive(B, m.Ack(ping.msg.seq, B), 1.5, RNG)
    assert node.rtt_estimate(B).samples == 1

    node = known(Membership(A, CFG), B, C, D)
    ping = probe(node, 1.0)
    helper = next(s.to_id for s in sends(node.tick(1.1, RNG)) if isinstance(s.msg, m.PingReq))
    node.receive(helper, m.Ack(ping.msg.seq, helper), 1.2, RNG)  # relayed: not a round trip
    assert node.rtt(helper) is None and node.rtt(ping.to_id) is None


def test_the_retry_has_its_own_seq_so_its_ack_is_a_clean_sample() -> None:
    node = known(Membership(A, CFG), B)
    first = probe(node, 1.0)
    (retry,) = [s for s in sends(node.tick(1.1, RNG)) if isinstance(s.msg, m.Ping)]
    assert retry.to_id == B and retry.msg.seq != first.msg.seq
    effects = node.receive(B, m.Ack(retry.msg.seq, B), 1.15, RNG)  # saves the probe
    assert node.rtt(B) == pytest.approx(0.05)  # from the retry, not from the first Ping
    assert not any(isinstance(e, MemberSuspect) for e in effects + node.tick(2.0, RNG))


def test_a_late_ack_still_teaches_the_round_trip() -> None:
    node = known(Membership(A, CFG), B, C)
    ping = probe(node, 1.0)
    node.tick(1.1, RNG)
    node.tick(1.25, RNG)  # deadline: B is suspected
    node.receive(B, m.Ack(ping.msg.seq, B), 1.3, RNG)
    assert node.rtt(B) == pytest.approx(0.3)


def test_acks_of_introductions_and_relayed_pings_are_samples_too() -> None:
    node = Membership(A, CFG)
    (hello,) = sends(node.join(B, ("/ip4/b",), 0.0))
    node.receive(B, m.Ack(hello.msg.seq, B, (m.Alive(B, 0, ("/ip4/b",)),)), 0.04, RNG)
    assert node.rtt(B) == pytest.approx(0.04)
    node = known(Membership(A, CFG), B, C)
    (relay_ping,) = sends(node.receive(B, m.PingReq(42, B, C), 1.0, RNG))
    node.receive(C, m.Ack(relay_ping.msg.seq, C), 1.03, RNG)
    assert node.rtt(C) == pytest.approx(0.03)


def test_no_sample_after_our_own_stall_and_none_kept_for_the_gone() -> None:
    node = known(Membership(A, CFG), B)
    ping = probe(node, 1.0)
    # We were frozen: the Ack sat in our input queue for 5 s.
    node.receive(B, m.Ack(ping.msg.seq, B), 6.0, RNG)
    assert node.rtt(B) is None
    node = known(Membership(A, CFG), B, C)
    ping = probe(node, 1.0)
    node.receive(ping.to_id, m.Ack(ping.msg.seq, ping.to_id), 1.01, RNG)
    node.receive(C, m.Ack(9, C, (m.Left(ping.to_id, 1),)), 2.0, RNG)
    node.tick(2.0 + CFG.tombstone_s, RNG)
    assert node.rtt(ping.to_id) is None


def test_pings_remembered_for_their_round_trip_are_bounded() -> None:
    node = known(Membership(A, CFG), B)
    for i in range(3 * MAX_PINGS_OUT):
        node.join(pid(100 + i), (), float(i))  # unanswered introductions
    assert len(node._pings_out) == MAX_PINGS_OUT


# -- adapting, in the state machine ---------------------------------------------------------------


def measured(cfg: MembershipConfig, rtt_s: float, *members: str) -> tuple[Membership, float]:
    """A node that has probed every member about 20 times at a round trip of ``rtt_s``, and
    the time of its next probe (ticking on time: a late tick would look like our own stall)."""
    node = known(Membership(A, cfg), *members)
    t = 0.0
    for _ in range(20 * len(members)):
        ping = probe(node, t)
        node.receive(ping.to_id, m.Ack(ping.msg.seq, ping.to_id), t + rtt_s, RNG)
        t = node.next_deadline_s()
    assert node.awareness == 0
    return node, t


def indirect_at(node: Membership, t: float) -> float:
    """Start a probe at ``t``; when it goes indirect (the direct timeout), after ``t``."""
    probe(node, t)
    step = 0.001
    for i in range(1, 1000):
        if any(isinstance(s.msg, m.PingReq) for s in sends(node.tick(t + i * step, RNG))):
            return round(i * step, 3)
    raise AssertionError("never went indirect")


def test_direct_timeout_follows_the_measured_round_trip() -> None:
    node, t = measured(CFG, 0.12, B, C, D)  # srtt ~0.12, rttvar ~0: above the 0.1 s floor
    assert node.rtt(B) == pytest.approx(0.12, abs=0.002)
    assert indirect_at(node, t) == pytest.approx(node.rtt_estimate(B).bound_s, abs=0.0011)
    fixed, t = measured(FIXED, 0.12, B, C, D)
    assert fixed.rtt(B) == pytest.approx(0.12, abs=0.002)  # measured all the same...
    assert indirect_at(fixed, t) == pytest.approx(0.1, abs=0.0011)  # ... but not used


def test_an_indirect_probe_waits_for_two_legs_past_the_interval() -> None:
    for cfg, suspected_before_0_35 in ((CFG, False), (FIXED, True)):
        node, t = measured(cfg, 0.12, B, C, D)
        ping = probe(node, t)
        reqs = [s for s in sends(node.tick(t + 0.13, RNG)) if isinstance(s.msg, m.PingReq)]
        assert reqs  # gone indirect (direct timeout ~0.12, or 0.1 fixed)
        # An Ack over the indirect path (two 0.12 s legs) comes at ~0.37 s.
        early = node.tick(t + 0.3, RNG) + node.tick(t + 0.34, RNG)
        assert any(isinstance(e, MemberSuspect) for e in early) is suspected_before_0_35
        if not suspected_before_0_35:
            helper = reqs[0].to_id
            node.receive(helper, m.Ack(ping.msg.seq, helper), t + 0.36, RNG)
            assert not any(isinstance(e, MemberSuspect) for e in node.tick(t + 0.5, RNG))


def test_a_helper_waits_one_measured_leg_before_nacking() -> None:
    node, t = measured(CFG, 0.15, B, C)
    node.receive(B, m.PingReq(42, B, C), t, RNG)
    bound = node.rtt_estimate(C).bound_s
    assert not [s for s in sends(node.tick(t + 0.1, RNG)) if isinstance(s.msg, m.Nack)]
    nacks = [s for s in sends(node.tick(t + bound, RNG)) if isinstance(s.msg, m.Nack)]
    assert [(s.to_id, s.msg.seq) for s in nacks] == [(B, 42)]


def test_suspicion_of_a_far_member_lasts_two_round_trips_longer() -> None:
    def down_after(cfg: MembershipConfig) -> float:
        node, t0 = measured(cfg, 0.1, B, C)
        node.receive(C, m.Ack(9, C, (m.Suspect(B, 0, C),)), t0, RNG)
        t = t0
        while not any(isinstance(e, MemberDown) for e in node.tick(t, RNG)):
            t += 0.001
        return t - t0

    base = suspicion_timeout(3, CFG.suspicion_mult, CFG.probe_interval_s)  # 3 nodes: k = 0
    assert down_after(FIXED) == pytest.approx(base, abs=0.0011)
    est_b = measured(CFG, 0.1, B, C)[0].rtt_estimate(B)
    assert down_after(CFG) == pytest.approx(base + 2 * est_b.bound_s, abs=0.0011)
