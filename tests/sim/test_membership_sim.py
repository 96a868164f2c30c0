"""Whole clusters on ``MemoryNetwork``: detection time, false positives under loss, pauses,
partitions, leaving, restarting, and traffic. Simulated time only; fixed seeds.

Numbers are printed (``pytest -s``) and attached to the report as user properties.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import pytest

from opentela.overlay.membership.state import (
    MemberDown,
    MemberLeft,
    MembershipConfig,
    MemberState,
    MemberSuspect,
    MemberUp,
    Refuted,
)
from opentela.overlay.membership.transport import MemoryNetwork, Report

CFG = MembershipConfig()
Record = Callable[[str, object], None]


def pid(i: int) -> str:
    return f"12D3KooW{i:044d}"


# Two ways to drive the state machine: a fixed 10 ms beat, or ticking each node exactly at its
# ``next_deadline_s()`` as a runtime that sleeps until then would.
BEAT, DEADLINES = 0.01, None
TICKING = pytest.mark.parametrize("resolution_s", [BEAT, DEADLINES], ids=["beat", "deadlines"])


def start(
    n: int, seed: int, cfg: MembershipConfig = CFG, resolution_s: float | None = BEAT
) -> MemoryNetwork:
    """``n`` nodes that all bootstrap from the first one at the same instant (the worst case
    for gossip), run until every node sees every other alive."""
    sim = MemoryNetwork(seed=seed, resolution_s=resolution_s)
    ids = [pid(i) for i in range(n)]
    for i, node_id in enumerate(ids):
        addrs = (f"/ip4/127.0.0.1/tcp/{4000 + i}",)
        sim.spawn(node_id, cfg, addrs=addrs, seeds=[ids[0]] if i else [])
    run_until(sim, lambda: all_alive(sim), within_s=5.0, what="convergence")
    return sim


def all_alive(sim: MemoryNetwork, ids: list[str] | None = None) -> bool:
    ids = ids if ids is not None else sim.running()
    return all(set(sim.nodes[i].alive_ids()) >= set(ids) - {i} for i in ids)


def run_until(sim: MemoryNetwork, pred: Callable[[], bool], within_s: float, what: str) -> float:
    """Advance in 10 ms steps until ``pred``; return the simulated time it took."""
    t0 = sim.now_s
    while not pred():
        if sim.now_s - t0 > within_s:
            raise AssertionError(f"no {what} within {within_s} simulated s")
        sim.run_for(0.01)
    return sim.now_s - t0


def first_reports(
    sim: MemoryNetwork, kind: type[Report], member: str, since_s: float
) -> dict[str, float]:
    """Observer → seconds after ``since_s`` at which it first reported ``kind`` of ``member``."""
    out: dict[str, float] = {}
    for o in sim.observed:
        e = o.effect
        if o.at_s >= since_s and isinstance(e, kind) and getattr(e, "member_id", None) == member:
            out.setdefault(o.node_id, o.at_s - since_s)
    return out


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


def report(record: Record, name: str, value: object) -> None:
    print(f"{name}: {value}")
    record(name, value)


# -- convergence ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [5, 10, 25])
def test_cluster_converges_to_all_alive(n: int) -> None:
    sim = start(n, seed=n)
    sim.run_for(5.0)  # and stays there
    for node_id in sim.running():
        node = sim.nodes[node_id]
        assert node.members() == {i: (MemberState.ALIVE, 0) for i in sim.running() if i != node_id}
        assert node.incarnation == 0
    assert not [o for o in sim.observed if not isinstance(o.effect, MemberUp)]


# -- crash detection --------------------------------------------------------------------------------

KILL_TRIALS = 20


@pytest.mark.parametrize(
    ("n", "resolution_s"), [(5, BEAT), (10, BEAT), (25, BEAT), (10, DEADLINES)]
)
def test_killed_node_is_down_everywhere_within_3s_p99(
    n: int, resolution_s: float | None, record_property: Record
) -> None:
    per_observer: list[float] = []
    everyone: list[float] = []  # per kill: until the last node reports Down
    for trial in range(KILL_TRIALS):
        sim = start(n, seed=1000 * n + trial, resolution_s=resolution_s)
        sim.run_for(1.0 + 0.0137 * trial)  # kill at varying phases of the probe rounds
        victim = pid(1 + trial % (n - 1))
        t0 = sim.now_s
        sim.kill(victim)
        sim.run_for(6.0)
        downs = first_reports(sim, MemberDown, victim, t0)
        assert set(downs) == set(sim.running()), f"trial {trial}: not everyone saw it Down"
        per_observer += downs.values()
        everyone.append(max(downs.values()))
        # Nobody else was accused along the way.
        assert {o.effect.member_id for o in sim.observed if isinstance(o.effect, MemberDown)} == {
            victim
        }
    numbers = {
        "per-observer p50": round(statistics.median(per_observer), 2),
        "per-observer p99": round(pct(per_observer, 99), 2),
        "all-nodes p50": round(statistics.median(everyone), 2),
        "all-nodes p99": round(pct(everyone, 99), 2),
    }
    mode = "beat" if resolution_s else "deadlines"
    report(record_property, f"detection_s N={n} ({mode})", numbers)
    assert pct(everyone, 99) <= 3.0


# -- no false positives -----------------------------------------------------------------------------


@TICKING
def test_no_false_down_under_10_percent_loss(
    resolution_s: float | None, record_property: Record
) -> None:
    totals = {"suspicions": 0, "refutations": 0, "false downs": 0}
    for seed in range(3):
        sim = start(10, seed=seed, resolution_s=resolution_s)
        t0 = sim.now_s
        sim.loss = 0.10  # every message, each direction
        sim.run_for(60.0)
        obs = [o for o in sim.observed if o.at_s >= t0]
        totals["suspicions"] += sum(isinstance(o.effect, MemberSuspect) for o in obs)
        totals["refutations"] += sum(isinstance(o.effect, Refuted) for o in obs)
        totals["false downs"] += sum(isinstance(o.effect, MemberDown | MemberLeft) for o in obs)
        sim.loss = 0.0
        sim.run_for(3.0)
        assert all_alive(sim)
        assert not any(sim.nodes[i].suspect_ids() for i in sim.running())
    mode = "beat" if resolution_s else "deadlines"
    report(record_property, f"10% loss, N=10, 3 x 60 s ({mode})", totals)
    assert totals["false downs"] == 0
    assert totals["suspicions"] > 0  # the loss did bite: the refutation path was exercised


@TICKING
def test_paused_node_refutes_and_is_never_down(
    resolution_s: float | None, record_property: Record
) -> None:
    noticed = 0
    for seed in range(8):
        sim = start(10, seed=seed, resolution_s=resolution_s)
        sleeper = pid(3)
        sim.run_for(0.5 + 0.031 * seed)
        t0 = sim.now_s
        sim.pause(sleeper)  # SIGSTOP: no ticks; its inbox fills up
        sim.run_for(0.7)  # 3.5 probe intervals; the fastest possible Down takes 1.0 s
        sim.resume(sleeper)
        sim.run_for(5.0)
        assert not first_reports(sim, MemberDown, sleeper, t0)
        # The sleeper did not accuse anyone for its own pause either.
        assert not [
            o
            for o in sim.observed
            if isinstance(o.effect, MemberDown | MemberSuspect) and o.node_id == sleeper
        ]
        if not first_reports(sim, MemberSuspect, sleeper, t0):
            continue  # nobody happened to probe it during the pause
        noticed += 1
        assert any(isinstance(o.effect, Refuted) and o.node_id == sleeper for o in sim.observed)
        new_inc = sim.nodes[sleeper].incarnation
        assert new_inc > 0
        for node_id in sim.running():
            if node_id != sleeper:
                assert sim.nodes[node_id].members()[sleeper] == (MemberState.ALIVE, new_inc)
    report(record_property, "0.7 s pauses noticed (suspected, then refuted) of 8", noticed)
    assert noticed >= 5


# -- partitions -------------------------------------------------------------------------------------


@TICKING
def test_partition_heals_by_itself(resolution_s: float | None, record_property: Record) -> None:
    sim = start(10, seed=7, resolution_s=resolution_s)
    ids = sim.running()
    left, right = ids[:5], ids[5:]
    sim.partition(left, right)
    sim.run_for(8.0)
    for a in left:  # each side has given the other up
        assert set(sim.nodes[a].alive_ids()) == set(left) - {a}
        assert all(sim.nodes[a].members()[b][0] is MemberState.DEAD for b in right)
    sim.heal()
    took = run_until(sim, lambda: all_alive(sim), within_s=10.0, what="healing")
    report(record_property, "partition heal_s N=10 (5|5)", round(took, 2))
    sim.run_for(3.0)
    assert all_alive(sim)


# -- leaving and coming back ------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_graceful_leave_is_seen_by_everyone_within_a_second(loss: float) -> None:
    sim = start(10, seed=11)
    sim.loss = loss
    leaver = pid(4)
    t0 = sim.now_s
    sim.leave(leaver)
    sim.run_for(1.0)  # the leaver keeps answering meanwhile, as runtime.py will
    lefts = first_reports(sim, MemberLeft, leaver, t0)
    assert set(lefts) == set(sim.running()) - {leaver}
    assert max(lefts.values()) <= 1.0
    sim.kill(leaver)
    sim.run_for(5.0)
    # Left is final: nobody probes it, suspects it or reports it Down afterwards.
    assert not first_reports(sim, MemberSuspect, leaver, t0)
    assert not first_reports(sim, MemberDown, leaver, t0)


def restart(sim: MemoryNetwork, node_id: str) -> None:
    """Same id, fresh state, incarnation from the (virtual) wall clock, joins one seed."""
    cfg = MembershipConfig(initial_incarnation=int(sim.now_s * 1000))
    sim.spawn(node_id, cfg, addrs=("/ip4/127.0.0.1/tcp/4999",), seeds=[pid(0)])


@pytest.mark.parametrize("how", ["crashed", "left", "bounced"])
def test_restarted_node_is_up_again_quickly(how: str, record_property: Record) -> None:
    sim = start(10, seed=13)
    node_id = pid(6)
    if how == "left":
        sim.leave(node_id)
        sim.run_for(1.0)
    sim.kill(node_id)
    if how != "bounced":  # "bounced" comes back before anyone declared it dead
        run_until(
            sim,
            lambda: all(
                sim.nodes[i].members()[node_id][0] in (MemberState.DEAD, MemberState.LEFT)
                for i in sim.running()
            ),
            within_s=5.0,
            what="down",
        )
    else:
        sim.run_for(0.3)
    t0 = sim.now_s
    restart(sim, node_id)
    took = run_until(sim, lambda: all_alive(sim), within_s=2.0, what="rejoin")
    report(record_property, f"rejoin_s after {how}", round(took, 3))
    new_inc = sim.nodes[node_id].incarnation
    for i in sim.running():
        if i != node_id:
            assert sim.nodes[i].members()[node_id] == (MemberState.ALIVE, new_inc)
    sim.run_for(5.0)
    assert all_alive(sim)
    assert not first_reports(sim, MemberDown, node_id, t0 + 0.01)


# -- traffic ----------------------------------------------------------------------------------------


def test_traffic_per_node_is_flat_in_cluster_size(record_property: Record) -> None:
    rates: dict[int, float] = {}
    for n in (5, 10, 25):
        sim = start(n, seed=21)
        sim.run_for(5.0)  # let the join burst settle
        before = dict(sim.bytes_sent)
        duration_s = 20.0
        sim.run_for(duration_s)
        per_node = [(sim.bytes_sent[i] - before[i]) / duration_s for i in sim.running()]
        rates[n] = round(statistics.mean(per_node))
        assert max(per_node) < 2 * statistics.mean(per_node)  # nobody carries the others
    report(record_property, "bytes/s per node (steady state)", rates)
    assert max(rates.values()) <= 2 * min(rates.values())
