"""Three sites in network namespaces, ~20-25 ms apart, one private site reached through relays.

- site A: h1 the entry (a head), h5 relay R2;
- site B: h2 a public worker serving M, h3 relay R1 (also the entry used from site B);
- site C: h4 a private worker serving M and MC. Its namespace drops every inbound connection
  and lets it open connections only to the relays (a compute cluster whose egress reaches the
  operator's head network, not other sites). It starts with ``--reachability auto`` outside
  Slurm, so it believes it is public until the dial-back from the relays proves otherwise.

Checked: C turns private and reserves both relays; requests for MC through A succeed through
a relay; from B's site, requests for M prefer B's replica at equal load; killing the relay C's
traffic went through costs 0 non-streaming requests and C's record drops it within a measured
bound; the relay restarted with the same identity gets C's reservation back.

Delay: scripts/netns.sh ``delay`` (NFQUEUE) on every host's egress to other sites, 10 ms from A
and B, 15 ms from C: A-B 20 ms, A-C and B-C 25 ms round trip.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
PREFIX, SUBNET, N = "otm", "10.231.79", 5
ENV = {**os.environ, "PREFIX": PREFIX, "SUBNET": SUBNET, "N": str(N)}
SITES = {1: "site-a", 5: "site-a", 2: "site-b", 3: "site-b", 4: "site-c"}
DELAY_MS = {1: 10, 5: 10, 2: 10, 3: 10, 4: 15}
PY = sys.executable
NODE = [PY, "-m", "opentela.cli"]
P2P, HTTP, UP = 43905, 8092, 8080

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

CLIENT = r"""
import json, sys, time, urllib.request, urllib.error
url, model, n, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
for i in range(n):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": f"q{i}"}]})
    req = urllib.request.Request(url + "/v1/chat/completions", data=body.encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    t = time.time()
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            out = {"status": r.status, "node": r.headers.get("X-Computing-Node")}
    except urllib.error.HTTPError as e:
        out = {"status": e.code, "node": None, "error": e.read().decode()[:300]}
    except Exception as e:
        out = {"status": 0, "node": None, "error": repr(e)[:300]}
    out["t"] = t
    print(json.dumps(out), flush=True)
    time.sleep(pause)
"""


def netns(*args: str) -> None:
    subprocess.run(
        ["bash", str(REPO / "scripts/netns.sh"), *args], env=ENV, check=True, capture_output=True
    )


def in_host(i: int, argv: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-h{i}", *argv], **kw)


def run_in(i: int, argv: list[str], timeout: float = 60) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", f"{PREFIX}-h{i}", *argv],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    ).stdout


def ip(i: int) -> str:
    return f"{SUBNET}.{i}"


def get(i: int, path: str) -> dict:
    code = (
        "import json,sys,urllib.request;"
        f"print(urllib.request.urlopen('http://127.0.0.1:{HTTP}{path}', timeout=5).read().decode())"
    )
    return json.loads(run_in(i, [PY, "-c", code], timeout=20))


def chat(i: int, model: str, n: int, pause_s: float = 0.0) -> list[dict]:
    out = run_in(i, [PY, "-c", CLIENT, f"http://127.0.0.1:{HTTP}", model, str(n), str(pause_s)])
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def relays_of(i: int, peer: str) -> list[str]:
    with contextlib.suppress(Exception):
        return list(get(i, "/v1/dnt/table").get(f"/{peer}", {}).get("relays") or [])
    return []


def site_c_firewall() -> None:
    """h4: no inbound connection at all; outbound only to the relays (h3, h5)."""
    rules = f"""
table inet otela_site {{
  chain in {{ type filter hook input priority 0; policy accept;
    iifname "eth0" ct state new drop
  }}
  chain out {{ type filter hook output priority 0; policy accept;
    oifname "eth0" ct state new ip daddr != {{ {ip(3)}, {ip(5)} }} drop
  }}
}}
"""
    subprocess.run(
        ["ip", "netns", "exec", f"{PREFIX}-h4", "nft", "-f", "-"],
        input=rules,
        text=True,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def network() -> Iterator[None]:
    netns("up")
    try:
        for i, ms in DELAY_MS.items():
            same = [ip(j) for j in SITES if SITES[j] == SITES[i] and j != i]
            netns("delay", str(i), str(ms), *same)
        site_c_firewall()
        yield
    finally:
        netns("down")


def test_three_sites_private_worker_through_relays(network: None, tmp_path: Path) -> None:
    procs: dict[str, subprocess.Popen] = {}
    homes = {i: tmp_path / f"h{i}" for i in SITES}
    try:
        pid: dict[int, str] = {}
        for i, home in homes.items():
            subprocess.run([*NODE, "init", "--home", str(home)], check=True, capture_output=True)
            pid[i] = subprocess.run(
                [*NODE, "peer-id", "--home", str(home)], check=True, capture_output=True, text=True
            ).stdout.strip()
        maddr = {i: f"/ip4/{ip(i)}/tcp/{P2P}/p2p/{pid[i]}" for i in SITES}

        def start(i: int, *extra: str, name: str = "") -> None:
            args = [*NODE, "start", "--home", str(homes[i]), "--p2p-host", ip(i),
                    "--p2p-port", str(P2P), "--http-host", "127.0.0.1", "--http-port", str(HTTP),
                    "--log-format", "json", "--site", SITES[i], *extra]  # fmt: skip
            log = (tmp_path / f"{name or f'node{i}'}.log").open("wb")
            procs[name or f"node{i}"] = in_host(i, args, stdout=log, stderr=subprocess.STDOUT)

        def upstream(i: int, *models: str) -> None:
            argv = [PY, "-m", "opentela.testing.fake_upstream", "--port", str(UP)]
            for m in models:
                argv += ["--model", m]
            procs[f"up{i}"] = in_host(i, argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

        start(3, "--role", "relay")  # R1, site B
        start(5, "--role", "relay", "--bootstrap", maddr[3])  # R2, site A
        start(1, "--bootstrap", maddr[3])  # the entry, site A
        upstream(2, "M")
        start(2, "--service.port", str(UP), "--bootstrap", maddr[3])  # worker B
        upstream(4, "M", "MC")
        # Worker C: auto reachability, its bootstrap peers are the relays it can reach.
        start(4, "--service.port", str(UP), "--bootstrap", maddr[3], "--bootstrap", maddr[5])

        def c_ready() -> bool:
            rec = get(1, "/v1/dnt/table").get(f"/{pid[4]}", {})
            ready = any(s["status"] == "ready" for s in rec.get("service", []))
            return (
                rec.get("reachability") == "private" and len(rec.get("relays", [])) == 2 and ready
            )

        wait_for(c_ready, 60, 0.5, what="C private, with two relays, serving")
        assert set(relays_of(1, pid[4])) == {pid[3], pid[5]}
        stats = get(4, "/v1/dnt/stats")["reach"]
        assert stats["dialback"]["asked"] >= 1 and stats["reachability"] == "private", stats

        # 1. C's own model through A: only a relay can carry it.
        got = chat(1, "MC", 10)
        assert [r["status"] for r in got] == [200] * 10, got
        assert {r["node"] for r in got} == {pid[4]}
        a_stats = get(1, "/v1/dnt/stats")
        assert a_stats["reach"]["relayed"]["relayed_opened"] >= 1, a_stats["reach"]

        # 2. From site B, at equal (idle) load, M goes to B's own replica.
        wait_for(
            lambda: any(
                p in (get(3, "/v1/dnt/table").get(f"/{pid[4]}") or {}).get("relays", [])
                for p in (pid[3], pid[5])
            ),
            30,
            what="R1 knows C's relays",
        )
        from_b = chat(3, "M", 20)
        assert all(r["status"] == 200 for r in from_b), from_b
        to_b = sum(1 for r in from_b if r["node"] == pid[2])
        print(f"from site B: {to_b}/20 requests for M served in site B")
        assert to_b >= 18, from_b

        # 3. Kill the relay that carries A's streams to C, under a steady request loop.
        last_via = a_stats["reach"]
        victim = 3 if pid[3] in relays_of(1, pid[4]) else 5
        loop = in_host(
            1,
            [PY, "-c", CLIENT, f"http://127.0.0.1:{HTTP}", "MC", "60", "0.1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)  # part of the load runs before the kill (a window, not synchronisation)
        victim_name = f"node{victim}"
        killed_at = time.time()
        procs[victim_name].kill()
        procs[victim_name].wait(10)

        def dropped_victim() -> bool:
            rels = relays_of(1, pid[4])
            return bool(rels) and pid[victim] not in rels

        wait_for(dropped_victim, 60, 0.2, what="C's record drops the dead relay")
        moved_s = time.time() - killed_at
        out, _ = loop.communicate(timeout=120)
        results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        after = [r for r in results if r["t"] > killed_at]
        failed = [r for r in results if r["status"] != 200]
        print(
            f"relay {victim} killed: record updated at A after {moved_s:.2f}s; "
            f"{len(results)} requests ({len(after)} after the kill), {len(failed)} failed; "
            f"stats before: {last_via}"
        )
        assert len(after) >= 20, results
        assert not failed, failed

        # 4. The relay comes back (same identity and address): C reserves it again.
        extra = ["--role", "relay"] + ([] if victim == 3 else ["--bootstrap", maddr[3]])
        if victim == 3:
            extra += ["--bootstrap", maddr[5]]
        start(victim, *extra, name=f"node{victim}-again")
        back_at = time.time()
        wait_for(lambda: pid[victim] in relays_of(1, pid[4]), 90, 0.5, what="C back on the relay")
        print(f"relay {victim} restarted: C reserved it again after {time.time() - back_at:.2f}s")
        assert chat(1, "MC", 3) and all(r["status"] == 200 for r in chat(1, "MC", 3))
        for name, p in procs.items():
            if name != victim_name:
                assert p.poll() is None, f"{name} died"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in sorted(tmp_path.glob("*.log")):
            lines = f.read_text(errors="replace").splitlines()
            interesting = [ln for ln in lines if '"relay.' in ln or '"reach.' in ln]
            print(f"--- {f.name}: {len(lines)} lines; relay/reach events:")
            print("\n".join(interesting[-15:]))
