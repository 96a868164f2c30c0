#!/usr/bin/env python3
"""Overlay overhead benchmark: DIRECT (client -> upstream) vs OVERLAY (client -> entry node ->
libp2p -> worker node -> upstream), in one run, on the same fast fake upstream.

What it starts (all on 127.0.0.1, free ports, temp home dirs, logs in a temp dir):

* ``python -m opentela.testing.fake_upstream --model bench --tokens 16 --token-delay-ms 0``
* an entry node (``--role head``, no backend)
* a worker node fronting the upstream, bootstrapped to the entry

It waits (polling with deadlines, no fixed sleeps) until the entry's ``/v1/models`` lists
``bench`` and a chat completion through the entry succeeds, then measures:

1. c=1 non-streaming ``/v1/chat/completions`` latency p50/p99 (warm-up discarded). DIRECT and
   OVERLAY requests are interleaved one by one (the order flips every round), each target on its
   own keep-alive ``aiohttp.ClientSession``, so slow drift on the machine hits both equally.
2. c=1 streaming TTFT p50/p99: time from sending the request to the first body chunk that holds
   an SSE ``data:`` line; the rest of the stream is drained and checked for ``[DONE]``.
   Interleaved the same way.
3. c=64 closed-loop non-streaming throughput over a fixed window: 64 coroutines each send the
   next request as soon as the previous answer is read. Only answers completed inside the window
   count; errors (non-200 or exceptions) are counted separately. DIRECT first, then OVERLAY,
   each preceded by a short discarded warm-up window.
4. RSS of each node process: at ready, idle (after c=1 warm-up, before any load), sampled peak
   during the c=64 phases (plus the kernel high-water mark ``VmHWM``), and after load. CPU
   seconds per process during each c=64 window are recorded as well.

Caveats — read before comparing numbers:

* The machine this was written for has **2 cores**. The load generator (this script: ONE client
  process, one asyncio loop), the fake upstream and the two nodes all compete for them. During
  the OVERLAY c=64 phase four busy processes share two cores, during DIRECT only two, so the
  throughput ratio is a pessimistic, machine-bound figure, and c=1 latencies include scheduler
  noise. The JSON records nproc and per-process CPU seconds so results can be read in context.
* The client is plain aiohttp (not the openai SDK, which adds its own milliseconds). Its own
  overhead is in both DIRECT and OVERLAY numbers, so "added" latency cancels it out.
* Every load loop is bounded both by a request count and by time (``--duration-s`` per phase;
  the c=64 window is ``--window-s``); every request has a timeout.

Targets: added p50 <= 1.5 ms, added stream TTFT p50 <= 2 ms, c=64 throughput ratio
overlay/direct >= 0.25, idle RSS of each node <= 120 MB. Results: a table on stdout and JSON
(``--out``, default ``.bench/overhead.json``) with every raw sample, machine info and a
timestamp. Exit code 0 unless setup fails (or ``--fail-on-miss`` and a target is missed).

Usage::

    .venv/bin/python scripts/bench_overhead.py --quick
    .venv/bin/python scripts/bench_overhead.py --out .bench/overhead.json
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
import shutil
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
from _procs import (
    ManagedProcess,
    ProcessGroup,
    StartupError,
    cpu_seconds,
    free_port,
    peak_rss_mb,
    rss_mb,
    sigterm_as_keyboard_interrupt,
    wait_for_line,
    wait_until,
)

MODEL = "bench"
TOKENS = 16
HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
JSON_HEADERS = {"Content-Type": "application/json"}
CHAT_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say something short."}]},
    separators=(",", ":"),
).encode()
STREAM_BODY = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say something short."}],
        "stream": True,
    },
    separators=(",", ":"),
).encode()

TARGET_ADDED_P50_MS = 1.5
TARGET_ADDED_TTFT_MS = 2.0
TARGET_TPUT_RATIO = 0.25
TARGET_IDLE_RSS_MB = 120.0

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


def node_bin(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "opentela-node"
    if beside.exists():
        return str(beside)
    found = shutil.which("opentela-node")
    if not found:
        raise SystemExit("opentela-node not found; pass --node-bin")
    return found


# -- memory sampling ------------------------------------------------------------------------------


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


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


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
    session: aiohttp.ClientSession, url: str
) -> tuple[float | None, float, int, bool]:
    """Return (ttft seconds, total seconds, status, saw [DONE])."""
    t0 = time.perf_counter()
    ttft: float | None = None
    head = b""
    tail = b""
    async with session.post(url, data=STREAM_BODY, headers=JSON_HEADERS) as r:
        status = r.status
        async for chunk in r.content.iter_any():
            if ttft is None:
                head += chunk
                if b"data:" in head:
                    ttft = time.perf_counter() - t0
            tail = (tail + chunk)[-64:]
    total = time.perf_counter() - t0
    return ttft, total, status, b"[DONE]" in tail


@dataclass
class C1Result:
    lat_ms: dict[str, list[float]] = field(default_factory=lambda: {"direct": [], "overlay": []})
    extra_ms: dict[str, list[float]] = field(default_factory=lambda: {"direct": [], "overlay": []})
    errors: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: {"direct": collections.Counter(), "overlay": collections.Counter()}
    )
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
    """Alternate direct/overlay requests (order flips each round). Bounded by n and budget_s."""
    res = C1Result()
    names = list(urls)
    t_start = time.perf_counter()
    deadline = t_start + budget_s
    for i in range(warmup + n):
        if time.perf_counter() >= deadline:
            res.stopped_by_time = True
            break
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            try:
                if stream:
                    ttft, total, status, done = await one_stream(sessions[name], urls[name])
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
    # ok answers completed in each second of the window
    per_s: list[int] = field(default_factory=list)
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
    cpu_pids: dict[str, int] | None = None,
) -> LoadResult:
    """``concurrency`` workers, each issuing back-to-back requests until the window closes or
    ``max_requests`` were issued in total. Answers finishing after the window are not counted."""
    res = LoadResult(concurrency, window_s)
    session = new_session(concurrency, req_timeout_s)
    tasks: list[asyncio.Task[None]] = []
    try:
        cpu0 = {k: cpu_seconds(p) for k, p in (cpu_pids or {}).items()}
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
        for k, p in (cpu_pids or {}).items():
            c1 = cpu_seconds(p)
            res.cpu_s[k] = None if c1 is None or cpu0[k] is None else c1 - cpu0[k]  # type: ignore[operator]
    finally:
        # On cancellation (Ctrl-C) stop the workers before closing the session they use.
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
    return res


# -- setup ---------------------------------------------------------------------------------------


@dataclass
class Cluster:
    upstream: ManagedProcess
    entry: ManagedProcess
    worker: ManagedProcess
    upstream_url: str
    entry_url: str
    worker_url: str
    entry_peer: str
    worker_peer: str
    startup_s: float


def closed_pool_args(
    procs: ProcessGroup, tmp: Path, node: str, timeout: float
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

    auth = tmp / "authority"
    pub = last_line("init-authority", [node, "authority", "init", "--home", str(auth)])
    token = last_line(
        "init-token",
        [
            node,
            "token",
            "create",
            "--home",
            str(tmp / "home-entry"),
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


def start_cluster(
    procs: ProcessGroup,
    tmp: Path,
    node: str,
    timeout: float,
    log_level: str,
    closed: bool = False,
) -> Cluster:
    t0 = time.perf_counter()
    upstream = procs.start(
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
    upstream_url = wait_for_line(upstream, "READY ", timeout).split()[1]
    upstream_port = int(upstream_url.rsplit(":", 1)[1])

    peers: dict[str, str] = {}
    for name in ("entry", "worker"):
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
        peers[name] = peer[0].strip()

    extra = closed_pool_args(procs, tmp, node, timeout) if closed else {"entry": [], "worker": []}
    e_http, e_p2p = free_port(HOST), free_port(HOST)
    common = [
        "--http-host",
        HOST,
        "--p2p-host",
        HOST,
        "--log-format",
        "json",
        "--log-level",
        log_level,
    ]
    entry = procs.start(
        "entry",
        [
            node,
            "start",
            "--home",
            str(tmp / "home-entry"),
            "--role",
            "head",
            "--http-port",
            str(e_http),
            "--p2p-port",
            str(e_p2p),
            *common,
            *extra["entry"],
        ],
    )
    entry_url = f"http://{HOST}:{e_http}"
    wait_until(
        lambda: http_json(entry_url + "/v1/health", timeout=2).get("status") == "ok",
        timeout,
        "entry /v1/health",
        procs=[entry, upstream],
    )

    w_http, w_p2p = free_port(HOST), free_port(HOST)
    worker = procs.start(
        "worker",
        [
            node,
            "start",
            "--home",
            str(tmp / "home-worker"),
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
        ],
    )
    worker_url = f"http://{HOST}:{w_http}"
    alive = [entry, worker, upstream]
    wait_until(
        lambda: http_json(worker_url + "/v1/health", timeout=2).get("status") == "ok",
        timeout,
        "worker /v1/health",
        procs=alive,
    )

    def entry_lists_model() -> bool:
        data = http_json(entry_url + "/v1/models", timeout=2)
        return any(m.get("id") == MODEL for m in data.get("data", []))

    wait_until(entry_lists_model, timeout, f"entry /v1/models to list {MODEL!r}", procs=alive)

    def overlay_works() -> bool:
        data = http_json(entry_url + CHAT_PATH, body=CHAT_BODY, timeout=5)
        return bool(data.get("choices"))

    wait_until(
        overlay_works, timeout, "a chat completion through the entry", procs=alive, poll_s=0.1
    )
    return Cluster(
        upstream,
        entry,
        worker,
        upstream_url,
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
            if line.strip():
                non_json += 1
                key = "non-json: " + line.strip()[:120]
                notable[key] += 1
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


# -- report --------------------------------------------------------------------------------------


def fmt(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def build_table(r: dict[str, Any]) -> tuple[str, dict[str, bool | None]]:
    lat, ttft, tput, mem = r["c1_latency"], r["stream_ttft"], r["throughput"], r["rss_mb"]
    d50, o50 = lat["direct"]["ms"]["p50"], lat["overlay"]["ms"]["p50"]
    d99, o99 = lat["direct"]["ms"]["p99"], lat["overlay"]["ms"]["p99"]
    t50d, t50o = ttft["direct"]["ttft_ms"]["p50"], ttft["overlay"]["ttft_ms"]["p50"]
    t99d, t99o = ttft["direct"]["ttft_ms"]["p99"], ttft["overlay"]["ttft_ms"]["p99"]
    rd, ro = tput["direct"]["rps"], tput["overlay"]["rps"]

    def sub(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    added50, added99 = sub(d50, o50), sub(d99, o99)
    added_ttft, added_ttft99 = sub(t50d, t50o), sub(t99d, t99o)
    ratio = (ro / rd) if rd else None
    checks: dict[str, bool | None] = {
        "added_p50": None if added50 is None else added50 <= TARGET_ADDED_P50_MS,
        "added_ttft_p50": None if added_ttft is None else added_ttft <= TARGET_ADDED_TTFT_MS,
        "throughput_ratio": None if ratio is None else ratio >= TARGET_TPUT_RATIO,
    }
    for node in ("entry", "worker"):
        v = mem["idle"].get(node)
        checks[f"idle_rss_{node}"] = None if v is None else v <= TARGET_IDLE_RSS_MB

    c = tput["concurrency"]
    rows: list[tuple[str, str, str, str, str]] = [
        (
            "chat c=1 p50 (ms)",
            fmt(d50, 3),
            fmt(o50, 3),
            f"+{fmt(added50, 3)} ms",
            f"<= {TARGET_ADDED_P50_MS} ms  {verdict(checks['added_p50'])}",
        ),
        ("chat c=1 p99 (ms)", fmt(d99, 3), fmt(o99, 3), f"+{fmt(added99, 3)} ms", "(info)"),
        (
            "stream TTFT c=1 p50 (ms)",
            fmt(t50d, 3),
            fmt(t50o, 3),
            f"+{fmt(added_ttft, 3)} ms",
            f"<= {TARGET_ADDED_TTFT_MS} ms  {verdict(checks['added_ttft_p50'])}",
        ),
        (
            "stream TTFT c=1 p99 (ms)",
            fmt(t99d, 3),
            fmt(t99o, 3),
            f"+{fmt(added_ttft99, 3)} ms",
            "(info)",
        ),
        (
            "stream total c=1 p50 (ms)",
            fmt(ttft["direct"]["total_ms"]["p50"], 3),
            fmt(ttft["overlay"]["total_ms"]["p50"], 3),
            f"+{fmt(sub(ttft['direct']['total_ms']['p50'], ttft['overlay']['total_ms']['p50']), 3)} ms",
            "(info)",
        ),
        (
            f"chat c={c} throughput (req/s)",
            fmt(rd, 1),
            fmt(ro, 1),
            f"x{fmt(ratio, 3)}",
            f">= x{TARGET_TPUT_RATIO}  {verdict(checks['throughput_ratio'])}",
        ),
        (
            f"chat c={c} errors",
            str(tput["direct"]["errors_total"]),
            str(tput["overlay"]["errors_total"]),
            "",
            "(info)",
        ),
        (
            f"chat c={c} latency p50/p99 (ms)",
            f"{fmt(tput['direct']['ms']['p50'], 1)}/{fmt(tput['direct']['ms']['p99'], 1)}",
            f"{fmt(tput['overlay']['ms']['p50'], 1)}/{fmt(tput['overlay']['ms']['p99'], 1)}",
            "",
            "(info)",
        ),
    ]
    for node in ("entry", "worker"):
        rows.append(
            (
                f"idle RSS {node} node (MB)",
                "-",
                fmt(mem["idle"].get(node), 1),
                "",
                f"<= {TARGET_IDLE_RSS_MB:.0f} MB  {verdict(checks[f'idle_rss_{node}'])}",
            )
        )
    for node in ("entry", "worker"):
        rows.append(
            (
                f"peak/after-load RSS {node} (MB)",
                "-",
                f"{fmt(mem['peak_during_load'].get(node), 1)}/{fmt(mem['after_load'].get(node), 1)}",
                "",
                "(info)",
            )
        )
    rows.append(
        (
            "upstream RSS idle/peak (MB)",
            f"{fmt(mem['idle'].get('upstream'), 1)}/{fmt(mem['peak_during_load'].get('upstream'), 1)}",
            "-",
            "",
            "(info)",
        )
    )

    headers = ("metric", "direct", "overlay", "added/ratio", "target")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(s.ljust(w) for s, w in zip(cells, widths, strict=True)) + " |"

    sep = "|-" + "-|-".join("-" * w for w in widths) + "-|"
    out = [line(headers), sep, *(line(row) for row in rows)]
    return "\n".join(out), checks


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="short CI-sized run")
    p.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="upper bound on wall time of each measurement phase (default 60; --quick 15)",
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
        "--stream-requests",
        type=int,
        default=None,
        help="streaming requests per target (200; quick 50)",
    )
    p.add_argument(
        "--stream-warmup",
        type=int,
        default=None,
        help="streaming warm-up per target (20; quick 10)",
    )
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--window-s", type=float, default=None, help="c=N throughput window (5; quick 2)"
    )
    p.add_argument(
        "--load-warmup-s", type=float, default=None, help="discarded c=N warm-up (1; quick 0.5)"
    )
    p.add_argument(
        "--max-load-requests", type=int, default=200_000, help="cap on requests per c=N window"
    )
    p.add_argument("--request-timeout-s", type=float, default=30.0)
    p.add_argument("--startup-timeout-s", type=float, default=60.0)
    p.add_argument(
        "--node-bin", default=None, help="opentela-node executable (default: next to python)"
    )
    p.add_argument(
        "--node-log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with node logs")
    p.add_argument(
        "--authority",
        action="store_true",
        help="a closed pool: --authority on both nodes (the worker joins with a join token)",
    )
    p.add_argument("--fail-on-miss", action="store_true", help="exit 1 if a target is missed")
    a = p.parse_args(argv)
    q = a.quick
    a.duration_s = a.duration_s if a.duration_s is not None else (15.0 if q else 60.0)
    a.requests = a.requests if a.requests is not None else (100 if q else 500)
    a.warmup = a.warmup if a.warmup is not None else (20 if q else 50)
    a.stream_requests = a.stream_requests if a.stream_requests is not None else (50 if q else 200)
    a.stream_warmup = a.stream_warmup if a.stream_warmup is not None else (10 if q else 20)
    a.window_s = a.window_s if a.window_s is not None else (2.0 if q else 5.0)
    a.load_warmup_s = a.load_warmup_s if a.load_warmup_s is not None else (0.5 if q else 1.0)
    # The window (plus warm-up) must fit in the per-phase bound.
    a.window_s = min(a.window_s, a.duration_s)
    a.load_warmup_s = min(a.load_warmup_s, max(0.0, a.duration_s - a.window_s))
    return a


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def measure(a: argparse.Namespace, cl: Cluster) -> dict[str, Any]:
    urls = {"direct": cl.upstream_url + CHAT_PATH, "overlay": cl.entry_url + CHAT_PATH}
    node_pids = {"entry": cl.entry.pid, "worker": cl.worker.pid}
    all_pids = {**node_pids, "upstream": cl.upstream.pid}
    rss: dict[str, Any] = {"at_ready": rss_snapshot(all_pids)}

    sessions = {k: new_session(1, a.request_timeout_s) for k in urls}
    try:
        # c=1 warm-up alone first, so "idle" RSS is measured after warm-up but before any load.
        log(f"c=1 warm-up: {a.warmup} requests per target")
        await c1_interleaved(urls, sessions, 0, a.warmup, a.duration_s, stream=False)
        rss["idle"] = rss_snapshot(all_pids)
        log(f"idle RSS: {rss['idle']}")

        log(f"c=1 latency: {a.requests} requests per target (interleaved, <= {a.duration_s}s)")
        lat = await c1_interleaved(urls, sessions, a.requests, 0, a.duration_s, stream=False)
        log(f"c=1 streaming TTFT: {a.stream_requests} per target after {a.stream_warmup} warm-up")
        st = await c1_interleaved(
            urls, sessions, a.stream_requests, a.stream_warmup, a.duration_s, stream=True
        )
    finally:
        for s in sessions.values():
            await s.close()
    rss["before_load"] = rss_snapshot(all_pids)

    loads: dict[str, LoadResult] = {}
    with RssSampler(all_pids) as sampler:
        for name in ("direct", "overlay"):
            if a.load_warmup_s > 0:
                log(f"c={a.concurrency} {name}: warm-up {a.load_warmup_s}s")
                await closed_loop(
                    urls[name],
                    a.concurrency,
                    a.load_warmup_s,
                    a.max_load_requests,
                    a.request_timeout_s,
                    5.0,
                )
            log(f"c={a.concurrency} {name}: {a.window_s}s window")
            loads[name] = await closed_loop(
                urls[name],
                a.concurrency,
                a.window_s,
                a.max_load_requests,
                a.request_timeout_s,
                5.0,
                cpu_pids=all_pids,
            )
            log(
                f"  -> {loads[name].rps:.1f} req/s, {loads[name].error_count} errors, late={loads[name].late}"
            )
    rss["peak_during_load"] = {k: _r(v) for k, v in sampler.peak.items()}
    rss["after_load"] = rss_snapshot(all_pids)
    rss["vmhwm_after_load"] = {k: _r(peak_rss_mb(p)) for k, p in all_pids.items()}
    rss["sampler"] = {"interval_s": sampler.interval_s, "samples": sampler.samples}

    def c1_block(res: C1Result, name: str, key: str) -> dict[str, Any]:
        b: dict[str, Any] = {
            key: summary(res.lat_ms[name]),
            "errors": dict(res.errors[name]),
            "samples_ms": [round(x, 4) for x in res.lat_ms[name]],
        }
        if res.extra_ms[name]:
            b["total_ms"] = summary(res.extra_ms[name])
            b["total_samples_ms"] = [round(x, 4) for x in res.extra_ms[name]]
        return b

    def load_block(res: LoadResult) -> dict[str, Any]:
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
            "client_cpu_s_in_window": round(res.client_cpu_s, 3),
        }

    return {
        "c1_latency": {
            "requests_per_target": a.requests,
            "warmup_per_target": a.warmup,
            "rounds": lat.rounds,
            "elapsed_s": lat.elapsed_s,
            "stopped_by_time": lat.stopped_by_time,
            "direct": c1_block(lat, "direct", "ms"),
            "overlay": c1_block(lat, "overlay", "ms"),
        },
        "stream_ttft": {
            "requests_per_target": a.stream_requests,
            "warmup_per_target": a.stream_warmup,
            "rounds": st.rounds,
            "elapsed_s": st.elapsed_s,
            "stopped_by_time": st.stopped_by_time,
            "direct": c1_block(st, "direct", "ttft_ms"),
            "overlay": c1_block(st, "overlay", "ttft_ms"),
        },
        "throughput": {
            "concurrency": a.concurrency,
            "window_s": a.window_s,
            "warmup_s": a.load_warmup_s,
            "direct": load_block(loads["direct"]),
            "overlay": load_block(loads["overlay"]),
        },
        "rss_mb": rss,
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sigterm_as_keyboard_interrupt()
    node = node_bin(a.node_bin)
    tmp = Path(tempfile.mkdtemp(prefix="otela-bench-overhead-"))
    keep = a.keep_logs
    started = dt.datetime.now(dt.UTC)
    log(f"temp dir {tmp} (quick={a.quick})")
    report: dict[str, Any] = {
        "benchmark": "overhead",
        "timestamp": started.isoformat(),
        "machine": machine_info(),
        "config": {k: v for k, v in vars(a).items()},
        "upstream": {"model": MODEL, "tokens": TOKENS, "token_delay_ms": 0},
    }
    procs = ProcessGroup(tmp / "logs")
    try:
        try:
            cl = start_cluster(
                procs, tmp, node, a.startup_timeout_s, a.node_log_level, closed=a.authority
            )
        except (StartupError, OSError) as exc:
            keep = True
            log(f"STARTUP FAILED: {exc}")
            print(procs.tails(40), file=sys.stderr)
            return 2
        log(
            f"cluster up in {cl.startup_s:.2f}s: upstream={cl.upstream_url} entry={cl.entry_url} "
            f"(pid {cl.entry.pid}) worker={cl.worker_url} (pid {cl.worker.pid})"
        )
        report["cluster"] = {
            "startup_s": cl.startup_s,
            "upstream_url": cl.upstream_url,
            "entry_url": cl.entry_url,
            "worker_url": cl.worker_url,
            "entry_peer_id": cl.entry_peer,
            "worker_peer_id": cl.worker_peer,
        }
        report.update(asyncio.run(measure(a, cl)))

        for name, url in (("entry", cl.entry_url), ("worker", cl.worker_url)):
            try:
                report.setdefault("node_stats", {})[name] = http_json(
                    url + "/v1/dnt/stats", timeout=5
                )
            except Exception as exc:
                report.setdefault("node_stats", {})[name] = {"error": repr(exc)}
        for p in (cl.entry, cl.worker, cl.upstream):
            if not p.alive():
                log(f"WARNING: {p.name} exited during the run with code {p.returncode}")
                keep = True
        report["alive_at_end"] = {p.name: p.alive() for p in (cl.entry, cl.worker, cl.upstream)}
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
            k: v for k, v in codes.items() if not k.startswith(("init-", "peerid-"))
        }
        node_procs = [p for p in procs.procs if p.name in ("entry", "worker", "upstream")]
        report["logs"] = {p.name: scan_log(p) for p in node_procs}
        if keep:
            log(f"logs kept in {tmp / 'logs'}")
            report["logs_dir"] = str(tmp / "logs")

    table, checks = build_table(report)
    report["checks"] = checks
    report["finished"] = dt.datetime.now(dt.UTC).isoformat()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    m = report["machine"]
    print(
        f"\nopentela overlay overhead  ({'quick' if a.quick else 'full'} run, nproc={m['nproc']}, "
        f"python {m['python']}, {report['timestamp']})"
    )
    print(table)
    notes = []
    for name, scan in report["logs"].items():
        if scan["notable"]:
            notes.append(
                f"{name} log: " + ", ".join(f"{k} x{v}" for k, v in scan["notable"].items())
            )
    for section in ("c1_latency", "stream_ttft"):
        if report[section]["stopped_by_time"]:
            notes.append(
                f"{section} stopped by --duration-s after {report[section]['rounds']} rounds"
            )
    for name in ("direct", "overlay"):
        for section in ("c1_latency", "stream_ttft"):
            errs = report[section][name]["errors"]
            if errs:
                notes.append(f"{section} {name} errors: {errs}")
        errs = report["throughput"][name]["errors"]
        if errs:
            notes.append(f"c={a.concurrency} {name} errors: {errs}")
    for n in notes:
        print("note:", n)
    print(f"JSON: {out}")
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.fail_on_miss and any(v is False for v in checks.values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
