"""Membership building blocks, each on its own: codec, queue, suspicion math, awareness, and the
state machine's transitions driven by hand (no network, no clock)."""

from __future__ import annotations

import contextlib
import math
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opentela.overlay.membership import messages as m
from opentela.overlay.membership.awareness import Awareness
from opentela.overlay.membership.queue import BroadcastQueue, retransmit_limit
from opentela.overlay.membership.state import (
    MemberDown,
    MemberLeft,
    Membership,
    MembershipConfig,
    MemberState,
    MemberSuspect,
    MemberUp,
    Refuted,
    Send,
)
from opentela.overlay.membership.suspicion import (
    Suspicion,
    confirmations_wanted,
    remaining_suspicion_time,
    suspicion_timeout,
)


def pid(i: int) -> str:
    """A peer-id-sized member id (libp2p Ed25519 ids are 52 characters)."""
    return f"12D3KooW{i:044d}"


A, B, C, D = (pid(i) for i in range(4))

# -- codec ----------------------------------------------------------------------------------------

UPDATES = (
    m.Alive(A, 7, ("/ip4/127.0.0.1/tcp/4001", "/ip4/10.0.0.1/tcp/4001")),
    m.Alive(B, 0),
    m.Suspect(A, 3, B),
    m.Dead(C, 2**63, A),
    m.Left(D, 1_700_000_000_000),
)
MESSAGES = (
    m.Ping(1, A, 5, UPDATES),
    m.Ping(2**64 - 1, A, 0),
    m.Ack(9, B, UPDATES[:2]),
    m.PingReq(4, A, C, UPDATES[2:]),
    m.Nack(4, B),
)


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda x: type(x).__name__)
def test_codec_round_trip(msg: m.Message) -> None:
    assert m.decode(m.encode(msg)) == msg


def test_encoding_is_compact() -> None:
    # An empty probe is dominated by the 52-character sender id.
    assert len(m.encode(m.Ping(123456, A, 1_700_000_000_000))) <= 72
    assert len(m.encode(m.Ack(123456, A))) <= 64
    assert m.update_size(m.Suspect(A, 1, B)) <= 112


def _packed(*fields: object) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)


GARBAGE = {
    "empty": b"",
    "reserved byte": b"\xc1",
    "truncated": m.encode(MESSAGES[0])[:-3],
    "trailing bytes": m.encode(MESSAGES[1]) + b"\x00",
    "not an array": msgpack.packb({"v": 1}),
    "a string": msgpack.packb("ping"),
    "too short": _packed(1),
    "other version": _packed(2, m.PING, 1, A, 0, []),
    "unknown kind": _packed(1, 42, 1, A, 0, []),
    "bool seq": _packed(1, m.PING, True, A, 0, []),
    "negative seq": _packed(1, m.PING, -1, A, 0, []),
    "float seq": _packed(1, m.PING, 1.0, A, 0, []),
    "bytes id": _packed(1, m.PING, 1, A.encode(), 0, []),
    "empty id": _packed(1, m.PING, 1, "", 0, []),
    "huge id": _packed(1, m.PING, 1, "x" * 1000, 0, []),
    "missing piggyback": _packed(1, m.ACK, 1, A),
    "piggyback not a list": _packed(1, m.ACK, 1, A, {}),
    "update not a list": _packed(1, m.ACK, 1, A, [7]),
    "empty update": _packed(1, m.ACK, 1, A, [[]]),
    "short update": _packed(1, m.ACK, 1, A, [[m.SUSPECT, B, 1]]),
    "addr not a string": _packed(1, m.ACK, 1, A, [[m.ALIVE, B, 1, [4001]]]),
    "too big": b"\x90" * (m.MAX_MESSAGE_BYTES + 1),
    "deep nesting": b"\x91" * 100_000 + b"\xc0",
    "unhashable map key": b"\x81\x90\x01",
}


@pytest.mark.parametrize("data", GARBAGE.values(), ids=GARBAGE.keys())
def test_decode_rejects_garbage_with_message_error(data: bytes) -> None:
    with pytest.raises(m.MessageError):
        m.decode(data)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(m.MessageError):
        m.decode("ping")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(m.MessageError):
        m.decode(data)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.text(max_size=60)
        | st.binary(max_size=8),
        lambda inner: st.lists(inner, max_size=7),
        max_leaves=30,
    )
)
def test_decode_of_arbitrary_msgpack_arrays(obj: object) -> None:
    # Well-formed msgpack, wrong shape: the interesting garbage.
    for candidate in (obj, [1, obj], [1, m.ACK, 3, A, obj], [1, m.PING, 1, A, 0, obj]):
        with contextlib.suppress(m.MessageError):
            m.decode(msgpack.packb(candidate, use_bin_type=True))


def test_newer_peers_are_understood() -> None:
    # Fields appended after the known ones, and update kinds we do not know, are ignored.
    data = _packed(1, m.ACK, 5, A, [[9, "future"], [m.LEFT, B, 3, "extra"]], "new field")
    assert m.decode(data) == m.Ack(5, A, (m.Left(B, 3),))


# -- broadcast queue ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [(3, 1, 3), (3, 9, 3), (3, 10, 6), (3, 25, 6), (4, 99, 8), (4, 100, 12), (3, 0, 0)],
)
def test_retransmit_limit(mult: int, n: int, expected: int) -> None:
    assert retransmit_limit(mult, n) == expected


def test_queue_newer_update_replaces_older_about_same_member() -> None:
    q = BroadcastQueue(retransmit_mult=3)
    q.queue(m.Alive(A, 1))
    q.queue(m.Suspect(A, 1, B))
    q.queue(m.Alive(B, 1))
    assert q.pending() == [m.Alive(B, 1), m.Suspect(A, 1, B)]
    q.queue(m.Dead(A, 1, B))
    assert len(q) == 2
    assert m.Dead(A, 1, B) in q.pending()


def test_queue_sends_fewest_transmitted_first_then_newest() -> None:
    q = BroadcastQueue(retransmit_mult=3)
    q.queue(m.Alive(A, 1))
    q.queue(m.Alive(B, 1))
    assert q.take(1000, n_members=5) == [m.Alive(B, 1), m.Alive(A, 1)]  # newest first
    q.queue(m.Alive(C, 1))  # never sent: overtakes both
    assert q.take(1000, n_members=5)[0] == m.Alive(C, 1)


def test_queue_take_packs_what_fits_and_skips_what_does_not() -> None:
    q = BroadcastQueue(retransmit_mult=3)
    big = m.Alive(A, 1, tuple(f"/ip4/10.0.0.{i}/tcp/4001" for i in range(10)))
    small = m.Left(B, 1)
    q.queue(small)
    q.queue(big)
    budget = m.update_size(small) + 10
    assert q.take(budget, n_members=5) == [small]  # big skipped, small behind it still fits
    assert q.take(0, n_members=5) == []
    assert q.take(10_000, n_members=5, exclude={A}) == [small]


def test_queue_drops_an_update_after_its_retransmit_limit() -> None:
    q = BroadcastQueue(retransmit_mult=2)
    q.queue(m.Alive(A, 1))
    sent = 0
    while q.take(1000, n_members=20):  # limit 2 * ceil(log10(21)) = 4
        sent += 1
    assert sent == 4
    assert len(q) == 0


# -- suspicion ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected_s"),
    # memberlist util_test.go TestSuspicionTimeout: suspicionTimeout(3, n, 1s) / 3.
    [(5, 1.0), (10, 1.0), (50, 1.698), (100, 2.0), (500, 2.698), (1000, 3.0)],
)
def test_suspicion_timeout_like_memberlist(n: int, expected_s: float) -> None:
    assert suspicion_timeout(n, 3, 1.0) / 3 == pytest.approx(expected_s, abs=1e-3)


@pytest.mark.parametrize(
    ("confirmations", "k", "elapsed_s", "min_s", "max_s", "expected_s"),
    # memberlist suspicion_test.go TestSuspicion_remainingSuspicionTime, row for row.
    [
        (0, 3, 0, 2, 30, 30),
        (1, 3, 2, 2, 30, 14),
        (2, 3, 3, 2, 30, 4.81),
        (3, 3, 4, 2, 30, -2),
        (4, 3, 5, 2, 30, -3),
        (5, 3, 10, 2, 30, -8),
    ],
)
def test_remaining_suspicion_time_like_memberlist(
    confirmations: int, k: int, elapsed_s: float, min_s: float, max_s: float, expected_s: float
) -> None:
    got = remaining_suspicion_time(confirmations, k, elapsed_s, min_s, max_s)
    assert got == pytest.approx(expected_s, abs=1e-9)


def test_remaining_suspicion_time_without_expected_confirmations_is_min() -> None:
    assert remaining_suspicion_time(0, 0, 0.5, 2, 30) == 1.5


@pytest.mark.parametrize(
    ("mult", "n", "k"), [(4, 25, 2), (4, 4, 2), (4, 3, 0), (3, 3, 1), (2, 9, 0)]
)
def test_confirmations_wanted(mult: int, n: int, k: int) -> None:
    assert confirmations_wanted(mult, n) == k


def test_suspicion_shrinks_with_independent_confirmations_only() -> None:
    s = Suspicion.start(
        A, 4, B, 10.0, n=25, suspicion_mult=4, max_timeout_mult=3, probe_interval_s=0.2
    )
    assert (s.k, s.min_s, s.max_s) == (
        2,
        pytest.approx(1.1184, abs=1e-3),
        pytest.approx(3.355, abs=1e-3),
    )
    assert s.deadline_s == pytest.approx(10.0 + s.max_s, abs=1e-3)
    assert s.confirm(B) is None  # the accuser does not confirm itself
    s1 = s.confirm(C)
    assert s1 is not None and s1.confirmations == 1
    assert s1.confirm(C) is None  # nobody confirms twice
    assert s1.deadline_s < s.deadline_s
    s2 = s1.confirm(D)
    assert s2 is not None and s2.deadline_s == pytest.approx(10.0 + s.min_s, abs=1e-3)
    assert s2.confirm(pid(9)) is None  # k reached: further confirmations add nothing
    assert s2.postponed(1.0).deadline_s == pytest.approx(s2.deadline_s + 1.0)


# -- awareness ------------------------------------------------------------------------------------


def test_awareness_clamps_and_scales() -> None:
    a = Awareness(max_multiplier=8)
    assert a.scale(0.2) == 0.2
    assert a.apply(-1).score == 0
    worse = a.apply(3)
    assert worse.score == 3 and worse.scale(0.2) == pytest.approx(0.8)
    assert a.apply(100).score == 7 and a.apply(100).multiplier == 8
    assert a.apply(100).apply(-2).score == 5


# -- state machine, by hand -----------------------------------------------------------------------

CFG = MembershipConfig()
RNG = random.Random(0)


def sends(effects: list) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def known(node: Membership, *members: str, inc: int = 0) -> Membership:
    """Make ``members`` alive in ``node`` as if they had pinged it."""
    for mid in members:
        node.receive(mid, m.Ping(1, mid, inc), 0.0, RNG)
    return node


def test_a_ping_from_a_stranger_introduces_both_ways() -> None:
    node = Membership(A, CFG, addrs=("/ip4/127.0.0.1/tcp/1",))
    effects = node.receive(B, m.Ping(7, B, 3, (m.Alive(B, 3, ("/ip4/x",)),)), 0.0, RNG)
    assert MemberUp(B, 3, ("/ip4/x",)) in effects
    (ack,) = sends(effects)
    assert ack.to_id == B and isinstance(ack.msg, m.Ack) and ack.msg.seq == 7
    assert m.Alive(A, 0, ("/ip4/127.0.0.1/tcp/1",)) in ack.msg.piggyback  # we introduce ourselves
    assert node.members() == {B: (MemberState.ALIVE, 3)}


def test_message_whose_sender_disagrees_with_the_transport_is_dropped() -> None:
    node = Membership(A, CFG)
    assert node.receive(B, m.Ping(1, C, 0), 0.0, RNG) == []
    assert node.members() == {}


@pytest.mark.parametrize(
    ("first", "then", "state", "inc"),
    [
        (m.Suspect(B, 1, C), m.Alive(B, 1), MemberState.SUSPECT, 1),  # same inc: no refutation
        (m.Suspect(B, 1, C), m.Alive(B, 2), MemberState.ALIVE, 2),  # higher inc wins
        (m.Suspect(B, 1, C), m.Dead(B, 1, C), MemberState.DEAD, 1),  # dead beats suspect
        (m.Dead(B, 1, C), m.Suspect(B, 1, D), MemberState.DEAD, 1),
        (m.Dead(B, 1, C), m.Alive(B, 1), MemberState.DEAD, 1),
        (m.Dead(B, 1, C), m.Alive(B, 2), MemberState.ALIVE, 2),  # back, at a new incarnation
        (m.Alive(B, 5), m.Suspect(B, 4, C), MemberState.ALIVE, 5),  # stale suspicion
        (m.Left(B, 2), m.Alive(B, 2), MemberState.LEFT, 2),  # left is final for its inc
        (m.Left(B, 2), m.Dead(B, 2, C), MemberState.LEFT, 2),
        (m.Dead(B, 2, C), m.Left(B, 2), MemberState.LEFT, 2),  # goodbye explains the death
        (m.Left(B, 2), m.Alive(B, 3), MemberState.ALIVE, 3),  # a rejoin outranks it
    ],
)
def test_incarnation_rules(first: m.Update, then: m.Update, state: MemberState, inc: int) -> None:
    node = known(Membership(A, CFG), B, C, D, inc=0)
    node.receive(C, m.Ack(99, C, (first,)), 1.0, RNG)
    node.receive(D, m.Ack(99, D, (then,)), 1.0, RNG)
    assert node.members()[B] == (state, inc)


def test_transitions_are_reported_once() -> None:
    node = known(Membership(A, CFG), B, C)
    e1 = node.receive(C, m.Ack(9, C, (m.Suspect(B, 0, C),)), 1.0, RNG)
    e2 = node.receive(C, m.Ack(9, C, (m.Suspect(B, 0, C),)), 1.0, RNG)
    e3 = node.receive(C, m.Ack(9, C, (m.Dead(B, 0, C),)), 1.0, RNG)
    e4 = node.receive(C, m.Ack(9, C, (m.Left(B, 1),)), 1.0, RNG)
    assert [e for e in e1 if not isinstance(e, Send)] == [MemberSuspect(B, 0)]
    assert [e for e in e2 if not isinstance(e, Send)] == []
    assert [e for e in e3 if not isinstance(e, Send)] == [MemberDown(B, 0)]
    assert [e for e in e4 if not isinstance(e, Send)] == [MemberLeft(B, 1)]


def test_suspected_node_refutes_and_tells_its_accuser_directly() -> None:
    node = known(Membership(A, CFG), B, C)
    effects = node.receive(B, m.Ack(9, B, (m.Suspect(A, 0, C),)), 1.0, RNG)
    assert Refuted(1, C) in effects
    assert node.incarnation == 1
    assert node.awareness == 1  # being suspected says something about our health
    to = {s.to_id for s in sends(effects)}
    assert to == {B, C}  # the accuser and whoever told us
    for s in sends(effects):
        assert m.Alive(A, 1) in s.msg.piggyback


def test_leaving_node_does_not_refute() -> None:
    node = known(Membership(A, CFG), B, C)
    effects = node.leave(1.0)
    assert {s.to_id for s in sends(effects)} == {B, C}
    assert all(m.Left(A, 1) in s.msg.piggyback for s in sends(effects))
    assert node.receive(B, m.Ack(9, B, (m.Dead(A, 1, B),)), 1.1, RNG) == []
    assert node.incarnation == 1
    # ... and stops probing, while still answering.
    assert sends(node.tick(5.0, RNG)) == []
    assert isinstance(sends(node.receive(B, m.Ping(3, B, 0), 5.0, RNG))[0].msg, m.Ack)


def test_a_failed_probe_goes_indirect_then_suspects() -> None:
    node = known(Membership(A, CFG), B, C, D)
    rng = random.Random(1)
    (ping,) = sends(node.tick(0.0, rng))
    target = ping.to_id
    assert isinstance(ping.msg, m.Ping)
    assert sends(node.tick(CFG.probe_timeout_s - 0.01, rng)) == []
    indirect = sends(node.tick(CFG.probe_timeout_s, rng))
    reqs = [s for s in indirect if isinstance(s.msg, m.PingReq)]
    assert {s.to_id for s in reqs} == {B, C, D} - {target}
    assert all(s.msg.target_id == target and s.msg.seq == ping.msg.seq for s in reqs)
    assert [s.to_id for s in indirect if isinstance(s.msg, m.Ping)] == [target]  # retry
    effects = node.tick(CFG.probe_interval_s, rng)
    assert MemberSuspect(target, 0) in effects
    assert node.awareness == 2  # neither helper even nacked


def test_an_indirect_ack_saves_the_target() -> None:
    node = known(Membership(A, CFG), B, C, D)
    rng = random.Random(1)
    (ping,) = sends(node.tick(0.0, rng))
    reqs = [s for s in node.tick(CFG.probe_timeout_s, rng) if isinstance(s.msg, m.PingReq)]
    helper = reqs[0].to_id
    node.receive(helper, m.Ack(ping.msg.seq, helper), 0.15, rng)
    effects = node.tick(CFG.probe_interval_s, rng)
    assert not any(isinstance(e, MemberSuspect) for e in effects)


def test_helper_relays_the_ack_or_nacks_in_time() -> None:
    node = known(Membership(A, CFG), B, C)
    (ping,) = sends(node.receive(B, m.PingReq(42, B, C), 1.0, RNG))
    assert ping.to_id == C and isinstance(ping.msg, m.Ping)
    (relayed,) = sends(node.receive(C, m.Ack(ping.msg.seq, C), 1.01, RNG))
    assert relayed.to_id == B and relayed.msg == m.Ack(42, A, relayed.msg.piggyback)
    # A target that stays silent gets a Nack sent back after our probe timeout.
    assert len(sends(node.receive(B, m.PingReq(43, B, C), 2.0, RNG))) == 1
    nacks = [s for s in node.tick(2.0 + CFG.probe_timeout_s, RNG) if isinstance(s.msg, m.Nack)]
    assert [(s.to_id, s.msg.seq) for s in nacks] == [(B, 43)]


def test_suspicion_expires_into_dead_unless_refuted() -> None:
    node = known(Membership(A, CFG), B, C)
    node.receive(C, m.Ack(9, C, (m.Suspect(B, 0, C),)), 1.0, RNG)
    # Three members cannot produce the k = 2 confirmations: the timeout is the minimum.
    deadline = 1.0 + suspicion_timeout(3, CFG.suspicion_mult, CFG.probe_interval_s)
    assert not any(isinstance(e, MemberDown) for e in node.tick(deadline - 0.01, RNG))
    assert MemberDown(B, 0) in node.tick(deadline, RNG)
    # The same, refuted in time: the stale timer does nothing.
    node = known(Membership(A, CFG), B, C)
    node.receive(C, m.Ack(9, C, (m.Suspect(B, 0, C),)), 1.0, RNG)
    node.receive(B, m.Ack(9, B, (m.Alive(B, 1),)), 1.5, RNG)
    assert not any(isinstance(e, MemberDown) for e in node.tick(deadline + 1, RNG))
    assert node.members()[B] == (MemberState.ALIVE, 1)


def test_a_stall_does_not_expire_timers_that_ran_out_meanwhile() -> None:
    node = known(Membership(A, CFG), B, C)
    node.tick(0.0, RNG)  # a probe is in flight
    node.receive(C, m.Ack(9, C, (m.Suspect(B, 0, C),)), 0.05, RNG)
    # We were frozen for 10 s: nothing may be accused on our first tick back...
    effects = node.tick(10.0, RNG)
    assert not any(isinstance(e, MemberSuspect | MemberDown) for e in effects)
    # ... and the refutation that was waiting in our input queue is still in time.
    node.receive(B, m.Ack(9, B, (m.Alive(B, 1),)), 10.001, RNG)
    assert not any(isinstance(e, MemberDown) for e in node.tick(10.2, RNG))
    assert node.members()[B] == (MemberState.ALIVE, 1)


def test_tick_is_cheap_and_quiet_when_nothing_is_due() -> None:
    node = known(Membership(A, CFG), B)
    assert len(sends(node.tick(0.0, RNG))) == 1
    assert node.next_deadline_s() == pytest.approx(CFG.probe_timeout_s)
    assert node.tick(0.01, RNG) == []
    assert Membership(A, CFG).next_deadline_s() == math.inf


def test_one_probe_per_interval_whatever_the_cluster_size() -> None:
    node = known(Membership(A, CFG), *(pid(i) for i in range(1, 50)))
    pings = 0
    t = 0.0
    while t < 10.0:
        for s in sends(node.tick(t, RNG)):
            if isinstance(s.msg, m.Ping):
                pings += 1
                node.receive(s.to_id, m.Ack(s.msg.seq, s.to_id), t, RNG)
        t = round(t + 0.01, 2)
    assert pings == pytest.approx(10.0 / CFG.probe_interval_s, abs=1)


def test_join_pings_the_seed_until_it_answers_or_we_give_up() -> None:
    cfg = MembershipConfig(join_attempts=3)
    node = Membership(A, cfg, addrs=("/ip4/a",))
    (hello,) = sends(node.join(B, ("/ip4/b",), 0.0))
    assert hello.to_id == B and m.Alive(A, 0, ("/ip4/a",)) in hello.msg.piggyback
    assert node.members() == {}  # not a member until it answers
    retries = [s for t in (1.0, 2.0, 3.0, 4.0) for s in sends(node.tick(t, RNG)) if s.to_id == B]
    assert len(retries) == 2
    # An answer (the seed introducing itself) makes it a member, with the addrs it sent.
    node2 = Membership(A, cfg)
    node2.join(B, ("/ip4/b",), 0.0)
    effects = node2.receive(B, m.Ack(1, B, (m.Alive(B, 4, ("/ip4/b2",)),)), 0.01, RNG)
    assert MemberUp(B, 4, ("/ip4/b2",)) in effects


def test_rejected_config() -> None:
    with pytest.raises(ValueError):
        MembershipConfig(probe_interval_s=0.1, probe_timeout_s=0.2)


def test_unconfirmed_suspicion_waits_the_maximum_and_confirmations_shorten_it() -> None:
    others = [pid(i) for i in range(1, 6)]  # n = 6: k = 2 confirmations are possible
    lo = suspicion_timeout(6, CFG.suspicion_mult, CFG.probe_interval_s)
    hi = CFG.suspicion_max_timeout_mult * lo

    def down_at(confirmers: list[str]) -> float:
        node = known(Membership(A, CFG), *others)
        node.receive(B, m.Ack(9, B, (m.Suspect(C, 0, B),)), 1.0, RNG)
        for c in confirmers:
            node.receive(c, m.Ack(9, c, (m.Suspect(C, 0, c),)), 1.1, RNG)
        t = 1.0
        while True:
            effects = node.tick(t, RNG)
            if any(isinstance(e, MemberDown) for e in effects):
                return t - 1.0
            for s in sends(effects):  # everyone answers our probes, so we confirm nothing
                node.receive(s.to_id, m.Ack(s.msg.seq, s.to_id), t, RNG)
            t = round(t + 0.01, 2)

    assert down_at([]) == pytest.approx(hi, abs=0.011)
    assert lo + 0.05 < down_at([D]) < hi
    assert down_at([D, pid(4)]) == pytest.approx(lo, abs=0.011)
    assert down_at([B, B]) == pytest.approx(hi, abs=0.011)  # the accuser does not count


def test_stale_accusations_get_a_direct_answer_once() -> None:
    node = known(Membership(A, CFG), B, C, D)
    node.receive(B, m.Ack(9, B, (m.Suspect(A, 0, B),)), 1.0, RNG)  # refuted: now at 1
    # C still passes the old suspicion around, raised by D: both get our Alive, once.
    effects = node.receive(C, m.Ack(9, C, (m.Suspect(A, 0, D),)), 1.1, RNG)
    assert {s.to_id for s in sends(effects)} == {C, D}
    assert all(m.Alive(A, 1) in s.msg.piggyback for s in sends(effects))
    assert sends(node.receive(C, m.Ack(9, C, (m.Suspect(A, 0, D),)), 1.2, RNG)) == []
    assert node.incarnation == 1


def test_a_member_heard_of_from_someone_else_gets_an_introduction() -> None:
    node = known(Membership(A, CFG, addrs=("/ip4/a",)), B)
    effects = node.receive(B, m.Ack(9, B, (m.Alive(C, 2, ("/ip4/c",)),)), 1.0, RNG)
    assert MemberUp(C, 2, ("/ip4/c",)) in effects
    (hello,) = [s for s in sends(effects) if s.to_id == C]
    assert isinstance(hello.msg, m.Ping)
    assert hello.msg.piggyback[0] == m.Alive(A, 0, ("/ip4/a",))
    assert m.Alive(B, 0) in hello.msg.piggyback  # and the rest of the cluster, as space allows
