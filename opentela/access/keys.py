"""API keys: what a client sends as ``Authorization: Bearer sk-otela-...`` (issue 11).

A key is ``sk-otela-`` + base64url(24 random bytes) (192 bits). Only its SHA-256 is stored, with
a display prefix (the first 13 characters) so an operator can tell keys apart without the
store ever holding one. Everything here is pure except :func:`new_key` and
:func:`new_key_id`, the places randomness enters (from :mod:`secrets`).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from .token import MAX_PATTERN_LEN, parse_owner

KEY_PREFIX = "sk-otela-"
ID_PREFIX = "key_"
KEY_BYTES = 24
DISPLAY_LEN = 13
PERIODS = ("day", "week", "month", "total")

_KEY_RE = re.compile(r"sk-otela-[A-Za-z0-9_-]{32}")
_ID_RE = re.compile(r"key_[0-9a-f]{8}")
_PATTERN_RE = re.compile(r"[!-~]+")

__all__ = [
    "KeyInfo",
    "is_key_id",
    "key_hash",
    "looks_like_key",
    "new_key",
    "new_key_id",
    "parse_limits",
    "parse_models",
    "parse_owner",
]


@dataclass(frozen=True)
class KeyInfo:
    """A stored key as everyone but its holder sees it: never the key or its hash."""

    id: str
    prefix: str
    owner: str
    models: tuple[str, ...] = ()
    """Glob patterns of the model ids the key may use; empty means every model."""
    rpm: int | None = None
    tpm: int | None = None
    budget_tokens: int | None = None
    budget_period: str | None = None
    admin: bool = False
    created_at: float = 0.0
    last_used_at: float | None = None
    revoked_at: float | None = None

    def allows_model(self, model: str) -> bool:
        """Case-sensitive glob match (model ids are case-sensitive upstream)."""
        return not self.models or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def status(self) -> str:
        return "active" if self.revoked_at is None else "revoked"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["models"] = list(self.models)
        return d


def make_key(raw: bytes) -> str:
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an API key is made of {KEY_BYTES} bytes, not {len(raw)}")
    return KEY_PREFIX + base64.urlsafe_b64encode(raw).decode()  # 24 bytes: no padding


def new_key() -> str:
    """A fresh API key: 192 bits from the OS's CSPRNG."""
    return make_key(secrets.token_bytes(KEY_BYTES))


def new_key_id() -> str:
    """A short id (``key_`` + 8 hex), unrelated to the key so it reveals nothing about it."""
    return ID_PREFIX + secrets.token_hex(4)


def key_hash(text: str) -> str:
    """What the store keeps: SHA-256 hex of the whole key text (prefix included)."""
    return hashlib.sha256(text.encode()).hexdigest()


def display_prefix(text: str) -> str:
    return text[:DISPLAY_LEN]


def looks_like_key(text: str) -> bool:
    """Whether ``text`` has the shape of one of our keys (a cheap check before any lookup)."""
    return _KEY_RE.fullmatch(text) is not None


def is_key_id(text: str) -> bool:
    return _ID_RE.fullmatch(text) is not None


def parse_models(patterns: Iterable[str]) -> tuple[str, ...]:
    """Model-id globs (``swiss-ai/*``, an exact id), deduplicated in order; none = all models."""
    out: list[str] = []
    for p in patterns:
        if not _PATTERN_RE.fullmatch(p) or len(p) > MAX_PATTERN_LEN:
            raise ValueError(
                f"invalid model pattern {p!r}: a glob such as 'swiss-ai/*' or an exact model "
                f"id, printable, without spaces, at most {MAX_PATTERN_LEN} characters"
            )
        if p not in out:
            out.append(p)
    return tuple(out)


def _limit(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"invalid {name} {value!r}: a whole number above 0, or none")
    return value


def parse_limits(
    rpm: Any = None, tpm: Any = None, budget_tokens: Any = None, budget_period: Any = None
) -> tuple[int | None, int | None, int | None, str | None]:
    """(rpm, tpm, budget_tokens, budget_period), checked. A budget without a period is a budget
    over the key's whole life (``total``); a period without a budget is a mistake."""
    rpm, tpm = _limit("rpm", rpm), _limit("tpm", tpm)
    budget_tokens = _limit("budget_tokens", budget_tokens)
    if budget_period is not None and budget_period not in PERIODS:
        raise ValueError(f"invalid budget period {budget_period!r}: one of {', '.join(PERIODS)}")
    if budget_period is not None and budget_tokens is None:
        raise ValueError("a budget period needs a budget (--budget-tokens)")
    if budget_tokens is not None and budget_period is None:
        budget_period = "total"
    return rpm, tpm, budget_tokens, budget_period
