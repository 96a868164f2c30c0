"""A worker's load as a small signed update instead of a whole re-signed record.

Load changes up to twice a second on a busy worker; its record is up to 10 KiB and says the
same thing every time but for one integer. An update is ``[public key, version, load,
signature]``, ~110 bytes, signed by the author over its own domain so it can never be replayed
as a record (or the other way round). Versions come from the same counter as the author's
record versions (milliseconds, strictly increasing), so "newer" compares across the two: a
record signed after an update carries the newer load, and an update older than the record is
stale.

Relayed by anyone, accepted only from the key whose peer ID it names, like records.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..overlay import identity
from ..overlay.identity import public_key_bytes

_DOMAIN = b"opentela/load/v1\x00"
MAX_LOAD = 2**31 - 1


class InvalidLoad(ValueError):
    """Not a load update, a bad signature, or out of range."""


@dataclass(frozen=True, slots=True)
class LoadUpdate:
    author: str
    version: int
    load: int
    public_key: bytes
    signature: bytes

    def pack(self) -> list[object]:
        return [self.public_key, self.version, self.load, self.signature]

    def wire(self) -> bytes:
        return msgpack.packb(self.pack(), use_bin_type=True)


def _signed_bytes(version: int, load: int) -> bytes:
    return _DOMAIN + msgpack.packb([version, load])


@lru_cache(maxsize=4096)
def _author(public_key: bytes) -> str:
    # Deriving the peer ID costs a hash and a base58 encoding: done once per author, not per
    # update (a pool's authors are its members; the cache bound is above any pool's size).
    return identity.peer_id_from_public_key(public_key)


def sign_load(key: Ed25519PrivateKey, version: int, load: int) -> LoadUpdate:
    if not (0 <= version < 2**63 and 0 <= load <= MAX_LOAD):
        raise InvalidLoad("version and load must be non-negative 63/31-bit integers")
    pub = public_key_bytes(key)
    return LoadUpdate(_author(pub), version, load, pub, key.sign(_signed_bytes(version, load)))


def peek(packed: object) -> tuple[str, int]:
    """(author, version) of a packed update, without checking the signature: enough to drop
    the copies we already have before paying for a verification. Raises InvalidLoad."""
    if not (isinstance(packed, list | tuple) and len(packed) == 4):
        raise InvalidLoad("expected [public_key, version, load, signature]")
    pub, version, load, sig = packed
    if not (isinstance(pub, bytes) and len(pub) == 32 and isinstance(sig, bytes)):
        raise InvalidLoad("public key and signature must be bytes")
    if not (isinstance(version, int) and isinstance(load, int)):
        raise InvalidLoad("version and load must be integers")
    if not (0 <= version < 2**63 and 0 <= load <= MAX_LOAD):
        raise InvalidLoad("version or load out of range")
    try:
        return _author(pub), version
    except ValueError as exc:
        raise InvalidLoad(str(exc)) from exc


def verify_load(packed: object) -> LoadUpdate:
    author, version = peek(packed)
    pub, _, load, sig = packed  # type: ignore[misc]
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, _signed_bytes(version, load))
    except (InvalidSignature, ValueError) as exc:
        raise InvalidLoad("bad signature") from exc
    return LoadUpdate(author, version, load, pub, sig)
