"""Which addresses a node dials to find its pool again (``overlay/redial``), what it remembers
of its pool across restarts (``overlay/peer_memory``), and the stop's time budget."""

from __future__ import annotations

import random
from pathlib import Path

from opentela.overlay import peer_memory
from opentela.overlay.redial import (
    BOOTSTRAP,
    CAP_S,
    FIRST_S,
    REMEMBERED,
    REMEMBERED_PER_ROUND,
    RedialPlan,
    peer_of,
)
from opentela.stop_budget import CUT_S, StopBudget

HEAD = "/ip4/127.0.0.2/tcp/4001/p2p/12D3KooWHead"
OTHER = "/ip4/127.0.0.3/tcp/4001/p2p/12D3KooWOther"


def nobody(_pid: str) -> bool:
    return False


def test_peer_of() -> None:
    assert peer_of(HEAD) == "12D3KooWHead"
    assert peer_of("/ip4/1.2.3.4/tcp/1") == ""


def test_bootstrap_whose_peer_is_not_alive_is_dialed_even_when_not_lonely() -> None:
    """The rollout case: workers still see each other, the head left and came back."""
    plan = RedialPlan("self")
    due = plan.due([HEAD], {}, nobody, False, set(), 0.0, random.Random(1))
    assert [(t.addr, t.kind) for t in due] == [(HEAD, BOOTSTRAP)]
    alive = {"12D3KooWHead"}.__contains__
    assert plan.due([HEAD], {}, alive, False, set(), 0.0, random.Random(1)) == []


def test_own_address_and_busy_addresses_are_never_dialed() -> None:
    plan = RedialPlan("12D3KooWHead")
    assert plan.due([HEAD], {}, nobody, True, set(), 0.0, random.Random(1)) == []
    plan = RedialPlan("self")
    assert plan.due([HEAD], {}, nobody, True, {HEAD}, 0.0, random.Random(1)) == []


def test_backoff_doubles_to_a_cap_with_jitter_and_resets_when_the_peer_is_back() -> None:
    rng = random.Random(7)
    plan = RedialPlan("self")
    now, waits = 0.0, []
    for _ in range(8):
        assert plan.due([HEAD], {}, nobody, True, set(), now, rng)
        assert plan.failed(HEAD, now, rng) == len(waits) + 1
        # Not due again until its backoff passed.
        assert plan.due([HEAD], {}, nobody, True, set(), now + 0.01, rng) == []
        nxt = now
        while not plan.due([HEAD], {}, nobody, True, set(), nxt, rng):
            nxt += 0.01
        waits.append(nxt - now)
        now = nxt
    assert FIRST_S * 0.7 <= waits[0] <= FIRST_S * 1.3
    assert all(w <= CAP_S * 1.3 for w in waits)
    assert waits[-1] >= CAP_S * 0.7
    # Its peer is alive again: the state is dropped, the next loss starts fast.
    alive = {"12D3KooWHead"}.__contains__
    plan.due([HEAD], {}, alive, False, set(), now, rng)
    assert plan.due([HEAD], {}, nobody, False, set(), now, rng)


def test_a_successful_dial_rests_while_membership_confirms() -> None:
    plan = RedialPlan("self")
    rng = random.Random(1)
    plan.failed(HEAD, 0.0, rng)
    assert plan.succeeded(HEAD, 10.0) == 1
    assert plan.due([HEAD], {}, nobody, True, set(), 10.1, rng) == []
    assert plan.due([HEAD], {}, nobody, True, set(), 10.0 + 2 * FIRST_S, rng)


def test_remembered_members_only_while_lonely_and_a_few_at_a_time() -> None:
    rng = random.Random(3)
    remembered = {f"p{i}": (f"/ip4/127.0.0.9/tcp/{i}/p2p/p{i}",) for i in range(20)}
    plan = RedialPlan("self")
    assert plan.due([], remembered, nobody, False, set(), 0.0, rng) == []
    due = plan.due([], remembered, nobody, True, set(), 0.0, rng)
    assert len(due) == REMEMBERED_PER_ROUND and {t.kind for t in due} == {REMEMBERED}
    for t in due:
        plan.failed(t.addr, 0.0, rng)
    again = plan.due([], remembered, nobody, True, set(), 0.01, rng)
    assert not {t.addr for t in again} & {t.addr for t in due}


def test_memory_keeps_alive_members_forgets_left_ones_and_ages_out() -> None:
    mem = peer_memory.updated({}, {"a": (("/ip4/1.1.1.1/tcp/1",), "alive")}, 100.0)
    assert mem["a"].addrs == ("/ip4/1.1.1.1/tcp/1/p2p/a",)
    # Dead: kept with its last-seen time (it may come back after a crash)...
    mem = peer_memory.updated(mem, {"a": (("/ip4/1.1.1.1/tcp/1",), "dead")}, 200.0)
    assert mem["a"].seen == 100.0
    # ...until it is older than the TTL.
    assert peer_memory.updated(mem, {}, 100.0 + peer_memory.TTL_S + 1) == {}
    # Left gracefully: forgotten at once.
    assert peer_memory.updated(mem, {"a": ((), "left")}, 201.0) == {}


def test_memory_is_bounded_to_the_most_recent() -> None:
    view = {f"p{i}": ((f"/ip4/1.1.1.1/tcp/{i}",), "alive") for i in range(10)}
    mem: dict = {}
    for i, (pid, v) in enumerate(view.items()):
        mem = peer_memory.updated(mem, {pid: v}, float(i))
    old, peer_memory.MAX_MEMBERS = peer_memory.MAX_MEMBERS, 3
    try:
        assert sorted(peer_memory.updated(mem, {}, 10.0)) == ["p7", "p8", "p9"]
    finally:
        peer_memory.MAX_MEMBERS = old


def test_memory_round_trips_and_a_damaged_file_is_an_empty_memory(tmp_path: Path) -> None:
    mem = peer_memory.updated({}, {"a": (("/ip4/1.1.1.1/tcp/1",), "alive")}, 5.0)
    peer_memory.save(tmp_path, mem)
    assert peer_memory.load(tmp_path) == mem
    (tmp_path / peer_memory.FILE).write_text("{not json")
    assert peer_memory.load(tmp_path) == {}
    assert peer_memory.load(tmp_path / "missing") == {}


def test_stop_budget_bounds_drain_and_shutdown_and_a_second_signal_cuts_it() -> None:
    b = StopBudget.start(30.0, 100.0)
    assert b.deadline_s == 130.0 and b.drain_until_s == 127.0
    short = StopBudget.start(2.0, 0.0)
    assert short.deadline_s == 2.0 and short.drain_until_s == 1.5
    b.cut(110.0)
    assert b.cut_short and b.drain_until_s == 110.0 and b.deadline_s == 110.0 + CUT_S
    b.cut(129.5)  # a cut never extends the deadline
    assert b.deadline_s == 110.0 + CUT_S
    assert b.remaining(200.0) == 0.0
    zero = StopBudget.start(0.0, 5.0)  # no drain, but still time to announce the leave
    assert zero.drain_until_s == 5.0 and zero.deadline_s == 5.0 + CUT_S
