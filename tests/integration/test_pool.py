"""A head and two workers, each fronting a different model: real processes, real libp2p,
driven with the official openai SDK through every entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest
from conftest import NODE, Cluster, Node, http_json, wait_for


@dataclass
class Pool:
    cluster: Cluster
    head: Node
    w1: Node
    w2: Node
    up1: int
    up2: int


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    c = Cluster(tmp_path_factory.mktemp("pool"))
    try:
        _, up1 = c.upstream("up1", "model-a", "127.0.0.1")
        _, up2 = c.upstream(
            "up2", "model-b", "127.0.0.1", 0, "--tokens", "2000", "--token-delay-ms", "5"
        )
        head = c.node("head", "127.0.0.2")
        boot = ["--bootstrap", head.maddr]
        w1 = c.node("w1", "127.0.0.3", *boot, "--service.name", "llm", "--service.port", str(up1))
        w2 = c.node(
            "w2",
            "127.0.0.4",
            "--bootstrap.addr",
            head.maddr,
            "--backend",
            f"http://127.0.0.1:{up2}",
            "--service.name",
            "llm",
        )
        for n in (head, w1, w2):
            wait_for(
                lambda n=n: n.models() == ["model-a", "model-b"],
                15,
                what=f"{n.proc.name} sees both models",
            )
        yield Pool(c, head, w1, w2, up1, up2)
    except BaseException:
        print(c.dump())
        raise
    finally:
        c.close()


def client(node: Node) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{node.url}/v1", api_key="x", max_retries=0, timeout=30)


def test_models_listed_by_every_node(pool: Pool) -> None:
    for node in (pool.head, pool.w1, pool.w2):
        assert sorted(m.id for m in client(node).models.list().data) == ["model-a", "model-b"]


@pytest.mark.parametrize("entry", ["head", "w1", "w2"])
@pytest.mark.parametrize("model,server", [("model-a", "w1"), ("model-b", "w2")])
def test_chat_routed_to_serving_peer(pool: Pool, entry: str, model: str, server: str) -> None:
    c = client(getattr(pool, entry))
    raw = c.chat.completions.with_raw_response.create(
        model=model, max_tokens=5, messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.headers["x-computing-node"] == getattr(pool, server).peer_id
    resp = raw.parse()
    assert resp.model == model
    assert resp.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"


@pytest.mark.parametrize("entry", ["head", "w1"])
def test_streaming_chat_and_completions(pool: Pool, entry: str) -> None:
    c = client(getattr(pool, entry))
    chunks = list(
        c.chat.completions.create(
            model="model-b",
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "hi"}],
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.split() == [f"tok{i}" for i in range(8)]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    comp = list(c.completions.create(model="model-a", prompt="x", max_tokens=4, stream=True))
    assert "".join(ch.choices[0].text for ch in comp).split() == ["tok0", "tok1", "tok2", "tok3"]
    plain = c.completions.create(model="model-a", prompt="x", max_tokens=3)
    assert plain.choices[0].text.split() == ["tok0", "tok1", "tok2"]


def test_embeddings(pool: Pool) -> None:
    emb = client(pool.w2).embeddings.create(model="model-a", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0


def test_openai_errors(pool: Pool) -> None:
    c = client(pool.head)
    with pytest.raises(openai.NotFoundError) as nf:
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "model-a" in str(nf.value) and "model-b" in str(nf.value)
    status, _, body = http_json(f"{pool.head.url}/v1/chat/completions", "POST", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, _, body = http_json(f"{pool.head.url}/v1/chat/completions", "POST", {"messages": []})
    assert status == 400 and body["error"]["code"] == "missing_model"
    big = {"model": "model-a", "prompt": "x" * (17 * 1024 * 1024)}
    status, _, body = http_json(f"{pool.head.url}/v1/completions", "POST", big)
    assert status == 413 and body["error"]["code"] == "request_too_large"


def test_upstream_compatible_routes(pool: Pool) -> None:
    base = f"{pool.head.url}/v1/service/llm/v1"
    c = openai.OpenAI(base_url=base, api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="model-a", messages=[{"role": "user", "content": "x"}], max_tokens=2
    )
    assert raw.headers["x-computing-node"] == pool.w1.peer_id
    # Unknown service, and p2p to a named peer.
    status, _, body = http_json(
        f"{pool.head.url}/v1/service/nope/v1/chat/completions", "POST", {"model": "model-a"}
    )
    assert status == 404 and "error" in body
    status, headers, body = http_json(f"{pool.head.url}/v1/p2p/{pool.w2.peer_id}/v1/models")
    assert status == 200 and body["data"][0]["id"] == "model-b"
    assert headers["X-Computing-Node"] == pool.w2.peer_id


def test_identity_group_fallback_tiers(pool: Pool, tmp_path) -> None:
    # The shared pool advertises exact models only: fallback cannot route an unknown model.
    body = {"model": "zzz", "messages": [{"role": "user", "content": "x"}]}
    status, _, _ = http_json(f"{pool.head.url}/v1/chat/completions", "POST", body)
    assert status == 404
    c = Cluster(tmp_path)
    try:
        _, up = c.upstream("up-any", "model-x")
        head = c.node("head", "127.0.0.6")
        boot = ["--bootstrap", head.maddr, "--service.port", str(up)]
        star = c.node("star", "127.0.0.7", *boot, "--service.identity-group", "model=*")
        every = c.node("all", "127.0.0.8", *boot, "--service.identity-group", "all")
        wait_for(
            lambda: head.models() == ["model-x"] and len(_ready_workers(head)) == 2,
            15,
            what="tiers",
        )

        def ask(fallback: str) -> str | None:
            """Which peer served the request (the fake backend itself rejects the unknown
            name, but the header says where the gateway routed it); None if nowhere."""
            url = f"{head.url}/v1/service/llm/v1/chat/completions"
            req = urllib.request.Request(
                url, json.dumps(body).encode(), {"X-Otela-Fallback": fallback}
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.headers["X-Computing-Node"]
            except urllib.error.HTTPError as e:
                return e.headers.get("X-Computing-Node")

        assert ask("0") is None
        assert ask("1") == star.peer_id  # tier 2 (model=*) beats tier 3 (all)
        assert ask("2") == star.peer_id
        star.proc.stop()
        wait_for(lambda: len(_ready_workers(head)) == 1, 5, what="star left")
        assert ask("1") is None
        assert ask("2") == every.peer_id  # tier 3 only when the client allows it
    finally:
        c.close()


def _ready_workers(node: Node) -> list[str]:
    _, _, table = http_json(f"{node.url}/v1/dnt/table")
    return [
        v["id"]
        for v in table.values()
        if v["role"] == "worker" and v["state"] == "alive" and v["status"] == "ready"
    ]


def test_introspection_endpoints(pool: Pool) -> None:
    status, _, ready = http_json(f"{pool.w1.url}/v1/health/ready")
    assert status == 200 and ready["ready"] is True
    _, _, health = http_json(f"{pool.w1.url}/v1/health")
    assert (
        health["status"] == "ok" and health["peer_id"] == pool.w1.peer_id and health["peers"] == 2
    )
    _, _, table = http_json(f"{pool.head.url}/v1/dnt/table")
    assert set(table) == {f"/{n.peer_id}" for n in (pool.head, pool.w1, pool.w2)}
    w1 = table[f"/{pool.w1.peer_id}"]
    assert w1["role"] == "worker" and w1["connected"] is True
    assert w1["service"][0]["identity_group"] == ["model=model-a"]
    assert "gpus" in w1["hardware"]
    _, _, boots = http_json(f"{pool.head.url}/v1/dnt/bootstraps")
    assert pool.head.maddr in boots["bootstraps"]
    # w1 learned w2 from the head but talks to it directly.
    _, _, peers = http_json(f"{pool.w1.url}/v1/dnt/peers")
    w2 = next(p for p in peers["peers"] if p["id"] == pool.w2.peer_id)
    assert w2["alive"] and w2["connected"]
    out = subprocess.run(
        [*NODE, "table", "--url", pool.w2.url], capture_output=True, text=True, check=True
    ).stdout
    assert "model-a" in out and "model-b" in out and "head" in out


def test_client_disconnect_cancels_backend_request(pool: Pool) -> None:
    before = http_json(f"http://127.0.0.1:{pool.up2}/stats")[2]["cancelled"]
    stream = client(pool.w1).chat.completions.create(
        model="model-b", stream=True, messages=[{"role": "user", "content": "long"}]
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    wait_for(
        lambda: http_json(f"http://127.0.0.1:{pool.up2}/stats")[2]["cancelled"] > before,
        10,
        what="backend saw the cancel",
    )
    wait_for(
        lambda: http_json(f"http://127.0.0.1:{pool.up2}/stats")[2]["in_flight"] == 0,
        10,
        what="no generation left running",
    )


def test_bootstrap_url_and_spoofed_record(pool: Pool, tmp_path) -> None:
    # A node joining through the URL list learns the whole pool.
    c = Cluster(tmp_path)
    try:
        late = c.node("late", "127.0.0.5", "--bootstrap-url", f"{pool.w2.url}/v1/dnt/bootstraps")
        wait_for(
            lambda: late.models() == ["model-a", "model-b"], 15, what="late node sees the pool"
        )
        # A forged record (claims to be w1, signed with another key) is refused and logged.
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                SPOOF,
                pool.head.maddr,
                pool.w1.peer_id,
                str(tmp_path / "attacker"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        wait_for(
            lambda: http_json(f"{pool.head.url}/v1/dnt/stats")[2]["table"]["rejected"] >= 1,
            10,
            what="rejection counted",
        )
        assert "evil-model" not in pool.head.models()
        assert "table.record_rejected" in pool.head.proc.log.read_text()
    finally:
        c.close()


SPOOF = r"""
import sys, time, trio
from opentela.overlay import framing, identity
from opentela.overlay.host import open_host
from opentela.table.record import NodeRecord, Service
from opentela.table.signing import SignedRecord, public_key_bytes
from opentela.table.sync import PROTOCOL

target, victim, home = sys.argv[1], sys.argv[2], sys.argv[3]
key = identity.load_or_create(__import__("pathlib").Path(home))

async def main():
    async with open_host(key, "127.0.0.9", 0) as host:
        pid = await host.connect(target)
        rec = NodeRecord(peer_id=victim, version=int(time.time() * 1000) + 10**6, timestamp=time.time(),
                         role="worker", services=(Service("llm", "ready", ("model=evil-model",)),))
        body = rec.encode()
        forged = SignedRecord(body, public_key_bytes(key), key.sign(b"opentela/record/v1\x00" + body), rec)
        stream = await host.open_stream(pid, PROTOCOL)
        await stream.send(framing.encode(framing.BODY, {"op": "push", "records": [forged.pack()]}))
        await stream.receive(5)
        await stream.close()

trio.run(main)
"""
