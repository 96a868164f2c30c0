"""Bounded fan-out gossip (table/gossip.py): pure, no network."""

from __future__ import annotations

import random

from opentela.table.gossip import LOAD, RECORD, Gossip, Rumor, retransmit_limit


def rumor(kind: str, author: str, version: int, size: int = 100) -> Rumor:
    return Rumor(kind, author, version, b"x" * size)


def test_at_most_fanout_messages_per_interval_whatever_the_pool_size() -> None:
    g = Gossip(fanout=3, interval_s=0.2)
    g.offer(rumor(RECORD, "a", 1))
    peers = [f"p{i}" for i in range(1000)]
    sends = g.tick(0.0, peers, random.Random(1))
    assert len(sends) == 3 and len({s.to_id for s in sends}) == 3
    assert g.tick(0.1, peers, random.Random(1)) == []  # not before the interval
    assert len(g.tick(0.2, peers, random.Random(1))) == 3


def test_records_are_retransmitted_log_n_times_then_dropped() -> None:
    g = Gossip(fanout=3, retransmit_mult=3)
    g.offer(rumor(RECORD, "a", 1))
    peers = [f"p{i}" for i in range(98)]  # n = 99 -> 3 * 2 = 6 transmissions
    assert retransmit_limit(3, 100) == 9 and retransmit_limit(3, 99) == 6
    sent = 0
    for t in range(10):
        sent += sum(len(s.rumors) for s in g.tick(t * 0.2, peers, random.Random(t)))
    assert sent == 6 and len(g) == 0


def test_loads_go_out_once_per_chosen_peer_and_never_crowd_out_records() -> None:
    g = Gossip(fanout=3, max_message_bytes=300)
    g.offer(rumor(LOAD, "w1", 5, 150))
    g.offer(rumor(RECORD, "a", 1, 150))
    peers = [f"p{i}" for i in range(10)]
    sends = g.tick(0.0, peers, random.Random(0))
    for s in sends:
        assert s.rumors[0].kind == RECORD  # records first, loads if they still fit
    assert sum(1 for s in sends for r in s.rumors if r.kind == LOAD) == 0  # 150+16 twice > 300
    g2 = Gossip(fanout=3)
    g2.offer(rumor(LOAD, "w1", 5))
    assert sum(len(s.rumors) for s in g2.tick(0.0, peers, random.Random(0))) == 3
    assert len(g2) == 0


def test_latest_wins_and_older_news_is_ignored() -> None:
    g = Gossip()
    assert g.offer(rumor(LOAD, "w", 5))
    assert not g.offer(rumor(LOAD, "w", 4))
    assert g.offer(rumor(LOAD, "w", 6))
    assert [r.version for r in g.pending()] == [6]
    assert g.offer(rumor(RECORD, "w", 3))  # another kind about the same author: its own slot
    assert len(g) == 2


def test_never_told_back_to_its_source_or_its_author() -> None:
    g = Gossip(fanout=3)
    g.offer(rumor(RECORD, "author", 1), source="src")
    sends = g.tick(0.0, ["author", "src"], random.Random(0))
    assert sends == [] and len(g) == 0  # nobody left to tell: spent
    g.offer(rumor(RECORD, "author", 2), source="src")
    sends = g.tick(1.0, ["author", "src", "x"], random.Random(0))
    assert [s.to_id for s in sends] == ["x"]


def test_a_message_is_bounded_in_bytes_and_the_rest_waits() -> None:
    g = Gossip(fanout=1, max_message_bytes=1000)
    for i in range(30):
        g.offer(rumor(RECORD, f"a{i}", 1, 100))
    (send,) = g.tick(0.0, ["p"], random.Random(0))
    assert sum(r.size for r in send.rumors) <= 1000 and len(send.rumors) == 8
    assert g.next_deadline_s() == 0.2


def test_idle_gossip_sends_nothing_and_wants_no_tick() -> None:
    g = Gossip()
    assert g.tick(0.0, ["p"], random.Random(0)) == []
    assert g.next_deadline_s() == float("inf")
