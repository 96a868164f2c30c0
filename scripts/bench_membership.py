#!/usr/bin/env python3
"""Membership benchmark with real node processes on loopback (127.0.1.x), N = 5, 10, 25:

* failure detection: ``kill -9`` of a member → the moment each other node stops routing to
  it (its ``member.down`` log event; routing reads that same liveness), p50/p99 over all
  observers and kills, and the worst "every node knows" time per kill;
* dissemination: a new node's record → the moment each node has it (``table.record``),
  measured from the new node's ``node.ready``;
* idle control-plane traffic: TCP payload bytes sent per node per second over an idle window,
  read from the kernel (``ss -tinp``: every socket of the node's process, so libp2p, Noise and
  Yamux framing are included), flat in N is the goal.

Timestamps come from the nodes' JSON logs (one machine, one clock). Bounded: --kills per N,
an idle window of --idle-s, and a startup deadline. Prints a table, writes JSON.

    .venv/bin/python scripts/bench_membership.py [--sizes 5,10,25] [--kills 3] [--out .bench/membership.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _procs import ProcessGroup, free_port, wait_until

NODE = [sys.executable, "-m", "opentela.cli"]


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))]


def events(path: Path, name: str) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == name:
                e["t"] = dt.datetime.fromisoformat(
                    e["timestamp"].replace("Z", "+00:00")
                ).timestamp()
                out.append(e)
    return out


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def tcp_bytes_sent(pids: list[int]) -> dict[int, int]:
    """Per process: bytes sent on all its TCP sockets (kernel counters)."""
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True).stdout
    totals = dict.fromkeys(pids, 0)
    lines = out.splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"pid=(\d+)", line)
        if not m or int(m.group(1)) not in totals:
            continue
        info = lines[i + 1] if i + 1 < len(lines) and "pid=" not in lines[i + 1] else line
        b = re.search(r"bytes_sent:(\d+)", info)
        if b:
            totals[int(m.group(1))] += int(b.group(1))
    return totals


class Pool:
    def __init__(self, procs: ProcessGroup, tmp: Path) -> None:
        self.procs, self.tmp = procs, tmp
        self.nodes: list[dict] = []

    def start(self, i: int, bootstrap: str | None) -> dict:
        host = f"127.0.1.{i + 1}"
        home = self.tmp / f"n{i}"
        subprocess.run([*NODE, "init", "--home", str(home)], check=True, capture_output=True)
        pid = subprocess.run(
            [*NODE, "peer-id", "--home", str(home)], check=True, capture_output=True, text=True
        ).stdout.strip()
        http, p2p = free_port(host), free_port(host)
        argv = [*NODE, "start", "--home", str(home), "--http-host", host, "--http-port", str(http),
                "--p2p-host", host, "--p2p-port", str(p2p), "--log-format", "json"]  # fmt: skip
        if bootstrap:
            argv += ["--bootstrap", bootstrap]
        proc = self.procs.start(f"n{i}", argv)
        node = {"i": i, "peer": pid, "url": f"http://{host}:{http}", "maddr": f"/ip4/{host}/tcp/{p2p}/p2p/{pid}",
                "proc": proc}  # fmt: skip
        self.nodes.append(node)
        return node

    def log(self, node: dict) -> Path:
        return self.tmp / "logs" / f"n{node['i']}.stderr.log"

    def alive_count(self, node: dict) -> int:
        return get(f"{node['url']}/v1/dnt/stats")["membership"]["alive"]


def run_size(n: int, kills: int, idle_s: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"otela-bench-m{n}-"))
    with ProcessGroup(tmp / "logs", stop_timeout=10) as procs:
        pool = Pool(procs, tmp)
        head = pool.start(0, None)
        wait_until(lambda: get(f"{head['url']}/v1/health"), 60, "head up")
        for i in range(1, n):
            pool.start(i, head["maddr"])
        live = list(pool.nodes)
        wait_until(
            lambda: all(pool.alive_count(x) == n - 1 for x in live),
            120,
            f"{n} nodes see each other",
            poll_s=0.5,
        )
        time.sleep(2)  # let join bursts settle before the idle window
        pids = [x["proc"].pid for x in live]
        b0, t0 = tcp_bytes_sent(pids), time.monotonic()
        time.sleep(idle_s)
        b1, t1 = tcp_bytes_sent(pids), time.monotonic()
        idle = [(b1[p] - b0[p]) / (t1 - t0) for p in pids]

        detect: list[float] = []
        detect_all: list[float] = []
        for _ in range(kills):
            victim = live[-1]  # never the head (live[0]): the bootstrap for the next phase
            victim["proc"].popen.send_signal(signal.SIGKILL)
            killed = time.time()
            others = [x for x in live if x is not victim]
            wait_until(lambda victim=victim, others=others: all(
                any(e["peer"] == victim["peer"] for e in events(pool.log(x), "member.down")) for x in others
            ), 30, "everyone marks the victim down", poll_s=0.2)  # fmt: skip
            per = [
                min(
                    e["t"]
                    for e in events(pool.log(x), "member.down")
                    if e["peer"] == victim["peer"]
                )
                - killed
                for x in others
            ]
            detect += per
            detect_all.append(max(per))
            live = others
            time.sleep(1)

        spread: list[float] = []
        for j in range(kills):
            new = pool.start(n + j, head["maddr"])
            others = list(live)
            wait_until(
                lambda new=new: events(pool.log(new), "node.ready"),
                60,
                "new node ready",
                poll_s=0.1,
            )
            wait_until(lambda new=new, others=others: all(
                any(e["peer"] == new["peer"] for e in events(pool.log(x), "table.record")) for x in others
            ), 30, "new record everywhere", poll_s=0.2)  # fmt: skip
            ready = events(pool.log(new), "node.ready")[0]["t"]
            spread += [
                min(e["t"] for e in events(pool.log(x), "table.record") if e["peer"] == new["peer"])
                - ready
                for x in others
            ]
            live.append(new)
    return {
        "n": n,
        "detect_s": {"p50": pct(detect, 50), "p99": pct(detect, 99), "samples": detect},
        "detect_everyone_s": {"max": max(detect_all), "per_kill": detect_all},
        "spread_s": {"p50": pct(spread, 50), "p99": pct(spread, 99), "samples": spread},
        "idle_bytes_per_s": {"mean": statistics.mean(idle), "max": max(idle), "per_node": idle},
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="5,10,25")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--out", default=".bench/membership.json")
    args = ap.parse_args()
    results = []
    for n in (int(x) for x in args.sizes.split(",")):
        print(f"N={n}: starting...", flush=True)
        results.append(run_size(n, args.kills, args.idle_s))
    print(
        "\n| N  | kill -9 → stops routing p50 / p99 (s) | every node knows, worst (s) | new record everywhere p50 / p99 (s) | idle TCP bytes/s per node mean / max |"
    )
    print("|----|----|----|----|----|")
    for r in results:
        print(
            f"| {r['n']:<2} | {r['detect_s']['p50']:.2f} / {r['detect_s']['p99']:.2f} | {r['detect_everyone_s']['max']:.2f} "
            f"| {r['spread_s']['p50']:.3f} / {r['spread_s']['p99']:.3f} | {r['idle_bytes_per_s']['mean']:.0f} / {r['idle_bytes_per_s']['max']:.0f} |"
        )
    print(
        "targets: detection p99 <= 3 s, new record p99 <= 2 s, idle <= 1 KB/s per node, flat in N"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "when": dt.datetime.now(dt.UTC).isoformat(),
                "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
                "results": results,
            },
            indent=1,
        )
    )
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
