"""The only module that imports libp2p (with ``fastpath.py``, its narrow patches). Everything
above sees ``Host`` and ``PeerStream``.

Settings here are not optional (measured, see docs): Noise only (plaintext lets a dialer claim
any peer ID), one connection per peer (otherwise every connect waits 250 ms), deliberate
``unblock_peer`` before redialing (the 60 s negative dial cache), a timeout on every read
(no keepalive: a hung peer keeps its TCP connection open forever).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import multiaddr
import structlog
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import framing, identity, limits, pnet
from .route import PeerReach, RouteMemory, plan_route

# py-libp2p's Yamux sends a WINDOW_UPDATE after *every* read unless told otherwise: one extra
# encrypted message and syscall per request each way. go-yamux batches updates at half the
# window; ask for that (measured: c=64 forwarding 1065 → 1131 req/s, c=1 p50 -0.2 ms).
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
# py-libp2p's log records (it resets its logger when first imported): see opentela/logs.py.

import libp2p.network.swarm as _libp2p_swarm
from libp2p import new_host
from libp2p.abc import ConnectionType, IRawConnection
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.network.connection.exceptions import RawConnError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.transport.exceptions import OpenConnectionError, SecurityUpgradeFailure

from . import fastpath

fastpath.install()

DIAL_TIMEOUT_S = 5.0
limits_log = structlog.get_logger("opentela.limits")

# Streams through a relay (``opentela/reach``): the origin opens RELAY_PROTOCOL to a relay and
# names the target and the protocol; the relay opens RELAYED_PROTOCOL to the target (over the
# connection the private target holds to it) and names the origin; then it copies bytes both
# ways. Frames stay end to end; the hop adds no second encryption layer (the relay is a member).
RELAY_PROTOCOL = "/opentela/relay/1"
RELAYED_PROTOCOL = "/opentela/relayed/1"
RELAY_HANDSHAKE_S = 5.0
relay_log = structlog.get_logger("opentela.relay")


class StreamFailed(Exception):
    """The peer stream broke: reset, EOF without an end marker, timeout, or dial failure."""


class StreamTimeout(StreamFailed):
    """No bytes from the peer within the read's deadline (the stream itself may be fine)."""


class StreamAborted(StreamFailed):
    """``abort``: membership declared the peer dead or gone; nothing more will come."""


class WrongPeer(StreamFailed):
    """A dial reached a node, but the Noise handshake proved it is another peer than the
    ``/p2p/<id>`` asked for: a stale or mistyped peer ID. Retrying will not help."""

    def __init__(self, addr: str, expected: str, found: str | None) -> None:
        self.addr, self.expected, self.found = addr, expected, found
        tail = f"; it is {found}" if found else ""
        where = addr.split("/p2p/")[0]
        super().__init__(f"the node at {where} is not {expected} (wrong peer ID?){tail}")


_MISMATCH = re.compile(r"(?:Peer ID mismatch|does not correspond to the received pubkey)")
_FOUND = re.compile(r"(?:got |remote_peer_id_from_pubkey=)(\w{40,})")


def _peer_mismatch(exc: BaseException) -> tuple[bool, str | None]:
    """Whether a py-libp2p dial error comes from a peer-ID mismatch (somewhere in its chain of
    causes and multi-errors), and the peer found instead when the message tells it."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if type(e).__name__ == "PeerIDMismatchesPubkey" or _MISMATCH.search(str(e)):
            m = _FOUND.search(str(e))
            return True, m.group(1) if m else None
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        for group in (getattr(e, "errors", None), getattr(e, "exceptions", None)):
            if isinstance(group, list | tuple):
                todo.extend(x for x in group if isinstance(x, BaseException))
    return False, None


class PeerStream:
    """A libp2p stream that speaks frames, with a deadline on every read."""

    def __init__(
        self, raw: object, remote_peer: str, on_send: Callable[[str], None] | None = None
    ) -> None:
        self._raw = raw
        self.remote_peer = remote_peer
        self._on_send = on_send  # the host's activity record (``Host.last_active``)
        self._decoder = framing.Decoder()
        self._ready: list[framing.Frame] = []
        self._write_lock = trio.Lock()
        self._scope: trio.CancelScope | None = None
        self._abort_reason = ""
        self.broken = False
        self.via: str | None = None  # the relay carrying this stream, when it is relayed

    @property
    def raw(self) -> Any:
        """The libp2p stream underneath (a relay copies its bytes without decoding frames)."""
        return self._raw

    def unread(self) -> bytes:
        """Bytes received but not consumed yet (frames decoded and not returned, and a partial
        frame), re-encoded, so that a relay can pass them on before copying raw bytes."""
        out = b"".join(framing.encode(f.kind, f.payload) for f in self._ready)
        self._ready = []
        return out + self._decoder.take()

    async def send(self, *frames: bytes) -> None:
        data = b"".join(frames)
        try:
            async with self._write_lock:
                await self._raw.write(data)  # type: ignore[attr-defined]
        except Exception as exc:
            self.broken = True
            raise StreamFailed(f"write to {self.remote_peer[-8:]} failed: {exc!r}") from exc
        if self._on_send is not None:
            self._on_send(self.remote_peer)

    def abort(self, reason: str) -> None:
        """Make a pending (or the next) ``receive`` fail at once: membership declared the
        peer dead, so waiting for its bytes is pointless. Synchronous on purpose."""
        self.broken = True
        self._abort_reason = reason
        if self._scope is not None:
            self._scope.cancel()

    async def receive(self, timeout_s: float) -> list[framing.Frame]:
        """Return at least one frame (all that are already decoded), or raise StreamFailed."""
        while not self._ready:
            if self._abort_reason:
                raise StreamAborted(self._abort_reason)
            try:
                # One scope for both the deadline and ``abort`` (a cancel scope per read is
                # a measurable share of a small request's cost).
                with trio.CancelScope(deadline=trio.current_time() + timeout_s) as scope:
                    self._scope = scope
                    data = await self._raw.read(65536)  # type: ignore[attr-defined]
                self._scope = None
                if scope.cancelled_caught:
                    self.broken = True
                    if self._abort_reason:
                        raise StreamAborted(self._abort_reason)
                    raise StreamTimeout(f"no data from {self.remote_peer[-8:]} in {timeout_s}s")
            except StreamFailed:
                raise
            except Exception as exc:
                self.broken = True
                raise StreamFailed(f"stream from {self.remote_peer[-8:]} ended: {exc!r}") from exc
            if not data:
                self.broken = True
                raise StreamFailed(f"EOF from {self.remote_peer[-8:]} without end marker")
            try:
                self._ready.extend(self._decoder.feed(data))
            except framing.FrameError as exc:
                self.broken = True
                raise StreamFailed(f"bad frame from {self.remote_peer[-8:]}: {exc}") from exc
        out, self._ready = self._ready, []
        return out

    async def close(self) -> None:
        with trio.move_on_after(1):
            with contextlib.suppress(Exception):
                await self._raw.close()  # type: ignore[attr-defined]

    async def reset(self) -> None:
        self.broken = True
        with trio.move_on_after(1):
            with contextlib.suppress(Exception):
                await self._raw.reset()  # type: ignore[attr-defined]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


StreamHandler = Callable[[PeerStream], Awaitable[None]]


def _listen_addr(host: str, port: int) -> multiaddr.Multiaddr:
    proto = "ip6" if ":" in host else "ip4"
    return multiaddr.Multiaddr(f"/{proto}/{host}/tcp/{port}")


def _announce_addrs(
    listen_host: str, port: int, public_addr: str | None
) -> list[multiaddr.Multiaddr]:
    """What peers should dial. A wildcard listen address is not dialable: expand or override."""
    if public_addr:
        if public_addr.startswith("/"):
            return [multiaddr.Multiaddr(public_addr)]
        return [_listen_addr(public_addr, port)]
    if listen_host not in ("0.0.0.0", "::"):
        return [_listen_addr(listen_host, port)]
    addrs: list[multiaddr.Multiaddr] = []
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            ip = str(info[4][0])
            if not ip.startswith("127.") and _listen_addr(ip, port) not in addrs:
                addrs.append(_listen_addr(ip, port))
    except OSError:
        pass
    return addrs or [_listen_addr("127.0.0.1", port)]


async def resolve_dns(addr: str) -> str:
    """``/dns4/head.example/tcp/43905/p2p/ID`` → ``/ip4/10.0.0.5/tcp/43905/p2p/ID``."""
    parts = addr.split("/")
    if len(parts) < 3 or parts[1] not in ("dns", "dns4", "dns6"):
        return addr
    family = {"dns4": socket.AF_INET, "dns6": socket.AF_INET6}.get(parts[1], socket.AF_UNSPEC)
    infos = await trio.socket.getaddrinfo(parts[2], None, family, socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"no address for {parts[2]}")
    ip = str(infos[0][4][0])
    parts[1:3] = ["ip6" if ":" in ip else "ip4", ip]
    return "/".join(parts)


class Gate(Protocol):
    """Admission to the pool (``overlay/admit``): asked before every stream, both ways."""

    def exempt(self, protocol: str) -> bool: ...

    def allows(self, peer_id: str) -> bool: ...

    def refuse(self, peer_id: str, protocol: str) -> None: ...

    async def ensure(self, peer_id: str) -> None: ...


class Host:
    """A running libp2p host, reduced to what opentela needs."""

    def __init__(self, raw: object, peer_id: str) -> None:
        self._raw = raw
        self.peer_id = peer_id
        self.gate: Gate | None = None
        self.swarm_key = False  # --swarm-key: failed dials say "private network key mismatch?"
        self.streams = limits.PeerSlots(limits.MAX_STREAMS_PER_PEER)  # inbound, per peer
        self._over_logged = limits.LogOnce()
        # Trio time a stream to or from each peer was last opened or written to: how
        # ``overlay/connections`` tells a connection in use from an idle one.
        self._last_active: dict[str, float] = {}
        self._handlers: dict[str, StreamHandler] = {}
        # Reaching private peers (``overlay/route.py``): the table tells the reachability and
        # relays of a peer; ``own_relays`` are ours while this node is private.
        self.reach_of: Callable[[str], PeerReach | None] = lambda _pid: None
        self.own_relays: Callable[[], Sequence[str]] = tuple
        self.routes = RouteMemory()
        self.relay_stats = {"relayed_opened": 0, "relayed_served": 0, "relayed_refused": 0}

    def addrs(self) -> list[str]:
        return [str(a) for a in self._raw.get_addrs()]  # type: ignore[attr-defined]

    def add_peer_addrs(self, peer_id: str, addrs: list[str]) -> None:
        good = []
        for a in addrs:
            try:
                m = multiaddr.Multiaddr(a)
                good.append(
                    m.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id}")) if "/p2p/" in a else m
                )
            except Exception:
                continue
        if good:
            self._raw.get_peerstore().add_addrs(ID.from_base58(peer_id), good, 0)  # type: ignore[attr-defined]

    def unblock(self, peer_id: str) -> None:
        """Forget a failed dial so a deliberate redial is really attempted."""
        with contextlib.suppress(Exception):
            self._raw.get_network().unblock_peer(ID.from_base58(peer_id))  # type: ignore[attr-defined]

    async def connect(self, addr: str) -> str:
        """Dial a ``/.../p2p/<id>`` multiaddr (``/dns``, ``/dns4``, ``/dns6`` names are resolved
        here: py-libp2p cannot dial them); return the peer id. Raises StreamFailed."""
        try:
            addr = await resolve_dns(addr)
        except OSError as exc:
            raise StreamFailed(f"cannot resolve {addr!r}: {exc}") from exc
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise StreamFailed(f"bad bootstrap multiaddr {addr!r}: {exc}") from exc
        pid = str(info.peer_id)
        self.unblock(pid)
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                await self._raw.connect(info)  # type: ignore[attr-defined]
        except Exception as exc:
            wrong, found = _peer_mismatch(exc)
            if wrong:
                raise WrongPeer(addr, pid, found) from exc
            hint = _pnet_hint(exc, self.swarm_key)
            why = f"{hint} ({_first_line(exc)})" if hint else _first_line(exc)
            raise StreamFailed(f"dial {addr} failed: {why}") from exc
        return pid

    async def open_stream(self, peer_id: str, protocol: str, *, redial: bool = False) -> PeerStream:
        """A stream to ``peer_id``: over the connection we hold, by dialing it, or through a
        relay when it is private or its dial fails (``overlay/route.py`` decides the order)."""
        if self.gate is not None and not self.gate.exempt(protocol):
            await self.gate.ensure(peer_id)  # present our grant once per connection (or route)
        now = trio.current_time()
        connected = self.is_connected(peer_id)
        route = plan_route(
            peer_id,
            self_id=self.peer_id,
            connected=connected,
            target=self.reach_of(peer_id),
            own_relays=self.own_relays(),
            is_connected=self.is_connected,
            dial_failed=self.routes.dial_failing(peer_id, now),
            last_relay=self.routes.via(peer_id),
            failed_relays=self.routes.failed_relays(now),
        )
        errors: list[str] = []
        if route.direct:
            if not connected:
                self.routes.dial_started(peer_id, now)
            try:
                stream = await self._open_direct(peer_id, protocol, redial=redial)
            except StreamFailed as exc:
                if not route.relays:
                    raise
                errors.append(str(exc))
            else:
                self.routes.dial_ok(peer_id)
                return stream
        for relay in route.relays:
            try:
                stream = await self.open_via(relay, peer_id, protocol)
            except StreamFailed as exc:
                self.routes.relay_failed(relay, trio.current_time())
                errors.append(str(exc))
                continue
            self.routes.relayed(peer_id, relay)
            return stream
        if not errors:
            raise StreamFailed(f"{peer_id[-8:]} is private and names no relay yet")
        raise StreamFailed(f"open {protocol} to {peer_id[-8:]} failed: {'; '.join(errors)}")

    async def open_direct(self, peer_id: str, protocol: str, *, redial: bool = False) -> PeerStream:
        """A stream over a connection of our own to ``peer_id`` (dialing it if need be), never
        through a relay: for relays themselves and the reservations private nodes hold."""
        if self.gate is not None and not self.gate.exempt(protocol):
            await self.gate.ensure(peer_id)
        return await self._open_direct(peer_id, protocol, redial=redial)

    async def _open_direct(self, peer_id: str, protocol: str, *, redial: bool) -> PeerStream:
        if redial:
            self.unblock(peer_id)
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                raw = await self._raw.new_stream(ID.from_base58(peer_id), [TProtocol(protocol)])  # type: ignore[attr-defined]
        except Exception as exc:
            raise StreamFailed(f"open {protocol} to {peer_id[-8:]} failed: {exc!r}") from exc
        self._touch(peer_id)
        return PeerStream(raw, peer_id, self._touch)

    async def open_via(self, relay_id: str, peer_id: str, protocol: str) -> PeerStream:
        """A stream to ``peer_id`` through ``relay_id`` (``RELAY_PROTOCOL``): the relay answers
        once it has a stream to the target; from then on frames pass end to end."""
        stream = await self.open_direct(relay_id, RELAY_PROTOCOL)
        try:
            await stream.send(
                framing.encode(framing.BODY, {"op": "connect", "to": peer_id, "proto": protocol})
            )
            frames = await stream.receive(RELAY_HANDSHAKE_S)
        except StreamFailed:
            await stream.reset()
            raise
        reply = frames[0].payload if frames[0].kind == framing.BODY else None
        if not isinstance(reply, dict) or not reply.get("ok"):
            await stream.reset()
            why = reply.get("error") if isinstance(reply, dict) else "a garbled answer"
            raise StreamFailed(f"relay {relay_id[-8:]} cannot reach {peer_id[-8:]}: {why}")
        stream._ready = frames[1:]  # the target spoke first (none of our protocols do)
        stream.remote_peer, stream.via = peer_id, relay_id
        self.relay_stats["relayed_opened"] += 1
        return stream

    def is_connected(self, peer_id: str) -> bool:
        try:
            conns = self._raw.get_network().get_connections(ID.from_base58(peer_id))  # type: ignore[attr-defined]
        except Exception:
            return False
        return bool(conns)

    def connected_peers(self) -> list[str]:
        try:
            conns = self._raw.get_network().get_connections_map()  # type: ignore[attr-defined]
        except Exception:
            return []
        return [str(p) for p, c in conns.items() if c]

    def _touch(self, peer_id: str) -> None:
        self._last_active[peer_id] = trio.current_time()

    def last_active(self, peer_id: str) -> float | None:
        """When a stream to or from ``peer_id`` was last opened or written to (trio time)."""
        return self._last_active.get(peer_id)

    def open_streams(self, ignore: frozenset[str] = frozenset()) -> dict[str, int]:
        """Each connected peer, with the streams open on its connection(s) whose protocol is
        not in ``ignore`` (one-way protocols that reopen on demand); a stream still
        negotiating its protocol counts."""
        try:
            conns = self._raw.get_network().get_connections_map()  # type: ignore[attr-defined]
        except Exception:
            return {}
        out: dict[str, int] = {}
        for pid, cs in conns.items():
            if not cs:
                continue
            n = 0
            for c in cs:
                for st in c.get_streams():
                    proto = st.get_protocol()
                    n += proto is None or str(proto) not in ignore
            out[str(pid)] = n
        return out

    def connection_key(self, peer_id: str) -> int | None:
        """Identifies the current connection to a peer (a new one after a reconnect); for a
        peer reached through a relay, the relay and our connection to it."""
        try:
            conns = self._raw.get_network().get_connections(ID.from_base58(peer_id))  # type: ignore[attr-defined]
        except Exception:
            return None
        if conns:
            return id(conns[0])
        via = self.routes.via(peer_id)
        relay_key = self.connection_key(via) if via is not None and via != peer_id else None
        return None if relay_key is None else hash((via, relay_key))

    async def close_peer(self, peer_id: str) -> None:
        with trio.move_on_after(2), contextlib.suppress(Exception):
            await self._raw.get_network().close_peer(ID.from_base58(peer_id))  # type: ignore[attr-defined]

    def set_handler(self, protocol: str, handler: StreamHandler) -> None:
        self._handlers[protocol] = handler

        async def wrapped(raw: object) -> None:
            remote = str(raw.muxed_conn.peer_id)  # type: ignore[attr-defined]
            stream = PeerStream(raw, remote, self._touch)
            try:
                await self._serve(stream, protocol, handler)
            finally:
                await stream.close()

        self._raw.set_stream_handler(TProtocol(protocol), wrapped)  # type: ignore[attr-defined]

    async def _serve(self, stream: PeerStream, protocol: str, handler: StreamHandler) -> None:
        """Admission and the per-peer stream bound, then the protocol's handler: the same for
        a stream from a peer's own connection and one a relay carries for it."""
        remote = stream.remote_peer
        gate = self.gate
        if gate is not None and not gate.exempt(protocol) and not gate.allows(remote):
            # Not a member: not a byte of its payload is read.
            gate.refuse(remote, protocol)
            await stream.reset()
            if stream.via is None:
                await self.close_peer(remote)
            return
        if not self.streams.acquire(remote):
            # Over its concurrent-stream limit: this stream is reset, the others go on.
            if self._over_logged.should_log(remote, trio.current_time()):
                limits_log.warning("peer.too_many_streams", peer=remote, limit=self.streams.limit)
            await stream.reset()
            return
        self._touch(remote)
        try:
            await handler(stream)
        finally:
            self.streams.release(remote)

    async def _handle_relayed(self, stream: PeerStream) -> None:
        """A relay (admitted: ``_serve`` checked it) brings a stream from another member: read
        who it is from and for which protocol, then serve it as that member's own stream."""
        relay = stream.remote_peer
        try:
            frames = await stream.receive(RELAY_HANDSHAKE_S)
        except StreamFailed:
            return
        msg = frames[0].payload if frames[0].kind == framing.BODY else None
        origin = msg.get("from") if isinstance(msg, dict) else None
        protocol = msg.get("proto") if isinstance(msg, dict) else None
        handler = self._handlers.get(protocol) if isinstance(protocol, str) else None
        if (
            not isinstance(origin, str)
            or origin in (relay, self.peer_id)
            or protocol in (RELAY_PROTOCOL, RELAYED_PROTOCOL)
            or handler is None
        ):
            self.relay_stats["relayed_refused"] += 1
            relay_log.warning(
                "relay.bad_relayed_stream", relay=relay, origin=str(origin)[:60], proto=protocol
            )
            await stream.reset()
            return
        stream._ready = frames[1:]
        stream.remote_peer, stream.via = origin, relay
        self.relay_stats["relayed_served"] += 1
        assert isinstance(protocol, str)
        await self._serve(stream, protocol, handler)


# -- private network (--swarm-key) ---------------------------------------------------------------
# py-libp2p hands every raw connection, outbound (``_dial_addr_single_attempt``,
# ``dial_addr_as_responder``) and inbound (``upgrade_inbound_raw_conn``), to
# ``swarm.new_protected_conn(conn, swarm.psk)`` before security when ``swarm.psk`` is set. That
# call is the narrowest hook: ``psk`` holds a ``_SwarmKey`` and ``_protect`` wraps the connection
# in the go/js-compatible protector; any other psk still gets py-libp2p's own.

pnet_log = structlog.get_logger("opentela.pnet")


class _SwarmKey:
    def __init__(self, psk: bytes) -> None:
        self.psk = psk
        self.fingerprint = pnet.fingerprint(psk)
        self.log_once = pnet.LogOnce()


class _PnetConn(IRawConnection):
    """A raw connection inside the XSalsa20 protector (``overlay/pnet.py``)."""

    def __init__(self, inner: IRawConnection, key: _SwarmKey) -> None:
        self._inner = inner
        self._key = key
        self.is_initiator = inner.is_initiator
        self._stream = pnet.ProtectedStream(inner, key.psk, expect=pnet.MULTISTREAM_HEADER)

    def _refused(self, exc: pnet.PnetError) -> RawConnError:
        if not self.is_initiator:  # a dialer hears it from Host.connect
            remote = self._inner.get_remote_address()
            where = f"{remote[0]}:{remote[1]}" if remote else "?"
            # Once per address and reason a minute: dialers retry every few seconds.
            seen = f"{remote[0] if remote else '?'} {exc}"
            if self._key.log_once.should_log(seen, trio.current_time()):
                pnet_log.warning("pnet.refused", remote=where, reason=str(exc))
        return RawConnError(str(exc))

    async def read(self, n: int | None = None) -> bytes:
        try:
            return await self._stream.read(n)
        except pnet.PnetError as exc:
            raise self._refused(exc) from exc

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)

    async def close(self) -> None:
        await self._inner.close()

    def get_remote_address(self) -> tuple[str, int] | None:
        return self._inner.get_remote_address()

    def get_transport_addresses(self) -> list[multiaddr.Multiaddr]:
        return self._inner.get_transport_addresses()

    def get_connection_type(self) -> ConnectionType:
        return self._inner.get_connection_type()


_libp2p_protect = _libp2p_swarm.new_protected_conn


def _protect(conn: IRawConnection, psk: object) -> IRawConnection:
    if isinstance(psk, _SwarmKey):
        return _PnetConn(conn, psk)
    return _libp2p_protect(conn, psk)  # type: ignore[arg-type]


_libp2p_swarm.new_protected_conn = _protect


def _pnet_hint(exc: BaseException, keyed: bool) -> str:
    """What to add to a failed dial's message. Under --swarm-key: the pnet layer's own words
    when it said something, else the likely cause; a TCP failure (nothing listens) gets none.
    Without a key: a hint only when the security negotiation itself failed."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    hint = "private network key mismatch? (or the peer has no --swarm-key)" if keyed else ""
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, pnet.PnetError):
            text = str(e)
            return text if "mismatch?" in text else f"private network key mismatch? {text}"
        if isinstance(e, OpenConnectionError):
            hint = ""
        if not keyed and isinstance(e, SecurityUpgradeFailure):
            hint = "security negotiation failed: not a libp2p node, or one that needs --swarm-key?"
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        for group in (getattr(e, "errors", None), getattr(e, "exceptions", None)):
            if isinstance(group, list | tuple):
                todo.extend(x for x in group if isinstance(x, BaseException))
    return hint


def _no_auto_connect(swarm: object) -> None:
    """py-libp2p's AutoConnector dials every peer of the peerstore while the node has fewer
    than ~150 connections (midway between its watermarks), every 10-30 s and after each
    disconnect: a full mesh, whatever ``overlay/connections`` closes. No setting turns it off
    (equal watermarks make its pruner close everything instead), so its one entry point is
    replaced: opentela dials whom membership and routing ask for, nobody else."""

    async def no_dials() -> None:
        return None

    connector = getattr(swarm, "auto_connector", None)
    if connector is not None:
        connector.maybe_connect = no_dials


@asynccontextmanager
async def open_host(
    key: Ed25519PrivateKey,
    listen_host: str,
    listen_port: int,
    public_addr: str | None = None,
    swarm_key: bytes | None = None,
) -> AsyncIterator[Host]:
    """``swarm_key``: the 32-byte private-network key (``overlay/pnet.py``); every connection,
    in and out, is then wrapped in the go/js-compatible protector before Noise."""
    kp = create_new_key_pair(identity.seed(key))
    raw = new_host(
        key_pair=kp,
        sec_opt={NOISE_ID: NoiseTransport(kp, noise_privkey=create_x25519().private_key)},
        connection_config=ConnectionConfig(
            max_connections_per_peer=1,
            dial_timeout=DIAL_TIMEOUT_S,
            outbound_upgrade_timeout=DIAL_TIMEOUT_S,
            inbound_upgrade_timeout=DIAL_TIMEOUT_S,
        ),
        announce_addrs=_announce_addrs(listen_host, listen_port, public_addr),
    )
    _no_auto_connect(raw.get_network())
    if swarm_key is not None:
        raw.get_network().psk = _SwarmKey(swarm_key)  # see _protect
        pnet_log.info("pnet.on", fingerprint=pnet.fingerprint(swarm_key))
    async with raw.run([_listen_addr(listen_host, listen_port)]):
        host = Host(raw, identity.peer_id(key))
        host.swarm_key = swarm_key is not None
        host.set_handler(RELAYED_PROTOCOL, host._handle_relayed)
        yield host
