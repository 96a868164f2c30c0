"""Membership wire messages and their msgpack codec. Sans-I/O.

Wire format: one msgpack array ``[VERSION, kind, *fields, piggyback]``; each piggybacked update
is itself an array ``[kind, member, incarnation, *fields]``. Arrays with short integer kinds
instead of maps keep a Ping with a 52-character peer id around 70 bytes.

Compatibility rules, so fields can be added without a flag day:

- A message with another ``VERSION`` is rejected (the peer speaks a protocol we do not know).
- Trailing fields after the ones this version knows are ignored, so new optional fields can be
  appended at the end without bumping ``VERSION``.
- Piggybacked updates of an unknown kind are skipped, not fatal: a newer peer's Ping must still
  be answered, or mixing versions would look like a failure and get nodes declared dead.

``decode`` is the one entry point for peer bytes and raises only ``MessageError`` (the peer's
fault); ``encode`` trusts its input, which comes from our own state machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024  # far above what max_piggyback_bytes lets us send
MAX_ID_CHARS = 256  # libp2p peer ids are ~52 characters
MAX_ADDRS = 32
MAX_ADDR_CHARS = 512
MAX_UPDATES = 512
_MAX_INT = 2**64 - 1  # seq numbers and incarnations are unsigned 64-bit on the wire

# Message kinds.
PING, ACK, PING_REQ, NACK = 0, 1, 2, 3
# Update kinds.
ALIVE, SUSPECT, DEAD, LEFT = 0, 1, 2, 3


class MessageError(ValueError):
    """Bytes from a peer are not a membership message we understand (the peer's fault)."""


# -- piggybacked updates ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alive:
    """``member`` is alive at ``incarnation``; ``addrs`` empty means "unchanged"."""

    member: str
    incarnation: int
    addrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Suspect:
    """``from_id`` failed to reach ``member`` at ``incarnation`` (directly and indirectly)."""

    member: str
    incarnation: int
    from_id: str


@dataclass(frozen=True, slots=True)
class Dead:
    """``from_id``'s suspicion of ``member`` at ``incarnation`` ran out without a refutation."""

    member: str
    incarnation: int
    from_id: str


@dataclass(frozen=True, slots=True)
class Left:
    """``member`` said goodbye at ``incarnation``; final for that incarnation."""

    member: str
    incarnation: int


Update = Alive | Suspect | Dead | Left


# -- messages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """A probe. ``incarnation`` is the sender's own, so the receiver can tell a sender it still
    believes suspect or dead (at that incarnation) to refute, in the Ack."""

    seq: int
    from_id: str
    incarnation: int
    piggyback: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a Ping; also relayed by a PingReq helper with the *requester's* ``seq``, so the
    requester matches direct and indirect acks the same way (no separate IndirectAck)."""

    seq: int
    from_id: str
    piggyback: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask ``from_id``'s helper to probe ``target_id`` and relay the Ack under ``seq``."""

    seq: int
    from_id: str
    target_id: str
    piggyback: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Nack:
    """Lifeguard: a PingReq helper heard nothing from the target in time. The requester counts
    nacks: a helper that does not even nack suggests *we* are the slow one (see awareness)."""

    seq: int
    from_id: str
    piggyback: tuple[Update, ...] = ()


Message = Ping | Ack | PingReq | Nack


# -- encoding -----------------------------------------------------------------------------------


def _update_fields(u: Update) -> list[Any]:
    match u:
        case Alive():
            return [ALIVE, u.member, u.incarnation, list(u.addrs)]
        case Suspect():
            return [SUSPECT, u.member, u.incarnation, u.from_id]
        case Dead():
            return [DEAD, u.member, u.incarnation, u.from_id]
        case Left():
            return [LEFT, u.member, u.incarnation]
    raise TypeError(f"not a membership update: {u!r}")


def update_size(u: Update) -> int:
    """Bytes ``u`` adds to a message's piggyback list (used by the broadcast queue's budget)."""
    return len(msgpack.packb(_update_fields(u), use_bin_type=True))


PIGGYBACK_OVERHEAD = 3  # the msgpack array header of the piggyback list (up to 65535 items)


def encode(msg: Message) -> bytes:
    """Our own message → bytes."""
    pb = [_update_fields(u) for u in msg.piggyback]
    match msg:
        case Ping():
            fields: list[Any] = [VERSION, PING, msg.seq, msg.from_id, msg.incarnation, pb]
        case Ack():
            fields = [VERSION, ACK, msg.seq, msg.from_id, pb]
        case PingReq():
            fields = [VERSION, PING_REQ, msg.seq, msg.from_id, msg.target_id, pb]
        case Nack():
            fields = [VERSION, NACK, msg.seq, msg.from_id, pb]
        case _:
            raise TypeError(f"not a membership message: {msg!r}")
    return msgpack.packb(fields, use_bin_type=True)


# -- decoding -----------------------------------------------------------------------------------


def _int(v: Any, what: str) -> int:
    # bool is an int in Python; on the wire it is a different type and means a confused peer.
    if type(v) is not int or not 0 <= v <= _MAX_INT:
        raise MessageError(f"{what} must be an unsigned 64-bit integer, got {type(v).__name__}")
    return v


def _id(v: Any, what: str) -> str:
    if type(v) is not str or not 0 < len(v) <= MAX_ID_CHARS:
        raise MessageError(f"{what} must be a non-empty string of at most {MAX_ID_CHARS} chars")
    return v


def _list(v: Any, what: str, max_len: int) -> list[Any]:
    if type(v) is not list:
        raise MessageError(f"{what} must be an array, got {type(v).__name__}")
    if len(v) > max_len:
        raise MessageError(f"{what} has {len(v)} items, more than {max_len}")
    return v


def _fields(v: list[Any], n: int, what: str) -> list[Any]:
    if len(v) < n:
        raise MessageError(f"{what} needs {n} fields, got {len(v)}")
    return v


def _addrs(v: Any) -> tuple[str, ...]:
    out = []
    for a in _list(v, "addrs", MAX_ADDRS):
        if type(a) is not str or len(a) > MAX_ADDR_CHARS:
            raise MessageError(f"an addr must be a string of at most {MAX_ADDR_CHARS} chars")
        out.append(a)
    return tuple(out)


def _update(v: Any) -> Update | None:
    f = _list(v, "update", 64)
    if not f:
        raise MessageError("empty update")
    kind = _int(f[0], "update kind")
    if kind == ALIVE:
        f = _fields(f, 4, "alive")
        return Alive(_id(f[1], "member"), _int(f[2], "incarnation"), _addrs(f[3]))
    if kind == SUSPECT:
        f = _fields(f, 4, "suspect")
        return Suspect(_id(f[1], "member"), _int(f[2], "incarnation"), _id(f[3], "from_id"))
    if kind == DEAD:
        f = _fields(f, 4, "dead")
        return Dead(_id(f[1], "member"), _int(f[2], "incarnation"), _id(f[3], "from_id"))
    if kind == LEFT:
        f = _fields(f, 3, "left")
        return Left(_id(f[1], "member"), _int(f[2], "incarnation"))
    return None  # a newer peer's update kind: skip it (see module docstring)


def _piggyback(v: Any) -> tuple[Update, ...]:
    return tuple(u for u in map(_update, _list(v, "piggyback", MAX_UPDATES)) if u is not None)


def decode(data: bytes) -> Message:
    """Peer bytes → message; raises ``MessageError`` (and nothing else) on anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types (ValueError, ExtraData, ...)
        raise MessageError(f"not msgpack: {exc}") from None
    f = _list(obj, "message", 64)
    f = _fields(f, 2, "message")
    version = _int(f[0], "version")
    if version != VERSION:
        raise MessageError(
            f"unsupported membership protocol version {version} (we speak {VERSION})"
        )
    kind = _int(f[1], "message kind")
    if kind == PING:
        f = _fields(f, 6, "ping")
        return Ping(
            _int(f[2], "seq"), _id(f[3], "from_id"), _int(f[4], "incarnation"), _piggyback(f[5])
        )
    if kind == ACK:
        f = _fields(f, 5, "ack")
        return Ack(_int(f[2], "seq"), _id(f[3], "from_id"), _piggyback(f[4]))
    if kind == PING_REQ:
        f = _fields(f, 6, "ping-req")
        return PingReq(
            _int(f[2], "seq"), _id(f[3], "from_id"), _id(f[4], "target_id"), _piggyback(f[5])
        )
    if kind == NACK:
        f = _fields(f, 5, "nack")
        return Nack(_int(f[2], "seq"), _id(f[3], "from_id"), _piggyback(f[4]))
    raise MessageError(f"unknown message kind {kind}")
