"""scripts/proxy_aiohttp.py, the single-hop yardstick of scripts/bench_overhead.py, must really
forward: a proxy that dropped bodies or buffered streams would make the comparison meaningless."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from conftest import PY, Cluster, http_json, wait_for

from opentela.testing.serving import free_port

PROXY = Path(__file__).resolve().parents[2] / "scripts" / "proxy_aiohttp.py"
HOST = "127.0.0.1"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _proxy(cluster: Cluster, upstream_port: int) -> str:
    port = free_port(HOST)
    cluster.spawn(
        "proxy",
        [PY, str(PROXY), "--upstream", f"http://{HOST}:{upstream_port}", "--port", str(port)],
    )
    url = f"http://{HOST}:{port}"
    wait_for(lambda: http_json(url + "/health")[0] == 200, 15, what="proxy forwards /health")
    return url


def _stream(url: str, body: bytes) -> tuple[int, str, list[tuple[float, bytes]]]:
    """(status, content type, [(arrival time, line)]) of every SSE ``data:`` line."""
    req = urllib.request.Request(
        url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    lines: list[tuple[float, bytes]] = []
    with OPENER.open(req, timeout=15) as r:
        for line in r:  # http.client yields lines as they arrive
            if line.startswith(b"data:"):
                lines.append((time.monotonic(), line.strip()))
        return r.status, r.headers.get("Content-Type", ""), lines


def test_chat_and_stream_pass_through(cluster: Cluster) -> None:
    _, up_port = cluster.upstream(
        "upstream", "m", HOST, 0, "--tokens", "4", "--token-delay-ms", "100"
    )
    url = _proxy(cluster, up_port)

    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    status, headers, body = http_json(url + "/v1/chat/completions", "POST", chat)
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
    assert headers.get("X-Upstream-Model") == "m"  # upstream headers come back too

    status, _, err = http_json(url + "/v1/chat/completions", "POST", {**chat, "model": "nope"})
    assert status == 404 and "error" in err  # the upstream's answer, status and body, unchanged

    raw = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    status, ctype, lines = _stream(url, raw)
    assert status == 200 and ctype.startswith("text/event-stream")
    assert [x for _, x in lines][-1] == b"data: [DONE]"
    assert len(lines) == 5  # 4 tokens + [DONE]
    # Streamed, not buffered: the upstream spaces tokens 100 ms apart.
    assert lines[-1][0] - lines[0][0] >= 0.2, [round(t - lines[0][0], 3) for t, _ in lines]


def test_unreachable_upstream_is_an_openai_shaped_502(cluster: Cluster) -> None:
    url = _proxy_without_upstream(cluster)
    status, _, body = http_json(url + "/v1/models")
    assert status == 502
    assert set(body["error"]) == {"message", "type", "code"}


def _proxy_without_upstream(cluster: Cluster) -> str:
    dead = free_port(HOST)  # nothing listens there
    port = free_port(HOST)
    cluster.spawn(
        "proxy", [PY, str(PROXY), "--upstream", f"http://{HOST}:{dead}", "--port", str(port)]
    )
    url = f"http://{HOST}:{port}"
    wait_for(lambda: http_json(url + "/v1/models")[0] == 502, 15, what="proxy listening")
    return url
