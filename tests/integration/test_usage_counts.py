"""Usage counted at the entry node (issue 11): rows equal the fake upstream's token counts,
streamed and not, with and without the client asking for usage; the client's stream is the
backend's own in both cases; a backend with no usage is estimated; aborted streams and a
graceful stop lose no counts. Real node processes on 127.0.0.x, ``--auth off`` (key ``-``)."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, Node, http_json, wait_for

MODEL = "m-usage"
RAW = "m-raw"  # served by an upstream that never sends a usage chunk (llama-cpp-python)
WORDS = "one two three four five"  # the fake upstream counts prompt tokens as words


def body(model: str = MODEL, stream: bool = False, n: int = 4, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": WORDS}],
        "max_tokens": n,
        "stream": stream,
        **extra,
    }


def post_raw(url: str, obj: dict[str, Any]) -> bytes:
    req = urllib.request.Request(
        url, data=json.dumps(obj).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        return r.read()


def normalized(sse: bytes) -> list[Any]:
    """Events with the per-response id and timestamp removed (they differ between calls)."""
    out: list[Any] = []
    for event in sse.split(b"\n\n"):
        if not event:
            continue
        assert event.startswith(b"data: "), event
        data = event[6:]
        if data == b"[DONE]":
            out.append("[DONE]")
            continue
        obj = json.loads(data)
        obj.pop("id", None)
        obj.pop("created", None)
        out.append(obj)
    return out


def usage_rows(node: Node) -> dict[str, dict[str, Any]]:
    status, _, got = http_json(f"{node.url}/v1/usage?days=1")
    assert status == 200, got
    return {m["model"]: m for m in got["models"]}


def wait_requests(node: Node, model: str, n: int) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        row = usage_rows(node).get(model)
        return row if row and row["requests"] >= n else None

    return wait_for(ready, 10, what=f"{n} requests of {model} stored")


@pytest.fixture
def pool(cluster: Cluster) -> tuple[Node, Node, int, int]:
    _, up = cluster.upstream("up", MODEL)
    _, up_raw = cluster.upstream("up-raw", RAW, "127.0.0.1", 0, "--no-stream-usage")
    head = cluster.node("head", "127.0.0.2")
    boot = ("--bootstrap", head.maddr)
    worker = cluster.node("w", "127.0.0.3", *boot, "--service.port", str(up))
    cluster.node("w-raw", "127.0.0.4", *boot, "--service.port", str(up_raw))
    wait_for(lambda: {MODEL, RAW} <= set(head.models()), 20, what="both models on the head")
    return head, worker, up, up_raw


def test_counts_equal_upstream_and_streams_unchanged(pool: tuple[Node, Node, int, int]) -> None:
    head, worker, up, _ = pool
    direct = f"http://127.0.0.1:{up}/v1/chat/completions"
    for entry in (head, worker):  # remote path (head → worker), local path (worker itself)
        url = f"{entry.url}/v1/chat/completions"
        # Not streamed: from the answer's usage.
        answer = json.loads(post_raw(url, body(n=3)))
        assert answer["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        # Streamed, the client did not ask for usage: no usage chunk reaches it.
        plain = post_raw(url, body(stream=True, n=4))
        assert b'"usage"' not in plain
        assert normalized(plain) == normalized(post_raw(direct, body(stream=True, n=4)))
        # Streamed, the client asked (with another stream option): its stream is the backend's.
        asked = body(stream=True, n=6, stream_options={"include_usage": True})
        got = post_raw(url, asked)
        assert normalized(got) == normalized(post_raw(direct, asked))
        assert normalized(got)[-2]["usage"]["completion_tokens"] == 6

    for entry in (head, worker):
        row = wait_requests(entry, MODEL, 3)
        assert row["requests"] == 3
        assert row["prompt_tokens"] == 3 * 5
        assert row["completion_tokens"] == 3 + 4 + 6
        assert row["total_tokens"] == 15 + 13
        assert row["estimated"] == 0 and row["errors"] == 0 and row["aborted"] == 0

    status, _, stats = http_json(f"{head.url}/v1/statistics?days=1")
    assert status == 200
    day = [r for r in stats["data"] if r["model"] == MODEL]
    assert [(r["requests"], r["total_tokens"]) for r in day] == [(3, 28)]
    status, _, err = http_json(f"{head.url}/v1/usage?days=0")
    assert status == 400 and err["error"]["code"] == "invalid_days"

    # One access line per request, never the prompt; the serving peer and tokens in it.
    def access_lines() -> list[dict[str, Any]]:
        text = head.proc.log.read_text().splitlines()
        lines = [json.loads(x) for x in text if '"access"' in x]
        return [x for x in lines if x.get("event") == "access" and x["model"] == MODEL]

    chats = wait_for(lambda: len(access_lines()) == 3 and access_lines(), 5, what="3 lines")
    assert all(x["peer"] == worker.peer_id and x["status"] == 200 for x in chats)
    assert [x["completion_tokens"] for x in chats] == [3, 4, 6]
    assert all(x["key_id"] == "-" and x["owner"] == "anonymous" for x in chats)
    assert WORDS not in head.proc.log.read_text()

    # The replica list needs only the table (auth off here).
    status, _, detailed = http_json(f"{head.url}/v1/models_detailed")
    assert status == 200
    mine = [m for m in detailed["data"] if m["id"] == MODEL]
    assert [(m["peer_id"], m["status"], m["has_service"]) for m in mine] == [
        (worker.peer_id, "ready", True)
    ]
    # The node's own hostname label (every node on this machine shares it).
    assert mine[0]["hostname"] == __import__("socket").gethostname()


def test_no_usage_backend_estimated_and_aborted_counted(
    pool: tuple[Node, Node, int, int], cluster: Cluster
) -> None:
    head, *_ = pool
    got = post_raw(f"{head.url}/v1/chat/completions", body(RAW, stream=True, n=5))
    assert b'"usage"' not in got
    row = wait_requests(head, RAW, 1)
    assert (row["completion_tokens"], row["estimated"]) == (5, 1)

    # A client that hangs up mid-stream: counted, marked aborted.
    _, slow = cluster.upstream("slow", "m-slow", "127.0.0.1", 0, "--token-delay-ms", "100")
    cluster.node("w-slow", "127.0.0.5", "--bootstrap", head.maddr, "--service.port", str(slow))
    wait_for(lambda: "m-slow" in head.models(), 20, what="m-slow on the head")
    payload = json.dumps(body("m-slow", stream=True, n=200)).encode()
    with socket.create_connection((head.host, head.http_port), timeout=10) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        seen = b""
        while seen.count(b"data: ") < 3:
            seen += s.recv(4096)
    row = wait_requests(head, "m-slow", 1)
    assert row["aborted"] == 1 and row["errors"] == 0
    assert 3 <= row["completion_tokens"] < 200
    # The usage chunk comes last: never reached, so prompt tokens are estimated (chars / 4).
    assert row["prompt_tokens"] == (len(WORDS) + 3) // 4
    assert row["estimated"] == 1


def test_graceful_stop_loses_no_counts(cluster: Cluster, tmp_path: Path) -> None:
    _, up = cluster.upstream("up", MODEL)
    node = cluster.node("solo", "127.0.0.6", "--service.port", str(up))
    wait_for(lambda: MODEL in node.models(), 20, what="model served")
    n = 12
    for _ in range(n):
        post_raw(f"{node.url}/v1/chat/completions", body(n=2))
    node.proc.signal(signal.SIGTERM)  # at once: the rows are still in the writer's batch
    node.proc.popen.wait(30)
    assert node.proc.popen.returncode == 0, node.proc.tail()

    from opentela.store import open_store

    with open_store(node.home) as store:
        rows = store.usage_by_model(1, __import__("time").time())
    assert [(r["model"], r["requests"], r["completion_tokens"]) for r in rows] == [
        (MODEL, n, 2 * n)
    ]
