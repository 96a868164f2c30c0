#!/usr/bin/env python3
"""Real-model benchmark: streaming TTFT, inter-token latency and tokens/s, DIRECT against one
llama.cpp server vs through the overlay (client -> entry node -> libp2p -> worker node -> the
same server), same run, same prompts, interleaved request by request.

Starts (all on 127.0.0.1): a llama.cpp server on the bundled SmolLM2-135M GGUF, an entry node
and a worker node fronting that server. temperature=0 and a fixed max_tokens make DIRECT and
OVERLAY generate the same tokens, so the difference is the overlay's. Bounded: --requests per
target at c=1, then a --window-s closed-loop phase at c=--concurrency per target.

On this 2-core machine the model, both nodes and the client share the CPU: decode speed is the
model's, so the interesting numbers are the *added* TTFT and ITL.

    .venv/bin/python scripts/bench_llm.py [--requests 24] [--max-tokens 64] [--out .bench/llm.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

import _plots
from _procs import ProcessGroup, free_port, wait_until

from opentela.demo import DEFAULT_ALIAS, bundled_model, llama_server_command

PROMPTS = [
    "Explain what a hash table is.",
    "Write a haiku about the sea.",
    "List three uses of copper.",
    "Why is the sky blue?",
    "Describe a cat to someone who has never seen one.",
    "Give me a recipe for pancakes.",
    "What is the capital of France and why is it famous?",
    "Summarise the plot of Hamlet.",
]


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


async def stream_once(
    session: aiohttp.ClientSession, base: str, prompt: str, max_tokens: int
) -> dict[str, float]:
    body = {
        "model": DEFAULT_ALIAS,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    t0 = time.perf_counter()
    stamps: list[float] = []
    async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        buf = b""
        async for chunk in resp.content.iter_any():
            now = time.perf_counter()
            buf += chunk
            *events, buf = buf.split(b"\n\n")
            for ev in events:
                line = ev.strip()
                if not line.startswith(b"data:") or line.endswith(b"[DONE]"):
                    continue
                data = json.loads(line[5:])
                choices = data.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    stamps.append(now)
    if not stamps:
        raise RuntimeError("stream carried no tokens")
    itl = [b - a for a, b in itertools.pairwise(stamps)]
    decode = stamps[-1] - stamps[0]
    return {
        "ttft": stamps[0] - t0,
        "itl": itl,
        "tokens": len(stamps),
        "tok_s": (len(stamps) - 1) / decode if decode > 0 else float("nan"),
        "total": stamps[-1] - t0,
    }


async def closed_loop(base: str, concurrency: int, window_s: float, max_tokens: int) -> dict:
    tokens = 0
    done = 0
    errors = 0
    end = time.monotonic() + window_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:

        async def worker(i: int) -> None:
            nonlocal tokens, done, errors
            j = i
            while time.monotonic() < end:
                try:
                    r = await stream_once(s, base, PROMPTS[j % len(PROMPTS)], max_tokens)
                    if time.monotonic() <= end:
                        tokens += r["tokens"]
                        done += 1
                except Exception:
                    errors += 1
                j += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = min(time.monotonic(), end) - t0
    return {"tokens_per_s": tokens / elapsed, "requests": done, "errors": errors}


async def measure(direct: str, overlay: str, args: argparse.Namespace) -> dict:
    out: dict = {"direct": [], "overlay": []}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        for base in (direct, overlay):  # warm-up: prompt cache and connections
            await stream_once(s, base, PROMPTS[0], 8)
        for i in range(args.requests):
            order = [("direct", direct), ("overlay", overlay)]
            if i % 2:
                order.reverse()
            for name, base in order:
                # A unique opening per request: llama.cpp reuses the previous request's prompt
                # prefix, so without it whichever target went second would skip its prefill.
                prompt = f"Request {i}-{name}. {PROMPTS[i % len(PROMPTS)]}"
                out[name].append(await stream_once(s, base, prompt, args.max_tokens))
    loops = {}
    for name, base in (("direct", direct), ("overlay", overlay)):
        loops[name] = await closed_loop(base, args.concurrency, args.window_s, args.max_tokens)
    return {"c1": out, "loop": loops}


def summarise(runs: list[dict]) -> dict[str, float]:
    itl = [x for r in runs for x in r["itl"]]
    return {
        "ttft_p50_ms": pct([r["ttft"] for r in runs], 50) * 1000,
        "ttft_p99_ms": pct([r["ttft"] for r in runs], 99) * 1000,
        "itl_p50_ms": pct(itl, 50) * 1000,
        "itl_p99_ms": pct(itl, 99) * 1000,
        "tok_s_p50": statistics.median(r["tok_s"] for r in runs),
        "tokens_mean": statistics.mean(r["tokens"] for r in runs),
    }


def plot(doc: dict, png: Path) -> str | None:
    """TTFT and inter-token latency CDFs, DIRECT vs OVERLAY, and the tokens/s: at this model
    size the overlay's cost is within prefill noise, which reads best as curves on top of each
    other."""
    plt = _plots.pyplot()
    if plt is None:
        return None
    raw, a = doc["raw"], doc["args"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    colors = {"direct": "#4c72b0", "overlay": "#dd8452"}
    for name, runs in raw.items():
        ttft = [r["ttft"] * 1000 for r in runs]
        _plots.cdf(axes[0], ttft, name.upper(), unit="ms", color=colors[name])
        itl = [x * 1000 for r in runs for x in r["itl"]]
        _plots.cdf(axes[1], itl, name.upper(), unit="ms", color=colors[name])
    _plots.cdf_axes(
        axes[0],
        "TTFT (ms)",
        f"time to first token, c=1, DIRECT vs OVERLAY\n({a['requests']} interleaved requests each)",
        ylabel="fraction of requests <= x",
    )
    _plots.cdf_axes(
        axes[1],
        "inter-token latency (ms, log scale)",
        "inter-token latency, c=1, DIRECT vs OVERLAY",
        log=True,
        ylabel="fraction of token gaps <= x",
    )
    _plots.grouped_bars(
        axes[2],
        ["c=1 decode p50", f"c={a['concurrency']} closed loop"],
        {
            n.upper(): [doc[n]["tok_s_p50"], doc["closed_loop"][n]["tokens_per_s"]]
            for n in ("direct", "overlay")
        },
        [colors["direct"], colors["overlay"]],
        fmt=lambda v: f"{v:.1f}",
    )
    axes[2].set_ylabel("tokens/s")
    axes[2].set_title("decode throughput, DIRECT vs OVERLAY")
    fig.suptitle(
        f"SmolLM2-135M on llama.cpp, direct vs through the overlay, {a['max_tokens']} tokens "
        f"({doc['machine']['nproc']} cores, same run)"
    )
    return _plots.save(plt, fig, png)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=24, help="c=1 requests per target")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--window-s", type=float, default=15.0)
    ap.add_argument("--out", default=".bench/llm.json")
    args = ap.parse_args()
    node = [sys.executable, "-m", "opentela.cli"]
    tmp = Path(tempfile.mkdtemp(prefix="otela-bench-llm-"))
    with ProcessGroup(tmp / "logs", stop_timeout=15) as procs:
        port = free_port()
        threads = max(1, (os.cpu_count() or 2) - 1)
        llama = procs.start(
            "llama",
            shlex.split(
                llama_server_command(bundled_model(), DEFAULT_ALIAS, port, threads)
            ),  # no shell: stop reaches the server
        )
        direct = f"http://127.0.0.1:{port}"
        wait_until(lambda: _get(f"{direct}/v1/models"), 180, "llama.cpp server", procs=[llama])
        entry_home, worker_home = tmp / "entry", tmp / "worker"
        import subprocess

        subprocess.run([*node, "init", "--home", str(entry_home)], check=True, capture_output=True)
        entry_id = subprocess.run(
            [*node, "peer-id", "--home", str(entry_home)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        http_e, p2p_e = free_port(), free_port()
        common = ["--http-host", "127.0.0.1", "--p2p-host", "127.0.0.1", "--log-format", "json"]
        entry = procs.start(
            "entry",
            [
                *node,
                "start",
                "--home",
                str(entry_home),
                "--http-port",
                str(http_e),
                "--p2p-port",
                str(p2p_e),
                *common,
            ],
        )
        worker = procs.start(
            "worker",
            [*node, "start", "--home", str(worker_home), "--http-port", str(free_port()), "--p2p-port", str(free_port()),
             "--bootstrap", f"/ip4/127.0.0.1/tcp/{p2p_e}/p2p/{entry_id}", "--service.name", "llm",
             "--service.port", str(port), *common],
        )  # fmt: skip
        overlay = f"http://127.0.0.1:{http_e}"
        wait_until(
            lambda: any(m["id"] == DEFAULT_ALIAS for m in _get(f"{overlay}/v1/models")["data"]),
            60,
            "model routable through the entry node",
            procs=[entry, worker],
        )
        result = asyncio.run(measure(direct, overlay, args))
    d, o = summarise(result["c1"]["direct"]), summarise(result["c1"]["overlay"])
    rows = [
        ("TTFT p50 (ms)", d["ttft_p50_ms"], o["ttft_p50_ms"]),
        ("TTFT p99 (ms)", d["ttft_p99_ms"], o["ttft_p99_ms"]),
        ("ITL p50 (ms)", d["itl_p50_ms"], o["itl_p50_ms"]),
        ("ITL p99 (ms)", d["itl_p99_ms"], o["itl_p99_ms"]),
        ("decode tok/s c=1 p50", d["tok_s_p50"], o["tok_s_p50"]),
        (
            f"tok/s c={args.concurrency} (closed loop)",
            result["loop"]["direct"]["tokens_per_s"],
            result["loop"]["overlay"]["tokens_per_s"],
        ),
    ]
    print(
        f"\nSmolLM2-135M on llama.cpp, {args.requests} requests x {args.max_tokens} tokens per target, nproc={os.cpu_count()}"
    )
    print(f"| {'metric':32} | {'direct':>9} | {'overlay':>9} | {'added':>9} |")
    print(f"|{'-' * 34}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
    for name, a, b in rows:
        print(f"| {name:32} | {a:9.2f} | {b:9.2f} | {b - a:+9.2f} |")
    errors = result["loop"]["direct"]["errors"] + result["loop"]["overlay"]["errors"]
    print(f"closed-loop errors: {errors}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "when": dt.datetime.now(dt.UTC).isoformat(),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
        "args": vars(args),
        "direct": d,
        "overlay": o,
        "closed_loop": result["loop"],
        "raw": result["c1"],
    }
    out.write_text(json.dumps(doc, indent=1))
    print(f"JSON: {out}")
    png = plot(doc, out.with_suffix(".png"))
    if png:
        print(f"PNG: {png}")
    return 0


def _get(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


if __name__ == "__main__":
    sys.exit(main())
