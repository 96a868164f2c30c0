"""The relay service: a reachable head or ``--role relay`` node carries streams for private
nodes (``RELAY_PROTOCOL``, see ``overlay/host.py``).

Two operations, each the first frame of a stream:

- ``reserve``: a private node asks to be reached through us. We answer, then keep the stream
  open for as long as the reservation lasts, with a keep-alive every ``KEEPALIVE_S``: the
  stream breaking is how both ends learn that the other is gone (a relay that restarts loses
  its reservations; its clients see it at once and reserve again, here or elsewhere).
- ``connect {to, proto}``: a member wants a stream to ``to``. We open ``RELAYED_PROTOCOL`` to
  it over the connection we hold (a private client's) or by dialing it (a public node a
  private origin cannot dial), name the origin, answer ok, then copy bytes both ways until
  both sides have closed or either breaks. Frames are not decoded: the copy costs a read and a
  write per chunk.

Any admitted member may ask (``Host._serve`` checked the origin before this runs); the target
checks the origin again. Limits: ``reach/limits.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import structlog
import trio

from ..overlay import framing
from ..overlay.host import (
    RELAY_HANDSHAKE_S,
    RELAY_PROTOCOL,
    RELAYED_PROTOCOL,
    Host,
    PeerStream,
    StreamFailed,
)
from ..overlay.limits import LogOnce
from .limits import MAX_CLIENTS, RelayLimits

KEEPALIVE_S = 10.0
COPY_CHUNK = 65536

log = structlog.get_logger("opentela.relay")


def _reply(ok: bool, error: str = "") -> bytes:
    return framing.encode(framing.BODY, {"ok": ok, **({"error": error} if error else {})})


class RelayService:
    """Relaying on this node while ``offering()`` (public, role head or relay)."""

    def __init__(
        self,
        host: Host,
        offering: Callable[[], bool],
        is_private: Callable[[str], bool],
        limits: RelayLimits | None = None,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.host = host
        self.offering = offering
        self.is_private = is_private  # the table says the peer cannot be dialed
        self.limits = limits or RelayLimits()
        self.max_clients = max_clients
        self.clients: dict[str, int] = {}  # private node -> reservations it holds here
        self._refusals = LogOnce()
        self.stats: dict[str, int] = {
            "reservations": 0,
            "relayed": 0,
            "relayed_bytes": 0,
            "refused": 0,
            "throttled_s_milli": 0,
        }

    def start(self) -> None:
        self.host.set_handler(RELAY_PROTOCOL, self.handle)

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.stats,
            "offering": self.offering(),
            "clients": len(self.clients),
            "active_streams": self.limits.streams,
        }

    async def handle(self, stream: PeerStream) -> None:
        try:
            frames = await stream.receive(RELAY_HANDSHAKE_S)
        except StreamFailed:
            return
        msg = frames[0].payload if frames[0].kind == framing.BODY else None
        op = msg.get("op") if isinstance(msg, dict) else None
        if not self.offering():
            await self._refuse(stream, "this node does not relay (private, or a worker)")
        elif op == "reserve":
            await self._reserve(stream)
        elif op == "connect":
            assert isinstance(msg, dict)
            await self._connect(stream, msg.get("to"), msg.get("proto"))
        else:
            await self._refuse(stream, f"unknown relay op {str(op)[:32]!r}")

    async def _refuse(self, stream: PeerStream, why: str) -> None:
        self.stats["refused"] += 1
        if self._refusals.should_log(f"{stream.remote_peer} {why}", trio.current_time()):
            log.warning("relay.refused", peer=stream.remote_peer, reason=why)
        with contextlib.suppress(StreamFailed):
            await stream.send(_reply(False, why))

    async def _reserve(self, stream: PeerStream) -> None:
        client = stream.remote_peer
        if client not in self.clients and len(self.clients) >= self.max_clients:
            await self._refuse(stream, f"this relay holds {self.max_clients} reservations")
            return
        self.clients[client] = self.clients.get(client, 0) + 1
        self.stats["reservations"] += 1
        log.info("relay.reserved", client=client, clients=len(self.clients))
        try:
            await stream.send(_reply(True))
            async with trio.open_nursery() as nursery:

                async def keepalive() -> None:
                    while True:
                        await trio.sleep(KEEPALIVE_S)
                        await stream.send(framing.encode(framing.BODY, {"op": "ping"}))

                nursery.start_soon(keepalive)
                # The client sends nothing more: anything, EOF or a reset ends the reservation.
                with trio.CancelScope():
                    try:
                        await stream.receive(float("inf"))
                    finally:
                        nursery.cancel_scope.cancel()
        except StreamFailed:
            pass
        finally:
            left = self.clients.get(client, 1) - 1
            if left > 0:
                self.clients[client] = left
            else:
                self.clients.pop(client, None)
                log.info("relay.released", client=client, clients=len(self.clients))

    async def _connect(self, stream: PeerStream, target: object, proto: object) -> None:
        origin = stream.remote_peer
        if not isinstance(target, str) or not isinstance(proto, str) or len(target) > 128:
            await self._refuse(stream, "connect needs a peer ID 'to' and a protocol 'proto'")
            return
        if target in (origin, self.host.peer_id) or proto in (RELAY_PROTOCOL, RELAYED_PROTOCOL):
            await self._refuse(stream, "a relay does not relay to itself, the origin or a relay")
            return
        if not self.host.is_connected(target) and self.is_private(target):
            # A private node we hold no connection to: dialing it would only time out.
            await self._refuse(stream, f"{target[-8:]} holds no reservation here")
            return
        why = self.limits.open(origin, target)
        if why is not None:
            await self._refuse(stream, why)
            return
        try:
            try:
                out = await self.host.open_direct(target, RELAYED_PROTOCOL)
                await out.send(framing.encode(framing.BODY, {"from": origin, "proto": proto}))
            except StreamFailed as exc:
                await self._refuse(stream, f"cannot reach {target[-8:]}: {exc}")
                return
            try:
                await stream.send(_reply(True))
            except StreamFailed:
                await out.reset()
                return
            self.stats["relayed"] += 1
            await self._splice(stream, out, (origin, target))
        finally:
            self.limits.close(origin, target)

    async def _splice(self, a: PeerStream, b: PeerStream, peers: tuple[str, str]) -> None:
        """Copy both ways; a side's EOF half-closes the other (yamux FIN), a break resets both."""
        broken = False

        async def pump(src: PeerStream, dst: PeerStream, first: bytes) -> None:
            nonlocal broken
            data = first
            try:
                while True:
                    if data:
                        wait = self.limits.wait_for(peers, len(data), trio.current_time())
                        if wait > 0:
                            self.stats["throttled_s_milli"] += int(wait * 1000)
                            await trio.sleep(wait)
                        await dst.raw.write(data)
                        self.stats["relayed_bytes"] += len(data)
                    data = await src.raw.read(COPY_CHUNK)
                    if not data:
                        await dst.raw.close()
                        return
            except Exception:
                broken = True
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, a, b, a.unread())
            nursery.start_soon(pump, b, a, b.unread())
        if broken:
            await a.reset()
            await b.reset()
        else:
            await b.close()
