"""Which headers cross a proxy hop. Pure."""

from __future__ import annotations

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
# Ours, meaningless to a backend.
DROP_TO_BACKEND = frozenset({"x-otela-fallback"})


def end_to_end(
    headers: Iterable[tuple[str, str]], drop: frozenset[str] = frozenset()
) -> list[list[str]]:
    """Headers that may cross a hop, honouring extra names listed in ``Connection:``."""
    items = [(str(k), str(v)) for k, v in headers]
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
