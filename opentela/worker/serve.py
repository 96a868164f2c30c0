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
        self.in_flight = 0
        self.served = 0
        self.cancelled = 0

    async def handle(self, stream: PeerStream) -> None:
        pending: deque[framing.Frame] = deque()
        while True:
            head = None
            body = bytearray()
            timeout = IDLE_TIMEOUT_S
            while True:
                if not pending:
                    try:
                        pending.extend(await stream.receive(timeout))
                    except StreamFailed:
                        return
                frame = pending.popleft()
                timeout = REQUEST_TIMEOUT_S
                if frame.kind == framing.REQ_HEAD and isinstance(frame.payload, dict):
                    head, body = frame.payload, bytearray()
                elif frame.kind == framing.BODY and head is not None:
                    body += frame.payload
                elif frame.kind == framing.END and head is not None:
                    break
                elif frame.kind == framing.CANCEL:
                    head, body, timeout = None, bytearray(), IDLE_TIMEOUT_S
                else:
                    log.warning("forward.protocol_error", peer=stream.remote_peer, kind=frame.kind)
                    await stream.reset()
                    return
            try:
                ok = await self._serve_one(stream, head, bytes(body), pending)
            except StreamFailed:
                ok = False
            if not ok:
                await stream.reset()
                return

    async def _serve_one(
        self, stream: PeerStream, head: dict, body: bytes, pending: deque[framing.Frame]
    ) -> bool:
        """Returns False when the stream can no longer be used."""
        service = head.get("service") or self.service_name
        if service != self.service_name or not self.available:
            await stream.send(
                error_frame(
                    503,
                    f"service {service!r} is not available on this node",
                    "service_unavailable",
                    "service_unavailable",
                    True,
                )
            )
            return True
        method = str(head.get("method", "POST"))
        path = str(head.get("path", "/"))
        headers = end_to_end(head.get("headers") or [], DROP_TO_BACKEND)
        self.in_flight += 1
        gone = False
        try:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    nonlocal gone
                    try:
                        frames = await stream.receive(IDLE_TIMEOUT_S)
                    except StreamFailed:
                        frames = []
                    pending.extend(frames)
                    gone = True
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                await self._proxy(stream, method, path, headers, body)
                nursery.cancel_scope.cancel()
        finally:
            self.in_flight -= 1
        if gone:
            self.cancelled += 1
            log.info("forward.cancelled", peer=stream.remote_peer, path=path)
            return False
        self.served += 1
        return True

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
