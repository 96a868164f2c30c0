"""Nodes and backends coming and going: graceful leave, backend down and back, --subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys

import openai
from conftest import Cluster, free_port, http_json, wait_for

MSG = [{"role": "user", "content": "hi"}]


def test_graceful_stop_leaves_at_once(cluster: Cluster) -> None:
    _, up = cluster.upstream("up", "m-leave")
    head = cluster.node("head", "127.0.0.2")
    w = cluster.node(
        "w",
        "127.0.0.3",
        "--bootstrap",
        head.maddr,
        "--service.name",
        "llm",
        "--service.port",
        str(up),
    )
    wait_for(lambda: head.models() == ["m-leave"], 15, what="model advertised")
    w.proc.signal(signal.SIGTERM)
    # Removed by the leave announcement, far sooner than the table TTL (30 s).
    wait_for(lambda: head.models() == [], 3, what="model gone after leave")
    assert w.proc.popen.wait(10) == 0
    status, headers, _body = http_json(
        f"{head.url}/v1/chat/completions", "POST", {"model": "m-leave", "messages": MSG}
    )
    assert status == 503 or status == 404
    # Restarted with the same identity, it is routable again (its new record outranks the tombstone).
    w2 = cluster.restart(
        w, "--bootstrap", head.maddr, "--service.name", "llm", "--service.port", str(up)
    )
    wait_for(lambda: head.models() == ["m-leave"], 5, what="rejoined")
    status, headers, _ = http_json(
        f"{head.url}/v1/chat/completions", "POST", {"model": "m-leave", "messages": MSG}
    )
    assert status == 200 and headers["X-Computing-Node"] == w2.peer_id


def test_sigterm_drains_in_flight_requests(cluster: Cluster) -> None:
    _, up = cluster.upstream(
        "up", "m-drain", "127.0.0.1", 0, "--tokens", "60", "--token-delay-ms", "25"
    )
    head = cluster.node("head", "127.0.0.2")
    w = cluster.node("w", "127.0.0.3", "--bootstrap", head.maddr, "--service.port", str(up))
    wait_for(lambda: head.models() == ["m-drain"], 15, what="advertised")
    client = openai.OpenAI(base_url=f"{head.url}/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model="m-drain", stream=True, messages=[{"role": "user", "content": "x"}]
    )
    it = iter(stream)
    first = next(it)
    w.proc.signal(signal.SIGTERM)
    # No new work goes to a draining node...
    wait_for(lambda: head.models() == [], 2, what="draining node no longer routable")
    # ...while the request it was serving finishes whole (60 tokens at 25 ms: ~1.5 s).
    chunks = [first, *it]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == [f"tok{i}" for i in range(60)]
    assert w.proc.popen.wait(10) == 0
    assert '"node.drained"' in w.proc.log.read_text()


def test_backend_down_withdraws_and_comes_back_with_models(cluster: Cluster) -> None:
    port = free_port()
    up, _ = cluster.upstream("up", "m-flaky", "127.0.0.1", port)
    head = cluster.node("head", "127.0.0.2")
    cluster.node(
        "w",
        "127.0.0.3",
        "--bootstrap",
        head.maddr,
        "--service.name",
        "llm",
        "--service.port",
        str(port),
    )
    wait_for(lambda: head.models() == ["m-flaky"], 15, what="advertised")
    up.stop()
    wait_for(lambda: head.models() == [], 15, what="withdrawn while backend down")
    status, headers, body = http_json(
        f"{head.url}/v1/chat/completions", "POST", {"model": "m-flaky", "messages": MSG}
    )
    assert status == 503 and "Retry-After" in headers and body["error"]["code"] == "no_live_replica"
    cluster.upstream("up-again", "m-flaky", "127.0.0.1", port)
    wait_for(lambda: head.models() == ["m-flaky"], 15, what="re-advertised with its models")
    status, _, _ = http_json(
        f"{head.url}/v1/chat/completions", "POST", {"model": "m-flaky", "messages": MSG}
    )
    assert status == 200


def test_port_in_use_is_a_clear_error(cluster: Cluster) -> None:
    head = cluster.node("head", "127.0.0.2")
    proc = subprocess.run(
        [sys.executable, "-m", "opentela.cli", "start", "--home", str(cluster.tmp / "other"),
         "--http-host", "127.0.0.2", "--http-port", "18001", "--p2p-host", head.host,
         "--p2p-port", str(head.p2p_port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "cannot listen for libp2p" in proc.stderr and "Traceback" not in proc.stderr
