"""Which headers cross a proxy hop. Pure."""

from __future__ import annotations

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
# Backend quirk: llama.cpp's server answers 400 to any non-UUID X-Request-ID.
DROP_TO_BACKEND = frozenset({"x-request-id", "x-otela-fallback"})


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
        if (lk := k.lower()) not in HOP_BY_HOP and lk not in listed and lk not in drop
    ]
