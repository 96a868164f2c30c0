"""Sign and verify records. A record is only accepted when its signer *is* its author.

Peer IDs come from ``overlay/identity`` (pure, no libp2p import), computed the way libp2p does
for Ed25519 keys, so the key that signs a record is bound to the peer ID that the Noise
handshake authenticates.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..overlay import identity
from ..overlay.identity import public_key_bytes
from .record import MAX_RECORD_BYTES, NodeRecord, RecordError

__all__ = ["InvalidRecord", "SignedRecord", "peer_id_from_public_key", "public_key_bytes"]

# Domain separation: a signature over a record can never be replayed as anything else.
_DOMAIN = b"opentela/record/v1\x00"


class InvalidRecord(RecordError):
    """Signature does not verify, or the signer is not the record's author."""


def peer_id_from_public_key(public_key: bytes) -> str:
    try:
        return identity.peer_id_from_public_key(public_key)
    except ValueError as exc:
        raise InvalidRecord(str(exc)) from exc


@dataclass(frozen=True)
class SignedRecord:
    """The unit that travels and is stored: body bytes exactly as signed, plus proof."""

    body: bytes
    public_key: bytes
    signature: bytes
    record: NodeRecord
    admitted_until_s: float = float("inf")
    """In a closed pool, when (receiver's monotonic clock) the author's grant expires; the
    record stops being routable then (``table/admitted``). Local only, never on the wire."""

    def pack(self) -> list[bytes]:
        return [self.body, self.public_key, self.signature]

    def wire(self) -> bytes:
        return msgpack.packb(self.pack(), use_bin_type=True)


def sign(record: NodeRecord, key: Ed25519PrivateKey) -> SignedRecord:
    pub = public_key_bytes(key)
    if peer_id_from_public_key(pub) != record.peer_id:
        raise InvalidRecord("refusing to sign a record for another peer id")
    body = record.encode()
    return SignedRecord(body, pub, key.sign(_DOMAIN + body), record)


def verify(packed: object) -> SignedRecord:
    """Check a ``[body, public_key, signature]`` triple; raise InvalidRecord with a reason."""
    if not (isinstance(packed, list | tuple) and len(packed) == 3):
        raise InvalidRecord("expected [body, public_key, signature]")
    body, pub, sig = packed
    if not all(isinstance(x, bytes) for x in (body, pub, sig)):
        raise InvalidRecord("record fields must be bytes")
    if len(body) > MAX_RECORD_BYTES:
        raise InvalidRecord(f"record of {len(body)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, _DOMAIN + body)
    except (InvalidSignature, ValueError) as exc:
        raise InvalidRecord("bad signature") from exc
    try:
        record = NodeRecord.decode(body)
    except InvalidRecord:
        raise
    except RecordError as exc:
        raise InvalidRecord(str(exc)) from exc
    author = peer_id_from_public_key(pub)
    if record.peer_id != author:
        raise InvalidRecord(f"record claims peer {record.peer_id} but is signed by {author}")
    return SignedRecord(body, pub, sig, record)


def verify_wire(data: bytes) -> SignedRecord:
    try:
        packed = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise InvalidRecord(f"undecodable: {exc}") from exc
    return verify(packed)
