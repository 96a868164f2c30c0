"""Load travels as small signed updates, not re-signed records: straight to the entry that
routes to a worker, by gossip to the rest of the pool, and back to 0 when the work is done."""

from __future__ import annotations

import threading

from conftest import Cluster, http_json, wait_for

MODEL = "m-load"


def table_entry(url: str, peer_id: str) -> dict:
    _, _, table = http_json(f"{url}/v1/dnt/table")
    return table.get(f"/{peer_id}", {})


def test_load_reaches_the_entry_directly_and_the_bystander_by_gossip(cluster: Cluster) -> None:
    _, up = cluster.upstream("up", MODEL, "127.0.0.1", 0, "--latency-ms", "2500")
    head = cluster.node("head", "127.0.0.2")
    bystander = cluster.node("bystander", "127.0.0.3", "--bootstrap", head.maddr)
    worker = cluster.node(
        "worker", "127.0.0.4", "--bootstrap", head.maddr, "--service.port", str(up)
    )
    wait_for(lambda: MODEL in head.models(), 20, what="the model at the head")
    wait_for(lambda: table_entry(bystander.url, worker.peer_id).get("state") == "alive", 20)
    record_version = table_entry(head.url, worker.peer_id)["version"]

    def request() -> None:
        http_json(
            f"{head.url}/v1/chat/completions",
            "POST",
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )

    threads = [threading.Thread(target=request, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(
            lambda: table_entry(head.url, worker.peer_id)["load"] >= 2,
            5,
            0.05,
            what="load at the entry",
        )
        wait_for(
            lambda: table_entry(bystander.url, worker.peer_id)["load"] >= 2,
            5,
            0.05,
            what="load at the bystander",
        )
    finally:
        for t in threads:
            t.join(30)
    for node in (head, bystander):
        wait_for(
            lambda n=node: table_entry(n.url, worker.peer_id)["load"] == 0,
            10,
            0.1,
            what="back to idle",
        )
    at_head = table_entry(head.url, worker.peer_id)
    assert at_head["version"] == record_version, "load never re-signs the record"
    assert at_head["load_version"] > record_version
    _, _, stats = http_json(f"{head.url}/v1/dnt/stats")
    assert stats["table"]["loads_accepted"] >= 2, stats["table"]
