"""Frames on a libp2p stream: bytes in, frames out. Sans-I/O.

Wire format: 4-byte big-endian length, then a msgpack array ``[kind, payload]``. Every request
and every response ends with an explicit END or ERROR frame, because a crashed peer looks like
a clean EOF to the reader (see notes): EOF without END is a failure, never a complete reply.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

MAX_FRAME = 8 * 1024 * 1024
_LEN = struct.Struct(">I")

# Frame kinds.
REQ_HEAD = 1  # {"method", "path", "headers": [[k, v], ...], "service"}
BODY = 2  # bytes
END = 3  # None: the sender's message is complete
RESP_HEAD = 4  # {"status", "headers": [[k, v], ...]}
ERROR = 5  # {"status", "message", "type", "code", "retryable"}
CANCEL = 6  # None: the entry's client went away; stop the backend request
KINDS = frozenset({REQ_HEAD, BODY, END, RESP_HEAD, ERROR, CANCEL})


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame (its fault, not ours)."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    payload: Any = None


def encode(kind: int, payload: Any = None) -> bytes:
    body = msgpack.packb([kind, payload], use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(body)) + body


def encode_body(data: bytes, chunk: int = 1024 * 1024) -> list[bytes]:
    """Split a large body into BODY frames that each stay well below MAX_FRAME."""
    return [encode(BODY, data[i : i + chunk]) for i in range(0, len(data), chunk)]


class Decoder:
    """Accumulates bytes and yields complete frames; keeps partial frames across reads."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while len(self._buf) >= 4:
            (n,) = _LEN.unpack_from(self._buf)
            if n > self._max:
                raise FrameError(f"frame length {n} exceeds {self._max}")
            if len(self._buf) < 4 + n:
                break
            raw = bytes(self._buf[4 : 4 + n])
            del self._buf[: 4 + n]
            try:
                obj = msgpack.unpackb(raw, raw=False)
            except (ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
                raise FrameError(f"undecodable frame: {exc}") from exc
            # ``type(...) is int``: a map or list kind is unhashable, ``True`` is not a kind.
            if not (isinstance(obj, list) and len(obj) == 2 and type(obj[0]) is int):
                raise FrameError("frame is not [kind, payload]")
            if obj[0] not in KINDS:
                raise FrameError("frame is not [kind, payload]")
            out.append(Frame(obj[0], obj[1]))
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)

    def take(self) -> bytes:
        """The bytes of a partial frame, removed (a relay passes them on as they are)."""
        out, self._buf = bytes(self._buf), bytearray()
        return out
