#!/usr/bin/env python3
"""What API keys cost at the entry node: auth OFF vs auth ON, same pool, same run.

Starts (127.0.0.1, free ports, temp homes): the fake upstream, a worker node fronting it, and
entry nodes bootstrapped to the worker: one with ``--auth off`` and one with ``--auth
required`` per database (SQLite in its home; PostgreSQL from scripts/postgres-up.sh, a fresh
database, unless ``--no-postgres``). Each store holds ``--keys`` keys (10,000 by default); the
benchmark's key has rpm, tpm and a monthly budget, so every request takes the whole path (key
lookup cache, window, budget). Then, for each database:

1. c=1 non-streaming latency, OFF and ON interleaved request by request (the order flips every
   round) on keep-alive sessions: added p50 = p50(ON) - p50(OFF). Target <= 0.2 ms.
2. c=64 closed-loop throughput, ``--rounds`` windows of ``--window-s`` per target in ABBA
   order (OFF, ON, ON, OFF, ...): ratio of the mean ON/OFF rates. Target >= 0.9.

2 cores are shared by the client, the upstream and the nodes: read the ratio as a lower bound.
A table on stdout, JSON under .bench/ (``--out``).

    .venv/bin/python scripts/bench_auth.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _procs import ProcessGroup, wait_until

from opentela.testing.serving import free_port

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
NODE = [PY, "-m", "opentela.cli"]
MODEL = "bench"
BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
).encode()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def fill_store(db: str, n: int) -> str:
    """``n`` keys in the store at ``db``; returns the text of the one the benchmark uses."""
    from sqlalchemy import insert

    from opentela.store import open_store
    from opentela.store.schema import api_keys

    with open_store(db) as store:
        text, _ = store.create_key(
            "bench@example.org",
            rpm=10**9,
            tpm=10**12,
            budget_tokens=10**15,
            budget_period="month",
        )
        now = time.time()
        rows = [
            {
                "id": f"key_{i:08x}",
                "key_hash": secrets.token_hex(32),
                "prefix": "sk-otela-fill",
                "owner": f"user{i}@example.org",
                "models": "[]",
                "rpm": 60,
                "tpm": 100_000,
                "budget_tokens": None,
                "budget_period": None,
                "admin": 0,
                "created_at": now,
            }
            for i in range(n - 1)
        ]
        with store.engine.begin() as conn:
            for start in range(0, len(rows), 2000):
                conn.execute(insert(api_keys), rows[start : start + 2000])
    return text


def postgres_db() -> str | None:
    up = subprocess.run(
        ["bash", str(REPO / "scripts" / "postgres-up.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    if up.returncode != 0 or not up.stdout.strip():
        print(f"no PostgreSQL ({(up.stderr.strip().splitlines() or ['?'])[-1]})", file=sys.stderr)
        return None
    import psycopg

    base = up.stdout.strip().splitlines()[-1].rsplit("/", 1)[0]
    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def start_node(group: ProcessGroup, tmp: Path, name: str, *args: str) -> tuple[str, str, int]:
    """(url, multiaddr, pid) of a started, healthy node."""
    home = tmp / name
    home.mkdir(exist_ok=True)
    subprocess.run([*NODE, "init", "--home", str(home)], check=True, capture_output=True)
    pid = subprocess.run(
        [*NODE, "peer-id", "--home", str(home)], check=True, capture_output=True, text=True
    ).stdout.strip()
    http, p2p = free_port("127.0.0.1"), free_port("127.0.0.1")
    proc = group.start(
        name,
        [
            *NODE, "start", "--home", str(home), "--http-host", "127.0.0.1",
            "--http-port", str(http), "--p2p-host", "127.0.0.1", "--p2p-port", str(p2p),
            "--log-format", "json", "--log-level", "warning", *args,
        ],
    )  # fmt: skip
    url = f"http://127.0.0.1:{http}"
    wait_until(lambda: http_ok(f"{url}/v1/health"), 30, f"{name} healthy", procs=[proc])
    return url, f"/ip4/127.0.0.1/tcp/{p2p}/p2p/{pid}", proc.pid


async def one(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    async with session.post(url, data=BODY, headers=headers) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"status {r.status}")
    return time.perf_counter() - t0


async def c1(targets: dict[str, tuple[str, dict[str, str]]], n: int, warmup: int) -> dict:
    lat: dict[str, list[float]] = {k: [] for k in targets}
    errors = dict.fromkeys(targets, 0)
    sessions = {k: aiohttp.ClientSession() for k in targets}
    try:
        names = list(targets)
        for i in range(warmup + n):
            for name in names if i % 2 == 0 else names[::-1]:
                url, headers = targets[name]
                try:
                    s = await one(sessions[name], url, headers)
                except (RuntimeError, aiohttp.ClientError, TimeoutError):
                    errors[name] += 1
                    continue
                if i >= warmup:
                    lat[name].append(s * 1000)
    finally:
        for s in sessions.values():
            await s.close()
    return {"p50_ms": {k: pct(v, 0.5) for k, v in lat.items()},
            "p99_ms": {k: pct(v, 0.99) for k, v in lat.items()},
            "errors": errors, "samples": lat}  # fmt: skip


async def closed_loop(url: str, headers: dict[str, str], conc: int, window_s: float) -> dict:
    ok, errors = 0, 0
    conn = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(
        connector=conn, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        deadline = time.perf_counter() + window_s

        async def worker() -> None:
            nonlocal ok, errors
            while time.perf_counter() < deadline:
                try:
                    await one(session, url, headers)
                except (RuntimeError, aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                if time.perf_counter() <= deadline:
                    ok += 1

        await asyncio.gather(*(worker() for _ in range(conc)))
    return {"rps": ok / window_s, "ok": ok, "errors": errors}


def gate_cost_us(db: str, text: str, n: int = 50_000) -> float:
    """The gate's own cost per admitted request, in process (middleware + admit on one
    mocked request, refreshes from the store included): the part of "added latency" that the
    end-to-end numbers above measure with the noise of a shared machine."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from opentela.gateway.auth import AuthGate
    from opentela.store import open_store

    async def run() -> float:
        with open_store(db) as store:
            gate = AuthGate("required", "open", lambda: store, pending=lambda _k, _n: (0, 0))

            async def handler(request: web.Request) -> web.StreamResponse:
                await gate.admit(request, MODEL)
                return web.Response()

            request = make_mocked_request(
                "POST", "/v1/chat/completions", headers={"Authorization": f"Bearer {text}"}
            )
            for _ in range(200):
                await gate.middleware(request, handler)
            t0 = time.perf_counter()
            for _ in range(n):
                await gate.middleware(request, handler)
            return (time.perf_counter() - t0) / n * 1e6

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="short run (fewer samples, 3 s windows)")
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--n", type=int, default=2000, help="c=1 rounds")
    p.add_argument("--window-s", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4, help="c=64 windows per target, ABBA order")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--out", default=str(REPO / ".bench" / "auth.json"))
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.window_s, a.rounds = 400, 3.0, 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    dbs = {"sqlite": f"sqlite:///{tmp / 'keys.db'}"}
    if not a.no_postgres:
        pg = postgres_db()
        if pg:
            dbs["postgresql"] = pg
    keys = {name: fill_store(db, a.keys) for name, db in dbs.items()}
    result: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(),
        "nproc": os.cpu_count(),
        "keys_in_store": a.keys,
        "n": a.n,
        "window_s": a.window_s,
        "concurrency": a.concurrency,
        "databases": {},
    }
    with ProcessGroup(tmp / "logs") as group:
        up_port = free_port("127.0.0.1")
        upstream = group.start(
            "upstream",
            [PY, "-m", "opentela.testing.fake_upstream", "--port", str(up_port),
             "--model", MODEL, "--tokens", "16"],
        )  # fmt: skip
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{up_port}/health"), 15, "upstream", procs=[upstream]
        )
        _, wmaddr, _ = start_node(group, tmp, "worker", "--service.port", str(up_port))
        off_url, _, _ = start_node(group, tmp, "entry-off", "--bootstrap", wmaddr)
        on_urls = {
            name: start_node(
                group, tmp, f"entry-{name}", "--bootstrap", wmaddr, "--auth", "required",
                "--db", db,
            )[0]
            for name, db in dbs.items()
        }  # fmt: skip
        for url in [off_url, *on_urls.values()]:
            wait_until(
                lambda url=url: MODEL in urllib.request.urlopen(f"{url}/v1/models").read().decode(),
                30,
                f"{MODEL} routable via {url}",
            )
        plain = {"Content-Type": "application/json"}
        for name, on_url in on_urls.items():
            auth = {**plain, "Authorization": f"Bearer {keys[name]}"}
            targets = {
                "off": (f"{off_url}/v1/chat/completions", plain),
                "on": (f"{on_url}/v1/chat/completions", auth),
            }
            lat = asyncio.run(c1(targets, a.n, warmup=max(20, a.n // 10)))
            runs: dict[str, list[dict]] = {"off": [], "on": []}
            # ABBA order (off, on, on, off, ...): drift on a shared machine hits both alike.
            for i in range(a.rounds):
                for which in ("off", "on") if i % 2 == 0 else ("on", "off"):
                    url, headers = targets[which]
                    runs[which].append(
                        asyncio.run(closed_loop(url, headers, a.concurrency, a.window_s))
                    )
            off, on = (
                {
                    "rps": sum(r["rps"] for r in runs[w]) / len(runs[w]),
                    "ok": sum(r["ok"] for r in runs[w]),
                    "errors": sum(r["errors"] for r in runs[w]),
                    "windows": runs[w],
                }
                for w in ("off", "on")
            )
            p50 = lat["p50_ms"]
            added = p50["on"] - p50["off"] if None not in p50.values() else None
            ratio = on["rps"] / off["rps"] if off["rps"] else None
            result["databases"][name] = {
                "gate_us_per_request": gate_cost_us(dbs[name], keys[name]),
                "c1": {k: v for k, v in lat.items() if k != "samples"},
                "added_p50_ms": added,
                "c64": {"off": off, "on": on, "ratio": ratio},
                "targets_met": {
                    "added_p50_le_0.2ms": added is not None and added <= 0.2,
                    "c64_ratio_ge_0.9": ratio is not None and ratio >= 0.9,
                },
            }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'database':<12}{'p50 off':>10}{'p50 on':>10}{'added':>10}"
          f"{'rps off':>10}{'rps on':>10}{'ratio':>8}{'gate us':>9}")  # fmt: skip
    for name, r in result["databases"].items():
        p50 = r["c1"]["p50_ms"]
        c = r["c64"]
        print(
            f"{name:<12}{p50['off']:>9.3f}m{p50['on']:>9.3f}m{r['added_p50_ms']:>9.3f}m"
            f"{c['off']['rps']:>10.0f}{c['on']['rps']:>10.0f}{c['ratio']:>8.2f}"
            f"{r['gate_us_per_request']:>9.1f}"
        )
    print(f"(ms; {a.keys} keys per store; c={a.concurrency}, {a.rounds}x{a.window_s:g} s windows; "
          f"{os.cpu_count()} cores; JSON {out})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
