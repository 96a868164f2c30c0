"""Entry side of forwarding: pick targets, carry the request over a pooled peer stream, relay
the response (chunk by chunk for SSE), fail over before the first byte.

Runs in an aiohttp handler (asyncio); every libp2p operation crosses to trio through
``aio_bridge``, once per frame batch.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import structlog
import trio
from aiohttp import web

from ..aio_bridge import to_trio
from ..httpheaders import DROP_TO_BACKEND, end_to_end
from ..httppaths import Refusal, path_problem, request_problem
from ..openai_text import plain_sse
from ..overlay import framing
from ..overlay.host import PeerStream, StreamAborted, StreamFailed, StreamTimeout
from ..overlay.streams import StreamPool
from ..routing.plan import Target
from .balancer import Balancer
from .errors import error_body, sse_error_event

MAX_ATTEMPTS = 3

# Why an attempt failed (``Attempt.reason``; the ``reason`` of ``opentela_failovers_total``).
UNREACHABLE = "unreachable"  # no stream to the replica, or it broke before any answer
TIMEOUT = "timeout"  # no answer within --read-timeout
REFUSED = "refused"  # the worker would not take it now (draining, not ready, at its limit)
BACKEND_ERROR = "backend_error"  # the replica's backend unreachable or answered 502/503/504
PROTOCOL_ERROR = "protocol_error"  # the worker answered out of order

log = structlog.get_logger("opentela.gateway")


class StreamBridge(Protocol):
    """Rewrites one backend stream on the way out (the worker's usage chunk for a backend
    kind that never sends one, ``worker/bridge.py``): ``feed`` per chunk, ``finish`` once."""

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


LocalBridge = Callable[[str, str, bytes], Awaitable[tuple[bytes, StreamBridge | None]]]
"""(method, path, body) -> (body to send, stream rewriter or None): this node's worker's
bridges for its own backend, applied on the local path as a remote worker applies them."""


class ResponseObserver(Protocol):
    """Sees the response the client gets (usage accounting): ``on_head`` once, ``on_body``
    for every body chunk (its return value is what the client gets: it may rewrite or drop
    bytes), ``on_end(complete)`` once (False: the client went away or the stream broke).
    ``retries`` is set to the failed attempts before the answer."""

    retries: int

    def on_head(self, status: int, headers: Iterable[tuple[str, str]]) -> None: ...

    def on_body(self, chunk: bytes) -> bytes: ...

    def on_end(self, complete: bool) -> None: ...

    def decode_rate(self) -> float | None:
        """Generated tokens per second of the answer, once it ended (None: not known, e.g.
        not streamed). Feeds the balancer's service rates."""
        ...


class _Unobserved:
    """The observer when nobody observes: the client gets the backend's bytes."""

    @property
    def retries(self) -> int:
        return 0

    @retries.setter
    def retries(self, _n: int) -> None:
        pass

    def on_head(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        pass

    def on_body(self, chunk: bytes) -> bytes:
        return chunk

    def on_end(self, complete: bool) -> None:
        pass

    def decode_rate(self) -> float | None:
        return None


UNOBSERVED = _Unobserved()


@dataclass
class Attempt:
    target: Target
    error: str
    reason: str  # one of REASONS: the label of ``opentela_failovers_total``


@dataclass
class ForwardStats:
    requests: int = 0
    retries: int = 0
    failed: int = 0
    client_gone: int = 0
    stale_streams: int = 0  # reused streams found dead and replaced (``_exchange``)
    relay_retries: int = 0  # requests retried through another relay (``_exchange``)
    in_flight: dict[str, int] = field(default_factory=dict)
    failovers: Counter[str] = field(default_factory=Counter)  # by the failed attempt's reason


class Forwarder:
    def __init__(
        self,
        pool: StreamPool,
        self_id: str,
        read_timeout_s: float,
        local_session: aiohttp.ClientSession | None,
        local_backend_url: str,
        local_ready: Callable[[], bool] = lambda: False,
        balancer: Balancer | None = None,
        local_allow_paths: tuple[str, ...] = (),
        local_bridge: LocalBridge | None = None,
    ) -> None:
        self.pool = pool
        self.self_id = self_id
        self.read_timeout_s = read_timeout_s
        self.local_session = local_session
        self.local_backend_url = local_backend_url
        self.local_ready = local_ready
        self.balancer = balancer
        self.local_allow_paths = local_allow_paths  # this node's own --service.allow-path
        self.local_bridge = local_bridge
        self.stats = ForwardStats()
        # Peer -> wall-clock time this node last sent it a request (the fleet's idle clock).
        self.last_sent: dict[str, float] = {}
        self.rng = random.Random()

    def in_flight(self) -> int:
        return sum(self.stats.in_flight.values())

    # -- trio side ---------------------------------------------------------------------------

    async def _open(self, peer_id: str, head: dict, body: bytes, fresh: bool = False) -> PeerStream:
        stream = await self.pool.acquire(peer_id, fresh)
        try:
            await stream.send(
                framing.encode(framing.REQ_HEAD, head),
                *framing.encode_body(body),
                framing.encode(framing.END),
            )
        except StreamFailed:
            await self.pool.discard(stream)
            raise
        return stream

    async def _exchange(
        self, peer_id: str, head: dict, body: bytes
    ) -> tuple[PeerStream, list[framing.Frame], bool]:
        """Send a request and wait for the first frame batch, in one trip to the trio side.
        A batch that already holds the whole answer releases the stream here too.

        A pooled stream can be dead without anyone knowing (its connection closed while it
        sat idle, or the worker reset it): a failure before any answer on a reused stream is
        tried once more on a new stream to the same peer, which redials if it must, instead
        of costing the client its request when that peer is the only replica."""
        reused = self.pool.idle_for(peer_id) > 0
        try:
            return await self._exchange_on(peer_id, head, body, fresh=False)
        except (StreamTimeout, StreamAborted):
            raise  # a slow peer (another try waits as long) or a dead one (nothing to redial)
        except StreamFailed as exc:
            relay = self.pool.relay_of(peer_id)
            if relay is not None:
                # Through a relay: the relay may be what broke. The next stream takes another.
                self.pool.relay_failed(peer_id, relay)
                log.info("forward.relay_failed", peer=peer_id, relay=relay, error=str(exc))
                self.stats.relay_retries += 1
            elif not reused:
                raise
            else:
                log.info("forward.stale_stream", peer=peer_id, error=str(exc))
                self.stats.stale_streams += 1
        return await self._exchange_on(peer_id, head, body, fresh=True)

    async def _exchange_on(
        self, peer_id: str, head: dict, body: bytes, fresh: bool
    ) -> tuple[PeerStream, list[framing.Frame], bool]:
        stream = await self._open(peer_id, head, body, fresh)
        try:
            frames = await stream.receive(self.read_timeout_s)
        except BaseException:
            await self._discard(stream)
            raise
        if frames[-1].kind in (framing.END, framing.ERROR):
            await self.pool.release(stream)
            return stream, frames, True
        return stream, frames, False

    async def _receive(self, stream: PeerStream) -> list[framing.Frame]:
        return await stream.receive(self.read_timeout_s)

    async def _release(self, stream: PeerStream) -> None:
        await self.pool.release(stream)

    async def _discard(self, stream: PeerStream) -> None:
        with trio.CancelScope(shield=True):
            await self.pool.discard(stream)

    # -- asyncio side --------------------------------------------------------------------------

    async def forward(
        self,
        request: web.Request,
        targets: list[Target],
        path: str,
        body: bytes,
        observer: ResponseObserver | None = None,
        model: str | None = None,
    ) -> web.StreamResponse:
        """``model``: the model the request is for, told to the worker (its request counts
        by model; it checks the name against what its backend serves)."""
        self.stats.requests += 1
        # Method and form only: which routes a worker allows is that worker's decision
        # (its --service.allow-path); the worker checks everything again (trust boundary).
        refusal = request_problem(request.method, path)
        if refusal is not None:
            return _refused(refusal)
        # Drops the client's Authorization/Cookie/X-Api-Key: they never leave this node.
        headers = end_to_end(request.headers.items(), DROP_TO_BACKEND)
        attempts: list[Attempt] = []
        obs = observer or UNOBSERVED
        for target in targets[:MAX_ATTEMPTS]:
            if attempts:
                self.stats.retries += 1
                self.stats.failovers[attempts[-1].reason] += 1
            counts = self.stats.in_flight
            counts[target.peer_id] = counts.get(target.peer_id, 0) + 1
            self.last_sent[target.peer_id] = time.time()
            ticket = self.balancer.start(target.peer_id) if self.balancer else None
            resp = None
            try:
                if target.peer_id == self.self_id:
                    resp = await self._forward_local(
                        request, target, path, headers, body, attempts, obs
                    )
                else:
                    resp = await self._forward_remote(
                        request, target, path, headers, body, attempts, obs, model
                    )
            finally:
                counts[target.peer_id] -= 1
                if ticket is not None and self.balancer is not None:
                    ok = resp is not None and resp.status < 300  # an answer: a speed sample
                    self.balancer.finish(ticket, ok, obs.decode_rate() if ok else None)
            if resp is not None:
                obs.retries = len(attempts)
                return resp
        obs.retries = len(attempts)
        self.stats.failed += 1
        detail = "; ".join(f"{a.target.peer_id[-8:]}: {a.error}" for a in attempts)
        log.warning("forward.exhausted", path=path, attempts=len(attempts), detail=detail)
        return web.json_response(
            error_body(
                f"no replica could serve the request after {len(attempts)} attempt(s): {detail}",
                "service_unavailable",
                "no_live_replica",
            ),
            status=503,
            headers={"Retry-After": "2"},
        )

    async def _forward_remote(
        self,
        request: web.Request,
        target: Target,
        path: str,
        headers: list[list[str]],
        body: bytes,
        attempts: list[Attempt],
        obs: ResponseObserver,
        model: str | None = None,
    ) -> web.StreamResponse | None:
        head = {
            "method": request.method,
            "path": path,
            "headers": headers,
            "service": target.service,
        }
        if model:
            head["model"] = model
        try:
            stream, frames, finished = await to_trio(self._exchange)(target.peer_id, head, body)
        except StreamFailed as exc:
            reason = TIMEOUT if isinstance(exc, StreamTimeout) else UNREACHABLE
            attempts.append(Attempt(target, str(exc), reason))
            log.info("forward.retry", peer=target.peer_id, error=str(exc))
            return None
        first = frames[0]
        if first.kind == framing.ERROR:
            err = first.payload if isinstance(first.payload, dict) else {}
            if not finished:
                await to_trio(self._discard)(stream)
            if err.get("retryable"):
                reason = BACKEND_ERROR if err.get("code") == "backend_unreachable" else REFUSED
                attempts.append(Attempt(target, str(err.get("message")), reason))
                return None
            return web.json_response(
                error_body(str(err.get("message")), str(err.get("type")), err.get("code")),
                status=int(err.get("status", 502)),
                headers={"X-Computing-Node": target.peer_id},
            )
        if first.kind != framing.RESP_HEAD:
            if not finished:
                await to_trio(self._discard)(stream)
            attempts.append(
                Attempt(target, f"protocol error: frame {first.kind} before head", PROTOCOL_ERROR)
            )
            return None
        meta = first.payload
        status = int(meta.get("status", 502))
        if meta.get("retryable") and finished and len(attempts) + 1 < MAX_ATTEMPTS:
            # A 502/503/504 from the backend before any byte reached the client: try another.
            attempts.append(Attempt(target, f"backend answered {status}", BACKEND_ERROR))
            return None
        out_headers = [(k, v) for k, v in meta.get("headers", [])]
        out_headers.append(("X-Computing-Node", target.peer_id))
        obs.on_head(status, out_headers)
        if finished and frames[-1].kind == framing.END:
            # The whole response arrived in one batch: a plain response with Content-Length.
            data = obs.on_body(b"".join(f.payload for f in frames if f.kind == framing.BODY))
            obs.on_end(True)
            resp = web.Response(body=data, status=status)
            for k, v in out_headers:
                resp.headers.add(k, v)
            return resp
        return await self._relay(request, stream, status, out_headers, frames[1:], target, obs)

    async def _relay(
        self,
        request: web.Request,
        stream: PeerStream,
        status: int,
        headers: list[tuple[str, str]],
        frames: list[framing.Frame],
        target: Target,
        obs: ResponseObserver,
    ) -> web.StreamResponse:
        resp = await open_response(request, status, headers)
        is_sse = "text/event-stream" in resp.headers.get("Content-Type", "")
        done = False
        try:
            while True:
                for f in frames:
                    if f.kind == framing.BODY:
                        if data := obs.on_body(f.payload):
                            await resp.write(data)
                    elif f.kind == framing.END:
                        done = True
                    elif f.kind == framing.ERROR:
                        msg = str((f.payload or {}).get("message", "worker error"))
                        raise StreamFailed(msg)
                if done:
                    break
                frames = await to_trio(self._receive)(stream)
        except StreamFailed as exc:
            obs.on_end(False)
            self.stats.failed += 1
            log.warning("forward.broken_midstream", peer=target.peer_id, error=str(exc))
            await to_trio(self._discard)(stream)
            if is_sse:
                await resp.write(sse_error_event(f"the serving node failed mid-stream: {exc}"))
                await resp.write_eof()
                return resp
            # A non-SSE body cannot carry an error: abort the connection so the client sees a
            # truncated transfer, not a short "complete" one.
            if request.transport is not None:
                request.transport.close()
            return resp
        except BaseException:
            # Client went away (or we are shutting down): reset the stream; the worker's
            # watcher sees it and cancels the backend request.
            obs.on_end(False)
            self.stats.client_gone += 1
            await to_trio(self._discard)(stream)
            raise
        obs.on_end(True)
        await to_trio(self._release)(stream)
        await resp.write_eof()
        return resp

    async def _forward_local(
        self,
        request: web.Request,
        target: Target,
        path: str,
        headers: list[list[str]],
        body: bytes,
        attempts: list[Attempt],
        obs: ResponseObserver,
    ) -> web.StreamResponse | None:
        """The entry node serves the model itself: straight to the backend, no peer hop."""
        refusal = path_problem(request.method, path, self.local_allow_paths)
        if refusal is not None:
            return _refused(refusal, target.peer_id)  # the same answer a remote worker gives
        if self.local_session is None or not self.local_ready():
            attempts.append(Attempt(target, "local service not ready", REFUSED))
            return None
        synth: StreamBridge | None = None
        if self.local_bridge is not None:
            body, synth = await self.local_bridge(request.method, path, body)
        try:
            upstream = await self.local_session.request(
                request.method,
                f"{self.local_backend_url}{path}",
                headers=[(k, v) for k, v in headers],
                data=body,
                allow_redirects=False,  # never follow a backend to another host
                # --read-timeout holds here too: the longest wait for the next byte.
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=5, sock_read=self.read_timeout_s
                ),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            attempts.append(Attempt(target, f"backend unreachable: {exc!r}", BACKEND_ERROR))
            return None
        complete = False
        try:
            if upstream.status in (502, 503, 504) and len(attempts) + 1 < MAX_ATTEMPTS:
                attempts.append(
                    Attempt(target, f"backend answered {upstream.status}", BACKEND_ERROR)
                )
                return None
            out_headers = [
                *end_to_end(upstream.headers.items()),
                ("X-Computing-Node", target.peer_id),
            ]
            obs.on_head(upstream.status, out_headers)
            resp = await open_response(request, upstream.status, out_headers)
            is_sse = "text/event-stream" in resp.headers.get("Content-Type", "")
            if synth is not None and not plain_sse(upstream.status, upstream.headers):
                synth = None  # an error answer, or bytes we must not rewrite: pass them on
            try:
                while chunk := await upstream.content.readany():
                    if synth is not None:
                        chunk = synth.feed(chunk)
                    if data := obs.on_body(chunk):
                        await resp.write(data)
                if synth is not None and (data := obs.on_body(synth.finish())):
                    await resp.write(data)
            except (aiohttp.ClientError, TimeoutError) as exc:
                obs.on_end(False)
                self.stats.failed += 1
                log.warning("forward.broken_midstream", peer=target.peer_id, error=repr(exc))
                if is_sse:
                    await resp.write(sse_error_event(f"the backend failed mid-stream: {exc!r}"))
                    await resp.write_eof()
                elif request.transport is not None:
                    request.transport.close()  # a truncated transfer, never a short "complete" one
                return resp
            obs.on_end(True)
            await resp.write_eof()
            complete = True
            return resp
        except BaseException:
            if not complete:
                obs.on_end(False)  # the client went away (cancelled) mid-answer
            raise
        finally:
            if complete:
                upstream.release()
            else:
                upstream.close()


SINK_KEY = "otela.sink"
"""``request[SINK_KEY]``: a streamed response already sent to the client (its head and SSE
keep-alive comments: a request held while its model starts, ``gateway/hold.py``); a
streamed answer is written into it instead of a new response."""


async def open_response(
    request: web.Request, status: int, headers: Iterable[tuple[str, str]]
) -> web.StreamResponse:
    """The prepared response a streamed answer is written to."""
    sink = request.get(SINK_KEY)
    if sink is not None:
        return sink
    resp = web.StreamResponse(status=status)
    for k, v in headers:
        resp.headers.add(k, v)
    await resp.prepare(request)
    return resp


def _refused(refusal: Refusal, peer_id: str | None = None) -> web.Response:
    """A request no worker would serve: the client's mistake, answered at once, not retried."""
    return web.json_response(
        error_body(refusal.message, "invalid_request_error", refusal.code),
        status=refusal.status,
        headers={"X-Computing-Node": peer_id} if peer_id else None,
    )
