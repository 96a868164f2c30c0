"""Serve forwarded requests arriving on peer streams, proxying them to the local backend.

One stream carries one request at a time (the entry side pools streams). While a response
streams out, a watcher reads the stream: a CANCEL frame, a reset or an EOF means the client is
gone, and the backend request is cancelled at once (an abandoned generation keeps a GPU busy).
Only the configured backend is ever reachable: the request names a service, never a host.

A backend kind that lacks something cheap and safe to supply (llama-cpp-python: text-part
lists, the usage chunk of a stream) is bridged here, per kind (``bridge.py``); for every other
kind the body and the response pass through as bytes, unread.

Any member can open this protocol, so this is the trust boundary (issue 9): before any backend
connection the method and path are checked (``httppaths.py``; refused with a non-retryable 4xx,
since every replica would refuse the same), the client's credentials are dropped whatever the
entry sent, and one peer's concurrent requests are bounded so it cannot starve the others.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable

import structlog
import trio

from ..aio_bridge import to_aio
from ..httpheaders import DROP_TO_BACKEND, end_to_end
from ..httppaths import Refusal, path_problem
from ..metrics.catalog import OTHER
from ..openai_text import plain_sse
from ..overlay import framing
from ..overlay.host import PeerStream, StreamFailed
from . import bridge
from .backend import Backend, BackendError

PROTOCOL = "/opentela/http/1"
IDLE_TIMEOUT_S = 3600.0  # a pooled stream may sit idle this long between requests
REQUEST_TIMEOUT_S = 30.0  # once a request has started, each of its frames must come this fast

log = structlog.get_logger("opentela.worker")

RETRYABLE_STATUS = frozenset({502, 503, 504})

# Requests one peer may have in flight here at once. An entry node carries all of its clients'
# requests to us, so this is far above one client's needs (a busy head forwards tens at once;
# the backend queues beyond its batch size anyway) while one member cannot hold every backend
# connection. Over it: 429, retryable, so the entry tries another replica.
MAX_CONCURRENT_PER_PEER = 256
CLIENT_MEMORY_S = 30.0  # an entry that forwarded us nothing this long stops getting our load
MAX_DIRECT_CLIENTS = 16  # entries told our load directly, at most (the most recent ones)
REFUSAL_LOG_INTERVAL_S = 60.0  # refusals are logged once per peer per minute, not per request


def error_frame(status: int, message: str, type_: str, code: str, retryable: bool) -> bytes:
    return framing.encode(
        framing.ERROR,
        {"status": status, "message": message, "type": type_, "code": code, "retryable": retryable},
    )


class ForwardServer:
    def __init__(
        self,
        backend: Backend,
        service_name: str,
        self_id: str,
        allow_paths: tuple[str, ...] = (),
        max_per_peer: int = MAX_CONCURRENT_PER_PEER,
    ) -> None:
        self.backend = backend
        self.service_name = service_name
        self.self_id = self_id
        self.allow_paths = allow_paths  # --service.allow-path globs
        self.max_per_peer = max_per_peer
        self.per_peer: dict[str, int] = {}
        self.refused = 0
        self._refusal_logged: dict[str, float] = {}
        self.available = False  # set by the health loop; while False we refuse (retryably)
        self.draining = False  # set when the node stops: finish what runs, refuse the rest
        self.in_flight = 0
        self.served = 0
        self.cancelled = 0
        # Requests by (model, status answered), for ``opentela_worker_requests_total``. The
        # model is the entry's word (``head["model"]``), kept only when our backend serves it.
        self.counts: Counter[tuple[str, str]] = Counter()
        self.served_models: Callable[[], Iterable[str]] = tuple
        self.clients: dict[str, float] = {}  # entry peer -> when it last sent us a request

    def recent_clients(self, now: float, within_s: float = CLIENT_MEMORY_S) -> list[str]:
        """The entry nodes that forwarded us a request lately: they route on our load, so they
        get it directly (``TableSync.publish_load``); the rest of the pool hears by gossip."""
        for pid in [p for p, t in self.clients.items() if now - t > within_s]:
            del self.clients[pid]
        return sorted(self.clients, key=self.clients.__getitem__)[-MAX_DIRECT_CLIENTS:]

    async def handle(self, stream: PeerStream) -> None:
        """One task reads the stream for its whole life and hands complete requests to the
        serving loop; if it sees the entry go away (CANCEL, reset, EOF) while a request is
        being served, it cancels that request, which closes the backend connection."""
        requests_in, requests_out = trio.open_memory_channel[tuple[dict, bytes]](1)
        current: list[trio.CancelScope] = []
        async with trio.open_nursery() as nursery:

            async def read_requests() -> None:
                async with requests_in:
                    await self._read_requests(stream, requests_in)
                for scope in current:
                    scope.cancel()

            nursery.start_soon(read_requests)
            async with requests_out:
                async for head, body in requests_out:
                    with trio.CancelScope() as scope:
                        current.append(scope)
                        try:
                            await self._serve_one(stream, head, body)
                        except StreamFailed:
                            scope.cancel()
                        finally:
                            current.clear()
                    # cancel_called, not cancelled_caught: a hang-up seen as a failed send
                    # (StreamFailed above) cancels no checkpoint but is a cancellation too.
                    if scope.cancel_called:
                        self.cancelled += 1
                        log.info(
                            "forward.cancelled", peer=stream.remote_peer, path=head.get("path")
                        )
                        break
            nursery.cancel_scope.cancel()
        await stream.reset()

    async def _read_requests(
        self, stream: PeerStream, out: trio.MemorySendChannel[tuple[dict, bytes]]
    ) -> None:
        pending: deque[framing.Frame] = deque()
        head: dict | None = None
        body = bytearray()
        while True:
            if not pending:
                try:
                    pending.extend(
                        await stream.receive(REQUEST_TIMEOUT_S if head else IDLE_TIMEOUT_S)
                    )
                except StreamFailed:
                    return
            frame = pending.popleft()
            if frame.kind == framing.REQ_HEAD and isinstance(frame.payload, dict):
                head, body = frame.payload, bytearray()
            elif (
                frame.kind == framing.BODY and head is not None and isinstance(frame.payload, bytes)
            ):
                body += frame.payload
            elif frame.kind == framing.END and head is not None:
                await out.send((head, bytes(body)))
                head, body = None, bytearray()
            else:
                if frame.kind != framing.CANCEL:
                    log.warning("forward.protocol_error", peer=stream.remote_peer, kind=frame.kind)
                return

    def _count(self, head: dict, status: int) -> None:
        model = head.get("model")
        if not isinstance(model, str) or not model:
            model = ""
        elif model not in self.served_models():
            model = OTHER
        self.counts[model, str(status)] += 1

    async def _serve_one(self, stream: PeerStream, head: dict, body: bytes) -> None:
        status = 499  # cancelled: the entry went away before the answer's head
        try:
            status = await self._serve_counted(stream, head, body)
        finally:
            self._count(head, status)

    async def _serve_counted(self, stream: PeerStream, head: dict, body: bytes) -> int:
        """Serves one request; returns the status answered."""
        method, path = head.get("method", "POST"), head.get("path", "/")
        refusal = path_problem(method, path, self.allow_paths)
        if refusal is not None:
            await self._refuse(stream, refusal, method, path)
            return refusal.status
        assert isinstance(method, str) and isinstance(path, str)
        peer = stream.remote_peer
        if self.per_peer.get(peer, 0) >= self.max_per_peer:
            await self._refuse(
                stream,
                Refusal(
                    429,
                    "too_many_requests",
                    f"this worker already serves {self.max_per_peer} requests from your node",
                ),
                method,
                path,
                retryable=True,
            )
            return 429
        service = head.get("service") or self.service_name
        if service != self.service_name or not self.available or self.draining:
            await stream.send(
                error_frame(
                    503,
                    f"service {service!r} is not available on this node",
                    "service_unavailable",
                    "service_unavailable",
                    True,
                )
            )
            return 503
        raw_headers = head.get("headers")
        headers = end_to_end(
            [h for h in raw_headers if isinstance(h, list | tuple) and len(h) == 2]
            if isinstance(raw_headers, list)
            else [],
            DROP_TO_BACKEND,
        )
        self.in_flight += 1
        self.clients[peer] = trio.current_time()
        self.per_peer[peer] = self.per_peer.get(peer, 0) + 1
        try:
            status = await self._proxy(stream, method, path, headers, body)
            self.served += 1
            return status
        finally:
            self.in_flight -= 1
            if (left := self.per_peer[peer] - 1) > 0:
                self.per_peer[peer] = left
            else:
                del self.per_peer[peer]

    async def _refuse(
        self,
        stream: PeerStream,
        refusal: Refusal,
        method: object,
        path: object,
        retryable: bool = False,
    ) -> None:
        """Answer without touching the backend; OpenAI-shaped, so the entry passes it on."""
        self.refused += 1
        peer, now = stream.remote_peer, trio.current_time()
        if now - self._refusal_logged.get(peer, -REFUSAL_LOG_INTERVAL_S) >= REFUSAL_LOG_INTERVAL_S:
            if len(self._refusal_logged) > 4096:  # bounded memory whatever peers come and go
                self._refusal_logged.clear()
            self._refusal_logged[peer] = now
            log.warning(
                "forward.refused",
                peer=peer,
                status=refusal.status,
                method=str(method)[:16],
                path=str(path)[:200],
                reason=refusal.message,
            )
        type_ = "rate_limit_error" if refusal.status == 429 else "invalid_request_error"
        await stream.send(
            error_frame(refusal.status, refusal.message, type_, refusal.code, retryable)
        )

    async def _proxy(
        self, stream: PeerStream, method: str, path: str, headers: list[list[str]], body: bytes
    ) -> int:
        synth: bridge.UsageSynth | None = None
        if self.backend.kind in bridge.BRIDGED_KINDS:  # no trip to asyncio for other kinds
            body, synth = await to_aio(self.backend.bridge_request)(method, path, body)
        try:
            resp, first, eof = await to_aio(self.backend.start_and_read)(
                method, path, headers, body
            )
        except BackendError as exc:
            log.warning("forward.backend_unreachable", path=path, error=str(exc))
            await stream.send(
                error_frame(
                    502, f"backend unreachable: {exc}", "backend_error", "backend_unreachable", True
                )
            )
            return 502
        complete = False
        try:
            head = framing.encode(
                framing.RESP_HEAD,
                {
                    "status": resp.status,
                    "headers": end_to_end(resp.headers.items()),
                    "retryable": resp.status in RETRYABLE_STATUS,
                },
            )
            if synth is not None and not plain_sse(resp.status, resp.headers):
                synth = None  # an error answer, or bytes we must not rewrite: pass them on
            batch = [head]
            if synth is not None:
                first = synth.feed(first) + (synth.finish() if eof else b"")
            if first:
                batch.append(framing.encode(framing.BODY, first))
            while not eof:
                # Streaming: each chunk goes out as soon as the backend produced it.
                if batch:
                    await stream.send(*batch)
                chunk = await to_aio(self.backend.read_chunk)(resp)
                eof = not chunk
                if synth is not None:
                    chunk = synth.feed(chunk) if chunk else synth.finish()
                batch = [framing.encode(framing.BODY, chunk)] if chunk else []
            complete = True
            batch.append(framing.encode(framing.END))
            await stream.send(*batch)
        except BackendError as exc:
            log.warning("forward.backend_failed", path=path, error=str(exc))
            await stream.send(
                error_frame(
                    502,
                    f"backend failed mid-response: {exc}",
                    "backend_error",
                    "backend_failed",
                    False,
                )
            )
        finally:
            # An unfinished response closes the backend connection: that is what tells the
            # backend to stop generating. A finished one goes back to the keep-alive pool.
            if complete:
                resp.release()
            else:
                resp.close()
        return int(resp.status)
