#!/usr/bin/env python3
"""The control plane at 50 to 1,000 nodes, simulated in one process (``opentela/testing/pool_sim``):
SWIM and the table (bounded fan-out gossip, anti-entropy, signed load updates) on one virtual
clock, every message encoded for real, with loss (``--loss``, default 1 %, both directions).

Per N (``--sizes``), in this order on one pool:

* idle traffic: bytes per node per second sent and received, by kind (swim, gossip, ae,
  direct-load), for a bystander (any non-entry node) and for an entry node;
* under load: every worker's load changes all the time, so each gossips it every
  max(0.5 s, N/7) and sends it to the ``--entries`` entry nodes every 0.5 s; traffic as above
  and the age of the load a node holds for a worker (bystanders: gossip; entries: direct);
* dissemination: ``--records`` record changes and ``--joins`` joins; per trial the time until
  99 % and 100 % of the live nodes hold the new record; p50/p99 over the trials;
* kill -9 of ``--kills`` nodes (2.5 s apart): until every live node marks it down;
* false deaths: ``--false-s`` at ``--false-loss`` (default 5 %); any Down of a live node counts.

CPU per node is estimated from the counted operations times unit costs measured on this
machine in the same run (printed): SWIM encode/decode and the state machine's handling of a
message at that N, table message encode/decode (per message + per byte), a record's
``verify()``, ``verify_load()`` and a digest hash at that N. Not included: libp2p (Noise,
Yamux, streams) and the asyncio/trio loop, which ``bench_membership.py`` measures for real.

A table on stdout, JSON to ``--out`` (``.bench/scale.json``), PNG plots next to it
(``scale_*.png``, needs matplotlib). ``--quick``: N = 50, 100 and short windows (< 60 s).

    .venv/bin/python scripts/bench_scale.py [--quick] [--sizes 50,100,250,500,1000] [--out .bench/scale.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import _plots  # noqa: E402
import msgpack  # noqa: E402

from opentela.overlay import framing  # noqa: E402
from opentela.overlay.membership.messages import Alive, Ping, decode, encode  # noqa: E402
from opentela.overlay.membership.state import (  # noqa: E402
    Member,
    Membership,
    MemberState,
    Refuted,
)
from opentela.table import digest as dg  # noqa: E402
from opentela.table import gossip as gsp  # noqa: E402
from opentela.table.load import verify_load  # noqa: E402
from opentela.table.signing import verify  # noqa: E402
from opentela.testing import pool_sim as ps  # noqa: E402

KB = 1024.0
TARGETS = {"record_s": 5.0, "kill_s": 5.0, "idle_Bps": 1 * KB, "load_Bps": 4 * KB, "flat": 0.20}


def pct(xs: list[float], p: float) -> float:
    """Nearest rank; inf (a trial that never completed) sorts last."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]


# -- unit costs ------------------------------------------------------------------------------------


def _time_us(fn: Callable[[], object], min_s: float = 0.05) -> float:
    """Best of 3 of the mean CPU time per call (µs), each run at least ``min_s`` of CPU: process
    time, not wall time, so that other work on a busy machine does not inflate the costs."""
    best = math.inf
    for _ in range(3):
        k, t0 = 0, time.process_time()
        while True:
            fn()
            k += 1
            dt_s = time.process_time() - t0
            if dt_s >= min_s:
                break
        best = min(best, dt_s / k * 1e6)
    return best


def unit_costs(sim: ps.PoolSim, n: int) -> dict[str, float]:
    ids = sim.ids[:n]
    a, b, c = ids[1], ids[2], ids[3]
    ping = Ping(
        7,
        a,
        0,
        (Alive(b, 3, ("/ip4/10.0.0.2/tcp/4001",)), Alive(c, 0, ()), Alive(ids[4], 0, ())),
    )
    wire = encode(ping)
    # The state machine at this N: a warm node of n members receives a Ping and is asked for
    # its next deadline (a runtime sleeping until then does that after every input).
    node = Membership(ids[0], sim.cfg.membership)
    alive = Member(MemberState.ALIVE, 0, (), 0.0)
    node._members = dict.fromkeys(ids[1:], alive)
    rng = random.Random(0)
    msg = decode(wire)
    seq = iter(range(10**9))

    def handle() -> None:
        node.receive(a, Ping(next(seq), a, 0, msg.piggyback), 1.0, rng)
        node.next_deadline_s()

    rec_key = next(k for k in sim._rumors if k[0] == a)
    packed_record = sim._rumors[rec_key][1]
    load = sim._load_sig[a]
    packed_load = load.pack()
    record_rumor = sim._rumors[rec_key][0]
    load_rumor = gsp.Rumor(gsp.LOAD, a, load.version, load.wire())
    small_rumors = (load_rumor,)
    big_rumors = (record_rumor, *([load_rumor] * 20))
    small, big = ps.gossip_wire(small_rumors), ps.gossip_wire(big_rumors)

    def dec(data: bytes) -> Callable[[], None]:
        def go() -> None:  # the frame, the message, then each rumor's packed item
            for f in framing.Decoder().feed(data):
                msg = msgpack.unpackb(f.payload, raw=False)
                for _, _, item in msg.get("r", ()):
                    msgpack.unpackb(item, raw=False)
                for item in msg.get("l", ()):
                    msgpack.unpackb(item, raw=False)

        return go

    enc_s = _time_us(lambda: ps.gossip_wire(small_rumors))
    enc_b = _time_us(lambda: ps.gossip_wire(big_rumors))
    dec_s, dec_b = _time_us(dec(small)), _time_us(dec(big))
    per_byte_enc = max(0.0, (enc_b - enc_s) / (len(big) - len(small)))
    per_byte_dec = max(0.0, (dec_b - dec_s) / (len(big) - len(small)))
    table = {x: ps.VERSION_BASE_MS + i for i, x in enumerate(ids)}
    return {
        "swim_ping_bytes": len(wire),
        "swim_encode_us": _time_us(lambda: encode(ping)),
        "swim_decode_us": _time_us(lambda: decode(wire)),
        "swim_handle_us": _time_us(handle),
        "table_encode_msg_us": max(0.0, enc_s - per_byte_enc * len(small)),
        "table_encode_per_kb_us": per_byte_enc * KB,
        "table_decode_msg_us": max(0.0, dec_s - per_byte_dec * len(small)),
        "table_decode_per_kb_us": per_byte_dec * KB,
        "gossip_batch_bytes": len(big),
        "gossip_batch_decode_us": dec_b,
        "record_bytes": len(record_rumor.data),
        "verify_record_us": _time_us(lambda: verify(packed_record)),
        "load_bytes": len(load.wire()),
        "verify_load_us": _time_us(lambda: verify_load(packed_load)),
        "digest_hash_us": _time_us(lambda: dg.digest_hash(table)),
    }


def cpu_percent(c: ps.Counters, swim_sent: int, dt_s: float, u: dict[str, float]) -> float:
    o = c.ops
    us = (
        swim_sent * u["swim_encode_us"]
        + c.recv_msgs[ps.SWIM] * (u["swim_decode_us"] + u["swim_handle_us"])
        + o["table_enc"] * u["table_encode_msg_us"]
        + o["table_enc_bytes"] / KB * u["table_encode_per_kb_us"]
        + o["table_dec"] * u["table_decode_msg_us"]
        + o["table_dec_bytes"] / KB * u["table_decode_per_kb_us"]
        + o["verify_record"] * u["verify_record_us"]
        + o["verify_load"] * u["verify_load_us"]
        + o["digest_hash"] * u["digest_hash_us"]
    )
    return us / dt_s / 1e6 * 100


# -- measurements on one pool ----------------------------------------------------------------------


class Window:
    """Traffic of every node between ``open`` and ``close``."""

    def __init__(self, sim: ps.PoolSim) -> None:
        self.sim = sim
        self.t0 = sim.now_s
        self.before = {i: t.counters.copy() for i, t in sim.tables.items()}
        self.swim0 = {i: (sim.bytes_sent[i], sim.messages_sent[i]) for i in sim.tables}

    def close(self, u: dict[str, float]) -> dict[str, Any]:
        sim, dt_s = self.sim, self.sim.now_s - self.t0
        live = [i for i in sim.running() if i in self.before]
        groups: dict[str, list[dict[str, Any]]] = {"bystander": [], "entry": []}
        for i in live:
            c = sim.tables[i].counters.minus(self.before[i])
            b0, m0 = self.swim0[i]
            c.sent_bytes[ps.SWIM] = sim.bytes_sent[i] - b0
            c.sent_msgs[ps.SWIM] = sim.messages_sent[i] - m0
            row = {
                "sent": {k: c.sent_bytes[j] / dt_s for j, k in enumerate(ps.KINDS)},
                "recv": {k: c.recv_bytes[j] / dt_s for j, k in enumerate(ps.KINDS)},
                "msgs_sent": {k: c.sent_msgs[j] / dt_s for j, k in enumerate(ps.KINDS)},
                "msgs_recv": {k: c.recv_msgs[j] / dt_s for j, k in enumerate(ps.KINDS)},
                "ops_per_s": {k: v / dt_s for k, v in c.ops.items()},
                "cpu_pct": cpu_percent(c, c.sent_msgs[ps.SWIM], dt_s, u),
            }
            groups["entry" if i in sim.entries else "bystander"].append(row)
        return {g: summarise(rows) for g, rows in groups.items()} | {"window_s": dt_s}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(f: Callable[[dict[str, Any]], float]) -> float:
        return statistics.mean(f(r) for r in rows)

    out: dict[str, Any] = {"nodes": len(rows)}
    for side in ("sent", "recv", "msgs_sent", "msgs_recv"):
        out[side] = {k: mean(lambda r, k=k, side=side: r[side][k]) for k in ps.KINDS}
    out["sent_total"] = sum(out["sent"].values())
    out["recv_total"] = sum(out["recv"].values())
    out["sent_total_max"] = max(sum(r["sent"].values()) for r in rows)
    out["ops_per_s"] = {k: mean(lambda r, k=k: r["ops_per_s"][k]) for k in rows[0]["ops_per_s"]}
    out["cpu_pct"] = mean(lambda r: r["cpu_pct"])
    out["cpu_pct_max"] = max(r["cpu_pct"] for r in rows)
    return out


def run_until(
    sim: ps.PoolSim, done: Callable[[], bool], limit_s: float, step_s: float = 0.1
) -> None:
    end = sim.now_s + limit_s
    while not done() and sim.now_s < end:
        sim.run_for(step_s)


def run_size(n: int, a: argparse.Namespace) -> dict[str, Any]:
    wall0 = time.perf_counter()
    cfg = ps.PoolConfig(entries=a.entries)
    sim = ps.PoolSim(n, cfg=cfg, seed=a.seed + n, loss=a.loss)
    rng = random.Random(f"bench:{a.seed}:{n}")
    u = unit_costs(sim, n)
    sim.run_for(a.settle_s)
    out: dict[str, Any] = {"n": n, "loss": a.loss, "unit_costs": u}

    w = Window(sim)
    sim.run_for(a.idle_s)
    out["idle"] = w.close(u)
    print(f"  N={n}: idle done at {time.perf_counter() - wall0:.0f} s", flush=True)

    # Under load.
    sim.start_load()
    sim.run_for(a.load_warm_s)
    w = Window(sim)
    by_age: list[float] = []
    entry_age: list[float] = []
    delays0 = len(sim.load_delays)
    reach0 = set(sim.load_reach)
    end = sim.now_s + a.load_s
    while sim.now_s < end - 1e-9:
        sim.run_for(0.5)
        live = sim.running()
        holders = [i for i in live if i not in sim.entries]
        for _ in range(200):
            h, wk = rng.sample(holders, 2)
            by_age.append(sim.load_age_s(h, wk))
        for e in sim.entries:
            if e in live:
                for wk in rng.sample(holders, min(100, len(holders))):
                    entry_age.append(sim.load_age_s(e, wk))
    out["load"] = w.close(u)
    sim.stop_load()
    delays = sim.load_delays[delays0:]
    # Reach: only loads published early enough to have finished spreading (gossip of one
    # load is over within ~2 s), and out of the nodes that can take it (not the entries,
    # which already have it directly, nor the author).
    cutoff_s = sim.now_s - 2.0
    fresh = [k for k in sim.load_reach if k not in reach0 and sim.load_published_s[k] <= cutoff_s]
    live_n = len([i for i in sim.running() if i not in sim.entries])
    out["staleness"] = {
        "interval_s": sim._load_period_s,
        "bystander_age_p50": pct(by_age, 50),
        "bystander_age_p99": pct(by_age, 99),
        "entry_age_p50": pct(entry_age, 50),
        "entry_age_p99": pct(entry_age, 99),
        "gossip_delay_p50": pct(delays, 50),
        "gossip_delay_p99": pct(delays, 99),
        "gossip_reach_mean": statistics.mean(sim.load_reach[k] / (live_n - 1) for k in fresh)
        if fresh
        else float("nan"),
    }
    print(f"  N={n}: load done at {time.perf_counter() - wall0:.0f} s", flush=True)

    # Dissemination: record changes, then joins, then wait for all to be everywhere.
    workers = [i for i in sim.ids if i not in sim.entries]
    trials: list[tuple[str, tuple[str, int], float]] = []
    for author in rng.sample(workers, a.records):
        trials.append(("change", sim.change_record(author), sim.now_s))
        sim.run_for(a.trial_gap_s)
    for _ in range(a.joins):
        trials.append(("join", sim.join_node(), sim.now_s))
        sim.run_for(a.trial_gap_s)

    def everywhere() -> bool:
        live = set(sim.running())
        return all(
            {i for i in live if sim.born_s[i] < t0} - {k[0]} <= sim.watch[k].keys()
            for _, k, t0 in trials
        )

    run_until(sim, everywhere, a.trial_limit_s)
    dis: list[dict[str, Any]] = []
    for what, key, t0 in trials:
        targets = [i for i in sim.running() if i != key[0] and sim.born_s[i] < t0]
        got = sorted(sim.watch[key].get(i, math.inf) - t0 for i in targets)
        dis.append(
            {
                "what": what,
                "t99_s": got[max(0, math.ceil(0.99 * len(got)) - 1)],
                "t100_s": got[-1],
                "reached": sum(x < math.inf for x in got) / len(got),
            }
        )
    out["dissemination"] = {
        "trials": dis,
        "t99_p50": pct([d["t99_s"] for d in dis], 50),
        "t99_p99": pct([d["t99_s"] for d in dis], 99),
        "t100_p50": pct([d["t100_s"] for d in dis], 50),
        "t100_p99": pct([d["t100_s"] for d in dis], 99),
    }
    print(f"  N={n}: dissemination done at {time.perf_counter() - wall0:.0f} s", flush=True)

    # Kill -9, a few nodes apart. "Every node" is every live node that knew the victim as a
    # member when it was killed; a node that did not (a joiner whose SWIM view is still
    # incomplete) cannot mark it down, and is counted apart.
    victims = rng.sample([i for i in workers if i in sim.running()], a.kills)
    killed_at: dict[str, float] = {}
    knew: dict[str, set[str]] = {}
    unaware: dict[str, int] = {}
    for v in victims:
        killed_at[v] = sim.now_s
        live = [i for i in sim.running() if i != v]
        knew[v] = {i for i in live if sim.nodes[i].member(v) is not None}
        unaware[v] = len(live) - len(knew[v])
        sim.kill(v)
        sim.run_for(a.kill_gap_s)

    def all_down() -> bool:
        live = set(sim.running())
        return all(live & knew[v] <= sim.downs[v].keys() for v in victims)

    run_until(sim, all_down, a.kill_limit_s)
    every, per_obs = [], []
    for v in victims:
        live = set(sim.running())
        obs = [sim.downs[v].get(i, math.inf) - killed_at[v] for i in live & knew[v]]
        every.append(max(obs))
        per_obs += obs
    out["detection"] = {
        "everyone_s": every,
        "everyone_p50": pct(every, 50),
        "everyone_p99": pct(every, 99),
        "per_observer_p50": pct(per_obs, 50),
        "per_observer_p99": pct(per_obs, 99),
        "unaware_nodes": [unaware[v] for v in victims],
    }
    print(f"  N={n}: kills done at {time.perf_counter() - wall0:.0f} s", flush=True)

    # False deaths: everything so far at --loss, then a window at --false-loss.
    false_main = len(sim.false_downs)
    s0, r0 = sim.suspicions, sim.refutations
    sim.loss = a.false_loss
    i0, t_false = len(sim.observed), sim.now_s
    sim.run_for(a.false_s)
    events = []
    for at_s, observer, member in sim.false_downs[false_main:]:
        refuted = [
            round(o.at_s - t_false, 2)
            for o in sim.observed[i0:]
            if o.node_id == member and isinstance(o.effect, Refuted)
        ]
        events.append(
            {
                "at_s": round(at_s - t_false, 2),
                "observer": observer,
                "member": member,
                "observer_joined": sim.born_s[observer] > 0,
                "member_joined": sim.born_s[member] > 0,
                "member_refuted_at_s": refuted,
            }
        )
    out["false_deaths"] = {
        "at_loss": false_main,
        "at_false_loss": len(sim.false_downs) - false_main,
        "false_loss": a.false_loss,
        "window_s": a.false_s,
        "suspicions": sim.suspicions - s0,
        "refutations": sim.refutations - r0,
        "events": events,
    }
    out["wall_s"] = time.perf_counter() - wall0
    out["sim_s"] = sim.now_s
    print(f"  N={n}: done in {out['wall_s']:.0f} s (simulated {sim.now_s:.0f} s)", flush=True)
    return out


# -- output ------------------------------------------------------------------------------------------


def fmt_s(x: float) -> str:
    return "never" if x == math.inf else f"{x:.2f}"


def unaware(detection: dict[str, Any]) -> str:
    """Nodes that did not know a victim as a member when it died (not counted in the times)."""
    k = sum(detection.get("unaware_nodes", []))
    return f" ({k} unaware)" if k else ""


def print_tables(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    print("\nUnit costs measured on this machine (µs):")
    print(
        "| N | SWIM encode / decode / handle | table msg enc (+/KB) | dec (+/KB) | verify record | verify load | digest hash |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        u = r["unit_costs"]
        print(
            f"| {r['n']} | {u['swim_encode_us']:.1f} / {u['swim_decode_us']:.1f} / {u['swim_handle_us']:.1f} "
            f"| {u['table_encode_msg_us']:.1f} (+{u['table_encode_per_kb_us']:.1f}) "
            f"| {u['table_decode_msg_us']:.1f} (+{u['table_decode_per_kb_us']:.1f}) "
            f"| {u['verify_record_us']:.0f} | {u['verify_load_us']:.0f} | {u['digest_hash_us']:.0f} |"
        )
    u = results[0]["unit_costs"]
    print(
        f"(sizes: SWIM Ping with 3 updates {u['swim_ping_bytes']} B, record {u['record_bytes']} B, "
        f"load update {u['load_bytes']} B; a gossip batch of 1 record + 20 loads, "
        f"{u['gossip_batch_bytes']} B, decodes in {u['gossip_batch_decode_us']:.0f} µs)"
    )

    print(
        "\n| N | record → 99 % p50 / p99 (s) | → 100 % p50 / p99 (s) | kill → down at all that knew it p50 / p99 (s) "
        "| idle B/s sent (swim+ae) bystander / entry | load B/s sent bystander (gossip) / entry recv "
        "| load age bystander p50 / p99 (s) | entry p50 / p99 (s) | CPU % idle / load (bystander, entry) "
        "| false deaths (loss / 5 %) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        d, k, i, ld, st, f = (
            r["dissemination"],
            r["detection"],
            r["idle"],
            r["load"],
            r["staleness"],
            r["false_deaths"],
        )
        print(
            f"| {r['n']} | {fmt_s(d['t99_p50'])} / {fmt_s(d['t99_p99'])} | {fmt_s(d['t100_p50'])} / {fmt_s(d['t100_p99'])} "
            f"| {fmt_s(k['everyone_p50'])} / {fmt_s(k['everyone_p99'])}{unaware(k)} "
            f"| {i['bystander']['sent_total']:.0f} / {i['entry']['sent_total']:.0f} "
            f"| {ld['bystander']['sent_total']:.0f} ({ld['bystander']['sent']['gossip']:.0f}) / {ld['entry']['recv_total']:.0f} "
            f"| {st['bystander_age_p50']:.1f} / {st['bystander_age_p99']:.1f} | {st['entry_age_p50']:.2f} / {st['entry_age_p99']:.2f} "
            f"| {i['bystander']['cpu_pct']:.2f} / {ld['bystander']['cpu_pct']:.2f}, {i['entry']['cpu_pct']:.2f} / {ld['entry']['cpu_pct']:.2f} "
            f"| {f['at_loss']} / {f['at_false_loss']} |"
        )
    print(
        "\nBytes/s per node by kind, sent / received (mean over bystanders; entries in brackets):"
    )
    print("| N | phase | swim | gossip | ae | direct-load |")
    print("|---|---|---|---|---|---|")
    for r in results:
        for phase in ("idle", "load"):
            b, e = r[phase]["bystander"], r[phase]["entry"]
            cells = [
                f"{b['sent'][k]:.0f} / {b['recv'][k]:.0f} ({e['sent'][k]:.0f} / {e['recv'][k]:.0f})"
                for k in ps.KINDS
            ]
            print(f"| {r['n']} | {phase} | " + " | ".join(cells) + " |")
    print(
        "\nLoad gossip: interval per worker, publish → arrival p50 / p99, share of nodes reached:"
    )
    for r in results:
        st = r["staleness"]
        print(
            f"  N={r['n']}: every {st['interval_s']:.1f} s, {st['gossip_delay_p50']:.2f} / "
            f"{st['gossip_delay_p99']:.2f} s, {st['gossip_reach_mean']:.1%}"
        )
    return verdicts(results)


def verdicts(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    big = max(results, key=lambda r: r["n"])
    ref = next((r for r in results if r["n"] == 100), None)
    rows: list[dict[str, Any]] = []

    def row(name: str, value: str, ok: bool, target: str) -> None:
        rows.append({"check": name, "value": value, "target": target, "pass": ok})

    n = big["n"]
    t = big["dissemination"]["t100_p99"]
    row(f"N={n} record everywhere p99", f"{fmt_s(t)} s", t <= TARGETS["record_s"], "<= 5 s")
    t = big["detection"]["everyone_p99"]
    row(f"N={n} kill detected everywhere p99", f"{fmt_s(t)} s", t <= TARGETS["kill_s"], "<= 5 s")
    for phase, limit in (("idle", TARGETS["idle_Bps"]), ("load", TARGETS["load_Bps"])):
        v = big[phase]["bystander"]["sent_total"]
        row(
            f"N={n} {phase} bytes/s sent per node",
            f"{v:.0f} B/s",
            v <= limit,
            f"<= {limit:.0f} B/s",
        )
        if ref is not None and ref is not big:
            r0 = ref[phase]["bystander"]["sent_total"]
            growth = v / r0 - 1
            row(
                f"{phase} bytes/s flat N=100 → {n}",
                f"{r0:.0f} → {v:.0f} ({growth:+.0%})",
                abs(growth) <= TARGETS["flat"],
                "within 20 %",
            )
    worst = sum(r["false_deaths"]["at_false_loss"] for r in results)
    fl = results[0]["false_deaths"]["false_loss"]
    row(f"false deaths at {fl:.0%} loss (all N)", str(worst), worst == 0, "0")
    print("\n| check | value | target | |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['check']} | {r['value']} | {r['target']} | {'pass' if r['pass'] else 'MISS'} |"
        )
    return rows


def plot(results: list[dict[str, Any]], out: Path) -> list[str]:
    plt = _plots.pyplot()
    if plt is None:
        return []
    import matplotlib.ticker

    ns = [r["n"] for r in results]
    files: list[str] = []

    def finish(
        fig: Any, ax: Any, name: str, ylabel: str, targets: tuple[tuple[float, str], ...] = ()
    ) -> None:
        for value, label in targets:
            ax.axhline(value, color="grey", linestyle=":")
            ax.annotate(
                label, (ns[0], value), textcoords="offset points", xytext=(2, 3), fontsize=8
            )
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(x) for x in ns])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("nodes (N)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
        files.append(_plots.save(plt, fig, out.parent / f"scale_{name}.png"))

    def fin(x: float) -> float:
        return x if x != math.inf else float("nan")

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (
        ("t99_p50", "99 % p50"),
        ("t99_p99", "99 % p99"),
        ("t100_p50", "100 % p50"),
        ("t100_p99", "100 % p99"),
    ):
        ax.plot(ns, [fin(r["dissemination"][key]) for r in results], marker="o", label=label)
    ax.set_title("New record reaches the pool")
    finish(fig, ax, "dissemination", "seconds", ((TARGETS["record_s"], "target at N=1000"),))

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (
        ("everyone_p50", "every node, p50"),
        ("everyone_p99", "every node, p99"),
        ("per_observer_p50", "per observer, p50"),
    ):
        ax.plot(ns, [fin(r["detection"][key]) for r in results], marker="o", label=label)
    ax.set_title("kill -9 detected")
    finish(fig, ax, "detection", "seconds", ((TARGETS["kill_s"], "target at N=1000"),))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        ns,
        [r["idle"]["bystander"]["sent_total"] for r in results],
        marker="o",
        label="idle, bystander",
    )
    ax.plot(
        ns, [r["idle"]["entry"]["sent_total"] for r in results], marker="o", label="idle, entry"
    )
    ax.plot(
        ns,
        [r["load"]["bystander"]["sent_total"] for r in results],
        marker="s",
        label="load, bystander",
    )
    ax.plot(
        ns,
        [r["load"]["bystander"]["sent"]["swim"] for r in results],
        marker=".",
        linestyle="--",
        label="load, bystander: SWIM part",
    )
    ax.plot(
        ns, [r["load"]["entry"]["sent_total"] for r in results], marker="s", label="load, entry"
    )
    ax.set_title("Bytes sent per node per second")
    ax.set_ylim(bottom=0)
    finish(
        fig,
        ax,
        "bytes",
        "bytes/s",
        ((TARGETS["idle_Bps"], "idle target"), (TARGETS["load_Bps"], "load target")),
    )

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        ns,
        [r["load"]["entry"]["recv_total"] for r in results],
        marker="o",
        label="entry, received (direct loads)",
    )
    ax.plot(
        ns,
        [r["load"]["bystander"]["recv_total"] for r in results],
        marker="o",
        label="bystander, received",
    )
    ax.set_yscale("log")
    ax.set_title("Bytes received per node per second under load")
    finish(fig, ax, "recv", "bytes/s")

    fig, ax = plt.subplots(figsize=(6, 4))
    for phase in ("idle", "load"):
        for g in ("bystander", "entry"):
            ax.plot(
                ns, [r[phase][g]["cpu_pct"] for r in results], marker="o", label=f"{phase}, {g}"
            )
    ax.set_yscale("log")
    ax.set_title("Estimated control-plane CPU per node")
    finish(fig, ax, "cpu", "% of one core")

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (
        ("bystander_age_p50", "bystander p50"),
        ("bystander_age_p99", "bystander p99"),
        ("entry_age_p50", "entry p50"),
        ("entry_age_p99", "entry p99"),
        ("gossip_delay_p99", "gossip delay p99"),
    ):
        ax.plot(ns, [r["staleness"][key] for r in results], marker="o", label=label)
    ax.set_yscale("log")
    ax.set_title("Age of the load a node holds for a worker")
    finish(fig, ax, "staleness", "seconds")
    return files


def unclean(x: Any) -> Any:
    """JSON's null back to inf (a trial that never completed)."""
    if x is None:
        return math.inf
    if isinstance(x, dict):
        return {k: unclean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [unclean(v) for v in x]
    return x


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="N = 50, 100 and short windows (< 60 s)")
    ap.add_argument("--sizes", default=None, help="comma-separated N (default 50,100,250,500,1000)")
    ap.add_argument("--loss", type=float, default=0.01, help="message loss, each direction")
    ap.add_argument(
        "--false-loss", type=float, default=0.05, help="loss for the false-death window"
    )
    ap.add_argument("--entries", type=int, default=2, help="entry nodes that get loads directly")
    ap.add_argument("--records", type=int, default=None, help="record changes per N")
    ap.add_argument("--joins", type=int, default=None, help="joins per N")
    ap.add_argument("--kills", type=int, default=None, help="kill -9 per N")
    ap.add_argument("--idle-s", type=float, default=None)
    ap.add_argument("--load-s", type=float, default=None)
    ap.add_argument("--false-s", type=float, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--merge",
        default=None,
        help="comma-separated JSON files of earlier runs (e.g. sizes run in parallel): "
        "print, plot and write their results together instead of running",
    )
    ap.add_argument("--out", default=str(REPO / ".bench" / "scale.json"))
    a = ap.parse_args()
    quick = a.quick
    defaults = {
        "records": 4 if quick else 10,
        "joins": 1 if quick else 3,
        "kills": 2 if quick else 6,
        "idle_s": 3.0 if quick else 10.0,
        "load_s": 3.0 if quick else 10.0,
        "false_s": 5.0 if quick else 20.0,
    }
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.settle_s, a.trial_gap_s, a.trial_limit_s = 1.0, 0.5, 30.0
    a.kill_gap_s, a.kill_limit_s, a.load_warm_s = 2.5, 20.0, 2.0
    try:
        sizes = [
            int(x) for x in (a.sizes or ("50,100" if quick else "50,100,250,500,1000")).split(",")
        ]
    except ValueError:
        print(f"--sizes: expected comma-separated integers, got {a.sizes!r}", file=sys.stderr)
        return 2
    if any(x < a.entries + max(a.kills, 2) + 2 for x in sizes) or a.entries < 1:
        print(
            "--sizes: every N must exceed the entries plus the kills plus 2; --entries >= 1",
            file=sys.stderr,
        )
        return 2
    if not (0 <= a.loss < 1 and 0 <= a.false_loss < 1):
        print("--loss and --false-loss must be in [0, 1)", file=sys.stderr)
        return 2
    if a.merge:
        try:
            results = sorted(
                (r for f in a.merge.split(",") for r in json.loads(Path(f).read_text())["results"]),
                key=lambda r: r["n"],
            )
        except (OSError, ValueError, KeyError) as exc:
            print(f"--merge: cannot read the results: {exc}", file=sys.stderr)
            return 2
        results = [unclean(r) for r in results]
    else:
        print(
            f"bench_scale: sizes {sizes}, loss {a.loss:.0%} (false-death window {a.false_loss:.0%}), {os.cpu_count()} cores",
            flush=True,
        )
        results = [run_size(n, a) for n in sizes]
    checks = print_tables(results)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def clean(x: Any) -> Any:  # JSON has no inf
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    params = {k: v for k, v in vars(a).items() if k != "out"}
    pngs = plot(results, out)
    out.write_text(json.dumps(clean({
        "when": dt.datetime.now(dt.UTC).isoformat(),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
        "params": params, "results": results, "checks": checks,
    }), indent=1))  # fmt: skip
    print(f"JSON: {out}")
    for p in pngs:
        print(f"PNG: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
