#!/usr/bin/env python3
"""Routing policies compared in the real overlay: random, round-robin, least-loaded, affinity.

The pool (all on 127.0.1.x, restarted fresh for every policy so caches start cold):

* 4 workers, each an opentela node fronting ``opentela.testing.cost_upstream``: a fixed number
  of slots, prefill time proportional to the prompt tokens *not* in its LRU prefix cache, a
  decode time per output token. Two are fast and two slow (speed 2.0 vs 1.0, like GH200 vs
  A100).
* 2 entry nodes, both running the policy under test; requests alternate between them at
  random, so every decision is made by two independent entry points sharing only the
  gossiped table.
* Workload: 20 system prompts (~200 words), many users (a unique ~30-word question each),
  16 output tokens, streamed. Poisson arrivals at 50 %, 80 % and 95 % of the pool's nominal
  capacity (computed from the cost model, cache-miss case). Each phase is bounded in time.

Reported per policy and load: TTFT p50/p99, end-to-end p50/p99, throughput, prefix-cache hit
ratio (tokens served from cache / prompt tokens, summed over workers), requests per worker.

``--scenario hetero`` (issue 13): two replicas 4x apart in speed (``cost_upstream --speed 4``
and ``1``, 8 slots each so nothing queues at the backend: only per-token speed differs), the
same two entry nodes, 8 closed-loop clients sending one identical short prompt (~50 tokens, streamed,
16 output tokens) for ``--hetero-requests`` requests per policy. Reported: the slow replica's
share of the requests, TTFT p50/p99, cache hit. The target: the default policy's slow share at
most 0.6x ``random``'s. The workers' identities are drawn so that ``--hetero-owner`` (default
``slow``, the hard case) owns the prompt's key on the affinity ring.

    .venv/bin/python scripts/bench_routing.py [--phase-s 20] [--loads 0.5,0.8,0.95] [--out .bench/routing.json]
    .venv/bin/python scripts/bench_routing.py --scenario hetero [--hetero-requests 400] [--out .bench/routing-hetero.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from opentela.routing.balance import HashRing, prefix_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _plots
from _procs import ProcessGroup, free_port, wait_for_line, wait_until

NODE = [sys.executable, "-m", "opentela.cli"]
MODEL = "bench-model"
POLICIES = ("random", "round-robin", "least-loaded", "affinity")
WORKERS = [("fast1", 2.0), ("fast2", 2.0), ("slow1", 1.0), ("slow2", 1.0)]
SLOTS = 2
PREFILL_MS = 1.0
DECODE_MS = 20.0
OUT_TOKENS = 16
SYSTEM_WORDS = 200
USER_WORDS = 30
CACHE_TOKENS = 1600  # ~7 of the 20 system prompts per worker: affinity can keep them all warm
N_SYSTEM = 20


def words(rng: random.Random, n: int) -> str:
    vocab = [f"w{i}" for i in range(5000)]
    return " ".join(rng.choice(vocab) for _ in range(n))


def nominal_capacity() -> float:
    """Requests/s the pool sustains when every prompt misses the cache (a lower bound)."""
    prompt = SYSTEM_WORDS + USER_WORDS + 4
    service_s = (prompt * PREFILL_MS + OUT_TOKENS * DECODE_MS) / 1000
    return sum(SLOTS * speed / service_s for _, speed in WORKERS)


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def init_home(home: Path) -> tuple[Path, str]:
    """A node home with an identity (kept when it has one already), and its peer id."""
    if not (home / "identity.key").exists():
        subprocess.run([*NODE, "init", "--home", str(home)], check=True, capture_output=True)
    pid = subprocess.run(
        [*NODE, "peer-id", "--home", str(home)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return home, pid


def start_pool(
    procs: ProcessGroup,
    tmp: Path,
    policy: str,
    workers: list[tuple[str, float]] = WORKERS,
    slots: int = SLOTS,
    prefill_ms: float = PREFILL_MS,
    decode_ms: float = DECODE_MS,
) -> tuple[list[str], list[str]]:
    """Returns (entry base URLs, upstream base URLs)."""

    def init(name: str) -> tuple[Path, str]:
        return init_home(tmp / name)

    entries, boot = [], None
    for e in range(2):
        host = f"127.0.1.{10 + e}"
        home, pid = init(f"entry{e}")
        http, p2p = free_port(host), free_port(host)
        argv = [*NODE, "start", "--home", str(home), "--http-host", host, "--http-port", str(http),
                "--p2p-host", host, "--p2p-port", str(p2p), "--routing.policy", policy, "--log-format", "json"]  # fmt: skip
        if boot:
            argv += ["--bootstrap", boot]
        procs.start(f"entry{e}-{policy}", argv)
        boot = boot or f"/ip4/{host}/tcp/{p2p}/p2p/{pid}"
        entries.append(f"http://{host}:{http}")
        if e == 0:
            wait_until(lambda: get(f"{entries[0]}/v1/health"), 60, "entry up")
    ups = []
    for w, (name, speed) in enumerate(workers):
        up = procs.start(f"up-{name}-{policy}", [
            sys.executable, "-m", "opentela.testing.cost_upstream", "--port", "0", "--model", MODEL,
            "--slots", str(slots), "--speed", str(speed), "--prefill-ms-per-token", str(prefill_ms),
            "--decode-ms-per-token", str(decode_ms), "--cache-tokens", str(CACHE_TOKENS)])  # fmt: skip
        url = wait_for_line(up, "READY ", 30).split()[1]
        ups.append(url)
        host = f"127.0.1.{20 + w}"
        home, _ = init(f"{name}")
        procs.start(f"{name}-{policy}", [*NODE, "start", "--home", str(home), "--http-host", host,
                    "--http-port", str(free_port(host)), "--p2p-host", host, "--p2p-port", str(free_port(host)),
                    "--bootstrap", boot, "--backend", url, "--log-format", "json"])  # fmt: skip
    for entry in entries:
        wait_until(
            lambda entry=entry: any(m["id"] == MODEL and m["replicas"] == len(workers) for m in get(f"{entry}/v1/models")["data"]),
            60, "all replicas routable from every entry", poll_s=0.2,
        )  # fmt: skip
    return entries, ups


async def one(session: aiohttp.ClientSession, url: str, body: dict, out: list[dict]) -> None:
    t0 = time.perf_counter()
    ttft = None
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body) as r:
            if r.status != 200:
                out.append({"ok": False, "status": r.status})
                return
            async for chunk in r.content.iter_any():
                if ttft is None and b'"content"' in chunk:
                    ttft = time.perf_counter() - t0
        out.append(
            {
                "ok": True,
                "ttft": ttft,
                "e2e": time.perf_counter() - t0,
                "node": r.headers.get("X-Computing-Node"),
            }
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        out.append({"ok": False, "error": repr(exc)})


async def phase(
    entries: list[str], rate: float, seconds: float, seed: int
) -> tuple[list[dict], float]:
    rng = random.Random(seed)
    systems = [words(random.Random(1000 + i), SYSTEM_WORDS) for i in range(N_SYSTEM)]
    out: list[dict] = []
    tasks = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        start = time.perf_counter()
        t = 0.0
        while t < seconds:
            t += rng.expovariate(rate)
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = {
                "model": MODEL,
                "stream": True,
                "max_tokens": OUT_TOKENS,
                "messages": [
                    {"role": "system", "content": systems[rng.randrange(N_SYSTEM)]},
                    {"role": "user", "content": words(rng, USER_WORDS)},
                ],
            }
            tasks.append(asyncio.create_task(one(s, rng.choice(entries), body, out)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return out, elapsed


# -- the heterogeneous scenario (issue 13) -----------------------------------------------------

HETERO_WORKERS = [("fast", 4.0), ("slow", 1.0)]
HETERO_SLOTS = 8  # >= the clients: no backend queue, only the per-token speed differs
HETERO_CLIENTS = 8
HETERO_DECODE_MS = 10.0
HETERO_PREFILL_MS = 0.5
HETERO_BODY = {
    "model": MODEL,
    "stream": True,
    "max_tokens": OUT_TOKENS,
    "messages": [
        {"role": "system", "content": words(random.Random(7), 40)},  # 2.5 cache blocks
        {"role": "user", "content": "hello there, how are you today?"},
    ],
}


async def closed_loop(entries: list[str], n: int, clients: int, deadline_s: float) -> list[dict]:
    """``clients`` clients, each sending its next request when the last one ended, alternating
    entries, until ``n`` requests were sent or ``deadline_s`` passed."""
    out: list[dict] = []
    sent = 0
    stop_at = time.perf_counter() + deadline_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:

        async def client(c: int) -> None:
            nonlocal sent
            while sent < n and time.perf_counter() < stop_at:
                sent += 1
                await one(s, entries[(sent + c) % len(entries)], HETERO_BODY, out)

        await asyncio.gather(*(client(c) for c in range(clients)))
    return out


def own_key(tmp: Path, owner: str) -> None:
    """Identities for the two workers such that ``owner`` owns the prompt's key on the
    affinity ring: which replica that is decides what affinity does with one repeated prompt
    (a fast owner keeps it whatever the policy counts; a slow one is the case issue 13 hit),
    and fresh identities would pick it at random in every run."""
    key = prefix_key(HETERO_BODY, {})
    assert key is not None
    for _ in range(50):
        pids = {name: init_home(tmp / name)[1] for name, _ in HETERO_WORKERS}
        first = HashRing(pids.values()).walk(key)[0]
        if first == pids[owner]:
            return
        shutil.rmtree(tmp / ("fast" if owner == "slow" else "slow"))
    raise RuntimeError("no identity pair gave the wanted owner")


def run_hetero(args: argparse.Namespace) -> int:
    results = []
    for policy in args.policies.split(","):
        tmp = Path(tempfile.mkdtemp(prefix=f"otela-bench-h-{policy}-"))
        own_key(tmp, args.hetero_owner)
        with ProcessGroup(tmp / "logs", stop_timeout=10) as procs:
            entries, ups = start_pool(
                procs,
                tmp,
                policy,
                HETERO_WORKERS,
                HETERO_SLOTS,
                HETERO_PREFILL_MS,
                HETERO_DECODE_MS,
            )
            asyncio.run(closed_loop(entries, 2 * HETERO_CLIENTS, HETERO_CLIENTS, 30))  # warm-up
            before = [get(f"{u}/stats") for u in ups]
            out = asyncio.run(closed_loop(entries, args.hetero_requests, HETERO_CLIENTS, 120))
            after = [get(f"{u}/stats") for u in ups]
        ok = [r for r in out if r["ok"]]
        served = {
            name: a["requests"] - b["requests"]
            for (name, _), a, b in zip(HETERO_WORKERS, after, before, strict=True)
        }
        prompt = sum(
            a["prompt_tokens"] - b["prompt_tokens"] for a, b in zip(after, before, strict=True)
        )
        cached = sum(
            a["cached_tokens"] - b["cached_tokens"] for a, b in zip(after, before, strict=True)
        )
        row = {
            "policy": policy, "sent": len(out), "ok": len(ok), "served": served,
            "slow_share": served["slow"] / max(1, sum(served.values())),
            "ttft_p50": pct([r["ttft"] for r in ok if r["ttft"]], 50),
            "ttft_p99": pct([r["ttft"] for r in ok if r["ttft"]], 99),
            "e2e_p50": pct([r["e2e"] for r in ok], 50), "e2e_p99": pct([r["e2e"] for r in ok], 99),
            "hit_ratio": cached / prompt if prompt else 0.0,
        }  # fmt: skip
        results.append(row)
        print(
            f"{policy:12} slow share {row['slow_share']:.0%} ({served}), ttft p50/p99 "
            f"{row['ttft_p50'] * 1000:.0f}/{row['ttft_p99'] * 1000:.0f} ms, e2e p50/p99 "
            f"{row['e2e_p50'] * 1000:.0f}/{row['e2e_p99'] * 1000:.0f} ms, hit {row['hit_ratio']:.0%}, "
            f"errors {len(out) - len(ok)}",
            flush=True,
        )
    rand = next((r["slow_share"] for r in results if r["policy"] == "random"), None)
    print(
        "\n| policy | slow share | x random | TTFT p50 / p99 (ms) | E2E p50 / p99 (ms) | cache hit | fast / slow |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{r['slow_share'] / rand:.2f}" if rand else "-"
        print(
            f"| {r['policy']} | {r['slow_share']:.0%} | {ratio} | {r['ttft_p50'] * 1000:.0f} / {r['ttft_p99'] * 1000:.0f} | "
            f"{r['e2e_p50'] * 1000:.0f} / {r['e2e_p99'] * 1000:.0f} | {r['hit_ratio']:.0%} | {r['served']['fast']} / {r['served']['slow']} |"
        )
    out_path = Path(args.out or ".bench/routing-hetero.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"when": dt.datetime.now(dt.UTC).isoformat(), "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
                                    "scenario": "hetero", "owner": args.hetero_owner, "results": results}, indent=1))  # fmt: skip
    print(f"JSON: {out_path}")
    png = plot_hetero(results, args.hetero_owner, out_path.with_suffix(".png"))
    if png:
        print(f"PNG: {png}")
    return 0


# -- plots -------------------------------------------------------------------------------------

POLICY_COLORS = {"random": "#888888", "round-robin": "#4c72b0", "least-loaded": "#dd8452",
                 "affinity": "#55a868"}  # fmt: skip


def plot_mixed(results: list[dict], capacity: float, phase_s: float, png: Path) -> str | None:
    """TTFT p50 and p99 and the prefix-cache hit ratio against offered load, one line per
    policy: the table's 12 rows as the three curves a reader compares."""
    plt = _plots.pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for policy in dict.fromkeys(r["policy"] for r in results):
        rows = [r for r in results if r["policy"] == policy]
        xs = [r["load"] * 100 for r in rows]
        kw = {"marker": "o", "label": policy, "color": POLICY_COLORS.get(policy)}
        axes[0].plot(xs, [r["ttft_p50"] * 1000 for r in rows], **kw)
        axes[1].plot(xs, [r["ttft_p99"] * 1000 for r in rows], **kw)
        axes[2].plot(xs, [r["hit_ratio"] * 100 for r in rows], **kw)
    for ax, title, ylabel in (
        (axes[0], "TTFT p50 by policy", "TTFT p50 (ms)"),
        (axes[1], "TTFT p99 by policy", "TTFT p99 (ms, log scale)"),
        (axes[2], "prefix-cache hit ratio by policy", "% of prompt tokens served from cache"),
    ):
        ax.set_title(title)
        ax.set_xlabel(f"offered load, % of nominal capacity ({capacity:.1f} req/s)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    _plots.plain_log(axes[1], "y")
    axes[0].set_ylim(bottom=0)
    axes[2].set_ylim(0, 100)
    fig.suptitle(
        f"TTFT by routing policy: {', '.join(dict.fromkeys(r['policy'] for r in results))}; "
        f"4 workers (2 fast, 2 slow), 2 entries, {phase_s:g} s Poisson phases "
        f"({_plots.machine()})"
    )
    return _plots.save(plt, fig, png)


def plot_hetero(results: list[dict], owner: str, png: Path) -> str | None:
    """The slow replica's share of the requests per policy, against the target (0.6x random's),
    and TTFT p50/p99 per policy."""
    plt = _plots.pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [r["policy"] for r in results]
    colors = [POLICY_COLORS.get(n, "#4c72b0") for n in names]
    _plots.bars(axes[0], names, [r["slow_share"] * 100 for r in results], colors,
                f"1x replica's share of requests ({owner} replica owns the prompt)",
                fmt=lambda v: f"{v:.0f} %")  # fmt: skip
    rand = next((r["slow_share"] for r in results if r["policy"] == "random"), None)
    if rand is not None:
        axes[0].axhline(60 * rand, color="k", lw=0.8, ls=":", label="target: 0.6x random")
        axes[0].legend(fontsize=8)
    axes[0].set_ylabel("% of requests served by the 1x replica")
    axes[0].set_ylim(0, 100)
    _plots.grouped_bars(
        axes[1],
        names,
        {p: [r[f"ttft_{p}"] * 1000 for r in results] for p in ("p50", "p99")},
        fmt=lambda v: f"{v:.0f}",
    )
    axes[1].set_ylabel("TTFT (ms)")
    axes[1].set_title("TTFT by routing policy")
    fig.suptitle(
        f"heterogeneous replicas (4x vs 1x), {HETERO_CLIENTS} closed-loop clients, one prompt "
        f"({_plots.machine()})"
    )
    return _plots.save(plt, fig, png)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenario", choices=("mixed", "hetero"), default="mixed")
    ap.add_argument("--phase-s", type=float, default=20.0)
    ap.add_argument("--loads", default="0.5,0.8,0.95")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--hetero-requests", type=int, default=400)
    ap.add_argument(
        "--hetero-owner",
        choices=("slow", "fast"),
        default="slow",
        help="the replica that owns the repeated prompt on the affinity ring",
    )
    ap.add_argument("--out", default=None, help="default .bench/routing[-hetero].json")
    args = ap.parse_args()
    if args.scenario == "hetero":
        return run_hetero(args)
    cap = nominal_capacity()
    loads = [float(x) for x in args.loads.split(",")]
    results = []
    print(
        f"nominal pool capacity {cap:.1f} req/s (all cache misses); phases of {args.phase_s:.0f} s",
        flush=True,
    )
    for policy in args.policies.split(","):
        tmp = Path(tempfile.mkdtemp(prefix=f"otela-bench-r-{policy}-"))
        with ProcessGroup(tmp / "logs", stop_timeout=10) as procs:
            entries, ups = start_pool(procs, tmp, policy)
            for k, load in enumerate(loads):
                before = [get(f"{u}/stats") for u in ups]
                out, elapsed = asyncio.run(phase(entries, load * cap, args.phase_s, seed=k))
                after = [get(f"{u}/stats") for u in ups]
                ok = [r for r in out if r["ok"]]
                prompt = sum(
                    a["prompt_tokens"] - b["prompt_tokens"]
                    for a, b in zip(after, before, strict=True)
                )
                cached = sum(
                    a["cached_tokens"] - b["cached_tokens"]
                    for a, b in zip(after, before, strict=True)
                )
                per_worker = {
                    name: a["requests"] - b["requests"]
                    for (name, _), a, b in zip(WORKERS, after, before, strict=True)
                }
                row = {
                    "policy": policy, "load": load, "rate": load * cap, "sent": len(out), "ok": len(ok),
                    "ttft_p50": pct([r["ttft"] for r in ok if r["ttft"]], 50),
                    "ttft_p99": pct([r["ttft"] for r in ok if r["ttft"]], 99),
                    "e2e_p50": pct([r["e2e"] for r in ok], 50), "e2e_p99": pct([r["e2e"] for r in ok], 99),
                    "throughput": len(ok) / elapsed, "hit_ratio": cached / prompt if prompt else 0.0,
                    "per_worker": per_worker,
                }  # fmt: skip
                results.append(row)
                print(
                    f"{policy:12} load {load:.0%}: ttft p50/p99 {row['ttft_p50'] * 1000:.0f}/{row['ttft_p99'] * 1000:.0f} ms, "
                    f"e2e p50/p99 {row['e2e_p50'] * 1000:.0f}/{row['e2e_p99'] * 1000:.0f} ms, {row['throughput']:.1f} req/s, "
                    f"hit {row['hit_ratio']:.0%}, errors {len(out) - len(ok)}, per worker {per_worker}",
                    flush=True,
                )
    print(
        "\n| policy | load | TTFT p50 / p99 (ms) | E2E p50 / p99 (ms) | req/s | cache hit | fast1 / fast2 / slow1 / slow2 |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        w = r["per_worker"]
        print(
            f"| {r['policy']} | {r['load']:.0%} | {r['ttft_p50'] * 1000:.0f} / {r['ttft_p99'] * 1000:.0f} | "
            f"{r['e2e_p50'] * 1000:.0f} / {r['e2e_p99'] * 1000:.0f} | {r['throughput']:.1f} | {r['hit_ratio']:.0%} | "
            f"{w['fast1']} / {w['fast2']} / {w['slow1']} / {w['slow2']} |"
        )
    out = Path(args.out or ".bench/routing.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"when": dt.datetime.now(dt.UTC).isoformat(), "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
                               "capacity": cap, "phase_s": args.phase_s, "results": results}, indent=1))  # fmt: skip
    print(f"JSON: {out}")
    png = plot_mixed(results, cap, args.phase_s, out.with_suffix(".png"))
    if png:
        print(f"PNG: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
