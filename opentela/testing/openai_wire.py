"""The OpenAI wire shapes both test upstreams speak: request checks, error envelopes,
completion objects and SSE chunks. One place, so the two fakes cannot drift apart."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from aiohttp import web

DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def error(status: int, message: str, code: str | None = None) -> web.Response:
    """Errors use OpenAI's envelope so SDK clients raise their typed exceptions."""
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.Response(status=status, text=DUMPS(body), content_type="application/json")


def json_response(obj: Any, model: str | None = None) -> web.Response:
    headers = {"X-Upstream-Model": model} if model else None
    return web.Response(text=DUMPS(obj), content_type="application/json", headers=headers)


async def read_request(
    request: web.Request, models: Collection[str]
) -> tuple[dict[str, Any], str] | web.Response:
    """(body, model) of a request naming one of ``models``, or the error to send."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return error(400, "Request body is not valid JSON.")
    if not isinstance(body, dict):
        return error(400, "Request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error(400, "Missing required parameter: 'model'.")
    if model not in models:
        return error(404, f"The model '{model}' does not exist.", "model_not_found")
    return body, model


async def read_generation(
    request: web.Request, models: Collection[str], default_tokens: int
) -> tuple[dict[str, Any], str, int] | web.Response:
    """``read_request`` plus the number of tokens to generate."""
    parsed = await read_request(request, models)
    if isinstance(parsed, web.Response):
        return parsed
    body, model = parsed
    n = max_tokens(body, default_tokens)
    if n is None:
        return error(400, "'max_tokens' must be a non-negative integer.")
    return body, model, n


def max_tokens(body: dict[str, Any], default: int) -> int | None:
    """None means the request asked for something nonsensical."""
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return None
        return value
    return default


def wants_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


def completion(
    rid: str, created: int, model: str, n: int, usage: dict[str, Any], chat: bool
) -> dict[str, Any]:
    """A whole (non-streamed) answer of ``n`` tokens "tok0 tok1 ..."."""
    text = " ".join(f"tok{i}" for i in range(n))
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": "length",
        }
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def sse_response(model: str) -> web.StreamResponse:
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Upstream-Model": model,
        }
    )


def token_choice(i: int, n: int, chat: bool) -> dict[str, Any]:
    """The choice of streamed chunk ``i``; ``n == 0`` still yields one empty chunk so clients
    always see a finish_reason."""
    piece = "" if n == 0 else (f"tok{i}" if i == 0 else f" tok{i}")
    finish = "length" if i >= n - 1 else None
    if not chat:
        return {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}
    delta: dict[str, Any] = (
        {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
    )
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def chunk(
    rid: str,
    created: int,
    model: str,
    chat: bool,
    choices: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> bytes:
    """One SSE event carrying a chunk object."""
    obj: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if extra:
        obj.update(extra)
    return b"data: " + DUMPS(obj).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
