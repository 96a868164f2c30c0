"""``--p2p.max-connections``: a head and seven nodes (two of them workers), each allowed 4
connections. Once SWIM has to reach a member less often than a connection's idle time (here
``--probe-interval 3``: a pair talks about every 10 s, against 3 s idle), every node stays near
its cap while all of them still see each other alive and requests still route, reopening the
data connections the budget closed."""

from __future__ import annotations

import time

from conftest import Cluster, Node, http_json, wait_for

CAP = 4
# Connections a node opened since the last sweep (its probe, probes it received). CI on 2
# busy cores saw CAP + 3 now and then; which connection the third is has not been pinned down.
SLACK = 3
ARGS = ("--p2p.max-connections", str(CAP), "--probe-interval", "3")


def stats(node: Node) -> dict:
    status, _, body = http_json(f"{node.url}/v1/dnt/stats")
    assert status == 200, body
    return body


def chat(node: Node) -> str:
    status, headers, body = http_json(
        f"{node.url}/v1/chat/completions",
        "POST",
        {"model": "model-a", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 200, body
    return {k.lower(): v for k, v in headers.items()}["x-computing-node"]


def test_connections_stay_near_the_cap_and_the_pool_still_works(cluster: Cluster) -> None:
    _, up = cluster.upstream("up", "model-a", "127.0.0.1")
    head = cluster.node("head", "127.0.0.2", *ARGS)
    nodes = [head]
    for i in range(7):
        backend = ("--service.port", str(up)) if i < 2 else ()
        nodes.append(
            cluster.node(
                f"n{i}", f"127.0.0.{3 + i}", "--bootstrap", head.maddr, *backend, *ARGS, wait=False
            )
        )
    workers = {nodes[1].peer_id, nodes[2].peer_id}
    for n in nodes:
        wait_for(lambda n=n: http_json(f"{n.url}/v1/health")[0] == 200, 30, what="healthy")
    for n in nodes:
        wait_for(
            lambda n=n: stats(n)["membership"]["alive"] == 7, 20, what=f"{n.proc.name}: 7 alive"
        )
    entries = (head, nodes[5])
    for entry in entries:  # no request yet: a worker's load news would touch every peer
        wait_for(lambda e=entry: e.models() == ["model-a"], 15, what="model-a listed")

    # Settled: every node near its cap (the first seconds had every connection in use).
    wait_for(
        lambda: all(stats(n)["connections"] <= CAP + SLACK for n in nodes),
        15,
        interval_s=0.5,
        what="every node near its cap",
    )
    over: list[tuple[str, int]] = []
    for _ in range(5):
        time.sleep(1.5)  # sampling a steady state, not waiting for an event
        for n in nodes:
            s = stats(n)
            assert s["membership"]["alive"] == 7, (n.proc.name, s["membership"])
            if s["connections"] > CAP + SLACK:
                over.append((n.proc.name, s["connections"]))
    assert not over, over
    assert sum(stats(n)["connections_closed"] for n in nodes) >= 7
    # Connections to the workers were closed while idle: reopened on demand.
    for entry in entries:
        assert chat(entry) in workers
        assert chat(entry) in workers
