"""Private network (pnet): the ``swarm.key`` file and the connection protector of go-libp2p,
kubo and js-libp2p, so a go or js node holding the same key can join the pool.

Wire format (go-libp2p ``p2p/net/pnet/psk_conn.go``, js-libp2p ``@libp2p/pnet``): each side
sends 24 random bytes (its nonce) first; after that every byte it sends is XORed with the
XSalsa20 keystream of (key, its own nonce), and every byte it receives with that of (key, the
peer's nonce). This sits below multistream-select and Noise: a peer without the key sees noise
and cannot even negotiate. py-libp2p 0.8.1's built-in PSK is not this (Salsa20, 8-byte nonce).

XSalsa20 = Salsa20 keyed with HSalsa20(key, nonce[:16]), nonce nonce[16:]. Salsa20 runs in C
(PyCryptodome); HSalsa20 is 20 rounds over 16 words, done once per direction here. PyNaCl does
not expose libsodium's stream functions; its secretbox serves as an oracle in the tests.

No libp2p here: ``ProtectedStream`` wraps anything with ``async read(n)``/``write(data)``;
``overlay/host.py`` plugs it into py-libp2p.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import trio
from Crypto.Cipher import Salsa20

HEADER = "/key/swarm/psk/1.0.0/"
ENCODINGS = ("/base16/", "/base64/", "/bin/")
KEY_LEN = 32
NONCE_LEN = 24
# Every libp2p connection starts, in both directions, with multistream-select's header. A peer
# dialing without the key sends it in clear (its "nonce" is this); a peer with another key
# sends bytes that do not decrypt to it. Checking it turns "handshake failed" into the cause.
MULTISTREAM_HEADER = b"\x13/multistream/1.0.0\n"
_PLAINTEXT_PREFIX = MULTISTREAM_HEADER


class SwarmKeyError(ValueError):
    """A swarm key file that cannot be used; the message is one line naming the file."""


class PnetError(Exception):
    """The private-network preamble failed: the peer closed before sending its nonce, or it
    spoke without the key."""


# -- the key file ---------------------------------------------------------------------------------


def format_swarm_key(psk: bytes) -> str:
    if len(psk) != KEY_LEN:
        raise ValueError("a swarm key is 32 bytes")
    return f"{HEADER}\n/base16/\n{psk.hex()}\n"


def parse_swarm_key(data: bytes, source: str = "swarm key") -> bytes:
    """The 32-byte key from a ``swarm.key`` file's contents. Accepts the three encodings
    go-libp2p's ``DecodeV1PSK`` reads (``/base16/`` is what kubo and ``swarm-key`` write), but
    more strictly: exactly 32 bytes, nothing after them but line endings."""
    head, sep, rest = data.partition(b"\n")
    if head.rstrip(b"\r") != HEADER.encode():
        shown = head[:40].decode("utf-8", "replace")
        raise SwarmKeyError(f"{source}: first line must be {HEADER}, not {shown!r}")
    enc, _, body = rest.partition(b"\n")
    encoding = enc.rstrip(b"\r").decode("utf-8", "replace")
    if not sep or encoding not in ENCODINGS:
        raise SwarmKeyError(
            f"{source}: second line must be /base16/ (or /base64/, /bin/), not {encoding[:40]!r}"
        )
    if encoding == "/bin/":
        psk = body[:KEY_LEN] if body[KEY_LEN:].strip(b"\r\n") == b"" else b""
        if len(psk) != KEY_LEN:
            raise SwarmKeyError(f"{source}: /bin/ key must be exactly 32 bytes")
        return psk
    text = body.decode("ascii", "replace").strip()
    if encoding == "/base16/":
        all_hex = all(c in "0123456789abcdefABCDEF" for c in text)
        if len(text) != 2 * KEY_LEN or not all_hex:
            raise SwarmKeyError(
                f"{source}: third line must be 64 hex digits (got {len(text)} characters"
                f"{'' if all_hex else ', not all hex'})"
            )
        return bytes.fromhex(text)
    try:
        psk = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        psk = b""
    if len(psk) != KEY_LEN:
        raise SwarmKeyError(f"{source}: third line must be base64 of 32 bytes")
    return psk


def load_swarm_key(path: str | os.PathLike[str]) -> bytes:
    """Read and check a key file. A key readable by group or others is refused, as the
    node's identity.key is: everyone with the file is a member of the network."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
        mode = stat.S_IMODE(p.stat().st_mode)
    except FileNotFoundError as exc:
        raise SwarmKeyError(
            f"no swarm key at {p}; create one with `opentela-node swarm-key {p}`"
        ) from exc
    except IsADirectoryError as exc:
        raise SwarmKeyError(f"swarm key {p} is a directory, not a key file") from exc
    except OSError as exc:
        raise SwarmKeyError(f"cannot read swarm key {p}: {exc.strerror or exc}") from exc
    if mode & 0o077:
        raise SwarmKeyError(
            f"swarm key {p} is readable by others (mode {mode:o}); chmod 600 it "
            "(Kubernetes: defaultMode: 0400 on the Secret volume)"
        )
    return parse_swarm_key(data, f"swarm key {p}")


def write_swarm_key(path: str | os.PathLike[str], rng: Callable[[int], bytes] = os.urandom) -> Path:
    """Write a new random key (mode 0600); refuse to overwrite one: every member holds a copy,
    and replacing it silently would cut this node off."""
    p = Path(path).expanduser()
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise SwarmKeyError(f"{p} already exists; not overwriting a swarm key") from exc
    except OSError as exc:
        raise SwarmKeyError(f"cannot write {p}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w") as f:
            f.write(format_swarm_key(rng(KEY_LEN)))
    except OSError as exc:
        p.unlink(missing_ok=True)
        raise SwarmKeyError(f"cannot write {p}: {exc.strerror or exc}") from exc
    return p


def fingerprint(psk: bytes) -> str:
    """A short public name for a key, for logs: two nodes whose fingerprints differ hold
    different keys. Not the key, and not usable to find it."""
    return hashlib.sha256(b"opentela pnet fingerprint\0" + psk).hexdigest()[:16]


def looks_like_plaintext(nonce: bytes) -> bool:
    """Whether the peer's "nonce" is multistream-select in clear: it has no swarm key."""
    return nonce.startswith(_PLAINTEXT_PREFIX[: len(nonce)]) and len(nonce) >= 8


# -- the cipher -----------------------------------------------------------------------------------

_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_M = 0xFFFFFFFF


def _quarter(x: list[int], a: int, b: int, c: int, d: int) -> None:
    t = (x[a] + x[d]) & _M
    x[b] ^= ((t << 7) | (t >> 25)) & _M
    t = (x[b] + x[a]) & _M
    x[c] ^= ((t << 9) | (t >> 23)) & _M
    t = (x[c] + x[b]) & _M
    x[d] ^= ((t << 13) | (t >> 19)) & _M
    t = (x[d] + x[c]) & _M
    x[a] ^= ((t << 18) | (t >> 14)) & _M


def hsalsa20(key: bytes, nonce16: bytes) -> bytes:
    """HSalsa20 (Bernstein, "Extending the Salsa20 nonce", 2008): the Salsa20 core without
    the final addition, output words 0, 5, 10, 15, 6, 7, 8, 9."""
    if len(key) != 32 or len(nonce16) != 16:
        raise ValueError("hsalsa20 takes a 32-byte key and a 16-byte nonce")
    k = struct.unpack("<8I", key)
    n = struct.unpack("<4I", nonce16)
    s = _SIGMA
    x = [s[0], *k[:4], s[1], *n, s[2], *k[4:], s[3]]
    for _ in range(10):
        _quarter(x, 0, 4, 8, 12)
        _quarter(x, 5, 9, 13, 1)
        _quarter(x, 10, 14, 2, 6)
        _quarter(x, 15, 3, 7, 11)
        _quarter(x, 0, 1, 2, 3)
        _quarter(x, 5, 6, 7, 4)
        _quarter(x, 10, 11, 8, 9)
        _quarter(x, 15, 12, 13, 14)
    return struct.pack("<8I", x[0], x[5], x[10], x[15], x[6], x[7], x[8], x[9])


class XSalsa20:
    """An XSalsa20 keystream, XORed onto successive chunks (a stream, not per message)."""

    def __init__(self, key: bytes, nonce: bytes) -> None:
        if len(nonce) != NONCE_LEN:
            raise ValueError("xsalsa20 takes a 24-byte nonce")
        self._cipher = Salsa20.new(key=hsalsa20(key, nonce[:16]), nonce=nonce[16:])

    def xor(self, data: bytes) -> bytes:
        return self._cipher.encrypt(data) if data else b""


# -- the stream -----------------------------------------------------------------------------------


class RawStream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...
    async def write(self, data: bytes) -> None: ...


class ProtectedStream:
    """``inner`` with the pnet preamble and cipher. Our nonce goes out before the first read
    or write, whichever comes first: js-libp2p waits for the peer's nonce before it sends
    anything else, so a listener that only sent its nonce with its first reply would deadlock
    with it. The peer's nonce is read before the first read returns."""

    def __init__(
        self,
        inner: RawStream,
        psk: bytes,
        rng: Callable[[int], bytes] = os.urandom,
        expect: bytes = b"",
    ) -> None:
        """``expect``: what the first decrypted bytes must be (``MULTISTREAM_HEADER`` under
        libp2p); anything else means the peer holds another key, reported as such."""
        if len(psk) != KEY_LEN:
            raise ValueError("a swarm key is 32 bytes")
        self._inner = inner
        self._expect = expect
        self._failed = ""
        self._psk = psk
        self._nonce = rng(NONCE_LEN)
        self._out: XSalsa20 | None = None
        self._in: XSalsa20 | None = None
        self._write_lock = trio.Lock()
        self._read_lock = trio.Lock()

    async def _send_nonce(self) -> None:
        async with self._write_lock:
            if self._out is None:
                await self._inner.write(self._nonce)
                self._out = XSalsa20(self._psk, self._nonce)

    async def _read_nonce(self) -> None:
        async with self._read_lock:
            if self._in is not None:
                return
            got = b""
            while len(got) < NONCE_LEN:
                chunk = await self._inner.read(NONCE_LEN - len(got))
                if not chunk:
                    raise PnetError(
                        f"peer closed after {len(got)} of the {NONCE_LEN} bytes of its "
                        "private-network nonce (it has no swarm key, or another one?)"
                    )
                got += chunk
                if looks_like_plaintext(got):
                    raise PnetError("peer spoke multistream in clear: it has no swarm key")
            self._in = XSalsa20(self._psk, got)

    async def write(self, data: bytes) -> None:
        if self._out is None:
            await self._send_nonce()
        async with self._write_lock:  # the keystream must go out in the order it was used
            assert self._out is not None
            await self._inner.write(self._out.xor(bytes(data)))

    async def read(self, n: int | None = None) -> bytes:
        if self._failed:
            raise PnetError(self._failed)
        if self._out is None:
            await self._send_nonce()
        if self._in is None:
            await self._read_nonce()
        data = await self._inner.read(n)
        assert self._in is not None
        if not data:
            return b""
        plain = self._in.xor(data)
        if self._expect:
            head, self._expect = self._expect[: len(plain)], self._expect[len(plain) :]
            if not plain.startswith(head):
                self._failed = (
                    "private network key mismatch? the peer's bytes do not decrypt with "
                    f"our swarm key (fingerprint {fingerprint(self._psk)})"
                )
        if self._failed:
            raise PnetError(self._failed)
        return plain


class LogOnce:
    """Refused connections are logged once per remote address per ``period_s``, not once per
    attempt: a misconfigured peer retries every few seconds."""

    def __init__(self, period_s: float = 60.0, max_keys: int = 4096) -> None:
        self.period_s = period_s
        self.max_keys = max_keys
        self._last: dict[str, float] = {}

    def should_log(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            return False
        if len(self._last) >= self.max_keys:
            self._last = {k: t for k, t in self._last.items() if now - t < self.period_s}
        self._last[key] = now
        return True
