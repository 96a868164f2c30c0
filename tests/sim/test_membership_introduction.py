"""A node that joins a seed which already knows it learns the seed at once (found by the pool
simulator: the seed's Ack carried no Alive of its own, so the joiner dropped it from its seeds
and only learned it when the seed happened to probe it, up to N probe intervals later). That
happens to a node that forgot a member (its tombstone expired after a partition) which still
remembers it, and to a joiner whose seed heard of it through gossip first."""

from __future__ import annotations

import random

from opentela.overlay.membership.messages import Alive, Ping
from opentela.overlay.membership.state import Membership, MemberState, Send


def deliver(to: Membership, effects: list, now: float) -> list:
    out = []
    for e in effects:
        if isinstance(e, Send) and e.to_id == to.self_id:
            sender = e.msg.from_id
            out += to.receive(sender, e.msg, now, random.Random(0))
    return out


def test_joining_a_seed_that_already_knows_us_makes_it_our_member() -> None:
    x, j = Membership("x"), Membership("j")
    # x heard of j from a third node; j has never heard of x.
    x.receive("z", Ping(1, "z", 0, (Alive("j", 0, ()),)), 0.0, random.Random(0))
    assert x.members()["j"][0] is MemberState.ALIVE and "x" not in j.members()
    # Long since x announced itself: its own Alive is no longer queued for piggybacking.
    while x._queue.take(4096, 3):
        pass
    hello = j.join("x", (), 0.0)
    answer = deliver(x, hello, 0.01)
    deliver(j, answer, 0.02)
    assert j.members().get("x", (None,))[0] is MemberState.ALIVE
