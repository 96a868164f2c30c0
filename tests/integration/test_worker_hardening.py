"""Issue 9, worker hardening: a member cannot turn a worker into a proxy or an admin console,
and clients' credentials never reach a backend.

The backend is a canary: a tiny HTTP server that records every request line it receives. Unsafe
forms are sent three ways: through the head (``/v1/p2p/<peer>/...``, ``/v1/service/llm/...``),
to the worker's own HTTP API (the entry serving the model itself), and as raw frames straight
into ``ForwardServer.handle`` (what a hostile member can send, no HTTP normalisation on the way).
The canary must see nothing but the worker's own probes.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio
from conftest import Cluster, http_json, wait_for

from opentela.aio_bridge import open_asyncio_loop, to_aio
from opentela.overlay import framing
from opentela.overlay.host import PeerStream
from opentela.worker.backend import Backend
from opentela.worker.serve import ForwardServer

MODEL = "canary-model"
SERVICE_KEY = "svc-key-0123456789"
CLIENT_CREDS = {
    "Authorization": "Bearer client-secret",
    "Cookie": "session=client-cookie",
    "X-Api-Key": "client-api-key",
    "Proxy-Authorization": "Basic Y2xpZW50OnNlY3JldA==",
}
# What the worker itself asks its backend for (health probe, queue metrics).
PROBES = {("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/slots")}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class Canary:
    """An HTTP backend that records every request it gets, even malformed ones."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def parse_request(self) -> bool:
                ok = super().parse_request()
                with canary.lock:
                    canary.seen.append(
                        Seen(
                            str(getattr(self, "command", "") or ""),
                            str(getattr(self, "path", "") or self.requestline),
                            {k.lower(): v for k, v in (self.headers or {}).items()},
                        )
                    )
                return ok

            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                if self.path == "/v1/models":
                    body = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
                elif self.path == "/v1/chat/completions":
                    body = {
                        "id": "c1",
                        "object": "chat.completion",
                        "model": MODEL,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "ok"},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_OPTIONS = do_DELETE = do_PUT = do_PATCH = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def snapshot(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def unexpected(self, since: int = 0) -> list[Seen]:
        """Requests other than the worker's own probes."""
        return [s for s in self.snapshot()[since:] if (s.method, s.path) not in PROBES]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    c = Canary()
    try:
        yield c
    finally:
        c.close()


def raw_http(host: str, port: int, method: bytes, target: bytes, headers: bytes = b"") -> int:
    """Send a request line exactly as given (no client-side normalisation); 0 if the server
    closed the connection without a status line."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(
            method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n" + headers + b"\r\n{}"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    line = data.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0


# After /v1/p2p/<peer> or /v1/service/llm: the forms a client (or a hostile entry's client)
# can put in a forwarded path.
UNSAFE_TAILS: list[tuple[bytes, bytes]] = [
    (b"GET", b"//evil/x"),
    (b"GET", b"/@evil/x"),
    (b"GET", b"/http://evil/x"),
    (b"GET", b"/v1/../admin"),
    (b"GET", b"/v1/./models"),
    (b"GET", b"/%2e%2e/x"),
    (b"GET", b"/v1/%2E%2E/%2e%2e/sleep"),
    (b"POST", b"/v1%2F..%2Fsleep"),
    (b"GET", b"/x\\y"),
    (b"GET", b"/x%5cy"),
    (b"GET", b"/x%00y"),
    (b"GET", b"/%252e%252e/sleep"),
    (b"GET", b"/x y"),
    (b"GET", b"/x\r\nHost: y"),
    (b"POST", b"/sleep"),
    (b"POST", b"/sl%65ep"),
    (b"POST", b"/wake_up"),
    (b"POST", b"/collective_rpc"),
    (b"POST", b"/v1/load_lora_adapter"),
    (b"GET", b"/flush_cache"),
    (b"POST", b"/update_weights_from_disk"),
    (b"POST", b"/slots/0?action=save"),
    (b"DELETE", b"/v1/models/" + MODEL.encode()),
    (b"PUT", b"/v1/chat/completions"),
]


def test_unsafe_forms_never_reach_the_backend_and_credentials_stay_at_the_entry(
    cluster: Cluster, canary: Canary
) -> None:
    head = cluster.node("head", "127.0.0.2")
    w = cluster.node(
        "w",
        "127.0.0.3",
        "--bootstrap",
        head.maddr,
        "--backend",
        canary.url,
        "--service.api-key",
        SERVICE_KEY,
    )
    wait_for(lambda: head.models() == [MODEL], 20, what="canary model advertised")
    wait_for(lambda: w.models() == [MODEL], 20, what="worker sees itself")
    # The worker's own probes carry its key (and nothing of any client's).
    probes = [s for s in canary.snapshot() if (s.method, s.path) == ("GET", "/v1/models")]
    assert probes and all(s.headers.get("authorization") == f"Bearer {SERVICE_KEY}" for s in probes)

    before = len(canary.snapshot())
    for node, label in ((head, "via the head"), (w, "at the worker itself")):
        for prefix in (f"/v1/p2p/{w.peer_id}".encode(), b"/v1/service/llm"):
            for method, tail in UNSAFE_TAILS:
                status = raw_http(node.host, node.http_port, method, prefix + tail)
                assert status in (400, 403, 405), (label, method, prefix + tail, status)
        # The refusal is OpenAI-shaped, with the right status, and not retried elsewhere.
        prefix = f"/v1/p2p/{w.peer_id}"
        status, _, body = http_json(f"{node.url}{prefix}/sleep", "POST", {})
        assert status == 403 and body["error"]["code"] == "route_not_allowed", (label, body)
        status, _, body = http_json(f"{node.url}{prefix}/%2e%2e/sleep", "POST", {})
        assert status == 400 and body["error"]["code"] == "invalid_path", (label, body)
        status, _, body = http_json(f"{node.url}{prefix}/v1/models/{MODEL}", "DELETE")
        assert status == 405 and body["error"]["code"] == "method_not_allowed", (label, body)
    assert canary.unexpected(before) == [], "unsafe forms reached the backend"

    # Normal requests reach it: with the worker's key, without any of the client's credentials.
    extra = b"".join(f"{k}: {v}\r\n".encode() for k, v in CLIENT_CREDS.items())
    for node in (head, w):  # remote path, then the entry serving the model itself
        mark = len(canary.snapshot())
        chat = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        with socket.create_connection((node.host, node.http_port), timeout=10) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(chat)}\r\n".encode()
                + extra
                + b"\r\n"
                + chat.encode()
            )
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        status = raw_http(
            node.host, node.http_port, b"GET", f"/v1/p2p/{w.peer_id}/health".encode(), extra
        )
        assert status == 404  # the canary has no /health: it answered, the route was allowed
        got = canary.unexpected(mark)
        assert [(s.method, s.path) for s in got] == [
            ("POST", "/v1/chat/completions"),
            ("GET", "/health"),
        ]
        for s in got:
            assert s.headers.get("authorization") == f"Bearer {SERVICE_KEY}", s
            for name in ("cookie", "x-api-key", "proxy-authorization"):
                assert name not in s.headers, (name, s)
    logs = head.proc.log.read_text() + w.proc.log.read_text()
    assert SERVICE_KEY not in logs and "client-secret" not in logs


# -- frames straight into the worker (what any member can send) ---------------------------------


class FakeRaw:
    """A libp2p stream stand-in: yields the given bytes, then EOF once every request has had
    its answer (an EOF earlier would mean "client gone" and cancel the request)."""

    def __init__(self, data: bytes, requests: int) -> None:
        self._in = data
        self._requests = requests
        self.out = bytearray()
        self.frames: list[framing.Frame] = []
        self._decoder = framing.Decoder()
        self._done = trio.Event()

    async def read(self, n: int) -> bytes:
        if self._in:
            chunk, self._in = self._in[:n], self._in[n:]
            return chunk
        await self._done.wait()
        return b""

    async def write(self, data: bytes) -> None:
        self.out += data
        self.frames += self._decoder.feed(data)
        ends = sum(f.kind in (framing.END, framing.ERROR) for f in self.frames)
        if ends >= self._requests:
            self._done.set()

    async def reset(self) -> None:
        self._done.set()

    async def close(self) -> None:
        self._done.set()


def _request(head: dict, body: bytes = b"") -> bytes:
    return (
        framing.encode(framing.REQ_HEAD, head)
        + b"".join(framing.encode_body(body))
        + framing.encode(framing.END)
    )


def serve_frames(
    url: str,
    heads: list[dict],
    allow: tuple[str, ...] = (),
    api_key: str = "",
    peer: str = "12D3KooWHostileMember",
    busy: int = 0,
) -> list[framing.Frame]:
    """Feed requests (one stream, one after another) into a real ForwardServer whose backend
    is ``url``; return every frame it answered."""

    async def main() -> list[framing.Frame]:
        async with open_asyncio_loop():
            backend = Backend(url, api_key)
            await to_aio(backend.open)()
            try:
                server = ForwardServer(backend, "llm", "12D3KooWSelf", allow)
                server.available = True
                if busy:
                    server.per_peer[peer] = busy
                raw = FakeRaw(b"".join(_request(h) for h in heads), len(heads))
                with trio.fail_after(10):
                    await server.handle(PeerStream(raw, peer))
                assert server.per_peer.get(peer, 0) == busy  # counters return to where they were
                return raw.frames
            finally:
                await to_aio(backend.close)()

    return trio.run(main)


FRAME_UNSAFE: list[tuple[object, object]] = [
    ("GET", "http://evil/x"),
    ("GET", "https://127.0.0.1:1/v1/models"),
    ("GET", "//evil/x"),
    ("GET", "@evil/x"),
    ("GET", "/v1/../admin"),
    ("GET", "/%2e%2e/x"),
    ("GET", "/x\\y"),
    ("GET", "/x\r\nHost: y"),
    ("GET", "/x y"),
    ("GET", ""),
    ("GET", "*"),
    ("GET", "v1/models"),
    ("GET", None),
    ("GET", 7),
    ("POST", "/sleep"),
    ("POST", "/v1/load_lora_adapter"),
    ("POST", "/flush_cache"),
    ("DELETE", "/v1/models/x"),
    ("CONNECT", "evil:443"),
    (None, "/v1/models"),
]


@pytest.mark.parametrize(("method", "path"), FRAME_UNSAFE)
def test_unsafe_frames_are_refused_before_any_backend_connection(
    canary: Canary, method: object, path: object
) -> None:
    frames = serve_frames(canary.url, [{"method": method, "path": path, "headers": []}])
    assert [f.kind for f in frames] == [framing.ERROR]
    err = frames[0].payload
    assert err["status"] in (400, 403, 405) and err["retryable"] is False
    assert err["message"] and err["type"] == "invalid_request_error" and err["code"]
    assert canary.snapshot() == []  # not even a probe: nothing connected to the backend


def test_a_refused_frame_leaves_the_stream_usable(canary: Canary) -> None:
    frames = serve_frames(
        canary.url,
        [
            {"method": "POST", "path": "/sleep", "headers": []},
            {"method": "GET", "path": "/v1/models", "headers": []},
        ],
    )
    assert [f.kind for f in frames] == [framing.ERROR, framing.RESP_HEAD, framing.BODY, framing.END]
    assert [(s.method, s.path) for s in canary.snapshot()] == [("GET", "/v1/models")]


def test_allow_path_opens_an_admin_route(canary: Canary) -> None:
    frames = serve_frames(
        canary.url, [{"method": "POST", "path": "/sleep?level=1", "headers": []}], ("/sleep",)
    )
    assert frames[0].kind == framing.RESP_HEAD and frames[0].payload["status"] == 404
    assert [(s.method, s.path) for s in canary.snapshot()] == [("POST", "/sleep?level=1")]


def test_a_hostile_entrys_credentials_are_dropped_and_the_workers_key_sent(canary: Canary) -> None:
    headers = [[k, v] for k, v in CLIENT_CREDS.items()] + [
        ["X-Keep", "yes"],
        ["X-Split", "a\r\nHost: evil"],  # would split the request: dropped, not a crash
        ["Bad Name", "v"],
        ["only-one-item"],
        "not-a-pair",
    ]
    frames = serve_frames(
        canary.url,
        [{"method": "POST", "path": "/v1/chat/completions", "headers": headers}],
        api_key=SERVICE_KEY,
    )
    assert frames[0].kind == framing.RESP_HEAD and frames[0].payload["status"] == 200
    (seen,) = canary.snapshot()
    assert seen.headers.get("authorization") == f"Bearer {SERVICE_KEY}"
    assert seen.headers.get("x-keep") == "yes"
    for name in ("cookie", "x-api-key", "proxy-authorization", "x-split", "bad name"):
        assert name not in seen.headers


def test_without_a_service_key_no_authorization_reaches_the_backend(canary: Canary) -> None:
    headers = [["Authorization", "Bearer client-secret"]]
    serve_frames(canary.url, [{"method": "GET", "path": "/v1/models", "headers": headers}])
    (seen,) = canary.snapshot()
    assert "authorization" not in seen.headers


def test_a_peer_over_its_concurrency_limit_gets_a_retryable_429(canary: Canary) -> None:
    from opentela.worker.serve import MAX_CONCURRENT_PER_PEER

    head = {"method": "GET", "path": "/v1/models", "headers": []}
    frames = serve_frames(canary.url, [head], busy=MAX_CONCURRENT_PER_PEER)
    assert [f.kind for f in frames] == [framing.ERROR]
    assert frames[0].payload["status"] == 429 and frames[0].payload["retryable"] is True
    assert canary.snapshot() == []
    # Another peer is served meanwhile, and one below the limit is too.
    frames = serve_frames(canary.url, [head], peer="12D3KooWSomeoneElse")
    assert frames[0].kind == framing.RESP_HEAD
    frames = serve_frames(canary.url, [head], busy=MAX_CONCURRENT_PER_PEER - 1)
    assert frames[0].kind == framing.RESP_HEAD
