"""Private nodes reached through relays, with real nodes on loopback.

Loopback cannot drop inbound connections, so privacy here is declared (``--reachability
private``): a private node never dials another private one, so an entry that is private too
must reach the private worker through the relay it reserved. The network-namespace test
(tests/netns/test_multisite.py) does the same where inbound connections really are dropped.
"""

from __future__ import annotations

import json

from conftest import Cluster, http_json, wait_for

MODEL = "relay-model"


def _table(node) -> dict:
    return http_json(f"{node.url}/v1/dnt/table")[2]


def _stats(node) -> dict:
    return http_json(f"{node.url}/v1/dnt/stats")[2]


def _chat(node, n: int = 1) -> list[tuple[int, dict, dict]]:
    out = []
    for i in range(n):
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"hi {i}"}]}
        out.append(http_json(f"{node.url}/v1/chat/completions", "POST", body))
    return out


def _relays_of(node, peer_id: str) -> list[str]:
    rec = _table(node).get(f"/{peer_id}") or {}
    return list(rec.get("relays") or [])


def test_private_worker_reached_through_relay_and_failover(cluster: Cluster) -> None:
    r1 = cluster.node("r1", "127.0.0.2", "--role", "relay")
    r2 = cluster.node("r2", "127.0.0.3", "--role", "relay", "--bootstrap", r1.maddr)
    _, up = cluster.upstream("up", MODEL, "127.0.0.4")
    c = cluster.node(
        "c",
        "127.0.0.4",
        "--reachability",
        "private",
        "--service.port",
        str(up),
        "--service.host",
        "127.0.0.4",
        "--bootstrap",
        r1.maddr,
        "--bootstrap",
        r2.maddr,
    )
    a = cluster.node("a", "127.0.0.5", "--reachability", "private", "--bootstrap", r1.maddr)
    wait_for(lambda: MODEL in a.models(), 30, what="A sees C's model")
    wait_for(lambda: len(_relays_of(a, c.peer_id)) == 2, 30, what="C holds two relays")
    assert set(_relays_of(a, c.peer_id)) == {r1.peer_id, r2.peer_id}
    assert _table(a)[f"/{c.peer_id}"]["reachability"] == "private"

    for status, _hdrs, body in _chat(a, 5):
        assert status == 200, body
    st = _stats(a)
    assert st["reach"]["relayed"]["relayed_opened"] >= 1, json.dumps(st["reach"])
    connected = {p["id"] for p in http_json(f"{a.url}/v1/dnt/peers")[2]["peers"] if p["connected"]}
    assert c.peer_id not in connected  # private to private: never dialed

    # The relay that carried the last stream dies: C moves to the other one, requests go on.
    r1.proc.popen.kill()
    failed = 0
    for _ in range(20):
        failed += sum(1 for s, _h, _b in _chat(a) if s != 200)
    assert failed == 0
    wait_for(lambda: r1.peer_id not in _relays_of(a, c.peer_id), 30, what="C drops dead relay")


def test_closed_pool_members_relay_and_members_only(cluster: Cluster, tmp_path) -> None:
    """With --authority, the relay and the private target both check the origin's grant."""
    import subprocess

    from conftest import NODE

    def cli(*args: str) -> str:
        out = subprocess.run([*NODE, *args], check=True, capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]

    pub = cli("authority", "init", "--home", str(tmp_path / "authority"))
    key = tmp_path / "authority" / "authority.key"
    head = cluster.node("head", "127.0.0.2", "--authority", pub, "--authority-key", str(key))

    def token(*extra: str) -> str:
        return cli("token", "create", "--home", str(head.home), "--owner", "ops", *extra)

    _, up = cluster.upstream("up", MODEL, "127.0.0.4")
    c = cluster.node(
        "c", "127.0.0.4", "--reachability", "private", "--service.port", str(up),
        "--service.host", "127.0.0.4", "--bootstrap", head.maddr,
        "--authority", pub, "--join-token", token("--models", "*"),
    )  # fmt: skip
    a = cluster.node(
        "a", "127.0.0.5", "--reachability", "private", "--bootstrap", head.maddr,
        "--authority", pub, "--join-token", token("--models", "none/none", "--roles", "head"),
    )  # fmt: skip
    wait_for(lambda: MODEL in a.models(), 30, what="A sees C's model")
    wait_for(lambda: _relays_of(a, c.peer_id) == [head.peer_id], 30, what="C relayed by head")
    for status, hdrs, body in _chat(a, 3):
        assert status == 200 and hdrs["X-Computing-Node"] == c.peer_id, body
    assert _stats(a)["reach"]["relayed"]["relayed_opened"] >= 1
    assert _stats(c)["reach"]["relayed"]["relayed_served"] >= 1
