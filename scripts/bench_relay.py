#!/usr/bin/env python3
"""Relayed requests against direct ones, in one run: what the extra hop through a relay costs a
private node's traffic (issue 13).

Targets (columns of the table), both fronting the same fast fake upstream:

* DIRECT: client -> public entry (``--role head``) -> libp2p -> public worker. The worker
  joined through the entry, so the entry holds a connection to it: no relay involved.
* RELAYED: client -> private entry -> ``--role relay`` node -> private worker. Both ends are
  ``--reachability private`` and bootstrap from the relay only; a private node never dials
  another private one, so every stream of the entry to the worker goes through the relay the
  worker reserved (as in ``tests/integration/test_relay.py``). The bench checks that it does:
  the entry's ``reach.relayed.relayed_opened`` > 0, the worker is not among the entry's
  connected peers, the relay's ``relayed_bytes`` grow, and the DIRECT entry relays nothing.
  A RELAYED target that is not relayed fails the run (exit 1): its figures would be wrong.

The two pools are separate (no bootstrap between them), all on 127.0.0.x with free ports.

Per repetition (``--reps``, medians of the per-repetition figures; ratios are medians of the
per-repetition ratios, so drift between repetitions cancels):

1. chat c=1 latency p10/p50/p99 (``--requests``, non-streamed, 16 tokens), the two targets
   interleaved one request at a time, and c=1 streamed TTFT (``--stream-requests``). On a
   machine shared with other work p10 is the least disturbed figure.
2. throughput: a Python aiohttp closed loop at ``--concurrency`` (16), ``--window-s`` per
   target split into ``--rounds`` short windows that alternate between the targets (the
   machine's other load drifts; alternating spreads it over both), after a discarded warm-up
   second each; requests/s count 200 answers completed inside the windows. CPU ms per request
   of every node on the path (DIRECT: entry + worker; RELAYED: entry + worker + relay).
3. bulk: non-streamed answers of ``--bulk-tokens`` tokens (~1.3 MiB of JSON at 150,000),
   ``--bulk-concurrency`` at a time, ``--bulk-s`` per target in alternating rounds as above;
   each window starts requests for its time and then drains them; MiB/s = body bytes
   received / wall time. Around each RELAYED window the relay's CPU seconds
   (``/proc/PID/stat`` utime + stime) and its ``reach.relay_service.relayed_bytes`` (``GET
   /v1/dnt/stats``, both directions) are read: **relay CPU ms per relayed MiB**. Its
   ``throttled_s_milli`` shows when the relay's per-peer byte bucket (``reach/limits.py``,
   32 MiB/s) held the copy back.

The machine's load is part of the result: the load average at start and end, and per
repetition the share of both cores that was busy and how much of it was not ours (other
helpers' tests), from ``/proc/stat``.

Output: a table on stdout, JSON (``--out``, default ``.bench/relay.json``) with every raw
sample, PNG plots beside it when matplotlib (the ``bench`` extra) is installed. The load is the
Python closed loop of ``bench_overhead.py`` (whose helpers this script reuses), not wrk: one
client for every phase, costing both targets the same.

Usage::

    .venv/bin/python scripts/bench_relay.py                 # 3 repetitions, ~2-3 minutes
    .venv/bin/python scripts/bench_relay.py --quick         # 1 repetition, smaller counts
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _plots
from _procs import (
    ManagedProcess,
    ProcessGroup,
    StartupError,
    cpu_seconds,
    free_port,
    node_bin,
    sigterm_as_keyboard_interrupt,
    tree_cpu_seconds,
    wait_for_line,
    wait_until,
)
from bench_overhead import (
    CHAT_PATH,
    JSON_HEADERS,
    MESSAGES,
    MODEL,
    TOKENS,
    CpuMeter,
    c1_interleaved,
    closed_loop,
    fmt,
    http_json,
    log,
    machine_info,
    median,
    new_session,
    percentile,
    ratio,
    render,
    scan_log,
    sub,
    summary,
)

MIB = 1024 * 1024
UPSTREAM_HOST = "127.0.0.1"
# One address per node: the two pools cannot mix up ports, and logs name the node by address.
HOSTS = {
    "d-entry": "127.0.0.2",
    "d-worker": "127.0.0.3",
    "relay": "127.0.0.4",
    "r-worker": "127.0.0.5",
    "r-entry": "127.0.0.6",
}


# -- the nodes -----------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    proc: ManagedProcess
    host: str
    http_port: int
    p2p_port: int
    peer_id: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def maddr(self) -> str:
        return f"/ip4/{self.host}/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    def stats(self) -> dict[str, Any]:
        return http_json(self.url + "/v1/dnt/stats", timeout=5)


@dataclass
class Target:
    key: str  # direct, relayed
    label: str  # DIRECT, RELAYED
    entry: Node
    nodes: dict[str, Node]  # every node on the path, by name

    @property
    def chat_url(self) -> str:
        return self.entry.url + CHAT_PATH

    @property
    def pids(self) -> dict[str, int]:
        return {n: node.proc.pid for n, node in self.nodes.items()}


def start_upstream(procs: ProcessGroup, timeout: float) -> tuple[ManagedProcess, int]:
    up = procs.start(
        "upstream",
        [
            sys.executable,
            "-m",
            "opentela.testing.fake_upstream",
            "--host",
            UPSTREAM_HOST,
            "--port",
            "0",
            "--model",
            MODEL,
            "--tokens",
            str(TOKENS),
        ],
    )
    url = wait_for_line(up, "READY ", timeout).split()[1]
    return up, int(url.rsplit(":", 1)[1])


def launch_node(
    procs: ProcessGroup,
    tmp: Path,
    node_exe: str,
    name: str,
    args: list[str],
    a: argparse.Namespace,
) -> Node:
    """``init``, ``peer-id``, then ``start`` on the node's own 127.0.0.x, without waiting: its
    multiaddr is known before it listens, so the whole pool can start at once."""
    host, home, timeout = HOSTS[name], tmp / f"home-{name}", a.startup_timeout_s
    out = ""
    for step in ("init", "peer-id"):
        p = procs.start(f"{step}-{name}", [node_exe, step, "--home", str(home)])
        p.popen.wait(timeout)
        out = p.read_stdout().strip()
        if p.returncode != 0 or (step == "peer-id" and not out):
            raise StartupError(f"opentela-node {step} failed for {name}:\n{p.tail()}")
    peer = out.splitlines()[-1].strip()  # peer-id's output
    http_port, p2p_port = free_port(host), free_port(host)
    proc = procs.start(
        name,
        [
            node_exe,
            "start",
            "--home",
            str(home),
            "--http-host",
            host,
            "--http-port",
            str(http_port),
            "--p2p-host",
            host,
            "--p2p-port",
            str(p2p_port),
            "--log-format",
            "json",
            "--log-level",
            a.node_log_level,
            *args,
        ],
    )
    return Node(name, proc, host, http_port, p2p_port, peer)


def chat_works(url: str) -> bool:
    body = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
    return bool(http_json(url + CHAT_PATH, body=body, timeout=5).get("choices"))


def start_pools(
    procs: ProcessGroup, tmp: Path, node_exe: str, port: int, a: argparse.Namespace, up: Any
) -> dict[str, Target]:
    """Both pools, each waited for until a chat completion goes through its entry."""
    svc = ["--service.name", "llm", "--service.host", UPSTREAM_HOST, "--service.port", str(port)]

    def launch(name: str, *args: str) -> Node:
        return launch_node(procs, tmp, node_exe, name, list(args), a)

    d_entry = launch("d-entry", "--role", "head", "--reachability", "public")
    d_worker = launch("d-worker", "--reachability", "public", "--bootstrap", d_entry.maddr, *svc)
    relay = launch("relay", "--role", "relay", "--reachability", "public")
    r_worker = launch("r-worker", "--reachability", "private", "--bootstrap", relay.maddr, *svc)
    r_entry = launch(
        "r-entry", "--role", "head", "--reachability", "private", "--bootstrap", relay.maddr
    )
    nodes = [d_entry, d_worker, relay, r_worker, r_entry]
    alive = [up, *(n.proc for n in nodes)]
    for n in nodes:
        wait_until(
            lambda n=n: http_json(n.url + "/v1/health", timeout=2).get("status") == "ok",
            a.startup_timeout_s,
            f"{n.name} /v1/health",
            procs=alive,
        )
    for entry in (d_entry, r_entry):

        def listed(entry: Node = entry) -> bool:
            data = http_json(entry.url + "/v1/models", timeout=2)
            return any(m.get("id") == MODEL for m in data.get("data", []))

        wait_until(listed, a.startup_timeout_s, f"{entry.name} to list {MODEL!r}", procs=alive)
        wait_until(
            lambda entry=entry: chat_works(entry.url),
            a.startup_timeout_s,
            f"a chat completion through {entry.name}",
            procs=alive,
            poll_s=0.2,
        )
    return {
        "direct": Target("direct", "DIRECT", d_entry, {"entry": d_entry, "worker": d_worker}),
        "relayed": Target(
            "relayed",
            "RELAYED",
            r_entry,
            {"entry": r_entry, "worker": r_worker, "relay": relay},
        ),
    }


# -- the path check ------------------------------------------------------------------------------


def path_facts(targets: dict[str, Target]) -> dict[str, Any]:
    """What the nodes say about how the entries reach their workers."""
    d, r = targets["direct"], targets["relayed"]
    d_reach = d.entry.stats().get("reach", {})
    r_reach = r.entry.stats().get("reach", {})
    relay_svc = r.nodes["relay"].stats().get("reach", {}).get("relay_service", {})
    peers = http_json(r.entry.url + "/v1/dnt/peers", timeout=5).get("peers", [])
    connected = {p.get("id") for p in peers if p.get("connected")}
    return {
        "direct_entry_relayed": d_reach.get("relayed", {}),
        "relayed_entry_relayed": r_reach.get("relayed", {}),
        "relayed_entry_reachability": r_reach.get("reachability"),
        "relayed_entry_relays": r_reach.get("relays"),
        "relay_service": relay_svc,
        "relayed_worker_connected_to_entry": r.nodes["worker"].peer_id in connected,
    }


def path_problems(f: dict[str, Any]) -> list[str]:
    out = []
    if (f["relayed_entry_relayed"].get("relayed_opened") or 0) < 1:
        out.append("the RELAYED entry opened no relayed stream")
    if f["relayed_worker_connected_to_entry"]:
        out.append("the RELAYED entry holds a direct connection to its worker")
    if (f["relay_service"].get("relayed_bytes") or 0) <= 0:
        out.append("the relay copied no bytes")
    if (f["direct_entry_relayed"].get("relayed_opened") or 0) != 0:
        out.append("the DIRECT entry opened relayed streams")
    return out


# -- measurements --------------------------------------------------------------------------------


def proc_stat_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat (busy = total - idle - iowait)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    total = float(sum(vals[:8]))  # user..steal; guest is already inside user
    return total - vals[3] - vals[4], total


def relay_reading(relay: Node) -> dict[str, float]:
    svc = relay.stats().get("reach", {}).get("relay_service", {})
    return {
        "cpu_s": cpu_seconds(relay.proc.pid) or 0.0,
        "relayed_bytes": float(svc.get("relayed_bytes") or 0),
        "relayed": float(svc.get("relayed") or 0),
        "throttled_s": float(svc.get("throttled_s_milli") or 0) / 1000.0,
    }


async def bulk_window(
    url: str,
    body: bytes,
    concurrency: int,
    window_s: float,
    max_requests: int,
    timeout_s: float,
) -> dict[str, Any]:
    """``concurrency`` workers issue big non-streamed requests back to back until ``window_s``
    has passed or ``max_requests`` were issued; the ones under way finish (the wall time runs
    until the last one), so every byte counted was carried inside the wall time."""
    session = new_session(concurrency, timeout_s)
    res: dict[str, Any] = {"errors": collections.Counter(), "sizes": [], "lat_ms": [], "issued": 0}
    try:
        t0 = time.perf_counter()
        deadline = t0 + window_s

        async def worker() -> None:
            while res["issued"] < max_requests and time.perf_counter() < deadline:
                res["issued"] += 1
                ts = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=JSON_HEADERS) as r:
                        data = await r.read()
                        if r.status != 200:
                            res["errors"][f"status={r.status}"] += 1
                            continue
                except (TimeoutError, aiohttp.ClientError) as exc:
                    res["errors"][type(exc).__name__] += 1
                    continue
                res["sizes"].append(len(data))
                res["lat_ms"].append((time.perf_counter() - ts) * 1000.0)

        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), window_s + timeout_s + 10
        )
        res["wall_s"] = time.perf_counter() - t0
    finally:
        await session.close()
    return res


def _add_cpu(acc: dict[str, float | None], d: dict[str, float | None]) -> None:
    for k, v in d.items():
        acc[k] = None if v is None or (k in acc and acc[k] is None) else (acc.get(k) or 0.0) + v


def _per(total: dict[str, float | None], n: float, scale: float) -> float | None:
    """The CPU of every process of ``total`` together, per ``n`` units, times ``scale``."""
    vals = list(total.values())
    if not vals or any(v is None for v in vals) or n <= 0:
        return None
    return sum(vals) / n * scale  # type: ignore[arg-type]


def rounds_order(targets: list[Target], rep: int, rnd: int) -> list[Target]:
    """The targets' order in round ``rnd`` of repetition ``rep``: alternating, so neither
    always runs first (after the other's warm connections) or last."""
    return targets if (rep + rnd) % 2 == 0 else targets[::-1]


async def load_phase(
    a: argparse.Namespace, rep: int, targets: list[Target]
) -> dict[str, dict[str, Any]]:
    """The closed loop at ``--concurrency``, ``--window-s`` per target split into
    ``--rounds`` windows that alternate between the targets (the machine's other load drifts;
    alternating short windows spreads the drift over both)."""
    sub_s = a.window_s / a.rounds
    acc: dict[str, dict[str, Any]] = {
        t.key: {
            "ok": 0,
            "late": 0,
            "issued": 0,
            "errors": collections.Counter(),
            "lat": [],
            "cpu": {},
            "window_s": 0.0,
            "capped": False,
            "per_round_rps": [],
        }
        for t in targets
    }
    for t in targets:  # warm-up: connections, stream pools, the relayed streams
        await closed_loop(t.chat_url, a.concurrency, 1.0, a.max_load_requests, 10.0, 5.0)
    for rnd in range(a.rounds):
        for t in rounds_order(targets, rep, rnd):
            lr = await closed_loop(
                t.chat_url,
                a.concurrency,
                sub_s,
                a.max_load_requests,
                a.request_timeout_s,
                5.0,
                meter=CpuMeter(t.pids),
            )
            x = acc[t.key]
            x["ok"] += lr.ok
            x["late"] += lr.late
            x["issued"] += lr.issued
            x["errors"].update(lr.errors)
            x["lat"].extend(lr.lat_ms)
            x["window_s"] += lr.window_s
            x["capped"] |= lr.capped
            x["per_round_rps"].append(round(lr.rps, 1))
            _add_cpu(x["cpu"], lr.cpu_s)
    out = {}
    for t in targets:
        x = acc[t.key]
        out[t.key] = {
            "rps": x["ok"] / x["window_s"] if x["window_s"] else None,
            "ok": x["ok"],
            "errors": dict(x["errors"]),
            "late_not_counted": x["late"],
            "issued": x["issued"],
            "capped": x["capped"],
            "window_s": x["window_s"],
            "per_round_rps": x["per_round_rps"],
            "ms": summary(x["lat"]),
            "cpu_s_in_window": {k: None if v is None else round(v, 3) for k, v in x["cpu"].items()},
            "cpu_s_per_1000": _per(x["cpu"], x["ok"], 1000.0),
        }
        log(
            f"rep {rep + 1}: c={a.concurrency} {t.label}: {fmt(out[t.key]['rps'], 0)} req/s "
            f"(rounds {x['per_round_rps']})"
        )
    return out


async def bulk_phase(
    a: argparse.Namespace, rep: int, targets: list[Target], body: bytes
) -> dict[str, dict[str, Any]]:
    """Big answers, ``--bulk-s`` per target in ``--rounds`` alternating windows. Around every
    window the relay's CPU seconds and relayed bytes: during RELAYED's they are the cost of
    relaying; during DIRECT's the relay carries no request, which gives its baseline (SWIM,
    keep-alives, the RELAYED pool's table sync) to subtract."""
    sub_s = a.bulk_s / a.rounds
    relay = next(t.nodes["relay"] for t in targets if "relay" in t.nodes)
    acc: dict[str, dict[str, Any]] = {
        t.key: {
            "sizes": [],
            "lat": [],
            "errors": collections.Counter(),
            "issued": 0,
            "wall_s": 0.0,
            "cpu": {},
            "relay": collections.Counter(),
            "per_round": [],
        }
        for t in targets
    }
    for rnd in range(a.rounds):
        for t in rounds_order(targets, rep, rnd):
            meter = CpuMeter(t.pids)
            r0 = relay_reading(relay)
            c0 = meter.read()
            b = await bulk_window(
                t.chat_url,
                body,
                a.bulk_concurrency,
                sub_s,
                a.max_bulk_requests,
                a.request_timeout_s,
            )
            x = acc[t.key]
            _add_cpu(x["cpu"], CpuMeter.delta(c0, meter.read()))
            r1 = relay_reading(relay)
            x["relay"].update({k: r1[k] - r0[k] for k in r1})
            x["sizes"].extend(b["sizes"])
            x["lat"].extend(b["lat_ms"])
            x["errors"].update(b["errors"])
            x["issued"] += b["issued"]
            x["wall_s"] += b["wall_s"]
            x["per_round"].append(round(sum(b["sizes"]) / MIB / b["wall_s"], 2))
    out = {}
    for t in targets:
        x = acc[t.key]
        nbytes = sum(x["sizes"])
        blk: dict[str, Any] = {
            "concurrency": a.bulk_concurrency,
            "wall_s": x["wall_s"],
            "ok": len(x["sizes"]),
            "issued": x["issued"],
            "errors": dict(x["errors"]),
            "body_bytes": nbytes,
            "body_bytes_each": summary([float(v) for v in x["sizes"]]),
            "mib_per_s": nbytes / MIB / x["wall_s"] if x["wall_s"] else None,
            "per_round_mib_per_s": x["per_round"],
            "ms": summary(x["lat"]),
            "cpu_s": {k: None if v is None else round(v, 3) for k, v in x["cpu"].items()},
            "path_cpu_s_per_mib": _per(x["cpu"], nbytes / MIB, 1.0),
        }
        d = x["relay"]
        mib = d["relayed_bytes"] / MIB
        blk["relay"] = {
            **{k: round(v, 3) for k, v in d.items()},
            "relayed_mib": round(mib, 3),
            "cpu_pct_of_a_core": round(100.0 * d["cpu_s"] / x["wall_s"], 2),
            "cpu_s_per_relayed_mib": d["cpu_s"] / mib if "relay" in t.nodes and mib else None,
        }
        out[t.key] = blk
    # The relay's baseline, measured while it carried no request (the DIRECT windows).
    base = out["direct"]["relay"]["cpu_s"] / out["direct"]["wall_s"]
    r = out["relayed"]["relay"]
    mib = r["relayed_mib"]
    r["baseline_cpu_s_per_s"] = round(base, 5)
    r["cpu_s_per_relayed_mib_net"] = (
        (r["cpu_s"] - base * out["relayed"]["wall_s"]) / mib if mib else None
    )
    for t in targets:
        blk = out[t.key]
        log(
            f"rep {rep + 1}: bulk {t.label}: {fmt(blk['mib_per_s'], 1)} MiB/s "
            f"(rounds {blk['per_round_mib_per_s']}), {blk['ok']} answers"
            + (
                f", relay {fmt(blk['relay']['cpu_s_per_relayed_mib'] * 1000, 1)} ms CPU/MiB"
                if blk["relay"]["cpu_s_per_relayed_mib"]
                else ""
            )
        )
    return out


async def one_rep(
    a: argparse.Namespace, rep: int, targets: list[Target], all_pids: dict[str, int]
) -> dict[str, Any]:
    busy0, total0 = proc_stat_busy()
    ours0 = {k: tree_cpu_seconds(p) or 0.0 for k, p in all_pids.items()}
    self0 = time.process_time()
    wall0 = time.perf_counter()
    urls = {t.key: t.chat_url for t in targets}
    sessions = {k: new_session(1, a.request_timeout_s) for k in urls}
    try:
        log(f"rep {rep + 1}: c=1 chat, {a.requests} per target (interleaved)")
        lat = await c1_interleaved(urls, sessions, a.requests, a.warmup, a.duration_s, False)
        log(f"rep {rep + 1}: c=1 stream TTFT, {a.stream_requests} per target")
        st = await c1_interleaved(urls, sessions, a.stream_requests, 5, a.duration_s, True)
    finally:
        for s in sessions.values():
            await s.close()
    out: dict[str, Any] = {"c1": {}, "ttft": {}, "load": {}, "bulk": {}}
    for t in targets:
        out["c1"][t.key] = {
            "ms": summary(lat.lat_ms[t.key]),
            "errors": dict(lat.errors[t.key]),
            "samples_ms": [round(x, 3) for x in lat.lat_ms[t.key]],
        }
        out["ttft"][t.key] = {
            "ms": summary(st.lat_ms[t.key]),
            "errors": dict(st.errors[t.key]),
        }
    out["c1_stopped_by_time"] = lat.stopped_by_time or st.stopped_by_time
    bulk_body = json.dumps(
        {"model": MODEL, "messages": MESSAGES, "max_tokens": a.bulk_tokens}, separators=(",", ":")
    ).encode()
    out["load"] = await load_phase(a, rep, targets)
    out["bulk"] = await bulk_phase(a, rep, targets, bulk_body)
    busy1, total1 = proc_stat_busy()
    ours1 = {k: tree_cpu_seconds(p) or 0.0 for k, p in all_pids.items()}
    wall = time.perf_counter() - wall0
    ncpu = os.cpu_count() or 1
    tck = os.sysconf("SC_CLK_TCK")
    busy_s = (busy1 - busy0) / tck
    ours_s = sum(ours1[k] - ours0[k] for k in ours1) + (time.process_time() - self0)
    out["machine"] = {
        "wall_s": round(wall, 2),
        "cores": ncpu,
        "busy_pct_of_all_cores": round(100.0 * (busy1 - busy0) / max(1.0, total1 - total0), 1),
        "ours_cpu_s": round(ours_s, 2),
        "others_cpu_s": round(max(0.0, busy_s - ours_s), 2),
        "others_pct_of_all_cores": round(100.0 * max(0.0, busy_s - ours_s) / (wall * ncpu), 1),
        "loadavg": os.getloadavg(),
    }
    return out


def rep_figures(rep: dict[str, Any]) -> dict[str, Any]:
    f: dict[str, Any] = {}
    for k in ("direct", "relayed"):
        f[f"c1_p10_ms.{k}"] = percentile(rep["c1"][k]["samples_ms"], 10)
        f[f"c1_p50_ms.{k}"] = rep["c1"][k]["ms"]["p50"]
        f[f"c1_p99_ms.{k}"] = rep["c1"][k]["ms"]["p99"]
        f[f"ttft_p50_ms.{k}"] = rep["ttft"][k]["ms"]["p50"]
        f[f"rps.{k}"] = rep["load"][k]["rps"]
        f[f"load_p50_ms.{k}"] = rep["load"][k]["ms"]["p50"]
        f[f"load_p99_ms.{k}"] = rep["load"][k]["ms"]["p99"]
        f[f"cpu_s_per_1000.{k}"] = rep["load"][k]["cpu_s_per_1000"]
        f[f"mib_per_s.{k}"] = rep["bulk"][k]["mib_per_s"]
        f[f"path_cpu_s_per_mib.{k}"] = rep["bulk"][k]["path_cpu_s_per_mib"]
        f[f"errors.{k}"] = (
            sum(rep["c1"][k]["errors"].values())
            + sum(rep["ttft"][k]["errors"].values())
            + sum(rep["load"][k]["errors"].values())
            + sum(rep["bulk"][k]["errors"].values())
        )
    br = rep["bulk"]["relayed"].get("relay", {})
    lr = rep["load"]["relayed"]["cpu_s_in_window"].get("relay")
    ok = rep["load"]["relayed"]["ok"]
    f["relay_cpu_s_per_1000"] = lr / ok * 1000.0 if lr is not None and ok else None
    base = br.get("baseline_cpu_s_per_s")
    f["relay_cpu_s_per_1000_net"] = (
        (lr - base * rep["load"]["relayed"]["window_s"]) / ok * 1000.0
        if lr is not None and ok and base is not None
        else None
    )
    f["relay_cpu_s_per_mib"] = br.get("cpu_s_per_relayed_mib")
    f["relay_cpu_s_per_mib_net"] = br.get("cpu_s_per_relayed_mib_net")
    f["relay_baseline_pct"] = (
        None if br.get("baseline_cpu_s_per_s") is None else 100.0 * br["baseline_cpu_s_per_s"]
    )
    f["relay_throttled_s"] = br.get("throttled_s")
    f["added_p10_ms"] = sub(f["c1_p10_ms.relayed"], f["c1_p10_ms.direct"])
    f["added_p50_ms"] = sub(f["c1_p50_ms.relayed"], f["c1_p50_ms.direct"])
    f["added_p99_ms"] = sub(f["c1_p99_ms.relayed"], f["c1_p99_ms.direct"])
    f["added_ttft_p50_ms"] = sub(f["ttft_p50_ms.relayed"], f["ttft_p50_ms.direct"])
    f["x.c1_p50"] = ratio(f["c1_p50_ms.relayed"], f["c1_p50_ms.direct"])
    f["x.c1_p99"] = ratio(f["c1_p99_ms.relayed"], f["c1_p99_ms.direct"])
    f["x.rps"] = ratio(f["rps.relayed"], f["rps.direct"])
    f["x.mib_per_s"] = ratio(f["mib_per_s.relayed"], f["mib_per_s.direct"])
    f["x.cpu_s_per_1000"] = ratio(f["cpu_s_per_1000.relayed"], f["cpu_s_per_1000.direct"])
    f["x.path_cpu_s_per_mib"] = ratio(
        f["path_cpu_s_per_mib.relayed"], f["path_cpu_s_per_mib.direct"]
    )
    return f


# -- report --------------------------------------------------------------------------------------


def build_table(f: dict[str, Any], a: argparse.Namespace) -> str:
    def row(label: str, metric: str, nd: int, x: str | None = None, scale: float = 1.0):
        vals = [f.get(f"{metric}.{k}") for k in ("direct", "relayed")]
        cells = [fmt(None if v is None else v * scale, nd) for v in vals]
        rel = f.get(x) if x else None
        return (label, *cells, fmt(rel, 2) + "x" if rel is not None else "-")

    c = a.concurrency
    rows = [
        row("chat c=1 p10 (ms)", "c1_p10_ms", 2),
        row("chat c=1 p50 (ms)", "c1_p50_ms", 2, "x.c1_p50"),
        row("chat c=1 p99 (ms)", "c1_p99_ms", 2, "x.c1_p99"),
        row("stream TTFT c=1 p50 (ms)", "ttft_p50_ms", 2),
        row(f"c={c} req/s", "rps", 0, "x.rps"),
        row(f"c={c} latency p50 (ms)", "load_p50_ms", 1),
        row(f"c={c} latency p99 (ms)", "load_p99_ms", 1),
        row(
            f"c={c} CPU ms per request, all nodes on the path",
            "cpu_s_per_1000",
            2,
            "x.cpu_s_per_1000",
        ),
        row(
            f"bulk ~{a.bulk_mib:.1f} MiB answers, c={a.bulk_concurrency}: MiB/s",
            "mib_per_s",
            1,
            "x.mib_per_s",
        ),
        row(
            "bulk CPU ms per MiB, all nodes on the path",
            "path_cpu_s_per_mib",
            1,
            "x.path_cpu_s_per_mib",
            1000.0,
        ),
        row("errors (all phases)", "errors", 0),
    ]

    def ms(key: str, nd: int = 1) -> str:
        v = f.get(key)
        return fmt(None if v is None else v * 1000.0, nd)

    def only_relayed(label: str, value: str) -> tuple[str, ...]:
        return (label, "-", value, "-")

    rows += [
        only_relayed(
            "added c=1 p10 / p50 / p99 (ms)",
            " / ".join(signed(f.get(f"added_{q}_ms")) for q in ("p10", "p50", "p99")),
        ),
        only_relayed("added stream TTFT p50 (ms)", signed(f.get("added_ttft_p50_ms"))),
        only_relayed("relay CPU ms per relayed MiB (bulk)", ms("relay_cpu_s_per_mib")),
        only_relayed("  same, less the relay's idle baseline", ms("relay_cpu_s_per_mib_net")),
        only_relayed("  relay baseline, % of a core", fmt(f.get("relay_baseline_pct"), 2)),
        only_relayed(f"relay CPU ms per request (c={c})", fmt(f.get("relay_cpu_s_per_1000"), 3)),
        only_relayed(
            "  same, less the relay's idle baseline", fmt(f.get("relay_cpu_s_per_1000_net"), 3)
        ),
        only_relayed("relay throttled (s, bulk windows)", fmt(f.get("relay_throttled_s"), 2)),
    ]
    return render(("metric", "DIRECT", "RELAYED", "RELAYED/DIRECT"), rows)


def signed(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:+.{nd}f}"


def plot(r: dict[str, Any], out: Path) -> list[str]:
    """The table's DIRECT/RELAYED pairs as bars (ratio in each title), the relay's own CPU per
    relayed MiB, and the c=1 latency CDFs of both targets over all repetitions."""
    plt = _plots.pyplot()
    if plt is None:
        return []
    f = r["figures"]
    labels, keys, colors = ["DIRECT", "RELAYED"], ["direct", "relayed"], ["#4c72b0", "#dd8452"]
    c = r["config"]["concurrency"]
    fig, axes = plt.subplots(1, 5, figsize=(16, 4))
    panels = [
        ("c1_p50_ms", "x.c1_p50", "chat c=1 p50", "ms", 1.0),
        ("rps", "x.rps", f"c={c} closed loop", "requests/s", 1.0),
        ("mib_per_s", "x.mib_per_s", "bulk (~1.3 MiB answers)", "MiB/s", 1.0),
        ("path_cpu_s_per_mib", "x.path_cpu_s_per_mib", "bulk CPU, all nodes on the path",
         "CPU ms per MiB", 1000.0),
    ]  # fmt: skip
    for ax, (metric, xkey, title, unit, scale) in zip(axes, panels, strict=False):
        vals = [f.get(f"{metric}.{k}") for k in keys]
        vals = [None if v is None else v * scale for v in vals]
        x = f.get(xkey)
        title += f"\nRELAYED / DIRECT {x:.2f}x" if x is not None else ""
        _plots.bars(ax, labels, vals, colors, title, fmt=lambda v: fmt(v, 1), ylabel=unit)
    ax = axes[4]
    relay = [f.get("relay_cpu_s_per_mib"), f.get("relay_cpu_s_per_mib_net")]
    _plots.bars(
        ax,
        ["relay", "relay less\nidle baseline"],
        [None if v is None else v * 1000 for v in relay],
        ["#dd8452", "#f0b78f"],
        "the relay's own CPU\nper relayed MiB (bulk)",
        fmt=lambda v: fmt(v, 1),
        ylabel="CPU ms per relayed MiB",
    )
    fig.suptitle(
        f"opentela relayed vs direct, {r['timestamp'][:19]}, reps={r['config']['reps']} "
        f"(medians; {_plots.machine()})"
    )
    files = [_plots.save(plt, fig, out.with_suffix(".png"))]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, lab, col in zip(keys, labels, colors, strict=True):
        xs = [x for rep in r["reps"] for x in rep["c1"][k]["samples_ms"]]
        _plots.cdf(ax, xs, lab, unit="ms", color=col)
    _plots.cdf_axes(
        ax,
        "chat c=1 latency (ms, log scale)",
        f"chat c=1 latency, DIRECT vs RELAYED, interleaved\n"
        f"all {r['config']['reps']} repetition(s) ({_plots.machine()})",
        log=True,
        ylabel="fraction of requests <= x",
    )
    files.append(_plots.save(plt, fig, out.with_name(out.stem + "_c1_cdf.png")))
    return files


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="1 repetition, smaller counts")
    p.add_argument("--reps", type=int, default=None, help="repetitions (3; quick 1)")
    p.add_argument("--out", default=".bench/relay.json", help="JSON output path")
    p.add_argument("--requests", type=int, default=None, help="c=1 chats per target (300; 100)")
    p.add_argument("--warmup", type=int, default=20, help="c=1 warm-up chats per target")
    p.add_argument("--stream-requests", type=int, default=None, help="c=1 streams (100; 30)")
    p.add_argument(
        "--duration-s", type=float, default=30.0, help="upper bound of each c=1 phase (s)"
    )
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop concurrency")
    p.add_argument(
        "--window-s", type=float, default=None, help="closed-loop seconds per target (6; 3)"
    )
    p.add_argument(
        "--rounds", type=int, default=None, help="alternating windows per phase (3; quick 2)"
    )
    p.add_argument("--max-load-requests", type=int, default=50_000, help="cap per window")
    p.add_argument(
        "--bulk-tokens", type=int, default=150_000, help="tokens per bulk answer (~1.4 MiB)"
    )
    p.add_argument("--bulk-concurrency", type=int, default=2, help="bulk requests at a time")
    p.add_argument("--bulk-s", type=float, default=None, help="bulk seconds per target (6; 3)")
    p.add_argument("--max-bulk-requests", type=int, default=500, help="cap per bulk window")
    p.add_argument("--request-timeout-s", type=float, default=30.0)
    p.add_argument("--startup-timeout-s", type=float, default=60.0)
    p.add_argument("--node-bin", default=None, help="opentela-node (default: next to python)")
    p.add_argument(
        "--node-log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with node logs")
    a = p.parse_args(argv)
    q = a.quick
    a.reps = a.reps if a.reps is not None else (1 if q else 3)
    a.requests = a.requests if a.requests is not None else (100 if q else 300)
    a.stream_requests = a.stream_requests if a.stream_requests is not None else (30 if q else 100)
    a.window_s = a.window_s if a.window_s is not None else (3.0 if q else 6.0)
    a.bulk_s = a.bulk_s if a.bulk_s is not None else (3.0 if q else 6.0)
    a.rounds = a.rounds if a.rounds is not None else (2 if q else 3)
    if min(a.reps, a.requests, a.concurrency, a.bulk_concurrency, a.bulk_tokens, a.rounds) < 1:
        p.error("--reps, --requests, --rounds, --concurrency, --bulk-* must be >= 1")
    # "tok0 tok1 ...": the size of the answer's content, for the table's label.
    a.bulk_mib = sum(len(f"tok{i}") + 1 for i in range(a.bulk_tokens)) / MIB
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sigterm_as_keyboard_interrupt()
    node_exe = node_bin(a.node_bin)
    tmp = Path(tempfile.mkdtemp(prefix="otela-bench-relay-"))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keep = a.keep_logs
    started = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {
        "benchmark": "relay",
        "timestamp": started.isoformat(),
        "argv": sys.argv,
        "machine": machine_info(),
        "config": {k: v for k, v in vars(a).items()},
        "upstream": {"model": MODEL, "tokens": TOKENS, "token_delay_ms": 0},
        "hosts": HOSTS,
    }
    log(f"temp dir {tmp}, reps={a.reps}, load average {os.getloadavg()}")
    procs = ProcessGroup(tmp / "logs")
    problems: list[str] = []
    try:
        try:
            t0 = time.perf_counter()
            up, port = start_upstream(procs, a.startup_timeout_s)
            by_key = start_pools(procs, tmp, node_exe, port, a, up)
        except (StartupError, OSError) as exc:
            keep = True
            print(procs.tails(40), file=sys.stderr)
            log(f"STARTUP FAILED: {exc}")
            return 2
        targets = [by_key["direct"], by_key["relayed"]]
        report["startup_s"] = round(time.perf_counter() - t0, 2)
        report["peers"] = {n.name: n.peer_id for t in targets for n in t.nodes.values()}
        log(f"up in {report['startup_s']}s")
        all_pids = {n.name: n.proc.pid for t in targets for n in t.nodes.values()}
        all_pids["upstream"] = up.pid
        reps = [asyncio.run(one_rep(a, i, targets, all_pids)) for i in range(a.reps)]
        report["reps"] = reps
        report["path"] = path_facts(by_key)
        problems = path_problems(report["path"])
        per_rep = [rep_figures(rep) for rep in reps]
        report["figures_per_rep"] = per_rep
        keys = sorted({k for r in per_rep for k in r})
        report["figures"] = {k: median([r.get(k) for r in per_rep]) for k in keys}
        report["node_stats"] = {}
        for t in targets:
            for n in t.nodes.values():
                with contextlib.suppress(Exception):
                    report["node_stats"][n.name] = n.stats()
        report["alive_at_end"] = {n: p.alive() for p in procs.procs for n in [p.name]}
    except KeyboardInterrupt:
        keep = True
        log("interrupted; stopping children")
        return 130
    except BaseException:
        keep = True
        raise
    finally:
        procs.stop_all()
        report["logs"] = {
            p.name: scan_log(p) for p in procs.procs if not p.name.startswith(("init-", "peer-id-"))
        }
        if keep:
            log(f"logs kept in {tmp / 'logs'}")
            report["logs_dir"] = str(tmp / "logs")
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    report["path_problems"] = problems
    report["finished"] = dt.datetime.now(dt.UTC).isoformat()
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    f = report["figures"]
    m = report["machine"]
    print(
        f"\nopentela relayed vs direct  (reps={a.reps} (medians), nproc={m['nproc']}, "
        f"python {m['python']}, {report['timestamp'][:19]})"
    )
    print(build_table(f, a))
    for i, rep in enumerate(report["reps"]):
        mc = rep["machine"]
        print(
            f"rep {i + 1}: {mc['wall_s']} s, both cores {mc['busy_pct_of_all_cores']} % busy, "
            f"others {mc['others_pct_of_all_cores']} % of both cores, load avg "
            f"{', '.join(f'{x:.2f}' for x in mc['loadavg'])}"
        )
    print(
        "load average at start / end: "
        + " / ".join(
            ", ".join(f"{x:.2f}" for x in m[k]) for k in ("loadavg_at_start", "loadavg_at_end")
        )
    )
    pf = report["path"]
    print(
        f"path: RELAYED entry opened {pf['relayed_entry_relayed'].get('relayed_opened')} relayed "
        f"streams, relay carried {pf['relay_service'].get('relayed')} streams / "
        f"{(pf['relay_service'].get('relayed_bytes') or 0) / MIB:.1f} MiB; DIRECT entry opened "
        f"{pf['direct_entry_relayed'].get('relayed_opened')}"
    )
    for name, scan in report["logs"].items():
        if scan["notable"]:
            print(
                f"note: {name} log: " + ", ".join(f"{k} x{v}" for k, v in scan["notable"].items())
            )
    for png in plot(report, out):
        print(f"PNG: {png}")
    print(f"JSON: {out}")
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    if problems:
        for pr in problems:
            print(f"ERROR: {pr}: the RELAYED figures do not measure relaying")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
