"""Dial-back: ask peers whether they can open a TCP connection to us (``--reachability auto``).

A node that believes it is public asks up to ``ASK`` public peers; each one connects to the
address it sees the request come from, and to the addresses the requester's signed record
announces (a host with several addresses often dials out from another one than it listens
on), at the port named, and answers whether any worked. Never an address the request itself
names (the service cannot be aimed at a third party at will), at most ``MAX_ADDRS``, one
answer per peer per ``PER_PEER_S``, and each connection is closed as soon as it is made. A NAT or a firewall that drops inbound connections
shows up as a failure, which is the point.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Callable, Iterable

import structlog
import trio

from ..overlay import framing
from ..overlay.host import Host, PeerStream, StreamFailed

PROTOCOL = "/opentela/dialback/1"
CONNECT_TIMEOUT_S = 3.0
ASK = 3
PER_PEER_S = 10.0
MAX_CONCURRENT = 4
MAX_ADDRS = 4

log = structlog.get_logger("opentela.reach")


def verdict(answers: Iterable[bool | None]) -> bool | None:
    """True: someone reached us; False: peers answered and none did; None: no answer."""
    got = [a for a in answers if a is not None]
    if any(got):
        return True
    return False if got else None


async def tcp_reachable(ip: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        with trio.move_on_after(timeout_s):
            await sock.connect((ip, port))
            return True
        return False
    except OSError:
        return False
    finally:
        sock.close()


class DialBack:
    """Both sides: ``handle`` answers peers (on public nodes), ``ask`` asks them."""

    def __init__(self, host: Host, announced: Callable[[str], Iterable[str]]) -> None:
        self.host = host
        self.announced = announced  # a peer's multiaddrs, from its record in our table
        self._answered: dict[str, float] = {}
        self._limit = trio.CapacityLimiter(MAX_CONCURRENT)
        self.stats = {"answered": 0, "asked": 0}

    def start(self) -> None:
        self.host.set_handler(PROTOCOL, self.handle)

    async def handle(self, stream: PeerStream) -> None:
        peer, now = stream.remote_peer, trio.current_time()
        try:
            frames = await stream.receive(5.0)
        except StreamFailed:
            return
        msg = frames[0].payload if frames[0].kind == framing.BODY else None
        port = msg.get("port") if isinstance(msg, dict) else None
        remote = stream.raw.get_remote_address() if stream.via is None else None
        reply: dict[str, object]
        if not isinstance(port, int) or not 0 < port < 65536:
            reply = {"ok": False, "error": "port must be an integer 1-65535"}
        elif remote is None:
            reply = {"ok": False, "error": "no direct connection to dial back"}
        elif now - self._answered.get(peer, -PER_PEER_S) < PER_PEER_S:
            reply = {"ok": False, "error": f"one dial-back per {PER_PEER_S:.0f} s"}
        else:
            if len(self._answered) > 4096:
                self._answered.clear()
            self._answered[peer] = now
            ips = [str(remote[0])]
            for a in self.announced(peer):
                m = re.match(r"/ip[46]/([^/]+)/", a)
                if m and m.group(1) not in ips:
                    ips.append(m.group(1))
            reached_at = None
            async with self._limit:
                for ip in ips[:MAX_ADDRS]:
                    if await tcp_reachable(ip, port):
                        reached_at = ip
                        break
            self.stats["answered"] += 1
            reply = {
                "ok": True,
                "reachable": reached_at is not None,
                "addr": f"{reached_at or ips[0]}:{port}",
            }
        with contextlib.suppress(StreamFailed):
            await stream.send(framing.encode(framing.BODY, reply))

    async def ask(self, peer_id: str, port: int) -> bool | None:
        """Whether ``peer_id`` could connect to us; None when it could not say."""
        self.stats["asked"] += 1
        try:
            stream = await self.host.open_direct(peer_id, PROTOCOL)
        except StreamFailed:
            return None
        try:
            await stream.send(framing.encode(framing.BODY, {"port": port}))
            frames = await stream.receive(CONNECT_TIMEOUT_S + 5.0)
        except StreamFailed:
            return None
        finally:
            await stream.close()
        reply = frames[0].payload if frames[0].kind == framing.BODY else None
        if not isinstance(reply, dict) or not reply.get("ok"):
            return None
        reached = bool(reply.get("reachable"))
        log.info("reach.dialback", peer=peer_id, addr=reply.get("addr"), reachable=reached)
        return reached
