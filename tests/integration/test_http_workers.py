"""``--http-workers 2``: two processes answer on the entry's one HTTP port, both forward, the
extra one is restarted when it dies and goes away with the node (even a killed one)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time

from conftest import Cluster, Node, wait_for


def _fresh(node: Node, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """One request on a new connection: SO_REUSEPORT picks a process per connection."""
    conn = http.client.HTTPConnection(node.host, node.http_port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _children(node: Node) -> list[dict]:
    # Only the parent reports its HTTP workers: ask until a connection lands on it.
    for _ in range(40):
        _, stats = _fresh(node, "GET", "/v1/dnt/stats")
        if stats["peer_id"] == node.peer_id:
            return stats.get("http_workers", [])
    raise AssertionError("no connection reached the parent process")


def test_two_http_processes_share_the_port_and_follow_the_node(cluster: Cluster) -> None:
    _, up = cluster.upstream("up", "model-a")
    head = cluster.node("head", "127.0.0.1", "--http-workers", "2")
    cluster.node(
        "w", "127.0.0.1", "--bootstrap", head.maddr, "--service.name", "llm",
        "--service.port", str(up),
    )  # fmt: skip
    children = wait_for(lambda: [c for c in _children(head) if c["pid"]], 30, what="child up")
    child_id, child_pid = children[0]["peer_id"], children[0]["pid"]
    assert child_id != head.peer_id

    # Both processes answer on the one port, and both forward to the worker.
    seen: dict[str, int] = {}

    def both_served() -> bool:
        status, body = _fresh(head, "GET", "/v1/dnt/stats")
        assert status == 200
        if body["peer_id"] in (head.peer_id, child_id):
            chat = {
                "model": "model-a",
                "messages": [{"role": "user", "content": f"hi {len(seen)}"}],
            }
            status, answer = _fresh(head, "POST", "/v1/chat/completions", chat)
            if status == 200 and answer["choices"]:
                seen[body["peer_id"]] = seen.get(body["peer_id"], 0) + 1
        return len(seen) == 2

    wait_for(both_served, 30, interval_s=0, what="requests served by both processes")

    # A child that dies is started again (same identity, new process).
    os.kill(child_pid, signal.SIGKILL)
    again = wait_for(
        lambda: [c for c in _children(head) if c["pid"] not in (None, child_pid)],
        30,
        what="child restarted",
    )
    assert again[0]["peer_id"] == child_id and again[0]["restarts"] == 1
    new_pid = again[0]["pid"]

    # A graceful stop takes the child with it.
    head.proc.stop(timeout_s=20)
    assert head.proc.popen.returncode == 0
    wait_for(lambda: not _pid_alive(new_pid), 10, what="child gone after the node stopped")


def test_a_killed_node_takes_its_http_workers_along(cluster: Cluster) -> None:
    head = cluster.node("head", "127.0.0.1", "--http-workers", "3")
    kids = wait_for(
        lambda: (p := [c["pid"] for c in _children(head) if c["pid"]]) and len(p) == 2 and p,
        30,
        what="both children up",
    )
    # An idle child stays up: (PR_SET_PDEATHSIG, tried first, ended children ~10 s in, when
    # the trio worker thread that had forked them went idle and exited.)
    quiet_until = time.monotonic() + 12
    while time.monotonic() < quiet_until:
        assert all(_pid_alive(p) for p in kids), "an HTTP worker died while the node ran"
        time.sleep(0.5)
    assert sorted(c["pid"] for c in _children(head)) == sorted(kids)
    head.proc.popen.kill()  # no graceful stop: the children see their stdin pipe close
    head.proc.popen.wait(5)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_pid_alive(p) for p in kids):
        time.sleep(0.05)
    assert not any(_pid_alive(p) for p in kids)
