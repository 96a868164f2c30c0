"""A closed pool with real node processes: only members that hold a grant join, each claims only
the models its grant covers, an expired grant leaves routing at once, renewal keeps a member."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conftest import NODE, Cluster, Node, http_json, wait_for

CHAT = [{"role": "user", "content": "hi"}]


def cli(*args: str) -> str:
    """Run an ``opentela-node`` command; its last stdout line (the key or token)."""
    out = subprocess.run([*NODE, *args], check=True, capture_output=True, text=True, timeout=60)
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def authority(tmp: Path, name: str = "authority") -> tuple[str, Path]:
    home = tmp / name
    return cli("authority", "init", "--home", str(home)), home / "authority.key"


def head_node(cluster: Cluster, pub: str, key: Path, *args: str) -> Node:
    return cluster.node("head", "127.0.0.2", "--authority", pub, "--authority-key", str(key), *args)


def token(head: Node, *models: str, owner: str = "alice") -> str:
    flags = [a for m in models for a in ("--models", m)]
    return cli("token", "create", "--home", str(head.home), "--owner", owner, *flags)


def member(cluster: Cluster, name: str, ip: str, head: Node, port: int, *args: str) -> Node:
    return cluster.node(
        name, ip, "--bootstrap", head.maddr, "--service.port", str(port), *args, wait=True
    )


def chat(node: Node, model: str) -> tuple[int, dict, object]:
    return http_json(f"{node.url}/v1/chat/completions", "POST", {"model": model, "messages": CHAT})


def table_ids(node: Node) -> set[str]:
    return {e["id"] for e in http_json(f"{node.url}/v1/dnt/table")[2].values()}


def api_requests(port: int) -> int:
    return http_json(f"http://127.0.0.1:{port}/stats")[2]["api_requests"]


def test_members_join_and_claim_only_what_their_grant_covers(cluster: Cluster, tmp_path) -> None:
    pub, key = authority(tmp_path)
    head = head_node(cluster, pub, key)
    _, port = cluster.upstream("up", "alice/m", "127.0.0.1", 0, "--model", "bob/m")
    tok = token(head, "alice/*")
    w = member(cluster, "w", "127.0.0.3", head, port, "--authority", pub, "--join-token", tok)
    wait_for(lambda: head.models() == ["alice/m"], 15, what="alice/m served, bob/m ignored")
    status, headers, _ = chat(head, "alice/m")
    assert status == 200 and headers["X-Computing-Node"] == w.peer_id
    status, _, body = chat(head, "bob/m")
    assert status == 404, body
    # The worker itself knows its grant does not cover bob/m either... but it serves its own
    # backend only for what the pool routes; the head never routes bob/m to it.
    assert "table.claims_refused" in head.proc.log.read_text()
    _, _, stats = http_json(f"{w.url}/v1/dnt/stats")
    assert stats["admission"]["owner"] == "alice"


def test_non_members_never_appear_and_reach_no_backend(cluster: Cluster, tmp_path) -> None:
    pub, key = authority(tmp_path)
    other_pub, other_key = authority(tmp_path, "other")
    head = head_node(cluster, pub, key)
    revoked = token(head, "*")
    cli("token", "revoke", "--home", str(head.home), revoked)
    outsiders = []
    cases = [
        ("open", []),  # no --authority at all: an open node that dials the head
        ("revoked", ["--authority", pub, "--join-token", revoked]),
        ("other", ["--authority", other_pub, "--authority-key", str(other_key)]),
    ]
    for i, (name, args) in enumerate(cases):
        _, port = cluster.upstream(f"up-{name}", f"m-{name}")
        n = member(cluster, name, f"127.0.0.{3 + i}", head, port, *args)
        outsiders.append((n, port))
    # Each keeps trying for a while, and never gets in.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        ids = table_ids(head)
        assert not ids & {n.peer_id for n, _ in outsiders}
        assert head.models() == []
        time.sleep(0.5)
    for n, port in outsiders:
        assert n.proc.alive(), n.proc.tail()
        assert api_requests(port) == 0
        _, _, ready = http_json(f"{n.url}/v1/health/ready")
        assert ready["ready"] is False
    _, _, stats = http_json(f"{head.url}/v1/dnt/stats")
    assert stats["admission"]["refused"] >= len(outsiders)
    log = head.proc.log.read_text()
    # Logged once per peer per minute, not once per attempt.
    for n, _ in outsiders:
        assert log.count(f'"peer": "{n.peer_id}"') <= 3, n.proc.name


def test_grant_renewal_keeps_a_member_and_expiry_drops_it(cluster: Cluster, tmp_path) -> None:
    pub, key = authority(tmp_path)
    ttl = 4.0
    head = head_node(cluster, pub, key, "--grant-ttl", f"{ttl:g}s")
    _, port = cluster.upstream("up", "alice/m")
    tok = token(head, "alice/*")
    w = member(cluster, "w", "127.0.0.3", head, port, "--authority", pub, "--join-token", tok)
    wait_for(lambda: head.models() == ["alice/m"], 15, what="member routable")
    # Several expiry periods: renewed at half-life, never out of routing.
    end = time.monotonic() + 3 * ttl
    while time.monotonic() < end:
        status, _, body = chat(head, "alice/m")
        assert status == 200, body
        time.sleep(0.2)
    _, _, stats = http_json(f"{w.url}/v1/dnt/stats")
    assert stats["admission"]["renewals"] >= 3
    # Revoked: the next renewal is refused, and the grant runs out.
    cli("token", "revoke", "--home", str(head.home), tok)
    expires_in = http_json(f"{w.url}/v1/dnt/stats")[2]["admission"]["grant_expires_in_s"]
    expires_at = time.monotonic() + expires_in
    wait_for(lambda: head.models() == [], ttl + 3, interval_s=0.1, what="dropped at expiry")
    assert time.monotonic() - expires_at <= 2.0
    assert "admission.renewal_failed" in w.proc.log.read_text()
