"""The only module that imports libp2p. Everything above sees ``Host`` and ``PeerStream``.

Settings here are not optional (measured, see docs): Noise only (plaintext lets a dialer claim
any peer ID), one connection per peer (otherwise every connect waits 250 ms), deliberate
``unblock_peer`` before redialing (the 60 s negative dial cache), a timeout on every read
(no keepalive: a hung peer keeps its TCP connection open forever).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import multiaddr
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import framing, identity

# py-libp2p's Yamux sends a WINDOW_UPDATE after *every* read unless told otherwise: one extra
# encrypted message and syscall per request each way. go-yamux batches updates at half the
# window; ask for that (measured: c=64 forwarding 1065 → 1131 req/s, c=1 p50 -0.2 ms).
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
# Dial failures to dead peers are expected (membership keeps probing them) and reported by
# us where they matter; py-libp2p logs each one at ERROR.
logging.getLogger("libp2p").setLevel(logging.CRITICAL)
logging.getLogger("multiaddr").setLevel(logging.ERROR)

from libp2p import new_host  # noqa: E402
from libp2p.crypto.ed25519 import create_new_key_pair  # noqa: E402
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.network.config import ConnectionConfig  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID  # noqa: E402
from libp2p.security.noise.transport import Transport as NoiseTransport  # noqa: E402

DIAL_TIMEOUT_S = 5.0


class StreamFailed(Exception):
    """The peer stream broke: reset, EOF without an end marker, timeout, or dial failure."""


class PeerStream:
    """A libp2p stream that speaks frames, with a deadline on every read."""

    def __init__(self, raw: object, remote_peer: str) -> None:
        self._raw = raw
        self.remote_peer = remote_peer
        self._decoder = framing.Decoder()
        self._ready: list[framing.Frame] = []
        self._write_lock = trio.Lock()
        self._scope: trio.CancelScope | None = None
        self._abort_reason = ""
        self.broken = False

    async def send(self, *frames: bytes) -> None:
        data = b"".join(frames)
        try:
            async with self._write_lock:
                await self._raw.write(data)  # type: ignore[attr-defined]
        except Exception as exc:
            self.broken = True
            raise StreamFailed(f"write to {self.remote_peer[-8:]} failed: {exc!r}") from exc

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
                raise StreamFailed(self._abort_reason)
            try:
                with trio.CancelScope() as scope:
                    self._scope = scope
                    with trio.fail_after(timeout_s):
                        data = await self._raw.read(65536)  # type: ignore[attr-defined]
                self._scope = None
                if scope.cancelled_caught:
                    raise StreamFailed(self._abort_reason or "aborted")
            except trio.TooSlowError as exc:
                self.broken = True
                raise StreamFailed(f"no data from {self.remote_peer[-8:]} in {timeout_s}s") from exc
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


class Host:
    """A running libp2p host, reduced to what opentela needs."""

    def __init__(self, raw: object, peer_id: str) -> None:
        self._raw = raw
        self.peer_id = peer_id

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
            raise StreamFailed(f"dial {addr} failed: {exc!r}") from exc
        return pid

    async def open_stream(self, peer_id: str, protocol: str, *, redial: bool = False) -> PeerStream:
        if redial:
            self.unblock(peer_id)
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                raw = await self._raw.new_stream(ID.from_base58(peer_id), [TProtocol(protocol)])  # type: ignore[attr-defined]
        except Exception as exc:
            raise StreamFailed(f"open {protocol} to {peer_id[-8:]} failed: {exc!r}") from exc
        return PeerStream(raw, peer_id)

    def connected_peers(self) -> list[str]:
        try:
            conns = self._raw.get_network().get_connections_map()  # type: ignore[attr-defined]
        except Exception:
            return []
        return [str(p) for p, c in conns.items() if c]

    def set_handler(self, protocol: str, handler: StreamHandler) -> None:
        async def wrapped(raw: object) -> None:
            remote = str(raw.muxed_conn.peer_id)  # type: ignore[attr-defined]
            stream = PeerStream(raw, remote)
            try:
                await handler(stream)
            finally:
                await stream.close()

        self._raw.set_stream_handler(TProtocol(protocol), wrapped)  # type: ignore[attr-defined]


@asynccontextmanager
async def open_host(
    key: Ed25519PrivateKey, listen_host: str, listen_port: int, public_addr: str | None = None
) -> AsyncIterator[Host]:
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
    async with raw.run([_listen_addr(listen_host, listen_port)]):
        yield Host(raw, identity.peer_id(key))
