#!/usr/bin/env python3
"""Overlay overhead benchmark: the two-node path against a direct call and against the single-hop
Python proxy a user would run instead, in one run, on the same fast fake upstream.

Targets (columns of the tables):

* DIRECT: client -> upstream.
* PROXY: client -> ``scripts/proxy_aiohttp.py`` (one aiohttp hop, keep-alive, streamed) ->
  upstream. The yardstick of issue 12: every target below is a ratio to it in the same run.
* OVERLAY: client -> entry node -> libp2p -> worker node -> upstream. ``--entry-arg`` /
  ``--worker-arg`` (repeatable, write ``--entry-arg=--flag=value``) pass extra flags to them.
* OVERLAY-W<N> (only with ``--http-workers N``, N > 1): a second entry+worker pair whose entry
  also gets ``--http-workers N``; a node without that flag fails startup with a clear message.

What it starts (all on 127.0.0.1, free ports, temp home dirs, logs in a temp dir):
``python -m opentela.testing.fake_upstream --model bench --tokens 16 --token-delay-ms 0``, the
proxy, and the node pair(s). It waits (polling with deadlines) until each entry's ``/v1/models``
lists ``bench`` and a chat completion through it succeeds. Then:

1. c=1 warm-up of every target, then an **idle window** (``--idle-s``): CPU % of a core of each
   process tree (node, proxy, upstream) and its memory (root RSS; RSS and PSS summed over the
   tree when a node has worker processes).
2. Per repetition (``--reps``; medians of the per-repetition figures are reported, ratios are the
   median of the per-repetition ratios, so drift between repetitions cancels):

   a. c=1 non-streaming chat latency p50/p99, targets interleaved one request at a time (the
      order rotates every round), each on its own keep-alive ``aiohttp`` session. "Added" is a
      target's p50 minus DIRECT's p50 of the same repetition.
   b. c=1 streaming TTFT (first body chunk holding ``data:``), interleaved the same way.
   c. c=64 load with **wrk** (C, ``-t1 -c64``, POST from a Lua script generated into the temp
      dir), per target a discarded warm-up then ``--window-s``. Requests/s count completed 2xx
      answers. During the window the CPU seconds of all processes of each router are read
      (PROXY: the proxy; OVERLAY: entry + worker, with their descendants), giving **CPU s per
      1,000 requests**. Without ``wrk`` on PATH this is said on stdout and the Python closed loop
      (``--py-load``, below) takes its place.
   d. **64 concurrent streams x 256 chunks** (``--streams``, ``--stream-chunks``; the fake honours
      ``max_tokens`` per request): after a warm-up round that opens the 64 connections, 64
      workers each stream back to back for ``--window-s`` (one batch lasts ~0.1 s against this
      upstream, too short to time); chunks/s = SSE ``data:`` events (without ``[DONE]``) that
      arrived inside the window / the window.
   e. with ``--py-load`` (or when wrk is missing): the former c=64 closed loop from one Python
      aiohttp client (64 coroutines, back-to-back requests, only answers inside the window count).
3. RSS of every process: at ready, idle, sampled peak during the load phases, after load.
4. ``--profile``: after the measured repetitions, an extra wrk window per overlay target with
   ``py-spy record`` attached to each node (``--subprocesses``); writes
   ``.bench/profile-<target>-<node>.<ext>`` (``--profile-format speedscope`` (default, open in
   https://www.speedscope.app), ``flamegraph`` (SVG) or ``raw`` (collapsed stacks)) and, for
   speedscope and raw, a text summary ``.txt`` beside it: self and inclusive time by function and
   self time by package. The profiled window's req/s is reported apart: sampling slows the nodes.

Targets (issue 12, all ratios within this run): c=1 added p50 OVERLAY <= 2.5x PROXY's; wrk c=64
req/s OVERLAY >= 0.6x PROXY (OVERLAY-W<N> >= 1.2x PROXY); chunks/s OVERLAY >= 0.9x PROXY; CPU s
per 1,000 requests OVERLAY <= 3x PROXY; idle CPU <= 0.5 % of a core and idle RSS <= 70 MB per
node. Every figure is printed, met or not; ``--fail-on-miss`` makes a miss exit 1.

Caveats: on a 2-core machine the load generator, the upstream and the router processes compete
for the cores, so absolute numbers are machine-bound; compare the ratios of one run. The Python
client (c=1, streams) costs the same in every column, so "added" cancels it; DIRECT's stream
figure is bound by that client.

Output: tables on stdout, JSON (``--out``, default ``.bench/overhead.json``) with every raw
sample, and PNG plots beside it when matplotlib (the ``bench`` extra) is installed.

Usage::

    .venv/bin/python scripts/bench_overhead.py --quick
    .venv/bin/python scripts/bench_overhead.py                      # 3 repetitions
    .venv/bin/python scripts/bench_overhead.py --quick --profile    # + py-spy of the nodes
    .venv/bin/python scripts/bench_overhead.py --http-workers 2     # + OVERLAY-W2
    .venv/bin/python scripts/bench_overhead.py --entry-arg=--log-level=warning
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _plots
from _procs import (
    ManagedProcess,
    ProcessGroup,
    StartupError,
    free_port,
    node_bin,
    peak_rss_mb,
    rss_mb,
    sigterm_as_keyboard_interrupt,
    tree_cpu_seconds,
    tree_memory_mb,
    wait_for_line,
    wait_until,
)

MODEL = "bench"
TOKENS = 16
HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
JSON_HEADERS = {"Content-Type": "application/json"}
MESSAGES = [{"role": "user", "content": "Say something short."}]
CHAT_BODY = json.dumps({"model": MODEL, "messages": MESSAGES}, separators=(",", ":")).encode()
STREAM_BODY = json.dumps(
    {"model": MODEL, "messages": MESSAGES, "stream": True}, separators=(",", ":")
).encode()
PROXY_SCRIPT = Path(__file__).resolve().parent / "proxy_aiohttp.py"

# Issue 12 targets, ratios within one run.
TARGET_ADDED_P50_X_PROXY = 2.5  # overlay added p50 <= 2.5 x proxy added p50
TARGET_WRK_X_PROXY = 0.6  # overlay req/s >= 0.6 x proxy
TARGET_WRK_WORKERS_X_PROXY = 1.2  # with --http-workers: >= 2 x 0.6
TARGET_CHUNKS_X_PROXY = 0.9  # overlay chunks/s >= 0.9 x proxy
TARGET_CPU_X_PROXY = 3.0  # overlay CPU s / 1000 req <= 3 x proxy
TARGET_IDLE_CPU_PCT = 0.5  # per node, % of one core
TARGET_IDLE_RSS_MB = 70.0  # per node

# A plain opener that ignores http_proxy & co: everything here is loopback.
_URL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- small utilities ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return None
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": (sum(values) / len(values)) if values else None,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def http_json(url: str, body: bytes | None = None, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, data=body, headers=JSON_HEADERS if body else {})
    with _URL.open(req, timeout=timeout) as r:
        return json.loads(r.read())


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "platform": platform.platform(),
        "aiohttp": aiohttp.__version__,
    }
    if hasattr(os, "sched_getaffinity"):
        info["nproc_affinity"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_mb"] = round(int(f.readline().split()[1]) / 1024)
    except (OSError, ValueError, IndexError):
        pass
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = os.getloadavg()
    try:
        from opentela import __version__ as otela_version

        info["opentela"] = otela_version
    except Exception:
        pass
    return info


def tool_bin(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


# -- targets and their processes -----------------------------------------------------------------


@dataclass
class Target:
    """One thing the client talks to, and the processes whose CPU is its cost."""

    key: str  # json key: direct, proxy, overlay, overlay_w2
    label: str  # table column: DIRECT, PROXY, OVERLAY, OVERLAY-W2
    url: str  # base URL
    routers: dict[str, int]  # process name -> pid (process trees); empty for DIRECT
    is_overlay: bool = False

    @property
    def chat_url(self) -> str:
        return self.url + CHAT_PATH


class CpuMeter:
    """CPU seconds of named process trees between two readings."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids

    def read(self) -> dict[str, float | None]:
        return {k: tree_cpu_seconds(p) for k, p in self.pids.items()}

    @staticmethod
    def delta(a: dict[str, float | None], b: dict[str, float | None]) -> dict[str, float | None]:
        return {
            k: (None if a.get(k) is None or b.get(k) is None else b[k] - a[k])  # type: ignore[operator]
            for k in b
        }


class RssSampler:
    """Background thread sampling RSS of some PIDs; keeps the max per name."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.05):
        self.pids = pids
        self.interval_s = interval_s
        self.peak: dict[str, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                v = rss_mb(pid)
                if v is not None and v > self.peak.get(name, 0.0):
                    self.peak[name] = v
            self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def rss_snapshot(pids: dict[str, int]) -> dict[str, float | None]:
    return {name: _r(rss_mb(pid)) for name, pid in pids.items()}


# -- client measurements --------------------------------------------------------------------------


def new_session(limit: int, timeout_s: float) -> aiohttp.ClientSession:
    conn = aiohttp.TCPConnector(
        limit=limit, limit_per_host=limit, force_close=False, ttl_dns_cache=None
    )
    return aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout_s))


async def one_chat(session: aiohttp.ClientSession, url: str) -> tuple[float, int, int]:
    """Return (seconds, status, body bytes)."""
    t0 = time.perf_counter()
    async with session.post(url, data=CHAT_BODY, headers=JSON_HEADERS) as r:
        data = await r.read()
        status = r.status
    return time.perf_counter() - t0, status, len(data)


async def one_stream(
    session: aiohttp.ClientSession, url: str, body: bytes = STREAM_BODY
) -> tuple[float | None, float, int, bool, int]:
    """Return (ttft seconds, total seconds, status, saw [DONE], SSE ``data:`` events)."""
    t0 = time.perf_counter()
    ttft: float | None = None
    events = 0
    carry = b""  # last 4 bytes: a ``data:`` split across two chunks is counted exactly once
    tail = b""
    async with session.post(url, data=body, headers=JSON_HEADERS) as r:
        status = r.status
        async for chunk in r.content.iter_any():
            buf = carry + chunk
            n = buf.count(b"data:")
            if n and ttft is None:
                ttft = time.perf_counter() - t0
            events += n
            carry = buf[-4:]
            tail = (tail + chunk)[-64:]
    total = time.perf_counter() - t0
    return ttft, total, status, b"[DONE]" in tail, events


@dataclass
class C1Result:
    lat_ms: dict[str, list[float]]
    extra_ms: dict[str, list[float]]
    errors: dict[str, collections.Counter[str]]
    rounds: int = 0
    elapsed_s: float = 0.0
    stopped_by_time: bool = False


async def c1_interleaved(
    urls: dict[str, str],
    sessions: dict[str, aiohttp.ClientSession],
    n: int,
    warmup: int,
    budget_s: float,
    stream: bool,
) -> C1Result:
    """One request per target per round, the order rotating each round. Bounded by n and
    budget_s."""
    names = list(urls)
    res = C1Result(
        {k: [] for k in names}, {k: [] for k in names}, {k: collections.Counter() for k in names}
    )
    t_start = time.perf_counter()
    deadline = t_start + budget_s
    for i in range(warmup + n):
        if time.perf_counter() >= deadline:
            res.stopped_by_time = True
            break
        k = i % len(names)
        for name in names[k:] + names[:k]:
            try:
                if stream:
                    ttft, total, status, done, _ = await one_stream(sessions[name], urls[name])
                    ok = status == 200 and ttft is not None and done
                    err = None if ok else f"status={status} ttft={'y' if ttft else 'n'} done={done}"
                    val, extra = ttft, total
                else:
                    secs, status, nbytes = await one_chat(sessions[name], urls[name])
                    ok = status == 200 and nbytes > 0
                    err = None if ok else f"status={status}"
                    val, extra = secs, None
            except (TimeoutError, aiohttp.ClientError) as exc:
                ok, err, val, extra = False, type(exc).__name__, None, None
            if i < warmup:
                continue
            if ok and val is not None:
                res.lat_ms[name].append(val * 1000.0)
                if extra is not None:
                    res.extra_ms[name].append(extra * 1000.0)
            else:
                res.errors[name][err or "unknown"] += 1
        if i >= warmup:
            res.rounds += 1
    res.elapsed_s = time.perf_counter() - t_start
    return res


@dataclass
class LoadResult:
    concurrency: int
    window_s: float
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    late: int = 0  # completed after the window closed (not counted)
    issued: int = 0
    capped: bool = False
    lat_ms: list[float] = field(default_factory=list)
    per_s: list[int] = field(default_factory=list)  # ok answers completed in each second
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    client_cpu_s: float = 0.0
    wall_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.ok / self.window_s if self.window_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


async def closed_loop(
    url: str,
    concurrency: int,
    window_s: float,
    max_requests: int,
    req_timeout_s: float,
    grace_s: float,
    meter: CpuMeter | None = None,
) -> LoadResult:
    """``concurrency`` workers, each issuing back-to-back requests until the window closes or
    ``max_requests`` were issued in total. Answers finishing after the window are not counted."""
    res = LoadResult(concurrency, window_s)
    session = new_session(concurrency, req_timeout_s)
    tasks: list[asyncio.Task[None]] = []
    try:
        cpu0 = meter.read() if meter else {}
        pc0 = time.process_time()
        t_start = time.perf_counter()
        deadline = t_start + window_s

        async def worker() -> None:
            while res.issued < max_requests:
                if time.perf_counter() >= deadline:
                    return
                res.issued += 1
                t0 = time.perf_counter()
                err: str | None = None
                try:
                    async with session.post(url, data=CHAT_BODY, headers=JSON_HEADERS) as r:
                        data = await r.read()
                        if r.status != 200 or not data:
                            err = f"status={r.status}"
                except (TimeoutError, aiohttp.ClientError) as exc:
                    err = type(exc).__name__
                t1 = time.perf_counter()
                if t1 > deadline:
                    res.late += 1
                elif err is None:
                    res.ok += 1
                    res.lat_ms.append((t1 - t0) * 1000.0)
                    sec = int(t1 - t_start)
                    while len(res.per_s) <= sec:
                        res.per_s.append(0)
                    res.per_s[sec] += 1
                else:
                    res.errors[err] += 1
            res.capped = True

        tasks.extend(asyncio.create_task(worker()) for _ in range(concurrency))
        done, pending = await asyncio.wait(tasks, timeout=window_s + req_timeout_s + grace_s)
        for t in pending:
            t.cancel()
        if pending:
            res.errors["hung_at_end"] += len(pending)
            await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            if t.exception() is not None:
                res.errors[f"worker_crash:{type(t.exception()).__name__}"] += 1
        res.wall_s = time.perf_counter() - t_start
        res.client_cpu_s = time.process_time() - pc0
        if meter:
            res.cpu_s = CpuMeter.delta(cpu0, meter.read())
    finally:
        # On cancellation (Ctrl-C) stop the workers before closing the session they use.
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
    return res


async def stream_load(
    url: str, streams: int, chunks: int, window_s: float, timeout_s: float, meter: CpuMeter
) -> dict[str, Any]:
    """``streams`` concurrent streams of ``chunks`` tokens each, kept up for ``window_s``: each
    of ``streams`` workers starts its next stream as soon as one ends (a single batch of 64 x 256
    lasts ~0.1 s against a fast upstream, too short to measure). chunks/s counts the SSE
    ``data:`` events (without ``[DONE]``) that arrived inside the window; streams still open at
    the end finish but their later events do not count. A warm-up round opens the
    connections first."""
    body = json.dumps(
        {"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": chunks},
        separators=(",", ":"),
    ).encode()
    warm = json.dumps(
        {"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": 2},
        separators=(",", ":"),
    ).encode()
    errors: collections.Counter[str] = collections.Counter()
    ttfts: list[float] = []
    counted = 0  # events inside the window
    started = complete = 0
    session = new_session(streams, timeout_s)
    try:
        await asyncio.gather(
            *(one_stream(session, url, warm) for _ in range(streams)), return_exceptions=True
        )
        cpu0 = meter.read()
        t0 = time.perf_counter()
        deadline = t0 + window_s

        async def one(body: bytes) -> None:
            nonlocal counted, started, complete
            started += 1
            ts = time.perf_counter()
            n, ttft, carry, tail, status = 0, None, b"", b"", 0
            try:
                async with session.post(url, data=body, headers=JSON_HEADERS) as r:
                    status = r.status
                    async for chunk in r.content.iter_any():
                        buf = carry + chunk
                        k = buf.count(b"data:")
                        now = time.perf_counter()
                        if k and ttft is None:
                            ttft = now - ts
                        if now <= deadline:
                            counted += k - (1 if b"[DONE]" in buf else 0)
                        n += k
                        carry, tail = buf[-4:], (tail + chunk)[-64:]
            except (TimeoutError, aiohttp.ClientError) as exc:
                errors[type(exc).__name__] += 1
                return
            done = b"[DONE]" in tail
            if status != 200 or not done:
                errors[f"status={status} done={done}"] += 1
            elif n - 1 >= chunks:
                complete += 1
            if ttft is not None:
                ttfts.append(ttft * 1000.0)

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one(body)

        await asyncio.gather(*(worker() for _ in range(streams)))
        wall = time.perf_counter() - t0
        cpu = CpuMeter.delta(cpu0, meter.read())
    finally:
        await session.close()
    return {
        "streams": streams,
        "chunks_per_stream": chunks,
        "window_s": window_s,
        "wall_s": wall,
        "streams_started": started,
        "complete_streams": complete,
        "events_in_window": counted,
        "chunks_per_s": counted / window_s if window_s > 0 else None,
        "errors": dict(errors),
        "ttft_ms": summary(ttfts),
        "cpu_s": {k: _r(v, 3) for k, v in cpu.items()},
    }


# -- wrk -----------------------------------------------------------------------------------------

# summary.requests counts every completed answer; errors.status the non-2xx/3xx among them.
WRK_LUA = """-- generated by scripts/bench_overhead.py
wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,'
    .. '"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,'
    .. '"p50_us":%%.1f,"p90_us":%%.1f,"p99_us":%%.1f,"mean_us":%%.1f,"max_us":%%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def write_wrk_lua(tmp: Path) -> Path:
    path = tmp / "chat.lua"
    path.write_text(WRK_LUA % CHAT_BODY.decode())
    return path


def run_wrk(
    wrk: str,
    lua: Path,
    url: str,
    conns: int,
    threads: int,
    duration_s: int,
    timeout_s: float,
    meter: CpuMeter | None = None,
) -> dict[str, Any]:
    """One wrk run; CPU of the router processes read right before and after it."""
    argv = [
        wrk,
        f"-c{conns}",
        f"-t{threads}",
        f"-d{duration_s}s",
        f"--timeout={max(1, int(timeout_s))}s",
        "-s",
        str(lua),
        url,
    ]
    cpu0 = meter.read() if meter else {}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=duration_s + timeout_s + 30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"wrk did not run: {exc}"}
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = CpuMeter.delta(cpu0, meter.read()) if meter else {}
    line = next((x for x in p.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if p.returncode != 0 or line is None:
        return {"error": f"wrk exited {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"}
    w = json.loads(line.split(" ", 1)[1])
    secs = w["duration_us"] / 1e6
    ok = w["requests"] - w["status"]
    router_cpu = [v for v in cpu.values() if v is not None]
    return {
        "argv": argv[1:],
        "requests": w["requests"],
        "ok": ok,
        "duration_s": secs,
        "wall_s": wall,
        "rps": ok / secs if secs > 0 else None,
        "errors": {k: w[k] for k in ("connect", "read", "write", "status", "timeout") if w[k]},
        "latency_ms": {
            k[:-3]: w[k] / 1000.0 for k in w if k.endswith("_us") and k != "duration_us"
        },
        "cpu_s": {k: _r(v, 3) for k, v in cpu.items()},
        "router_cpu_s": sum(router_cpu) if cpu and len(router_cpu) == len(cpu) else None,
        "cpu_s_per_1000": (
            sum(router_cpu) / ok * 1000.0 if cpu and len(router_cpu) == len(cpu) and ok else None
        ),
        "wrk_cpu_s": round((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), 3),
    }


# -- py-spy -------------------------------------------------------------------------------------

PROFILE_EXT = {"speedscope": "speedscope.json", "flamegraph": "svg", "raw": "txt"}


def _frame_package(filename: str) -> str:
    """A coarse owner for a frame's file: the site-packages distribution, opentela/<sub>, or the
    stdlib module."""
    f = filename.replace("\\", "/")
    if "site-packages/" in f:
        return f.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/opentela/" in f:
        parts = f.split("/opentela/", 1)[1].split("/")
        return "opentela/" + (parts[0].removesuffix(".py") if parts else "")
    m = re.search(r"/lib/python3\.\d+/([^/]+)", f)
    if m:
        return "stdlib:" + m.group(1).removesuffix(".py")
    return f or "<native>"


def summarize_profile(
    path: Path, fmt: str, rate_hz: float, secs: float, top: int = 60
) -> dict[str, Any] | None:
    """Shares of the samples by function (self and inclusive) and by package (self), and the
    samples per thread (busy % = samples / (rate x seconds)), from a py-spy speedscope or raw
    (collapsed stacks) file. Shares are of all non-idle samples of the process tree."""
    stacks: list[tuple[str, list[tuple[str, str]]]] = []  # (thread, [(function, file)] root->leaf)
    try:
        if fmt == "speedscope":
            doc = json.loads(path.read_text())
            frames = [(f.get("name", "?"), f.get("file") or "") for f in doc["shared"]["frames"]]
            for prof in doc["profiles"]:
                thread = str(prof.get("name", "?"))
                stacks.extend((thread, [frames[i] for i in sample]) for sample in prof["samples"])
        elif fmt == "raw":
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack:
                    continue
                fr = []
                for part in stack.split(";"):
                    name, _, rest = part.partition(" (")
                    fr.append((name, rest.rsplit(":", 1)[0].rstrip(")")))
                stacks.extend(("all threads", fr) for _ in range(int(count)))
        else:
            return None
    except (OSError, ValueError, KeyError, IndexError) as exc:
        return {"error": repr(exc)}
    # py-spy --subprocesses puts a 'process PID:"cmdline"' frame at the root of each stack.
    stacks = [(t, [f for f in fr if not f[0].startswith("process ")]) for t, fr in stacks]
    total = len(stacks)
    if not total:
        return {"samples": 0}
    threads: collections.Counter[str] = collections.Counter(t for t, _ in stacks)
    self_fn: collections.Counter[str] = collections.Counter()
    incl_fn: collections.Counter[str] = collections.Counter()
    self_pkg: collections.Counter[str] = collections.Counter()
    for _, fr in stacks:
        if not fr:
            continue
        name, file = fr[-1]
        self_fn[f"{name} ({_short(file)})"] += 1
        self_pkg[_frame_package(file)] += 1
        for key in {f"{n} ({_short(f)})" for n, f in fr}:
            incl_fn[key] += 1

    def pct(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 2)) for k, v in c.most_common(top)]

    return {
        "samples": total,
        "threads": [
            {"thread": t, "samples": n, "busy_pct": round(100.0 * n / (rate_hz * secs), 1)}
            for t, n in threads.most_common()
        ],
        "self_by_package_pct": pct(self_pkg),
        "self_by_function_pct": pct(self_fn),
        "inclusive_by_function_pct": pct(incl_fn),
    }


def _short(file: str) -> str:
    f = file.replace("\\", "/")
    if "site-packages/" in f:
        return f.split("site-packages/", 1)[1]
    if "/opentela/" in f:
        return "opentela/" + f.split("/opentela/", 1)[1]
    m = re.search(r"/lib/python3\.\d+/(.*)", f)
    return m.group(1) if m else f


def write_profile_summary(path: Path, who: str, s: dict[str, Any]) -> None:
    lines = [f"py-spy profile of {who}: {s.get('samples', 0)} samples of non-idle threads"]
    lines.extend(
        f"  thread {t['thread']}: {t['samples']} samples, busy {t['busy_pct']} %"
        for t in s.get("threads", [])
    )
    for key, title in (
        ("self_by_package_pct", "self time by package"),
        ("self_by_function_pct", "self time by function"),
        ("inclusive_by_function_pct", "inclusive time by function"),
    ):
        lines.append(f"\n{title} (% of samples):")
        lines.extend(f"  {v:6.2f}  {k}" for k, v in s.get(key, []))
    path.write_text("\n".join(lines) + "\n")


def profile_target(
    a: argparse.Namespace,
    procs: ProcessGroup,
    t: Target,
    wrk: str | None,
    lua: Path | None,
    out_dir: Path,
) -> dict[str, Any]:
    """py-spy record on each node of ``t`` during one extra load window."""
    spy = tool_bin("py-spy")
    if spy is None:
        return {"error": "py-spy not found (.venv/bin/pip install py-spy)"}
    secs = max(1, round(a.profile_s))
    spies: dict[str, tuple[ManagedProcess, Path]] = {}
    for node, pid in t.routers.items():
        path = out_dir / f"profile-{t.key}-{node}.{PROFILE_EXT[a.profile_format]}"
        argv = [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(secs),
            "--rate",
            str(a.profile_rate),
            "--format",
            a.profile_format,
            "--output",
            str(path),
            "--subprocesses",
        ]
        if a.profile_native:
            argv.append("--native")
        spies[node] = (procs.start(f"pyspy-{t.key}-{node}", argv), path)
    res: dict[str, Any] = {"seconds": secs, "rate_hz": a.profile_rate, "files": {}}
    # Load for a second longer than the sampling so the whole profile sees load.
    if wrk and lua:
        res["load"] = run_wrk(wrk, lua, t.chat_url, a.concurrency, a.wrk_threads, secs + 1, 10.0)
    else:
        res["load"] = _load_block(
            asyncio.run(
                closed_loop(t.chat_url, a.concurrency, secs + 1, 10**9, a.request_timeout_s, 5.0)
            )
        )
    for node, (sp, path) in spies.items():
        try:
            sp.popen.wait(secs + 60)
        except subprocess.TimeoutExpired:
            sp.stop()
        entry: dict[str, Any] = {"file": str(path), "exit_code": sp.returncode}
        if sp.returncode != 0 or not path.exists():
            entry["error"] = (sp.read_stderr() or sp.read_stdout()).strip()[-400:]
        else:
            s = summarize_profile(path, a.profile_format, a.profile_rate, secs)
            if s and "error" not in s:
                txt = path.with_name(f"profile-{t.key}-{node}.summary.txt")
                write_profile_summary(txt, f"{t.label} {node} (pid {t.routers[node]})", s)
                entry["summary_file"] = str(txt)
                entry["summary"] = s
        res["files"][node] = entry
    return res


# -- setup ---------------------------------------------------------------------------------------


@dataclass
class Pair:
    """An entry node and a worker node fronting the upstream."""

    entry: ManagedProcess
    worker: ManagedProcess
    entry_url: str
    worker_url: str
    entry_peer: str
    worker_peer: str
    startup_s: float


def start_upstream(procs: ProcessGroup, timeout: float) -> tuple[ManagedProcess, str]:
    up = procs.start(
        "upstream",
        [
            sys.executable,
            "-m",
            "opentela.testing.fake_upstream",
            "--host",
            HOST,
            "--port",
            "0",
            "--model",
            MODEL,
            "--tokens",
            str(TOKENS),
            "--token-delay-ms",
            "0",
        ],
    )
    return up, wait_for_line(up, "READY ", timeout).split()[1]


def start_proxy(
    procs: ProcessGroup, upstream_url: str, timeout: float
) -> tuple[ManagedProcess, str]:
    px = procs.start(
        "proxy",
        [
            sys.executable,
            str(PROXY_SCRIPT),
            "--upstream",
            upstream_url,
            "--host",
            HOST,
            "--port",
            "0",
        ],
    )
    url = wait_for_line(px, "READY ", timeout).split()[1]

    def works() -> bool:
        return bool(http_json(url + CHAT_PATH, body=CHAT_BODY, timeout=5).get("choices"))

    wait_until(works, timeout, "a chat completion through the proxy", procs=[px])
    return px, url


def closed_pool_args(
    procs: ProcessGroup, tmp: Path, node: str, timeout: float, prefix: str
) -> dict[str, list[str]]:
    """``--authority`` on every node: an authority key, the entry grants, the worker redeems a
    join token (the data path must cost no more than in an open pool)."""

    def last_line(name: str, argv: list[str]) -> str:
        proc = procs.start(name, argv)
        proc.popen.wait(timeout)
        out = proc.read_stdout().strip().splitlines()
        if proc.returncode != 0 or not out:
            raise StartupError(f"{' '.join(argv[1:3])} failed:\n{proc.tail()}")
        return out[-1].strip()

    auth = tmp / f"{prefix}authority"
    pub = last_line(f"init-{prefix}authority", [node, "authority", "init", "--home", str(auth)])
    token = last_line(
        f"init-{prefix}token",
        [
            node,
            "token",
            "create",
            "--home",
            str(tmp / f"home-{prefix}entry"),
            "--owner",
            "bench",
            "--models",
            "*",
            "--ttl",
            "1d",
        ],
    )
    return {
        "entry": ["--authority", pub, "--authority-key", str(auth / "authority.key")],
        "worker": ["--authority", pub, "--join-token", token],
    }


def start_pair(
    procs: ProcessGroup,
    tmp: Path,
    node: str,
    upstream_port: int,
    alive: list[ManagedProcess],
    a: argparse.Namespace,
    prefix: str = "",
    entry_extra: tuple[str, ...] = (),
) -> Pair:
    """Entry (``--role head``) and worker, names ``{prefix}entry`` / ``{prefix}worker``."""
    t0 = time.perf_counter()
    timeout = a.startup_timeout_s
    peers: dict[str, str] = {}
    for role in ("entry", "worker"):
        name = prefix + role
        home = tmp / f"home-{name}"
        init = procs.start(f"init-{name}", [node, "init", "--home", str(home)])
        init.popen.wait(timeout)
        if init.returncode != 0:
            raise StartupError(f"opentela-node init failed for {name}:\n{init.tail()}")
        pid_proc = procs.start(f"peerid-{name}", [node, "peer-id", "--home", str(home)])
        pid_proc.popen.wait(timeout)
        peer = pid_proc.read_stdout().strip().splitlines()[-1:] or [""]
        if pid_proc.returncode != 0 or not peer[0]:
            raise StartupError(f"opentela-node peer-id failed for {name}:\n{pid_proc.tail()}")
        peers[role] = peer[0].strip()

    extra = (
        closed_pool_args(procs, tmp, node, timeout, prefix)
        if a.authority
        else {"entry": [], "worker": []}
    )
    e_http, e_p2p = free_port(HOST), free_port(HOST)
    common = [
        "--http-host",
        HOST,
        "--p2p-host",
        HOST,
        "--log-format",
        "json",
        "--log-level",
        a.node_log_level,
    ]
    entry = procs.start(
        prefix + "entry",
        [
            node,
            "start",
            "--home",
            str(tmp / f"home-{prefix}entry"),
            "--role",
            "head",
            "--http-port",
            str(e_http),
            "--p2p-port",
            str(e_p2p),
            *common,
            *extra["entry"],
            *a.entry_arg,
            *entry_extra,
        ],
    )
    entry_url = f"http://{HOST}:{e_http}"
    wait_until(
        lambda: http_json(entry_url + "/v1/health", timeout=2).get("status") == "ok",
        timeout,
        f"{prefix}entry /v1/health",
        procs=[entry, *alive],
    )
    w_http, w_p2p = free_port(HOST), free_port(HOST)
    worker = procs.start(
        prefix + "worker",
        [
            node,
            "start",
            "--home",
            str(tmp / f"home-{prefix}worker"),
            "--http-port",
            str(w_http),
            "--p2p-port",
            str(w_p2p),
            "--bootstrap",
            f"/ip4/{HOST}/tcp/{e_p2p}/p2p/{peers['entry']}",
            "--service.name",
            "llm",
            "--service.port",
            str(upstream_port),
            *common,
            *extra["worker"],
            *a.worker_arg,
        ],
    )
    worker_url = f"http://{HOST}:{w_http}"
    both = [entry, worker, *alive]
    wait_until(
        lambda: http_json(worker_url + "/v1/health", timeout=2).get("status") == "ok",
        timeout,
        f"{prefix}worker /v1/health",
        procs=both,
    )

    def entry_lists_model() -> bool:
        data = http_json(entry_url + "/v1/models", timeout=2)
        return any(m.get("id") == MODEL for m in data.get("data", []))

    wait_until(
        entry_lists_model, timeout, f"{prefix}entry /v1/models to list {MODEL!r}", procs=both
    )

    def overlay_works() -> bool:
        data = http_json(entry_url + CHAT_PATH, body=CHAT_BODY, timeout=5)
        return bool(data.get("choices"))

    wait_until(
        overlay_works, timeout, f"a chat completion through {prefix}entry", procs=both, poll_s=0.1
    )
    return Pair(
        entry,
        worker,
        entry_url,
        worker_url,
        peers["entry"],
        peers["worker"],
        time.perf_counter() - t0,
    )


# -- log scan ------------------------------------------------------------------------------------


def scan_log(proc: ManagedProcess) -> dict[str, Any]:
    levels: collections.Counter[str] = collections.Counter()
    notable: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    non_json = 0
    for line in proc.read_stderr().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            if line.strip():  # a traceback, or lines of two processes interleaved
                non_json += 1
                notable["non-json line"] += 1
                examples.setdefault("non-json line", line.strip()[:400])
            continue
        if not isinstance(rec, dict):
            continue
        level = str(rec.get("level", "?"))
        levels[level] += 1
        if level in ("warning", "error", "critical", "exception"):
            key = f"{level}: {rec.get('event')}"
            notable[key] += 1
            examples.setdefault(key, line[:400])
    return {
        "levels": dict(levels),
        "notable": dict(notable.most_common(20)),
        "examples": examples,
        "non_json_lines": non_json,
        "path": str(proc.stderr_path),
    }


# -- measurement ---------------------------------------------------------------------------------


def _c1_block(res: C1Result, name: str, key: str) -> dict[str, Any]:
    b: dict[str, Any] = {
        key: summary(res.lat_ms[name]),
        "errors": dict(res.errors[name]),
        "samples_ms": [round(x, 4) for x in res.lat_ms[name]],
    }
    if res.extra_ms[name]:
        b["total_ms"] = summary(res.extra_ms[name])
        b["total_samples_ms"] = [round(x, 4) for x in res.extra_ms[name]]
    return b


def _load_block(res: LoadResult) -> dict[str, Any]:
    router = [v for v in res.cpu_s.values() if v is not None]
    return {
        "rps": res.rps,
        "ok": res.ok,
        "errors": dict(res.errors),
        "errors_total": res.error_count,
        "late_not_counted": res.late,
        "issued": res.issued,
        "capped": res.capped,
        "window_s": res.window_s,
        "wall_s": res.wall_s,
        "ms": summary(res.lat_ms),
        "ok_per_second": res.per_s,
        "samples_ms": [round(x, 3) for x in res.lat_ms],
        "cpu_s_in_window": {k: _r(v, 3) for k, v in res.cpu_s.items()},
        "cpu_s_per_1000": (
            sum(router) / res.ok * 1000.0
            if res.cpu_s and len(router) == len(res.cpu_s) and res.ok
            else None
        ),
        "client_cpu_s_in_window": round(res.client_cpu_s, 3),
    }


async def idle_window(
    seconds: float, trees: dict[str, int]
) -> dict[str, dict[str, float | int | None]]:
    """CPU % of one core and memory of each process tree over ``seconds`` with no requests."""
    meter = CpuMeter(trees)
    c0, t0 = meter.read(), time.perf_counter()
    await asyncio.sleep(seconds)  # the measurement itself: a window of doing nothing
    wall = time.perf_counter() - t0
    cpu = CpuMeter.delta(c0, meter.read())
    out: dict[str, dict[str, float | int | None]] = {}
    for name, pid in trees.items():
        mem = tree_memory_mb(pid)
        c = cpu.get(name)
        out[name] = {
            "cpu_pct": None if c is None else round(100.0 * c / wall, 3),
            "cpu_s": _r(c, 3),
            "rss_mb": _r(mem["rss"]),  # type: ignore[arg-type]
            "rss_sum_mb": _r(mem["rss_sum"]),  # type: ignore[arg-type]
            "pss_sum_mb": _r(mem["pss_sum"]),  # type: ignore[arg-type]
            "procs": mem["procs"],
            "window_s": round(wall, 2),
        }
    return out


async def one_rep(
    a: argparse.Namespace,
    rep: int,
    targets: list[Target],
    wrk: str | None,
    lua: Path | None,
    upstream_pid: int,
) -> dict[str, Any]:
    """c=1 latency and TTFT interleaved, then per target (order rotated by ``rep``): wrk, the
    64-stream batch and, if asked, the Python closed loop."""
    urls = {t.key: t.chat_url for t in targets}
    sessions = {k: new_session(1, a.request_timeout_s) for k in urls}
    try:
        log(f"rep {rep + 1}: c=1 latency, {a.requests} requests per target (interleaved)")
        lat = await c1_interleaved(urls, sessions, a.requests, a.warmup, a.duration_s, stream=False)
        log(f"rep {rep + 1}: c=1 stream TTFT, {a.stream_requests} per target")
        st = await c1_interleaved(
            urls, sessions, a.stream_requests, a.stream_warmup, a.duration_s, stream=True
        )
    finally:
        for s in sessions.values():
            await s.close()
    out: dict[str, Any] = {
        "c1_latency": {
            "rounds": lat.rounds,
            "elapsed_s": lat.elapsed_s,
            "stopped_by_time": lat.stopped_by_time,
            **{t.key: _c1_block(lat, t.key, "ms") for t in targets},
        },
        "stream_ttft": {
            "rounds": st.rounds,
            "elapsed_s": st.elapsed_s,
            "stopped_by_time": st.stopped_by_time,
            **{t.key: _c1_block(st, t.key, "ttft_ms") for t in targets},
        },
        "wrk": {},
        "streams": {},
    }
    k = rep % len(targets)
    order = targets[k:] + targets[:k]
    window = max(1, round(a.window_s))
    warm = max(1, round(a.load_warmup_s)) if a.load_warmup_s > 0 else 0
    for t in order:
        meter = CpuMeter({**t.routers, "upstream": upstream_pid})
        routers = CpuMeter(t.routers)
        if wrk and lua:
            if warm:
                run_wrk(wrk, lua, t.chat_url, a.concurrency, a.wrk_threads, warm, 10.0)
            w = run_wrk(wrk, lua, t.chat_url, a.concurrency, a.wrk_threads, window, 10.0, routers)
            out["wrk"][t.key] = w
            log(
                f"rep {rep + 1}: wrk c={a.concurrency} {t.label}: "
                + (
                    w["error"]
                    if "error" in w
                    else f"{w['rps']:.0f} req/s, cpu/1000 {fmt(w['cpu_s_per_1000'], 3)} s, "
                    f"errors {w['errors'] or 0}"
                )
            )
        s = await stream_load(
            t.chat_url, a.streams, a.stream_chunks, window, a.request_timeout_s, meter
        )
        out["streams"][t.key] = s
        log(
            f"rep {rep + 1}: {a.streams} streams x {a.stream_chunks} {t.label}: "
            f"{fmt(s['chunks_per_s'], 0)} chunks/s, {s['complete_streams']}/"
            f"{s['streams_started']} complete, errors {s['errors'] or 0}"
        )
        if a.py_load:
            if a.load_warmup_s > 0:
                await closed_loop(
                    t.chat_url,
                    a.concurrency,
                    a.load_warmup_s,
                    a.max_load_requests,
                    a.request_timeout_s,
                    5.0,
                )
            lr = await closed_loop(
                t.chat_url,
                a.concurrency,
                a.window_s,
                a.max_load_requests,
                a.request_timeout_s,
                5.0,
                meter=routers,
            )
            out.setdefault("throughput", {})[t.key] = _load_block(lr)
            log(f"rep {rep + 1}: python c={a.concurrency} {t.label}: {lr.rps:.0f} req/s")
    return out


def rep_figures(rep: dict[str, Any], targets: list[Target]) -> dict[str, Any]:
    """The scalar figures of one repetition, including the ratios the targets are about."""
    f: dict[str, Any] = {}
    lat, ttft = rep["c1_latency"], rep["stream_ttft"]
    d50 = lat["direct"]["ms"]["p50"]
    d99 = lat["direct"]["ms"]["p99"]
    t50 = ttft["direct"]["ttft_ms"]["p50"]
    for t in targets:
        k = t.key
        f[f"c1_p50_ms.{k}"] = lat[k]["ms"]["p50"]
        f[f"c1_p99_ms.{k}"] = lat[k]["ms"]["p99"]
        f[f"ttft_p50_ms.{k}"] = ttft[k]["ttft_ms"]["p50"]
        f[f"ttft_p99_ms.{k}"] = ttft[k]["ttft_ms"]["p99"]
        if k != "direct":
            f[f"c1_added_p50_ms.{k}"] = sub(lat[k]["ms"]["p50"], d50)
            f[f"c1_added_p99_ms.{k}"] = sub(lat[k]["ms"]["p99"], d99)
            f[f"ttft_added_p50_ms.{k}"] = sub(ttft[k]["ttft_ms"]["p50"], t50)
        w = rep["wrk"].get(k)
        if w and "error" not in w:
            f[f"wrk_rps.{k}"] = w["rps"]
            f[f"wrk_p50_ms.{k}"] = w["latency_ms"].get("p50")
            f[f"wrk_p99_ms.{k}"] = w["latency_ms"].get("p99")
            f[f"wrk_errors.{k}"] = sum(w["errors"].values())
            f[f"cpu_s_per_1000.{k}"] = w["cpu_s_per_1000"]
        py = rep.get("throughput", {}).get(k)
        if py:
            f[f"py_rps.{k}"] = py["rps"]
            f[f"py_p50_ms.{k}"] = py["ms"]["p50"]
            f[f"py_p99_ms.{k}"] = py["ms"]["p99"]
            if f"cpu_s_per_1000.{k}" not in f:
                f[f"cpu_s_per_1000.{k}"] = py["cpu_s_per_1000"]
        s = rep["streams"].get(k)
        if s:
            f[f"chunks_per_s.{k}"] = s["chunks_per_s"]
            f[f"stream_errors.{k}"] = sum(s["errors"].values())
    for k in [t.key for t in targets if t.key not in ("direct", "proxy")]:
        f[f"x.added_p50.{k}/proxy"] = ratio(
            f.get(f"c1_added_p50_ms.{k}"), f.get("c1_added_p50_ms.proxy")
        )
        f[f"x.cpu_per_1000.{k}/proxy"] = ratio(
            f.get(f"cpu_s_per_1000.{k}"), f.get("cpu_s_per_1000.proxy")
        )
        f[f"x.chunks.{k}/proxy"] = ratio(f.get(f"chunks_per_s.{k}"), f.get("chunks_per_s.proxy"))
    for k in [t.key for t in targets if t.key != "direct"]:
        for m in ("wrk_rps", "py_rps", "chunks_per_s"):
            f[f"x.{m}.{k}/direct"] = ratio(f.get(f"{m}.{k}"), f.get(f"{m}.direct"))
        if k != "proxy":
            for m in ("wrk_rps", "py_rps"):
                f[f"x.{m}.{k}/proxy"] = ratio(f.get(f"{m}.{k}"), f.get(f"{m}.proxy"))
    return f


def median_figures(reps: list[dict[str, Any]]) -> dict[str, Any]:
    keys = sorted({k for r in reps for k in r})
    return {k: median([r.get(k) for r in reps]) for k in keys}


# -- report --------------------------------------------------------------------------------------


def fmt(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def render(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(s.ljust(w) for s, w in zip(cells, widths, strict=True)) + " |"

    sep = "|-" + "-|-".join("-" * w for w in widths) + "-|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def node_names(t: Target) -> list[str]:
    return list(t.routers)


def build_tables(
    r: dict[str, Any], targets: list[Target], load_kind: str
) -> tuple[str, str, dict[str, bool | None]]:
    """The figures table (one column per target) and the targets table (ratios, verdicts)."""
    f = r["figures"]
    idle = r["idle"]
    keys = [t.key for t in targets]

    def row(label: str, metric: str, nd: int = 2, prefix: str = "") -> tuple[str, ...]:
        cells = []
        for k in keys:
            v = f.get(f"{metric}.{k}")
            cells.append("-" if v is None else prefix + fmt(v, nd))
        return (label, *cells)

    def ratio_row(label: str, metric: str) -> tuple[str, ...]:
        cells = []
        for k in keys:
            v = f.get(f"x.{metric}.{k}/direct")
            cells.append("1.00" if k == "direct" and f.get(f"{metric}.direct") else fmt(v, 3))
        return (label, *cells)

    c = r["config"]["concurrency"]
    rows: list[tuple[str, ...]] = [
        row("chat c=1 p50 (ms)", "c1_p50_ms", 3),
        row("chat c=1 added p50 (ms)", "c1_added_p50_ms", 3, "+"),
        row("chat c=1 p99 (ms)", "c1_p99_ms", 3),
        row("chat c=1 added p99 (ms)", "c1_added_p99_ms", 3, "+"),
        row("stream TTFT c=1 p50 (ms)", "ttft_p50_ms", 3),
        row("stream TTFT added p50 (ms)", "ttft_added_p50_ms", 3, "+"),
        row("stream TTFT c=1 p99 (ms)", "ttft_p99_ms", 3),
    ]
    if load_kind == "wrk":
        rows += [
            row(f"wrk c={c} req/s", "wrk_rps", 0),
            ratio_row(f"wrk c={c} ratio to direct", "wrk_rps"),
            row(f"wrk c={c} latency p50 (ms)", "wrk_p50_ms", 1),
            row(f"wrk c={c} latency p99 (ms)", "wrk_p99_ms", 1),
            row(f"wrk c={c} errors", "wrk_errors", 0),
        ]
    if any(f.get(f"py_rps.{k}") is not None for k in keys):
        rows += [
            row(f"python c={c} req/s", "py_rps", 0),
            ratio_row(f"python c={c} ratio to direct", "py_rps"),
            row(f"python c={c} latency p50 (ms)", "py_p50_ms", 1),
        ]
    cfg = r["config"]
    rows += [
        row(f"{cfg['streams']} streams x {cfg['stream_chunks']} chunks/s", "chunks_per_s", 0),
        ratio_row("  chunks/s ratio to direct", "chunks_per_s"),
        row("  stream errors", "stream_errors", 0),
        row(f"CPU s per 1,000 req ({load_kind} c={c})", "cpu_s_per_1000", 3),
    ]

    def idle_cell(t: Target, field_: str, nd: int) -> str:
        names = node_names(t)
        if not names:
            return "-"
        vals = [idle.get(n, {}).get(field_) for n in names]
        return " / ".join(fmt(v, nd) for v in vals)

    rows.append(("idle CPU % of a core (per node)", *(idle_cell(t, "cpu_pct", 2) for t in targets)))
    rows.append(
        ("idle RSS MB (per node, main process)", *(idle_cell(t, "rss_mb", 1) for t in targets))
    )
    if any(idle.get(n, {}).get("procs", 1) > 1 for t in targets for n in t.routers):  # type: ignore[operator]
        rows.append(("idle PSS MB (tree sum)", *(idle_cell(t, "pss_sum_mb", 1) for t in targets)))
    peak = r["rss_mb"].get("peak_during_load", {})
    rows.append(
        (
            "peak RSS during load MB",
            *(
                " / ".join(fmt(peak.get(n), 1) for n in (t.routers or {"upstream": 0}))
                for t in targets
            ),
        )
    )
    cols = ("metric", *(t.label for t in targets))
    for t in targets:
        if t.routers:
            cols = tuple(
                c_ if c_ != t.label else f"{t.label} ({' / '.join(t.routers)})" for c_ in cols
            )
    figures = render(cols, rows)

    # targets table
    checks: dict[str, bool | None] = {}
    trows: list[tuple[str, ...]] = []

    def add(name: str, label: str, value: float | None, op: str, bound: float, nd: int = 2) -> None:
        ok = None if value is None else (value <= bound if op == "<=" else value >= bound)
        checks[name] = ok
        trows.append((label, fmt(value, nd), f"{op} {bound:g}", verdict(ok)))

    for t in targets:
        if not t.is_overlay:
            continue
        k, lab = t.key, t.label
        add(
            f"added_p50_x_proxy.{k}",
            f"c=1 added p50, {lab} / PROXY",
            f.get(f"x.added_p50.{k}/proxy"),
            "<=",
            TARGET_ADDED_P50_X_PROXY,
        )
        bound = TARGET_WRK_X_PROXY if k == "overlay" else TARGET_WRK_WORKERS_X_PROXY
        metric = "wrk_rps" if load_kind == "wrk" else "py_rps"
        add(
            f"c{c}_rps_x_proxy.{k}",
            f"c={c} req/s ({load_kind}), {lab} / PROXY",
            f.get(f"x.{metric}.{k}/proxy"),
            ">=",
            bound,
            3,
        )
        add(
            f"chunks_x_proxy.{k}",
            f"chunks/s, {lab} / PROXY",
            f.get(f"x.chunks.{k}/proxy"),
            ">=",
            TARGET_CHUNKS_X_PROXY,
            3,
        )
        add(
            f"cpu_per_1000_x_proxy.{k}",
            f"CPU s / 1,000 req, {lab} / PROXY",
            f.get(f"x.cpu_per_1000.{k}/proxy"),
            "<=",
            TARGET_CPU_X_PROXY,
        )
        for n in t.routers:
            add(
                f"idle_cpu_pct.{n}",
                f"idle CPU % of a core, {n}",
                idle.get(n, {}).get("cpu_pct"),
                "<=",
                TARGET_IDLE_CPU_PCT,
            )
            d = idle.get(n, {})
            mem = d.get("pss_sum_mb") if (d.get("procs") or 1) > 1 else d.get("rss_mb")
            add(
                f"idle_rss_mb.{n}",
                f"idle {'PSS (tree)' if (d.get('procs') or 1) > 1 else 'RSS'} MB, {n}",
                mem,
                "<=",
                TARGET_IDLE_RSS_MB,
                1,
            )
    targets_table = render(("target (issue 12)", "measured", "bound", "verdict"), trows)
    return figures, targets_table, checks


def plot(r: dict[str, Any], targets: list[Target], out: Path) -> list[str]:
    plt = _plots.pyplot()
    if plt is None:
        return []
    f = r["figures"]
    labels = [t.label for t in targets]
    keys = [t.key for t in targets]
    colors = ["#888888", "#4c72b0", "#dd8452", "#55a868", "#c44e52"][: len(keys)]
    files: list[str] = []

    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    panels = [
        ("c1_added_p50_ms", "chat c=1 p50 added to DIRECT (ms)"),
        ("ttft_added_p50_ms", "stream TTFT c=1 p50 added to DIRECT (ms)"),
        (
            "wrk_rps" if f.get("wrk_rps.direct") is not None else "py_rps",
            f"c={r['config']['concurrency']} req/s"
            + ("" if f.get("wrk_rps.direct") is not None else " (Python client)"),
        ),
        ("chunks_per_s", f"{r['config']['streams']} streams: chunks/s"),
        ("cpu_s_per_1000", "router CPU s per 1,000 requests"),
    ]
    for ax, (metric, title) in zip(axes.flat, panels, strict=False):
        _plots.bars(ax, labels, [f.get(f"{metric}.{k}") for k in keys], colors, title)
    ax = axes.flat[5]
    names = [n for t in targets for n in t.routers]
    idle = r["idle"]
    ax.bar(names, [idle.get(n, {}).get("cpu_pct") or 0 for n in names], color="#4c72b0")
    ax.axhline(TARGET_IDLE_CPU_PCT, color="grey", linestyle=":")
    ax.set_title("idle CPU % of a core (dotted: target)")
    ax.set_ylabel("idle CPU % of a core (bars)")
    ax.tick_params(axis="x", labelrotation=30)
    ax2 = ax.twinx()
    ax2.plot(names, [idle.get(n, {}).get("rss_mb") or 0 for n in names], "o", color="#c44e52")
    ax2.axhline(TARGET_IDLE_RSS_MB, color="#c44e52", linestyle=":", alpha=0.5)
    ax2.set_ylabel("idle RSS MB (dots)")
    ax2.set_ylim(bottom=0)
    fig.suptitle(
        f"opentela overhead: {' vs '.join(labels)} on one fake upstream, "
        f"{r['timestamp'][:19]}, reps={r['config']['reps']} ({_plots.machine()})"
    )
    files.append(_plots.save(plt, fig, out.with_suffix(".png")))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rep0 = r["reps"][0]["c1_latency"]
    for k, lab, col in zip(keys, labels, colors, strict=True):
        _plots.cdf(ax, rep0[k]["samples_ms"], lab, unit="ms", color=col)
    _plots.cdf_axes(
        ax,
        "chat c=1 latency (ms, log scale)",
        f"chat c=1 latency, {' vs '.join(labels)}\n"
        f"interleaved, repetition 1 of {r['config']['reps']} ({_plots.machine()})",
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
    p.add_argument("--quick", action="store_true", help="short CI-sized run")
    p.add_argument("--reps", type=int, default=None, help="repetitions (3; quick 1)")
    p.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="upper bound on wall time of each c=1 phase (default 60; --quick 15)",
    )
    p.add_argument("--out", default=".bench/overhead.json", help="JSON output path")
    p.add_argument(
        "--requests",
        type=int,
        default=None,
        help="c=1 measured requests per target (500; quick 100)",
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="c=1 warm-up requests per target (50; quick 20)"
    )
    p.add_argument(
        "--stream-requests", type=int, default=None, help="c=1 streams per target (200; quick 50)"
    )
    p.add_argument(
        "--stream-warmup", type=int, default=None, help="c=1 stream warm-up (20; quick 10)"
    )
    p.add_argument("--concurrency", type=int, default=64, help="connections of the c=N load")
    p.add_argument(
        "--window-s", type=float, default=None, help="c=N load window, whole seconds (5; quick 2)"
    )
    p.add_argument(
        "--load-warmup-s", type=float, default=None, help="discarded c=N warm-up (1; quick 1)"
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (1 or 2)")
    p.add_argument(
        "--py-load",
        action="store_true",
        help="also run the Python aiohttp c=N closed loop (always when wrk is missing)",
    )
    p.add_argument("--no-wrk", action="store_true", help="act as if wrk were not installed")
    p.add_argument(
        "--max-load-requests", type=int, default=200_000, help="cap per Python c=N window"
    )
    p.add_argument("--streams", type=int, default=64, help="concurrent streams of the batch")
    p.add_argument("--stream-chunks", type=int, default=256, help="chunks (tokens) per stream")
    p.add_argument(
        "--idle-s", type=float, default=None, help="idle window before load (10; quick 5)"
    )
    p.add_argument("--request-timeout-s", type=float, default=30.0)
    p.add_argument("--startup-timeout-s", type=float, default=60.0)
    p.add_argument(
        "--node-bin", default=None, help="opentela-node executable (default: next to python)"
    )
    p.add_argument(
        "--node-log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    p.add_argument(
        "--entry-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every entry node, repeatable: --entry-arg=--flag=value",
    )
    p.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every worker node, repeatable",
    )
    p.add_argument(
        "--http-workers",
        type=int,
        default=0,
        metavar="N",
        help="N > 1: a 4th target OVERLAY-W<N>, an entry started with --http-workers N",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with node logs")
    p.add_argument(
        "--authority",
        action="store_true",
        help="a closed pool: --authority on every node (the worker joins with a join token)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record each node during an extra c=N window per overlay target",
    )
    p.add_argument("--profile-s", type=float, default=10.0, help="py-spy seconds (10)")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument(
        "--profile-format", default="speedscope", choices=sorted(PROFILE_EXT), help="py-spy format"
    )
    p.add_argument(
        "--profile-native", action="store_true", help="py-spy --native (C frames as well)"
    )
    p.add_argument("--fail-on-miss", action="store_true", help="exit 1 if a target is missed")
    a = p.parse_args(argv)
    q = a.quick
    a.reps = a.reps if a.reps is not None else (1 if q else 3)
    a.duration_s = a.duration_s if a.duration_s is not None else (15.0 if q else 60.0)
    a.requests = a.requests if a.requests is not None else (100 if q else 500)
    a.warmup = a.warmup if a.warmup is not None else (20 if q else 50)
    a.stream_requests = a.stream_requests if a.stream_requests is not None else (50 if q else 200)
    a.stream_warmup = a.stream_warmup if a.stream_warmup is not None else (10 if q else 20)
    a.window_s = a.window_s if a.window_s is not None else (2.0 if q else 5.0)
    a.load_warmup_s = a.load_warmup_s if a.load_warmup_s is not None else 1.0
    a.idle_s = a.idle_s if a.idle_s is not None else (5.0 if q else 10.0)
    if a.reps < 1 or a.concurrency < 1 or a.streams < 1 or a.stream_chunks < 1:
        p.error("--reps, --concurrency, --streams and --stream-chunks must be >= 1")
    if a.http_workers < 0 or a.http_workers == 1:
        p.error("--http-workers must be > 1 (or 0: no OVERLAY-W<N> target)")
    if a.wrk_threads < 1 or a.wrk_threads > a.concurrency:
        p.error("--wrk-threads must be between 1 and --concurrency")
    return a


async def warm_and_idle(
    a: argparse.Namespace, targets: list[Target], trees: dict[str, int]
) -> dict[str, Any]:
    urls = {t.key: t.chat_url for t in targets}
    sessions = {k: new_session(1, a.request_timeout_s) for k in urls}
    try:
        log(f"c=1 warm-up: {a.warmup} requests per target, then {a.idle_s:g}s idle")
        await c1_interleaved(urls, sessions, 0, a.warmup, a.duration_s, stream=False)
        await c1_interleaved(urls, sessions, 0, a.stream_warmup, a.duration_s, stream=True)
    finally:
        for s in sessions.values():
            await s.close()
    return await idle_window(a.idle_s, trees)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sigterm_as_keyboard_interrupt()
    node = node_bin(a.node_bin)
    wrk = None if a.no_wrk else shutil.which("wrk")
    if wrk is None:
        why = "--no-wrk" if a.no_wrk else "wrk not found (apt-get install -y wrk)"
        print(f"note: {why}: c={a.concurrency} load from the Python client only")
        a.py_load = True
    tmp = Path(tempfile.mkdtemp(prefix="otela-bench-overhead-"))
    lua = write_wrk_lua(tmp) if wrk else None
    keep = a.keep_logs
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    log(f"temp dir {tmp} (quick={a.quick}, reps={a.reps}, wrk={wrk or 'missing'})")
    report: dict[str, Any] = {
        "benchmark": "overhead",
        "timestamp": started.isoformat(),
        "machine": machine_info(),
        "config": {k: v for k, v in vars(a).items()},
        "upstream": {"model": MODEL, "tokens": TOKENS, "token_delay_ms": 0},
        "load_generator": {"wrk": wrk, "lua": lua.read_text() if lua else None},
    }
    procs = ProcessGroup(tmp / "logs")
    targets: list[Target] = []
    pairs: dict[str, Pair] = {}
    upstream: ManagedProcess | None = None
    try:
        try:
            t0 = time.perf_counter()
            upstream, upstream_url = start_upstream(procs, a.startup_timeout_s)
            proxy, proxy_url = start_proxy(procs, upstream_url, a.startup_timeout_s)
            port = int(upstream_url.rsplit(":", 1)[1])
            pairs["overlay"] = start_pair(procs, tmp, node, port, [upstream, proxy], a)
            if a.http_workers > 1:
                key = f"overlay_w{a.http_workers}"
                try:
                    pairs[key] = start_pair(
                        procs,
                        tmp,
                        node,
                        port,
                        [upstream, proxy],
                        a,
                        prefix=f"w{a.http_workers}-",
                        entry_extra=("--http-workers", str(a.http_workers)),
                    )
                except StartupError as exc:
                    entry = next(
                        (p for p in procs.procs if p.name == f"w{a.http_workers}-entry"), None
                    )
                    err = entry.read_stderr().strip().splitlines()[-1:] if entry else []
                    raise StartupError(
                        f"OVERLAY-W{a.http_workers}: the entry did not start with "
                        f"--http-workers {a.http_workers} (does this node have the flag?): "
                        f"{err[0] if err else exc}"
                    ) from exc
        except (StartupError, OSError) as exc:
            keep = True
            print(procs.tails(40), file=sys.stderr)
            log(f"STARTUP FAILED: {exc}")
            return 2
        targets = [
            Target("direct", "DIRECT", upstream_url, {}),
            Target("proxy", "PROXY", proxy_url, {"proxy": proxy.pid}),
        ]
        for key, pr in pairs.items():
            prefix = "" if key == "overlay" else f"w{a.http_workers}-"
            label = "OVERLAY" if key == "overlay" else f"OVERLAY-W{a.http_workers}"
            targets.append(
                Target(
                    key,
                    label,
                    pr.entry_url,
                    {prefix + "entry": pr.entry.pid, prefix + "worker": pr.worker.pid},
                    is_overlay=True,
                )
            )
        log(
            f"up in {time.perf_counter() - t0:.2f}s: "
            + ", ".join(f"{t.label}={t.url} {t.routers or ''}" for t in targets)
        )
        report["cluster"] = {
            "upstream_url": upstream_url,
            "proxy_url": proxy_url,
            **{
                key: {
                    "startup_s": pr.startup_s,
                    "entry_url": pr.entry_url,
                    "worker_url": pr.worker_url,
                    "entry_peer_id": pr.entry_peer,
                    "worker_peer_id": pr.worker_peer,
                }
                for key, pr in pairs.items()
            },
        }
        trees = {n: pid for t in targets for n, pid in t.routers.items()}
        trees["upstream"] = upstream.pid
        rss: dict[str, Any] = {"at_ready": rss_snapshot(trees)}
        report["idle"] = asyncio.run(warm_and_idle(a, targets, trees))
        rss["idle"] = {k: v["rss_mb"] for k, v in report["idle"].items()}
        log(
            "idle: "
            + ", ".join(f"{k} {v['cpu_pct']}% {v['rss_mb']} MB" for k, v in report["idle"].items())
        )
        reps = []
        with RssSampler(trees) as sampler:
            for i in range(a.reps):
                reps.append(asyncio.run(one_rep(a, i, targets, wrk, lua, upstream.pid)))
        rss["peak_during_load"] = {k: _r(v) for k, v in sampler.peak.items()}
        rss["after_load"] = rss_snapshot(trees)
        rss["vmhwm_after_load"] = {k: _r(peak_rss_mb(p)) for k, p in trees.items()}
        rss["sampler"] = {"interval_s": sampler.interval_s, "samples": sampler.samples}
        report["rss_mb"] = rss
        report["reps"] = reps
        # Earlier readers of this file: the first repetition's blocks under the old names.
        report["c1_latency"] = reps[0]["c1_latency"]
        report["stream_ttft"] = reps[0]["stream_ttft"]
        if "throughput" in reps[0]:
            report["throughput"] = reps[0]["throughput"]
        per_rep = [rep_figures(rep, targets) for rep in reps]
        report["figures_per_rep"] = per_rep
        report["figures"] = median_figures(per_rep)
        if a.profile:
            report["profile"] = {}
            for t in targets:
                if t.is_overlay:
                    log(f"profiling {t.label} for {a.profile_s:g}s under c={a.concurrency} load")
                    report["profile"][t.key] = profile_target(a, procs, t, wrk, lua, out.parent)
        for key, pr in pairs.items():
            for role, url in (("entry", pr.entry_url), ("worker", pr.worker_url)):
                try:
                    report.setdefault("node_stats", {})[f"{key}.{role}"] = http_json(
                        url + "/v1/dnt/stats", timeout=5
                    )
                except Exception as exc:
                    report.setdefault("node_stats", {})[f"{key}.{role}"] = {"error": repr(exc)}
        watched = [p for p in procs.procs if p.name in trees]
        for p in watched:
            if not p.alive():
                log(f"WARNING: {p.name} exited during the run with code {p.returncode}")
                keep = True
        report["alive_at_end"] = {p.name: p.alive() for p in watched}
    except KeyboardInterrupt:
        keep = True
        log("interrupted; stopping children")
        return 130
    except BaseException:
        keep = True
        raise
    finally:
        codes = procs.stop_all()
        report["exit_codes"] = {
            k: v for k, v in codes.items() if not k.startswith(("init-", "peerid-", "pyspy-"))
        }
        report["logs"] = {
            p.name: scan_log(p)
            for p in procs.procs
            if not p.name.startswith(("init-", "peerid-", "pyspy-"))
        }
        if keep:
            log(f"logs kept in {tmp / 'logs'}")
            report["logs_dir"] = str(tmp / "logs")

    load_kind = "wrk" if wrk else "python"
    figures, targets_table, checks = build_tables(report, targets, load_kind)
    report["checks"] = checks
    report["finished"] = dt.datetime.now(dt.UTC).isoformat()
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    m = report["machine"]
    print(
        f"\nopentela overhead  ({'quick' if a.quick else 'full'} run, reps={a.reps} "
        f"(medians), nproc={m['nproc']}, python {m['python']}, {report['timestamp']})"
    )
    if not wrk:
        print(f"wrk: not used, c={a.concurrency} figures come from the Python client")
    print(figures)
    print()
    print(targets_table)
    notes = []
    for name, scan in report["logs"].items():
        if scan["notable"]:
            notes.append(
                f"{name} log: " + ", ".join(f"{k} x{v}" for k, v in scan["notable"].items())
            )
    for i, rep in enumerate(report["reps"]):
        for section in ("c1_latency", "stream_ttft"):
            if rep[section]["stopped_by_time"]:
                notes.append(
                    f"rep {i + 1} {section} stopped by --duration-s after "
                    f"{rep[section]['rounds']} rounds"
                )
            for t in targets:
                if rep[section][t.key]["errors"]:
                    notes.append(
                        f"rep {i + 1} {section} {t.label} errors: {rep[section][t.key]['errors']}"
                    )
        for t in targets:
            w = rep["wrk"].get(t.key)
            if w and ("error" in w or w["errors"]):
                notes.append(f"rep {i + 1} wrk {t.label}: {w.get('error') or w['errors']}")
    for n in notes:
        print("note:", n)
    for key, prof in report.get("profile", {}).items():
        load = prof.get("load", {})
        print(
            f"profile {key}: load during sampling {fmt(load.get('rps'), 0)} req/s "
            f"(slowed by py-spy)"
        )
        for node_, entry in prof.get("files", {}).items():
            if "error" in entry:
                print(f"  {node_}: py-spy failed: {entry['error']}")
                continue
            print(
                f"  {node_}: {entry['file']}"
                + (f"  summary: {entry['summary_file']}" if "summary_file" in entry else "")
            )
            for pkg, pct in (entry.get("summary") or {}).get("self_by_package_pct", [])[:8]:
                print(f"      {pct:6.2f} %  {pkg}")
    for png in plot(report, targets, out):
        print(f"PNG: {png}")
    print(f"JSON: {out}")
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.fail_on_miss and any(v is False for v in checks.values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
