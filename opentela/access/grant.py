"""Grants: the authority's signed statement that a peer ID may be a member, as whom, claiming
which models, until when. Pure: no clock, no network (``now`` is an argument).

A grant binds a peer ID (the one Noise authenticates) to an owner, model-id glob patterns, roles
and an expiry. It travels inside its member's signed record and in the admission handshake, so
every node checks it on its own with nothing but the authority's public key: there is no
central service to ask, and a grant copied from one member is useless to any other peer ID.
Expiry is short (``--grant-ttl``, an hour by default) and renewed while the member can still
reach a granting node whose token store has not revoked it; revocation is therefore effective
within one TTL everywhere, at once on the granting nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GRANT_FORMAT = 1
ROLES = ("worker", "head", "relay")
_DOMAIN = b"opentela/grant/v1\x00"  # a grant signature can never pass as anything else
MAX_GRANT_BYTES = 4096
CLOCK_SKEW_S = 60.0  # a grant issued by a clock this far ahead is still accepted


class GrantInvalid(ValueError):
    """Not a grant, not from our authority, not for this peer, or expired: the reason says."""


@dataclass(frozen=True)
class Grant:
    peer_id: str
    owner: str
    models: tuple[str, ...]
    roles: tuple[str, ...]
    token_id: str
    issued_at: float
    expires_at: float

    def covers(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.models)

    @property
    def any_model(self) -> bool:
        """Whether it may claim every model name (``model=*`` and ``all`` groups)."""
        return "*" in self.models

    def encode(self) -> bytes:
        return msgpack.packb(
            [
                GRANT_FORMAT,
                self.peer_id,
                self.owner,
                list(self.models),
                list(self.roles),
                self.token_id,
                self.issued_at,
                self.expires_at,
            ],
            use_bin_type=True,
        )


def issue(key: Ed25519PrivateKey, grant: Grant) -> bytes:
    """The wire form: ``[body, signature]``, msgpack."""
    body = grant.encode()
    return msgpack.packb([body, key.sign(_DOMAIN + body)], use_bin_type=True)


def decode(blob: bytes) -> tuple[Grant, bytes, bytes]:
    """Parse without checking the signature: (grant, body, signature)."""
    if not isinstance(blob, bytes) or not blob or len(blob) > MAX_GRANT_BYTES:
        raise GrantInvalid("no grant" if not blob else "grant is not a bounded byte string")
    try:
        body, sig = msgpack.unpackb(blob, raw=False)
        items = msgpack.unpackb(body, raw=False)
        fmt, peer_id, owner, models, roles, token_id, issued, expires = items[:8]
        if fmt != GRANT_FORMAT:
            raise GrantInvalid(f"unknown grant format {fmt!r}")
        grant = Grant(
            str(peer_id),
            str(owner),
            tuple(str(m) for m in models),
            tuple(str(r) for r in roles),
            str(token_id),
            float(issued),
            float(expires),
        )
    except GrantInvalid:
        raise
    except (ValueError, TypeError, OverflowError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise GrantInvalid(f"malformed grant: {exc}") from exc
    if not isinstance(sig, bytes) or not isinstance(body, bytes):
        raise GrantInvalid("malformed grant: body and signature must be bytes")
    return grant, body, sig


def verify(blob: bytes, authority: Ed25519PublicKey, peer_id: str, now: float) -> Grant:
    """The grant in ``blob`` if the authority signed it, it names ``peer_id`` and it is valid
    at ``now`` (wall-clock seconds); else ``GrantInvalid`` with the reason."""
    grant, body, sig = decode(blob)
    try:
        authority.verify(sig, _DOMAIN + body)
    except InvalidSignature as exc:
        raise GrantInvalid("grant is not signed by this pool's authority") from exc
    if grant.peer_id != peer_id:
        raise GrantInvalid(f"grant is for {grant.peer_id}, not {peer_id}")
    if now >= grant.expires_at:
        raise GrantInvalid(f"grant expired {now - grant.expires_at:.0f}s ago")
    if grant.issued_at > now + CLOCK_SKEW_S:
        raise GrantInvalid("grant is issued in the future (clock skew?)")
    return grant


def allowed_groups(grant: Grant, groups: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """Split a service's identity groups into those the grant covers and those it does not.
    ``model=*`` and ``all`` claim every model name, so they need a grant for ``*``."""
    keep: list[str] = []
    refused: list[str] = []
    for g in groups:
        if g in ("model=*", "all"):
            ok = grant.any_model
        elif g.startswith("model="):
            ok = grant.covers(g.removeprefix("model="))
        else:
            ok = True  # not a model claim
        (keep if ok else refused).append(g)
    return tuple(keep), refused
