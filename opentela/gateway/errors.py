"""OpenAI-shaped error bodies: ``{"error": {"message", "type", "code"}}``, and the pure rules
that turn what can go wrong at the HTTP edge (a rejected request, a request the HTTP parser
refused, a JSON body nested too deep) into a status and such a body."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import http_exceptions as hx

MAX_JSON_DEPTH = 128
"""Deepest nesting of arrays/objects accepted in a request body. Real requests (tool schemas
included) stay far below; Python's JSON parser recurses per level and fails with
RecursionError near 1000, so an attacker's ``[[[[...`` must be refused before it gets there."""

# A JSON string (so brackets inside strings do not count) or a bracket. On any valid prefix of
# a JSON text this splits tokens exactly as a JSON parser does, which is all the depth check
# needs: past the first syntax error the parser stops anyway.
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")


class ApiError(Exception):
    """A request refused on purpose, carried to the error middleware as an OpenAI error."""

    def __init__(self, status: int, message: str, type_: str, code: str | None, **headers: str):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = (
            status,
            message,
            type_,
            code,
            headers,
        )


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


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` nests arrays/objects deeper than ``limit``. Cheap: bodies with at most
    ``limit`` opening brackets (nearly all) are not scanned; a scan stops at the first level
    over the limit, so ``[`` x 16 MiB costs ``limit`` steps."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for m in _JSON_TOKENS.finditer(body):
        c = body[m.start()]
        if c in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif c != 0x22:  # a closing bracket, not a string
            depth -= 1
    return False


def http_error_type(status: int) -> str:
    return "invalid_request_error" if status < 500 else "server_error"


def parser_error(exc: BaseException | None, max_field_size: int) -> tuple[int, str, str]:
    """(status, message, code) for a request aiohttp's HTTP parser refused. Never echoes what
    the client sent: a header over the limit may be a token, and the old text/plain page
    quoted it back."""
    if isinstance(exc, hx.LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "?"
        if limit == max_field_size:
            return (
                431,
                f"a request header is longer than {limit} bytes",
                "request_header_too_large",
            )
        return 414, f"the request line is longer than {limit} bytes", "request_line_too_long"
    if isinstance(exc, hx.BadHttpMessage) and exc.message.startswith("Too many headers"):
        return 431, "too many request headers", "request_header_too_large"
    if isinstance(exc, hx.BadHttpMethod):
        if "HTTPS" in exc.message:
            return 400, "this port speaks plain HTTP, not HTTPS", "bad_request"
        return 400, "malformed request line: unknown HTTP method", "bad_request"
    if isinstance(exc, hx.BadStatusLine):
        return 400, "malformed request line (expected METHOD /path HTTP/1.1)", "bad_request"
    if isinstance(exc, hx.InvalidURLError):
        return 400, "malformed request target", "bad_request"
    if isinstance(exc, hx.InvalidHeader):
        return 400, "malformed request header", "bad_request"
    if isinstance(exc, hx.BadHttpMessage):
        # llhttp's reason (the first line), without the bytes it quotes after it.
        reason = exc.message.split(":\n", 1)[0].strip()[:200] or "bad request"
        return 400, f"malformed HTTP request: {reason}", "bad_request"
    return 400, "malformed HTTP request", "bad_request"
