"""Narrow patches of py-libp2p 0.8.1's byte path, where the profile says its cost is ours.

Read buffering (``TrioTCPStream.read``): Noise reads every message as two ``read_exactly``
calls on the TCP stream, 2 bytes of length and then the body, and Yamux reads its 12-byte
header and the body the same way above it; py-libp2p sends each read to the socket. So
one small Yamux frame cost two ``recv`` syscalls, each with a lock and a trio checkpoint,
and a busy connection never read more than one message per syscall. Here a read takes what
the socket has (up to 64 KiB) and serves the following small reads from that buffer. The
bytes and their order are unchanged (a read still returns at most ``n`` bytes), so the wire
and interop are untouched.

Window updates (``YamuxStream._auto_tune_and_send_window_update``): py-libp2p credits the
sender after every read whose bytes are below half the window ("partial slack"), whatever
``PY_YAMUX_RELEASE_ON_READ`` says: one extra encrypted WINDOW_UPDATE frame, a syscall on
each side and a wake-up of the peer's reader per request and direction (measured: 1.01
updates per request/response exchange). go-yamux credits only once half the window is
consumed; so does this, keeping py-libp2p's window auto-tuning. Which side sends an
update and when is the receiver's choice in Yamux, so peers see a valid stream either way.

Stream writes (``YamuxStream.write``): a write that fits the send window and one frame is
sent as one frame without the stream's read-write lock and window lock (two lock round
trips and an async context manager per write): nothing awaits between the window check and
the decrement, so no other task sees a half-done update, and a write that does not fit, or
that finds another writer in the slow path, takes py-libp2p's own code.

Frame writes (``Yamux._write_frame``) finish once started. A frame is encrypted with the
connection's next Noise nonce and then sent; py-libp2p let a cancellation stop it in between
(a client that went away cancels the worker's send, SWIM abandons a slow send after a
second). The peer then missed a nonce or got half a message, failed to authenticate every
later one, and the whole connection died with every request on it (seen: a 503 after one
in ~4 rounds of 64 streaming clients hanging up at once). So the write runs shielded, with
its own bound: a frame that cannot be written in ``FRAME_WRITE_TIMEOUT_S`` means a peer that
does not read, and that connection is closed. Waiting for the write lock stays cancellable
(nothing is encrypted yet). The debug line py-libp2p built for every frame (header unpack,
flag names, an f-string the log level then dropped) is built only when its debug log is on.
"""

from __future__ import annotations

import logging
import struct

import trio
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.io.trio import TrioTCPStream
from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

READ_CHUNK = 65536
FRAME_WRITE_TIMEOUT_S = 30.0


async def _buffered_read(self: TrioTCPStream, n: int | None = None) -> bytes:
    async with self.read_lock:
        if n == 0:
            return b""
        buf: bytearray | None = getattr(self, "_otela_rbuf", None)
        if buf:
            if n is None or n >= len(buf):
                out = bytes(buf)
                buf.clear()
            else:
                out = bytes(buf[:n])
                del buf[:n]
            return out
        try:
            data = await self.stream.receive_some(READ_CHUNK)
        except trio.BrokenResourceError as error:
            raise ConnectionClosedError(
                f"TCP connection reset by remote peer: {error}", transport="tcp"
            ) from error
        except trio.ClosedResourceError:
            return b""  # closed locally: EOF, as py-libp2p answers
        if n is None or len(data) <= n:
            return data
        if buf is None:
            buf = bytearray()
            self._otela_rbuf = buf  # type: ignore[attr-defined]
        buf += memoryview(data)[n:]
        return data[:n]


async def _window_update(self: YamuxStream, *, bytes_read: int = 0) -> None:
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta <= 0 or delta < self.target_recv_window // 2:
            return  # go-yamux: hold the credit until half the window is consumed
        self.recv_window += delta
        delta += self._apply_autotune_epoch(buffered)
    await self.send_window_update(delta, skip_lock=True)


_slow_write = YamuxStream.write
_MAX_FRAME_DATA = _yamux.MAX_MESSAGE_SIZE - _yamux.HEADER_SIZE


async def _write(self: YamuxStream, data: bytes) -> None:
    n = len(data)
    if (
        self.send_closed
        or self.closed
        or not 0 < n <= min(self.send_window, _MAX_FRAME_DATA)
        or self.rw_lock._writer_lock.value != 1  # a slow-path writer is under way
    ):
        await _slow_write(self, data)
        return
    self.send_window -= n
    header = struct.pack(_yamux.YAMUX_HEADER_FORMAT, 0, _yamux.TYPE_DATA, 0, self.stream_id, n)
    await self.conn._write_frame(header + data)


async def _write_frame(self: Yamux, data: bytes) -> None:
    if _yamux.logger.isEnabledFor(logging.DEBUG):
        _log_frame(self, data)
    async with self._write_lock:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(FRAME_WRITE_TIMEOUT_S) as timer:
                await self.secured_conn.write(data)
            if timer.cancelled_caught:
                with trio.move_on_after(1):
                    await self.secured_conn.close()
                raise ConnectionClosedError(
                    f"a frame write took over {FRAME_WRITE_TIMEOUT_S:g}s: connection closed",
                    transport="tcp",
                )
    await trio.lowlevel.checkpoint()


def _log_frame(self: Yamux, data: bytes) -> None:
    """py-libp2p's ``YAMUX TX`` debug line (its own ``_write_frame`` builds it inline)."""
    if len(data) >= _yamux.HEADER_SIZE:
        _, typ, flags, sid, length = struct.unpack(
            _yamux.YAMUX_HEADER_FORMAT, data[: _yamux.HEADER_SIZE]
        )
        _yamux.logger.debug(
            "YAMUX TX: type=%s flags=%s stream=%s length=%s", typ, flags, sid, length
        )


def install() -> None:
    TrioTCPStream.read = _buffered_read  # type: ignore[method-assign]
    YamuxStream._auto_tune_and_send_window_update = _window_update  # type: ignore[method-assign]
    Yamux._write_frame = _write_frame  # type: ignore[method-assign]
    YamuxStream.write = _write  # type: ignore[method-assign]
