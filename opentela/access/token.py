"""Join tokens: what an operator hands a node so it can get a grant (issue 9).

A token is ``otj_`` + base64url(32 random bytes). Only its SHA-256 is stored, so a copy of
the store admits nobody. Everything here is pure except :func:`new_token`, the one place
randomness enters (from :mod:`secrets`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from ..platform.slurm import parse_duration

TOKEN_PREFIX = "otj_"
ID_PREFIX = "tok_"
TOKEN_BYTES = 32
ROLES = ("worker", "head", "relay")
DEFAULT_ROLES = ("worker",)
DEFAULT_TTL = "30d"
MAX_PATTERN_LEN = 256
MAX_OWNER_LEN = 200

_TOKEN_RE = re.compile(r"otj_[A-Za-z0-9_-]{43}")
_ID_RE = re.compile(r"tok_[0-9a-f]{8}")
# A model-id pattern: printable, no whitespace (model ids have none; a space is a typo).
_PATTERN_RE = re.compile(r"[!-~]+")


class TokenRejected(Exception):
    """A join token that admits nobody; ``reason`` is ``unknown``, ``revoked`` or ``expired``."""

    def __init__(self, reason: str, token_id: str | None = None) -> None:
        self.reason = reason
        self.token_id = token_id
        super().__init__(f"join token {reason}" + (f" ({token_id})" if token_id else ""))


@dataclass(frozen=True)
class TokenInfo:
    """A stored token as everyone but its holder sees it: never the token or its hash."""

    id: str
    owner: str
    models: tuple[str, ...]
    roles: tuple[str, ...]
    expires_at: float
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None

    def status(self, now: float) -> str:
        """``revoked``, ``expired`` or ``active`` at ``now`` (revocation wins)."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "active"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["models"], d["roles"] = list(self.models), list(self.roles)
        return d


def new_token() -> str:
    """A fresh join token: 256 bits from the OS's CSPRNG."""
    return make_token(secrets.token_bytes(TOKEN_BYTES))


def new_token_id() -> str:
    """A short display id (``tok_`` + 8 hex), unrelated to the token so it reveals nothing."""
    return ID_PREFIX + secrets.token_hex(4)


def make_token(raw: bytes) -> str:
    if len(raw) != TOKEN_BYTES:
        raise ValueError(f"a join token is made of {TOKEN_BYTES} bytes, not {len(raw)}")
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hash_token(token: str) -> str:
    """What the store keeps: SHA-256 hex of the whole token string (prefix included)."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def is_token_id(text: str) -> bool:
    return _ID_RE.fullmatch(text) is not None


def parse_token(text: str) -> str:
    """``text`` as a join token (surrounding whitespace from a file or a paste dropped)."""
    token = text.strip()
    if not is_token(token):
        shown = "an empty string" if not token else f"{token[:8]}... ({len(token)} characters)"
        raise ValueError(
            f"not a join token: expected otj_ and 43 base64url characters, got {shown}"
        )
    return token


def parse_ttl(text: str) -> float:
    """Seconds for a token lifetime such as ``30d``, ``12h``, ``90m`` (or ``1h30m``, ``3600``)."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"invalid TTL {text!r}: use e.g. 30d, 12h or 90m") from exc
    if seconds <= 0:
        raise ValueError(f"invalid TTL {text!r}: it must be longer than 0")
    return seconds


def parse_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    """Model-id glob patterns (fnmatch: ``alice/*``, ``swiss-ai/Apertus-8B``), deduplicated in
    order. At least one: a token that may advertise nothing admits a useless member."""
    out: list[str] = []
    for p in patterns:
        if not _PATTERN_RE.fullmatch(p) or len(p) > MAX_PATTERN_LEN:
            raise ValueError(
                f"invalid model pattern {p!r}: a glob such as 'alice/*' or an exact model id, "
                f"printable, without spaces, at most {MAX_PATTERN_LEN} characters"
            )
        if p not in out:
            out.append(p)
    if not out:
        raise ValueError("a join token needs at least one model pattern (--models)")
    return tuple(out)


def parse_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """Roles deduplicated in order; none given means :data:`DEFAULT_ROLES`."""
    out: list[str] = []
    for r in roles:
        if r not in ROLES:
            raise ValueError(f"invalid role {r!r}: one of {', '.join(ROLES)}")
        if r not in out:
            out.append(r)
    return tuple(out) or DEFAULT_ROLES


def parse_owner(owner: str) -> str:
    text = owner.strip()
    if not text or len(text) > MAX_OWNER_LEN or not text.isprintable():
        raise ValueError(
            f"invalid owner {owner!r}: a printable name such as alice or alice@ethz.ch, "
            f"at most {MAX_OWNER_LEN} characters"
        )
    return text


def rejection(info: TokenInfo | None, now: float) -> str | None:
    """Why a token cannot be redeemed at ``now`` (``unknown``/``revoked``/``expired``), or None."""
    if info is None:
        return "unknown"
    status = info.status(now)
    return None if status == "active" else status


def dump_list(items: tuple[str, ...]) -> str:
    """The JSON text a tuple of strings is stored as."""
    return json.dumps(list(items))


def load_list(text: str) -> tuple[str, ...]:
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a JSON list of strings, got {text[:80]!r}")
    return tuple(value)
