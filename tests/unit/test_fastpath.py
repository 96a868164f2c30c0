"""The narrow py-libp2p patches (overlay/fastpath.py): same bytes, fewer syscalls and frames."""

from __future__ import annotations

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.io.trio import TrioTCPStream
from libp2p.stream_muxer.yamux import yamux

from opentela.overlay import framing, identity
from opentela.overlay.host import open_host
from opentela.testing.serving import free_port


class _Socket:
    """What TrioTCPStream reads from: hands out the given chunks, then EOF."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.calls = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self.calls += 1
        return self.chunks.pop(0) if self.chunks else b""


def test_small_reads_come_from_one_receive_in_order() -> None:
    async def main() -> None:
        sock = _Socket([b"\x00\x05hello\x00\x03abc", b"tail"])
        s = TrioTCPStream(sock)  # type: ignore[arg-type]
        got = [await s.read(2), await s.read(5), await s.read(2), await s.read(100)]
        assert got == [b"\x00\x05", b"hello", b"\x00\x03", b"abc"]
        assert sock.calls == 1  # four reads, one syscall
        assert await s.read(3) == b"tai"  # never more than asked
        assert await s.read(None) == b"l"
        assert await s.read(0) == b""
        assert await s.read(4) == b""  # EOF passes through
        assert sock.calls == 3

    trio.run(main)


def _counting_window_updates() -> tuple[list[int], object]:
    sent: list[int] = []
    original = yamux.YamuxStream.send_window_update

    async def counted(self: yamux.YamuxStream, increment: int, skip_lock: bool = False) -> None:
        if increment > 0:
            sent.append(increment)
        await original(self, increment, skip_lock)

    return sent, counted


def test_small_exchanges_send_no_window_update_and_big_bodies_still_flow(monkeypatch) -> None:
    """A request/response of a few hundred bytes costs no WINDOW_UPDATE frame (py-libp2p sent
    one per read), and 3 MiB each way, far above the 256 KiB window, still gets credit."""
    sent, counted = _counting_window_updates()
    monkeypatch.setattr(yamux.YamuxStream, "send_window_update", counted)
    big = bytes(range(256)) * 4096 * 3  # 3 MiB

    async def main() -> None:
        k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        p1, p2 = free_port(), free_port()
        async with open_host(k1, "127.0.0.1", p1) as h1, open_host(k2, "127.0.0.1", p2) as h2:

            async def echo(stream) -> None:  # type: ignore[no-untyped-def]
                while True:
                    frames: list[framing.Frame] = []
                    while not frames or frames[-1].kind != framing.END:
                        frames += await stream.receive(10)
                    body = b"".join(f.payload for f in frames if f.kind == framing.BODY)
                    await stream.send(*framing.encode_body(body), framing.encode(framing.END))

            h2.set_handler("/test/echo/1", echo)
            pid2 = identity.peer_id(k2)
            await h1.connect(f"/ip4/127.0.0.1/tcp/{p2}/p2p/{pid2}")
            s = await h1.open_stream(pid2, "/test/echo/1")

            async def exchange(body: bytes) -> bytes:
                await s.send(*framing.encode_body(body, chunk=60_000), framing.encode(framing.END))
                frames: list[framing.Frame] = []
                while not frames or frames[-1].kind != framing.END:
                    frames += await s.receive(10)
                return b"".join(f.payload for f in frames if f.kind == framing.BODY)

            with trio.fail_after(30):
                for i in range(50):
                    assert await exchange(b"x" * (200 + i)) == b"x" * (200 + i)
                assert sent == []  # 50 small round trips: no credit frame at all
                assert await exchange(big) == big
                assert sent  # the big bodies were credited along the way
                assert await exchange(b"after") == b"after"

    trio.run(main)
