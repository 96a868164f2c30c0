#!/usr/bin/env python3
"""What the parts of the forwarding path cost, each alone, in CPU microseconds (one process).

1. A libp2p request/response exchange between two hosts in this process over loopback (both
   ends' CPU): a ~330-byte request batch (REQ_HEAD, BODY, END) and a ~600-byte answer, the
   shape of a small chat completion, on one reused stream: with ``overlay/fastpath.py`` (what
   the node runs) and with py-libp2p 0.8.1's own code paths (the patches undone), each in a
   fresh subprocess, alternating, ``--reps`` times. Also counted: WINDOW_UPDATE frames sent
   per exchange.
2. The trio ↔ asyncio crossings: trio-asyncio's ``trio_as_aio`` against ``aio_bridge.to_trio``
   (the request path's one crossing), and ``aio_as_trio`` (``to_aio``).

CPU time (``time.process_time``), not wall time, so other load on the machine matters less;
still, compare numbers of one run. Table on stdout, JSON in ``.bench/dataplane_parts.json``,
a PNG next to it (needs matplotlib, the ``bench`` extra).

Usage::

    .venv/bin/python scripts/bench_dataplane_parts.py [--n 3000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _plots

ROOT = Path(__file__).resolve().parents[1]

EXCHANGE = r"""
import json, os, sys, time
import trio
from libp2p.io.trio import TrioTCPStream
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream
ORIGINAL = (TrioTCPStream.read, YamuxStream._auto_tune_and_send_window_update,
            Yamux._write_frame, YamuxStream.write)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentela.overlay import framing, identity
from opentela.overlay.host import open_host
from opentela.testing.serving import free_port
if sys.argv[1] == "py-libp2p":
    (TrioTCPStream.read, YamuxStream._auto_tune_and_send_window_update,
     Yamux._write_frame, YamuxStream.write) = ORIGINAL
N = int(sys.argv[2])
updates = [0]
_send_update = YamuxStream.send_window_update
async def counted(self, increment, skip_lock=False):
    updates[0] += increment > 0
    await _send_update(self, increment, skip_lock)
YamuxStream.send_window_update = counted
headers = [["content-type", "application/json"], ["accept", "*/*"], ["user-agent", "bench"]]
REQ = [framing.encode(framing.REQ_HEAD, {"method": "POST", "path": "/v1/chat/completions",
       "headers": headers, "service": "llm"}), framing.encode(framing.BODY, b"x" * 120),
       framing.encode(framing.END)]
RESP = [framing.encode(framing.RESP_HEAD, {"status": 200, "headers": headers + headers}),
        framing.encode(framing.BODY, b"y" * 500), framing.encode(framing.END)]
async def until_end(stream):
    got = []
    while not got or got[-1].kind != framing.END:
        got += await stream.receive(10)
async def main():
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    p1, p2 = free_port(), free_port()
    async with open_host(k1, "127.0.0.1", p1) as h1, open_host(k2, "127.0.0.1", p2) as h2:
        async def serve(stream):
            while True:
                await until_end(stream)
                await stream.send(*RESP)
        h2.set_handler("/bench/1", serve)
        pid2 = identity.peer_id(k2)
        await h1.connect(f"/ip4/127.0.0.1/tcp/{p2}/p2p/{pid2}")
        s = await h1.open_stream(pid2, "/bench/1")
        async def one():
            await s.send(*REQ)
            await until_end(s)
        for _ in range(300):
            await one()
        updates[0] = 0
        t0 = time.process_time()
        for _ in range(N):
            await one()
        cpu = (time.process_time() - t0) / N * 1e6
        print(json.dumps({"cpu_us": cpu, "window_updates": updates[0] / N}), flush=True)
        os._exit(0)
trio.run(main)
"""

CROSSING = r"""
import asyncio, json, sys, time
import trio, trio_asyncio
from opentela.aio_bridge import open_asyncio_loop, to_aio, to_trio
N = int(sys.argv[1])
async def t_fn(x):
    await trio.lowlevel.checkpoint()
    return x
async def a_fn(x):
    return x
async def timed(call):
    t0 = time.process_time()
    for i in range(N):
        await call(i)
    return (time.process_time() - t0) / N * 1e6
async def main():
    out = {}
    async with open_asyncio_loop():
        ours, theirs = to_trio(t_fn), trio_asyncio.trio_as_aio(t_fn)
        out["trio_as_aio (trio-asyncio)"] = await to_aio(timed)(theirs)
        out["to_trio (aio_bridge)"] = await to_aio(timed)(ours)
        out["aio_as_trio = to_aio"] = await timed(to_aio(a_fn))
    print(json.dumps(out), flush=True)
trio.run(main)
"""


def _child(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, env=env
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3000, help="exchanges per measurement")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=".bench/dataplane_parts.json")
    a = p.parse_args()
    runs: dict[str, list[dict]] = {"fastpath": [], "py-libp2p": []}
    for rep in range(a.reps):
        for variant in ("py-libp2p", "fastpath") if rep % 2 else ("fastpath", "py-libp2p"):
            runs[variant].append(_child(EXCHANGE, variant, str(a.n)))
    crossings = [_child(CROSSING, str(a.n * 5)) for _ in range(a.reps)]

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    fast, orig = med(runs["fastpath"], "cpu_us"), med(runs["py-libp2p"], "cpu_us")
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(),
        "n": a.n,
        "reps": a.reps,
        "exchange_cpu_us": {"py-libp2p": orig, "fastpath": fast},
        "exchange_window_updates": {
            "py-libp2p": med(runs["py-libp2p"], "window_updates"),
            "fastpath": med(runs["fastpath"], "window_updates"),
        },
        "crossing_cpu_us": {k: statistics.median(c[k] for c in crossings) for k in crossings[0]},
        "raw": {"exchange": runs, "crossing": crossings},
    }
    print(f"data-plane parts, CPU µs (medians of {a.reps}; n={a.n}; nproc={os.cpu_count()})")
    print("| part | py-libp2p / trio-asyncio | ours | ratio |")
    print("|---|---|---|---|")
    print(f"| libp2p exchange, both ends | {orig:.0f} | {fast:.0f} | {fast / orig:.2f} |")
    wu = result["exchange_window_updates"]
    print(f"| WINDOW_UPDATE frames per exchange | {wu['py-libp2p']:.2f} | {wu['fastpath']:.2f} | |")
    c = result["crossing_cpu_us"]
    theirs, ours = c["trio_as_aio (trio-asyncio)"], c["to_trio (aio_bridge)"]
    print(f"| asyncio → trio crossing | {theirs:.0f} | {ours:.0f} | {ours / theirs:.2f} |")
    print(f"| trio → asyncio crossing (to_aio) | {c['aio_as_trio = to_aio']:.0f} | same | |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"JSON: {out}")
    plt = _plots.pyplot()
    if plt is None:
        return 0
    fig, ax = plt.subplots(figsize=(6, 3.2))
    _plots.grouped_bars(
        ax,
        ["libp2p exchange", "asyncio→trio crossing"],
        {"py-libp2p / trio-asyncio": [orig, theirs], "opentela": [fast, ours]},
        fmt=lambda v: f"{v:.0f}",
    )
    ax.set_ylabel("CPU µs per call")
    ax.set_title(f"CPU per call, before vs now, same run ({_plots.machine()})")
    png = _plots.save(plt, fig, out.with_suffix(".png"))
    print(f"PNG: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
