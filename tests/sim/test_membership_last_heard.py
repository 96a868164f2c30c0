"""``Membership.last_heard``: when a member last proved alive to us, the "last seen" that
``opentela-node table`` shows. It must move on every exchange (a healthy member reads as
recent however long its record stays unchanged), stop moving once the member is gone, ignore
messages that are not really from that member, and be forgotten with the member's tombstone."""

from __future__ import annotations

import random

from opentela.overlay.membership import messages as m
from opentela.overlay.membership.state import Membership, MembershipConfig, MemberState
from opentela.overlay.membership.transport import MemoryNetwork


def pid(i: int) -> str:
    return f"12D3KooW{i:044d}"


A, B, C = (pid(i) for i in range(3))
CFG = MembershipConfig()


def test_unknown_before_any_message() -> None:
    node = Membership(A, CFG, 0.0)
    assert node.last_heard(B) is None
    node.join(B, (), 0.0)  # a seed is not heard from until it answers
    assert node.last_heard(B) is None


def test_any_message_from_a_member_counts() -> None:
    rng = random.Random(0)
    node = Membership(A, CFG, 0.0)
    node.receive(B, m.Ping(1, B, 5), 1.0, rng)
    assert node.member(B) is not None
    assert node.last_heard(B) == 1.0
    node.receive(B, m.Ack(77, B), 2.5, rng)  # an Ack we did not ask for still proves life
    assert node.last_heard(B) == 2.5
    node.receive(B, m.Nack(3, B), 4.0, rng)
    assert node.last_heard(B) == 4.0


def test_forged_sender_and_unknown_sender_are_not_recorded() -> None:
    rng = random.Random(0)
    node = Membership(A, CFG, 0.0)
    node.receive(B, m.Ping(1, B, 5), 1.0, rng)
    # The transport says C sent it, the message says B: dropped, B not "heard".
    node.receive(C, m.Ping(2, B, 5), 2.0, rng)
    assert node.last_heard(B) == 1.0
    assert node.last_heard(C) is None
    # An Ack from a stranger makes it no member, so nothing is kept for it.
    node.receive(C, m.Ack(9, C), 3.0, rng)
    assert node.member(C) is None and node.last_heard(C) is None


def test_relayed_ack_to_our_probe_counts_for_the_target() -> None:
    rng = random.Random(0)
    node = Membership(A, CFG, 0.0)
    node.receive(B, m.Ping(1, B, 5), 0.0, rng)
    node.receive(C, m.Ping(1, C, 5), 0.0, rng)
    # Tick until a probe of B is out, then answer it through C (an indirect probe's Ack).
    t, probe = 0.0, None
    while probe is None:
        t += 0.01
        for e in node.tick(t, rng):
            msg = getattr(e, "msg", None)
            if isinstance(msg, m.Ping) and e.to_id == B:
                probe = msg
    before = node.last_heard(B)
    node.receive(C, m.Ack(probe.seq, C), t + 0.1, rng)
    assert node.last_heard(B) == t + 0.1 > before
    assert node.last_heard(C) == t + 0.1


def test_tracks_a_live_member_and_freezes_when_it_dies() -> None:
    sim = MemoryNetwork(seed=3)
    sim.spawn(A, CFG)
    sim.spawn(B, CFG, seeds=[A])
    sim.spawn(C, CFG, seeds=[A])
    sim.run_for(3.0)
    a = sim.nodes[A]
    assert {mid: st for mid, (st, _) in a.members().items()} == {
        B: MemberState.ALIVE,
        C: MemberState.ALIVE,
    }
    # Round-robin probing (and the others' probes of us): heard within a couple of intervals.
    for _ in range(20):
        sim.run_for(0.5)
        for peer in (B, C):
            heard = a.last_heard(peer)
            assert heard is not None and sim.now_s - heard <= 4 * CFG.probe_interval_s
    sim.kill(C)
    killed_at = sim.now_s
    sim.run_for(5.0)
    assert a.members()[C][0] is MemberState.DEAD
    heard = a.last_heard(C)
    assert heard is not None and heard <= killed_at  # nothing heard since the kill
    assert sim.now_s - a.last_heard(B) <= 4 * CFG.probe_interval_s


def test_left_member_keeps_its_goodbye_time_until_the_tombstone_expires() -> None:
    cfg = MembershipConfig(tombstone_s=5.0)
    sim = MemoryNetwork(seed=4)
    sim.spawn(A, cfg)
    sim.spawn(B, cfg, seeds=[A])
    sim.run_for(2.0)
    sim.leave(B)
    sim.run_for(0.2)
    a = sim.nodes[A]
    assert a.members()[B][0] is MemberState.LEFT
    goodbye = a.last_heard(B)
    assert goodbye is not None and sim.now_s - goodbye <= 0.2
    sim.kill(B)
    sim.run_for(2.0)
    assert a.last_heard(B) == goodbye
    sim.run_for(cfg.tombstone_s)
    assert B not in a.members() and a.last_heard(B) is None
