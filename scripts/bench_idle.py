#!/usr/bin/env python3
"""Idle cost of a pool: CPU and memory of nodes that serve nothing.

What it starts (all on 127.0.0.1, free ports, temp home dirs, logs in a temp dir):

* one ``python -m opentela.testing.fake_upstream`` per worker,
* a head (``--role head``, no backend),
* ``--workers`` workers (default 2) fronting the upstreams, bootstrapped to the head.

It waits (polling with deadlines) until every node's ``/v1/health`` counts all the others as
live peers and the head lists the model, lets the pool settle for ``--settle-s`` (joins and
the first minute of anti-entropy rounds after a table change are not idle), then samples
each process for ``--sample-s``:

* CPU: ``utime + stime`` from ``/proc/PID/stat`` at both ends of the window, as % of one core;
* wake-ups: voluntary + involuntary context switches of all the process's threads per second
  (``/proc/PID/task/*/status``), a proxy for how often something wakes it;
* RSS: sampled once a second (mean and max), plus its anonymous part, the kernel's high-water
  mark ``VmHWM``, the proportional set size (PSS: shared libraries split among the processes
  mapping them) and the thread count.

Targets (issue 12, scope 4): each node ≤ 0.5 % of a core and ≤ 70 MB RSS at idle. Results: a
table on stdout and JSON (``--out``, default ``.bench/idle.json``). The whole run is bounded
(``--timeout`` for start-up, fixed settle and sample windows); on exit, normal or not, it stops
only the processes it started, by PID. Upstreams are measured too but are not opentela.

The machine may be shared: CPU figures of one run are comparable with each other (head vs
worker, before vs after a change in the same run), not across runs on a busy machine.

Usage::

    .venv/bin/python scripts/bench_idle.py
    .venv/bin/python scripts/bench_idle.py --sample-s 60 --node-arg=--probe-interval --node-arg=1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _procs import (
    ManagedProcess,
    ProcessGroup,
    StartupError,
    free_port,
    node_bin,
    sigterm_as_keyboard_interrupt,
    wait_for_line,
    wait_until,
)

HOST = "127.0.0.1"
MODEL = "idle"
TARGET_CPU_PCT = 0.5
TARGET_RSS_MB = 70.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

_URL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def http_json(url: str, timeout: float = 2.0) -> Any:
    with _URL.open(url, timeout=timeout) as r:
        return json.loads(r.read())


# -- /proc readers --------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of the whole process (all threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def user_sys_ticks(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def ctx_switches(pid: int) -> int | None:
    """Voluntary + involuntary context switches summed over the process's threads."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            continue  # a thread ended between listdir and open
    return total


def status_fields(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (KiB) and Threads from /proc/PID/status."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads", "RssAnon", "RssFile"):
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def pss_mb(pid: int) -> float | None:
    """Proportional set size: shared pages (libpython, libssl, ...) split among the processes
    that map them. RSS counts them whole in every node; PSS is what a node really adds."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- the pool ------------------------------------------------------------------------------------


def identity(procs: ProcessGroup, node: str, home: Path, name: str, timeout: float) -> str:
    init = procs.start(f"init-{name}", [node, "init", "--home", str(home)])
    init.popen.wait(timeout)
    if init.returncode != 0:
        raise StartupError(f"opentela-node init failed for {name}:\n{init.tail()}")
    p = procs.start(f"peerid-{name}", [node, "peer-id", "--home", str(home)])
    p.popen.wait(timeout)
    lines = p.read_stdout().strip().splitlines()
    if p.returncode != 0 or not lines:
        raise StartupError(f"opentela-node peer-id failed for {name}:\n{p.tail()}")
    return lines[-1].strip()


def start_pool(
    procs: ProcessGroup, tmp: Path, a: argparse.Namespace
) -> tuple[dict[str, ManagedProcess], dict[str, ManagedProcess], dict[str, str]]:
    """Start upstreams, a head and workers; return (nodes, upstreams, node name -> URL)."""
    node = node_bin(a.node_bin)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for k in [k for k in env if k.startswith("OTELA_")]:
        del env[k]
    common = ["--http-host", HOST, "--p2p-host", HOST, "--log-format", "json"]
    common += ["--log-level", a.log_level, *a.node_arg]
    upstreams: dict[str, ManagedProcess] = {}
    ports: dict[str, int] = {}
    for i in range(a.workers):
        name = f"upstream{i + 1}"
        argv = [sys.executable, "-m", "opentela.testing.fake_upstream", "--host", HOST]
        up = procs.start(name, [*argv, "--port", "0", "--model", MODEL], env=env)
        upstreams[name] = up
    for name, up in upstreams.items():
        ports[name] = int(wait_for_line(up, "READY ", a.timeout).split()[1].rsplit(":", 1)[1])

    nodes: dict[str, ManagedProcess] = {}
    urls: dict[str, str] = {}
    head_home = tmp / "home-head"
    head_id = identity(procs, node, head_home, "head", a.timeout)
    h_http, h_p2p = free_port(HOST), free_port(HOST)
    argv = [node, "start", "--home", str(head_home), "--role", "head"]
    argv += ["--http-port", str(h_http), "--p2p-port", str(h_p2p), *common]
    nodes["head"] = procs.start("head", argv, env=env)
    urls["head"] = f"http://{HOST}:{h_http}"
    bootstrap = f"/ip4/{HOST}/tcp/{h_p2p}/p2p/{head_id}"
    for i in range(a.workers):
        name = f"worker{i + 1}"
        home = tmp / f"home-{name}"
        identity(procs, node, home, name, a.timeout)
        w_http, w_p2p = free_port(HOST), free_port(HOST)
        argv = [node, "start", "--home", str(home), "--bootstrap", bootstrap]
        argv += ["--http-port", str(w_http), "--p2p-port", str(w_p2p), "--service.name", "llm"]
        argv += ["--service.port", str(ports[f"upstream{i + 1}"]), *common]
        nodes[name] = procs.start(name, argv, env=env)
        urls[name] = f"http://{HOST}:{w_http}"

    everyone = [*nodes.values(), *upstreams.values()]
    want = len(nodes) - 1
    for name, url in urls.items():
        wait_until(
            lambda url=url: http_json(url + "/v1/health").get("peers", -1) >= want,
            a.timeout,
            f"{name} to see {want} live peers",
            procs=everyone,
        )
    wait_until(
        lambda: any(m.get("id") == MODEL for m in http_json(urls["head"] + "/v1/models")["data"]),
        a.timeout,
        f"head /v1/models to list {MODEL!r}",
        procs=everyone,
    )
    return nodes, upstreams, urls


# -- sampling ------------------------------------------------------------------------------------


def sample(pids: dict[str, int], seconds: float) -> dict[str, dict[str, Any]]:
    """CPU %, wake-ups/s and RSS of each PID over ``seconds`` (RSS once a second)."""
    t0 = time.monotonic()
    c0 = {n: cpu_ticks(p) for n, p in pids.items()}
    us0 = {n: user_sys_ticks(p) for n, p in pids.items()}
    s0 = {n: ctx_switches(p) for n, p in pids.items()}
    rss: dict[str, list[float]] = {n: [] for n in pids}
    end = t0 + seconds
    while True:
        for n, p in pids.items():
            kb = status_fields(p).get("VmRSS")
            if kb is not None:
                rss[n].append(kb / 1024)
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(1.0, left))
    elapsed = time.monotonic() - t0
    out: dict[str, dict[str, Any]] = {}
    for n, p in pids.items():
        c1, s1, st = cpu_ticks(p), ctx_switches(p), status_fields(p)
        us1, a0 = user_sys_ticks(p), us0[n]
        split = None if us1 is None or a0 is None else (us1[0] - a0[0], us1[1] - a0[1])
        cpu_s = None if c0[n] is None or c1 is None else (c1 - c0[n]) / CLK_TCK
        wakes = None if s0[n] is None or s1 is None else (s1 - s0[n]) / elapsed
        samples = rss[n]
        out[n] = {
            "pid": p,
            "elapsed_s": round(elapsed, 2),
            "cpu_s": cpu_s,
            "cpu_pct": None if cpu_s is None else round(100 * cpu_s / elapsed, 3),
            "user_pct": None if split is None else round(100 * split[0] / CLK_TCK / elapsed, 3),
            "sys_pct": None if split is None else round(100 * split[1] / CLK_TCK / elapsed, 3),
            "wakeups_per_s": None if wakes is None else round(wakes, 1),
            "rss_mb_mean": round(sum(samples) / len(samples), 1) if samples else None,
            "rss_mb_max": round(max(samples), 1) if samples else None,
            "rss_anon_mb": round(st["RssAnon"] / 1024, 1) if "RssAnon" in st else None,
            "rss_file_mb": round(st["RssFile"] / 1024, 1) if "RssFile" in st else None,
            "hwm_mb": round(st["VmHWM"] / 1024, 1) if "VmHWM" in st else None,
            "pss_mb": None if (pss := pss_mb(p)) is None else round(pss, 1),
            "threads": st.get("Threads"),
        }
    return out


def profile(nodes: dict[str, ManagedProcess], out_dir: Path, seconds: float) -> None:
    """py-spy every node at once (a separate window: the sampler costs the target a little)."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        print("py-spy not installed (.venv/bin/pip install py-spy); no profile", file=sys.stderr)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for name, proc in nodes.items():
        argv = [str(spy), "record", "--pid", str(proc.pid), "--duration", str(int(seconds))]
        argv += ["--rate", "500", "--format", "raw", "--nonblocking"]
        argv += ["-o", str(out_dir / f"{name}.txt")]
        runs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for r in runs:
        try:
            r.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            r.kill()
            r.wait(5)
    print(f"profiles in {out_dir}/")


def fmt(v: Any, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def table(res: dict[str, dict[str, Any]], nodes: set[str]) -> str:
    head = ("process", "cpu %core", "wakes/s", "RSS MB", "anon MB", "PSS MB", "threads", "target")
    rows = [head]
    for name, r in res.items():
        verdict = ""
        if name in nodes:
            ok = (r["cpu_pct"] or 0) <= TARGET_CPU_PCT and (r["rss_mb_max"] or 0) <= TARGET_RSS_MB
            verdict = "met" if ok else "MISSED"
        rows.append(
            (
                name,
                fmt(r["cpu_pct"], 2),
                fmt(r["wakeups_per_s"], 1),
                fmt(r["rss_mb_max"], 1),
                fmt(r["rss_anon_mb"], 1),
                fmt(r["pss_mb"], 1),
                fmt(r["threads"]),
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2, help="workers beside the head (default 2)")
    p.add_argument(
        "--settle-s",
        type=float,
        default=65.0,
        help="idle time before sampling (default 65: past table/sync.py's AE_ACTIVE_S, after "
        "which a quiet node runs anti-entropy rounds only every AE_QUIET_S)",
    )
    p.add_argument("--sample-s", type=float, default=20.0, help="sampling window")
    p.add_argument("--timeout", type=float, default=60.0, help="start-up deadline per step")
    p.add_argument("--log-level", default="info")
    p.add_argument("--node-bin", default=None)
    p.add_argument(
        "--node-arg", action="append", default=[], help="extra argument for every node (repeat)"
    )
    p.add_argument("--out", default=".bench/idle.json")
    p.add_argument("--keep-logs", action="store_true", help="do not delete the temp dir")
    p.add_argument(
        "--py-spy",
        metavar="DIR",
        default=None,
        help="after sampling, profile each node with py-spy for --sample-s (raw, DIR/NAME.txt)",
    )
    p.add_argument("--fail-on-miss", action="store_true", help="exit 1 if a target is missed")
    a = p.parse_args(argv)
    if a.workers < 0 or a.sample_s <= 0 or a.settle_s < 0:
        p.error("--workers >= 0, --sample-s > 0, --settle-s >= 0")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sigterm_as_keyboard_interrupt()
    tmp = Path(tempfile.mkdtemp(prefix="otela-idle-"))
    ok = True
    try:
        with ProcessGroup(tmp / "logs", stop_timeout=10.0, parallel_stop=True) as procs:
            try:
                t0 = time.monotonic()
                nodes, upstreams, _ = start_pool(procs, tmp, a)
                ready_s = time.monotonic() - t0
            except StartupError as exc:
                print(f"setup failed: {exc}\n{procs.tails()}", file=sys.stderr)
                return 2
            print(f"pool up in {ready_s:.1f}s; settling {a.settle_s:g}s, sampling {a.sample_s:g}s")
            time.sleep(a.settle_s)  # a measurement window, not synchronization
            pids = {n: p.pid for n, p in {**nodes, **upstreams}.items()}
            res = sample(pids, a.sample_s)
            if a.py_spy:
                profile(nodes, Path(a.py_spy), a.sample_s)
            dead = [n for n, p in {**nodes, **upstreams}.items() if not p.alive()]
            if dead:
                print(f"exited during sampling: {dead}\n{procs.tails()}", file=sys.stderr)
                return 2
        print(table(res, set(nodes)))
        node_res = [res[n] for n in nodes]
        total_cpu = sum(r["cpu_pct"] or 0 for r in node_res)
        ok = all(
            (r["cpu_pct"] or 0) <= TARGET_CPU_PCT and (r["rss_mb_max"] or 0) <= TARGET_RSS_MB
            for r in node_res
        )
        print(
            f"nodes together: {total_cpu:.2f} % of a core; targets per node: "
            f"<= {TARGET_CPU_PCT} % and <= {TARGET_RSS_MB:g} MB: {'met' if ok else 'MISSED'}"
        )
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "nproc": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "loadavg": os.getloadavg(),
            },
            "args": vars(a),
            "ready_s": round(ready_s, 2),
            "targets": {"cpu_pct_per_node": TARGET_CPU_PCT, "rss_mb_per_node": TARGET_RSS_MB},
            "nodes": {n: res[n] for n in nodes},
            "upstreams": {n: res[n] for n in upstreams},
            "nodes_cpu_pct_total": round(total_cpu, 3),
            "met": ok,
        }
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out}")
    finally:
        if a.keep_logs:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if (a.fail_on_miss and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
