"""OpenAI-shaped error bodies: ``{"error": {"message", "type", "code"}}``. Pure."""

from __future__ import annotations

import json
from typing import Any


def error_body(message: str, type_: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message, "type": type_, "code": code}
    err.update(extra)
    return {"error": err}


def sse_error_event(
    message: str, type_: str = "upstream_error", code: str = "stream_interrupted"
) -> bytes:
    """The last event of a stream that broke after bytes reached the client: never a silent
    truncation."""
    return b"data: " + json.dumps(error_body(message, type_, code)).encode() + b"\n\n"
