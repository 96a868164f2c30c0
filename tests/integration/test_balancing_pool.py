"""Load-aware routing in the real overlay: two entry nodes, a fast and a slow replica."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import aiohttp
from conftest import Cluster, Node, http_json, wait_for

MODEL = "m-route"


def pool(cluster: Cluster, policy: str) -> tuple[list[Node], dict[str, str]]:
    ups = {}
    for name, speed in (("fast", "4.0"), ("slow", "1.0")):
        proc = cluster.spawn(
            f"up-{name}",
            [sys.executable, "-m", "opentela.testing.cost_upstream", "--port", "0", "--model", MODEL,
             "--slots", "2", "--speed", speed, "--prefill-ms-per-token", "0.5", "--decode-ms-per-token", "10"],
        )  # fmt: skip
        line = wait_for(
            lambda p=proc: next(
                (x for x in p.log.read_text().splitlines() if x.startswith("READY ")), None
            ),
            20,
        )
        ups[name] = line.split()[1]
    e1 = cluster.node("entry1", "127.0.0.2", "--routing.policy", policy)
    e2 = cluster.node("entry2", "127.0.0.3", "--routing.policy", policy, "--bootstrap", e1.maddr)
    peers = {}
    for i, name in enumerate(("fast", "slow")):
        w = cluster.node(name, f"127.0.0.{4 + i}", "--bootstrap", e1.maddr, "--backend", ups[name])
        peers[w.peer_id] = name
    for e in (e1, e2):
        wait_for(
            lambda e=e: any(
                m["id"] == MODEL and m["replicas"] == 2
                for m in http_json(f"{e.url}/v1/models")[2]["data"]
            ),
            15,
        )
    return [e1, e2], peers


async def drive(entries: list[Node], n: int, concurrency: int) -> Counter:
    served: Counter = Counter()
    body = {
        "model": MODEL,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hello there"}],
    }
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:

        async def one(i: int) -> None:
            async with sem, s.post(f"{entries[i % 2].url}/v1/chat/completions", json=body) as r:
                await r.read()
                assert r.status == 200
                served[r.headers["X-Computing-Node"]] += 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return served


def share_of_slow(cluster: Cluster, policy: str) -> float:
    entries, peers = pool(cluster, policy)
    served = asyncio.run(drive(entries, 240, 12))
    by_name = {peers[p]: c for p, c in served.items()}
    return by_name.get("slow", 0) / sum(by_name.values())


def test_least_loaded_sends_less_to_the_slow_replica(tmp_path) -> None:
    shares = {}
    for policy in ("random", "least-loaded"):
        cluster = Cluster(tmp_path / policy)
        (tmp_path / policy).mkdir()
        try:
            shares[policy] = share_of_slow(cluster, policy)
        finally:
            cluster.close()
    print(f"share of requests on the slow replica: {shares}")
    assert shares["least-loaded"] < shares["random"] - 0.1, shares
