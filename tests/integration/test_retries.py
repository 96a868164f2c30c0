"""Backends that answer 502/503/504: the entry retries on another replica before any byte
reaches the client, on the remote path and when the entry serves the model itself; and it stops
at MAX_ATTEMPTS, then hands the client the last backend's own error.

Real node processes on 127.0.0.x; the fake upstreams fail on purpose (``--fail-status``) and
count every API call they receive (``/stats``), so the tests see each attempt."""

from __future__ import annotations

import json
import urllib.request

from conftest import Cluster, Node, http_json, wait_for

from opentela.gateway.forward import MAX_ATTEMPTS

MODEL = "m-retry"
MSG = [{"role": "user", "content": "hi"}]
# Round-robin: the first attempt alternates between replicas, so every replica is tried first
# in turn and the failing one is hit deterministically, not by luck.
POLICY = ("--routing.policy", "round-robin")


def replicas(node: Node) -> int:
    data = http_json(f"{node.url}/v1/models")[2]["data"]
    return next((m["replicas"] for m in data if m["id"] == MODEL), 0)


def upstream_stats(port: int) -> dict:
    return http_json(f"http://127.0.0.1:{port}/stats")[2]


def forward_stats(node: Node) -> dict:
    return http_json(f"{node.url}/v1/dnt/stats")[2]["forward"]


def chat(node: Node) -> tuple[int, dict, dict]:
    return http_json(f"{node.url}/v1/chat/completions", "POST", {"model": MODEL, "messages": MSG})


def chat_stream(node: Node) -> tuple[int, str, str]:
    req = urllib.request.Request(
        f"{node.url}/v1/chat/completions",
        data=json.dumps({"model": MODEL, "messages": MSG, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers["X-Computing-Node"], r.read().decode()


def failing(cluster: Cluster, name: str, status: int) -> int:
    _, port = cluster.upstream(name, MODEL, "127.0.0.1", 0, "--fail-status", str(status))
    return port


def test_remote_502_and_504_are_retried_on_the_healthy_replica(cluster: Cluster) -> None:
    head = cluster.node("head", "127.0.0.2", *POLICY)
    boot = ("--bootstrap", head.maddr)
    bad = {502: failing(cluster, "up502", 502), 504: failing(cluster, "up504", 504)}
    _, good_port = cluster.upstream("good", MODEL)
    for status, port in bad.items():
        cluster.node(f"w{status}", f"127.0.0.{status - 490}", *boot, "--service.port", str(port))
    good = cluster.node("good", "127.0.0.20", *boot, "--service.port", str(good_port))
    wait_for(lambda: replicas(head) == 3, 15, what="3 replicas")

    n = 9  # round-robin over 3 replicas: each one comes first three times
    for _ in range(n):
        status, headers, body = chat(head)
        assert status == 200, body
        assert headers["X-Computing-Node"] == good.peer_id
        assert body["choices"][0]["message"]["content"]
    status, node, text = chat_stream(head)  # a stream is retried too: nothing was sent yet
    assert status == 200 and node == good.peer_id and "data: [DONE]" in text

    hits = {s: upstream_stats(p) for s, p in bad.items()}
    assert all(h["failed"] == h["api_requests"] >= 1 for h in hits.values()), hits
    assert upstream_stats(good_port)["api_requests"] == n + 1  # each request served exactly once
    assert forward_stats(head)["retries"] == sum(h["failed"] for h in hits.values())


def test_local_backend_503_is_retried_on_another_replica(cluster: Cluster) -> None:
    """The entry node serves the model itself (no peer hop) and its backend answers 503."""
    local_port = failing(cluster, "local-up", 503)
    entry = cluster.node("entry", "127.0.0.2", *POLICY, "--service.port", str(local_port))
    _, good_port = cluster.upstream("good", MODEL)
    good = cluster.node(
        "good", "127.0.0.3", "--bootstrap", entry.maddr, "--service.port", str(good_port)
    )
    wait_for(lambda: replicas(entry) == 2, 15, what="2 replicas")

    n = 6
    for _ in range(n):
        status, headers, body = chat(entry)
        assert status == 200, body
        assert headers["X-Computing-Node"] == good.peer_id
    local = upstream_stats(local_port)
    assert local["failed"] == local["api_requests"] >= 1, local  # the local path was taken
    assert upstream_stats(good_port)["api_requests"] == n
    assert forward_stats(entry)["retries"] == local["failed"]


def test_attempt_limit_then_the_last_backend_error(cluster: Cluster) -> None:
    """Four replicas, all failing (with different statuses): exactly MAX_ATTEMPTS of them are
    tried, and the client gets the last one's own answer (status, OpenAI-shaped body, and
    X-Computing-Node naming it), not a generic error."""
    assert MAX_ATTEMPTS == 3  # the numbers below are written for three attempts
    head = cluster.node("head", "127.0.0.2", *POLICY)
    boot = ("--bootstrap", head.maddr)
    statuses = [502, 503, 504, 503]
    ports: dict[str, int] = {}
    status_of: dict[str, int] = {}
    for i, s in enumerate(statuses):
        port = failing(cluster, f"up{i}", s)
        w = cluster.node(f"w{i}", f"127.0.0.{10 + i}", *boot, "--service.port", str(port))
        ports[w.peer_id], status_of[w.peer_id] = port, s
    wait_for(lambda: replicas(head) == 4, 15, what="4 replicas")

    seen = {pid: 0 for pid in ports}
    requests = 4
    for k in range(1, requests + 1):
        status, headers, body = chat(head)
        last = headers["X-Computing-Node"]
        assert status == status_of[last], (status, body)
        assert body["error"]["code"] == "injected_failure", body  # the backend's own error
        hits = {pid: upstream_stats(p)["api_requests"] for pid, p in ports.items()}
        new = {pid: hits[pid] - seen[pid] for pid in ports}
        assert sorted(new.values()) == [0, 1, 1, 1], new  # three distinct replicas, once each
        assert new[last] == 1
        seen = hits
        assert forward_stats(head)["retries"] == k * (MAX_ATTEMPTS - 1)
    assert sum(seen.values()) == requests * MAX_ATTEMPTS
