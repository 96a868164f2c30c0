"""Which headers cross a proxy hop. Pure."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

# RFC 9110 §7.6.1 hop-by-hop headers, plus those we recompute on each hop.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# The client's credentials are for the entry node only: a worker is another member's machine,
# and a backend that needs a key gets the worker's own (--service.api-key). Dropped at the
# entry (remote and local paths) and again by the worker, in case a hostile entry sends them.
CLIENT_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
# Ours, meaningless to a backend (routing instructions for the entry node: fallback tiers,
# identity-group and site restrictions); plus the client's credentials.
DROP_TO_BACKEND = (
    frozenset({"x-otela-fallback", "x-otela-identity-group", "x-otela-site"}) | CLIENT_CREDENTIALS
)


# RFC 9110 §5.1 token; a value is visible ASCII/obs-text, spaces and tabs (§5.5): no CR, LF, NUL.
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[^\r\n\x00]*")


def end_to_end(
    headers: Iterable[tuple[str, str]], drop: frozenset[str] = frozenset()
) -> list[list[str]]:
    """Headers that may cross a hop, honouring extra names listed in ``Connection:``.
    A header that is not valid HTTP (a name that is no token, a CR/LF in a value: what a
    hostile peer's frame can hold) is dropped, so it can neither split a request nor crash
    the HTTP client."""
    items = [
        (k, v)
        for k, v in ((str(k), str(v)) for k, v in headers)
        if _NAME.fullmatch(k) and _VALUE.fullmatch(v)
    ]
    listed = {
        t.strip().lower() for k, v in items if k.lower() == "connection" for t in v.split(",")
    }
    return [
        [k, v]
        for k, v in items
        if (lk := k.lower()) not in HOP_BY_HOP
        and lk not in listed
        and lk not in drop
        and not (lk == "x-request-id" and not _is_uuid(v))
    ]


def _is_uuid(value: str) -> bool:
    """Backend quirk: llama.cpp's server answers 400 (empty body) to a non-UUID X-Request-ID,
    so only UUIDs are passed on; vLLM and others still get the client's id when it is one."""
    try:
        uuid.UUID(value.strip())
    except ValueError:
        return False
    return True
