"""Membership across sites on ``MemoryNetwork``: three sites of three nodes, sub-millisecond
links inside a site, a slow lossy link between sites. With timeouts adapted to measured round
trips there is no false suspicion at all over a long run; the fixed timeouts of before raise
suspicions on the same network (same seed), and a killed node is still found within a
bounded time. Simulated time only; fixed seeds. Numbers are printed (``pytest -s``) and
attached to the report as user properties.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest

from opentela.overlay.membership.state import (
    MemberDown,
    MembershipConfig,
    MemberSuspect,
    Refuted,
)
from opentela.overlay.membership.transport import MemoryNetwork

Record = Callable[[str, object], None]
SITES, PER_SITE = 3, 3
LOSS = 0.01
# What a node runs with by default: --probe-interval 0.25, probe timeout 0.4 of it.
NODE = MembershipConfig(probe_interval_s=0.25, probe_timeout_s=0.1)
LIBRARY = MembershipConfig()  # the state machine's own defaults: 0.2 s and 0.08 s
# One way between sites: 30 ms + uniform 0..20 ms, i.e. 40 +- 10 ms (round trips 60-100 ms).
WAN_40 = (0.030, 0.020)
WAN_60 = (0.050, 0.020)  # 60 +- 10 ms one way


def pid(i: int) -> str:
    return f"12D3KooW{i:044d}"


def sites() -> list[list[str]]:
    return [[pid(s * PER_SITE + i) for i in range(PER_SITE)] for s in range(SITES)]


def start(cfg: MembershipConfig, wan: tuple[float, float], seed: int) -> MemoryNetwork:
    """Nine nodes in three sites, all joined through the first, settled for 20 s. Each node
    ticks at its own deadlines, as the runtime does."""
    sim = MemoryNetwork(seed=seed, loss=LOSS, delay_s=0.0005, jitter_s=0.0005, resolution_s=None)
    groups = sites()
    for a in range(SITES):
        for b in range(a + 1, SITES):
            sim.link(groups[a], groups[b], *wan)
    ids = [i for g in groups for i in g]
    for i, node_id in enumerate(ids):
        sim.spawn(node_id, cfg, seeds=[ids[0]] if i else [])
    sim.run_for(20.0)
    assert all(len(sim.nodes[i].alive_ids()) == len(ids) - 1 for i in ids), "no convergence"
    return sim


def report(record: Record, name: str, value: object) -> None:
    print(f"{name}: {value}")
    record(name, value)


def soak(cfg: MembershipConfig, wan: tuple[float, float], seed: int, run_s: float) -> dict:
    sim = start(cfg, wan, seed)
    t0, seen, sent0 = sim.now_s, len(sim.observed), sum(sim.messages_sent.values())
    sim.run_for(run_s)
    events = Counter(type(o.effect).__name__ for o in sim.observed[seen:])
    sent = sum(sim.messages_sent.values()) - sent0
    groups = sites()
    site_of = {m: s for s, g in enumerate(groups) for m in g}
    cross, local = [], []
    for a in sim.nodes:
        for b in sim.nodes:
            if a != b:
                (cross if site_of[a] != site_of[b] else local).append(sim.nodes[a].rtt(b))
    return {
        "suspicions": events[MemberSuspect.__name__],  # reports: one per observer
        "refutations": events[Refuted.__name__],
        "false downs": events[MemberDown.__name__],
        "msgs/s per node": round(sent / run_s / len(sim.nodes), 1),
        "cross-site srtt ms": (round(1000 * min(cross), 1), round(1000 * max(cross), 1)),
        "in-site srtt max ms": round(1000 * max(local), 2),
        "simulated s": round(sim.now_s - t0),
    }


@pytest.mark.parametrize(
    ("name", "cfg", "run_s"), [("node", NODE, 1200.0), ("library", LIBRARY, 600.0)]
)
def test_no_false_suspicion_across_a_40ms_lossy_link_and_fixed_timeouts_had_some(
    name: str, cfg: MembershipConfig, run_s: float, record_property: Record
) -> None:
    adapted = soak(cfg, WAN_40, seed=7, run_s=run_s)
    fixed = soak(replace(cfg, adapt_to_rtt=False), WAN_40, seed=7, run_s=run_s)
    report(record_property, f"40+-10 ms, 1% loss, {name} defaults, adapted", adapted)
    report(record_property, f"40+-10 ms, 1% loss, {name} defaults, fixed", fixed)
    assert adapted["false downs"] == 0 and adapted["suspicions"] == 0, adapted
    # The evidence that this network is hard for fixed timeouts: the same run suspected
    # live members (each refuted in time here, but each one is a node routed around).
    assert fixed["suspicions"] > 0, fixed
    # Round trips are measured either way, and are what the link is.
    for r in (adapted, fixed):
        lo, hi = r["cross-site srtt ms"]
        assert 60 <= lo <= hi <= 100, r
        assert r["in-site srtt max ms"] < 3, r
    # Adapting costs no traffic: fewer indirect probes, if anything.
    assert adapted["msgs/s per node"] <= fixed["msgs/s per node"] * 1.02


def test_no_false_suspicion_across_a_60ms_link(record_property: Record) -> None:
    adapted = soak(NODE, WAN_60, seed=11, run_s=600.0)
    report(record_property, "60+-10 ms, 1% loss, node defaults, adapted", adapted)
    assert adapted["false downs"] == 0 and adapted["suspicions"] == 0, adapted
    lo, hi = adapted["cross-site srtt ms"]
    assert 100 <= lo <= hi <= 140, adapted


KILL_TRIALS = 20
DETECTION_BOUND_S = 4.0  # measured max ~3.0 s (adapted) and ~2.4 s (fixed); see docs/wan.md


@pytest.mark.parametrize("adapt", [True, False], ids=["adapted", "fixed"])
def test_killed_node_is_still_down_everywhere_within_a_bounded_time(
    adapt: bool, record_property: Record
) -> None:
    cfg = replace(NODE, adapt_to_rtt=adapt)
    per_observer: list[float] = []
    everyone: list[float] = []
    for trial in range(KILL_TRIALS):
        sim = start(cfg, WAN_40, seed=100 + trial)
        sim.run_for(0.0137 * trial)  # kill at varying phases of the probe rounds
        ids = sorted(sim.nodes)
        victim = ids[1 + trial % (len(ids) - 1)]
        t0 = sim.now_s
        sim.kill(victim)
        sim.run_for(2 * DETECTION_BOUND_S)
        downs: dict[str, float] = {}
        for o in sim.observed:
            if o.at_s >= t0 and isinstance(o.effect, MemberDown):
                assert o.effect.member_id == victim, f"trial {trial}: a live member went down"
                downs.setdefault(o.node_id, o.at_s - t0)
        assert set(downs) == set(ids) - {victim}, f"trial {trial}: not everyone saw it Down"
        per_observer += downs.values()
        everyone.append(max(downs.values()))
    per_observer.sort()
    numbers = {
        "per-observer p50": round(statistics.median(per_observer), 2),
        "per-observer p99": round(per_observer[int(0.99 * len(per_observer))], 2),
        "all-nodes p50": round(statistics.median(everyone), 2),
        "all-nodes max": round(max(everyone), 2),
    }
    report(
        record_property,
        f"detection_s 3 sites x 3, 40+-10 ms ({'adapted' if adapt else 'fixed'})",
        numbers,
    )
    assert max(everyone) <= DETECTION_BOUND_S, numbers
