"""Serve forwarded requests arriving on peer streams, proxying them to the local backend.

One stream carries one request at a time (the entry side pools streams). While a response
streams out, a watcher reads the stream: a CANCEL frame, a reset or an EOF means the client is
gone, and the backend request is cancelled at once (an abandoned generation keeps a GPU busy).
Only the configured backend is ever reachable: the request names a service, never a host.
"""

from __future__ import annotations

from collections import deque

import structlog
import trio

from ..aio_bridge import to_aio
from ..httpheaders import DROP_TO_BACKEND, end_to_end
from ..overlay import framing
from ..overlay.host import PeerStream, StreamFailed
from .backend import Backend, BackendError

PROTOCOL = "/opentela/http/1"
IDLE_TIMEOUT_S = 3600.0  # a pooled stream may sit idle this long between requests
REQUEST_TIMEOUT_S = 30.0  # once a request has started, each of its frames must come this fast

log = structlog.get_logger("opentela.worker")

RETRYABLE_STATUS = frozenset({502, 503, 504})


def error_frame(status: int, message: str, type_: str, code: str, retryable: bool) -> bytes:
    return framing.encode(
        framing.ERROR,
        {"status": status, "message": message, "type": type_, "code": code, "retryable": retryable},
    )


class ForwardServer:
    def __init__(self, backend: Backend, service_name: str, self_id: str) -> None:
        self.backend = backend
        self.service_name = service_name
        self.self_id = self_id
        self.available = False  # set by the health loop; while False we refuse (retryably)
        self.draining = False  # set when the node stops: finish what runs, refuse the rest
        self.in_flight = 0
        self.served = 0
        self.cancelled = 0

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
                    if scope.cancelled_caught:
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
            elif frame.kind == framing.BODY and head is not None:
                body += frame.payload
            elif frame.kind == framing.END and head is not None:
                await out.send((head, bytes(body)))
                head, body = None, bytearray()
            else:
                if frame.kind != framing.CANCEL:
                    log.warning("forward.protocol_error", peer=stream.remote_peer, kind=frame.kind)
                return

    async def _serve_one(self, stream: PeerStream, head: dict, body: bytes) -> None:
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
            return
        method = str(head.get("method", "POST"))
        path = str(head.get("path", "/"))
        headers = end_to_end(head.get("headers") or [], DROP_TO_BACKEND)
        self.in_flight += 1
        try:
            await self._proxy(stream, method, path, headers, body)
            self.served += 1
        finally:
            self.in_flight -= 1

    async def _proxy(
        self, stream: PeerStream, method: str, path: str, headers: list[list[str]], body: bytes
    ) -> None:
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
            return
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
            batch = [head]
            if first:
                batch.append(framing.encode(framing.BODY, first))
            while not eof:
                # Streaming: each chunk goes out as soon as the backend produced it.
                await stream.send(*batch)
                chunk = await to_aio(self.backend.read_chunk)(resp)
                eof = not chunk
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
