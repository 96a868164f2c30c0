"""A fast, deterministic OpenAI-compatible server for tests and benchmarks.

It stands in for vLLM/llama.cpp so gateway and worker tests can run without GPUs,
and so benchmarks measure opentela rather than a model. It is plain asyncio
(aiohttp), independent of the trio world the product runs in, on purpose: it
must behave like a foreign process.

CLI::

    python -m opentela.testing.fake_upstream --host 127.0.0.1 --port 0 \
        --model NAME [--model NAME2] [--tokens 16] [--token-delay-ms 0] [--latency-ms 0] \
        [--fail-status 503 [--fail-count N]] [--no-stream-usage]

``--fail-status`` makes API calls (chat, completions, embeddings) answer that status with an
OpenAI-shaped error, so tests can drive the gateway's retries; ``--fail-count N`` fails only
the first N of them. ``/stats`` counts the API calls received (``api_requests``) and the
failures injected (``failed``), so a test can tell exactly how many attempts reached it.
Streams end with a usage chunk when the client asks (``stream_options.include_usage``);
``--no-stream-usage`` never sends one, like llama-cpp-python.

It prints ``READY http://HOST:PORT`` once listening so a parent process can wait
for that line instead of polling the port.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import openai_wire as wire
from .serving import serve_until_signal

_EMBED_DIMS = 8


@dataclass
class _Config:
    models: frozenset[str]
    model_list: list[str]
    tokens: int
    token_delay_s: float
    latency_s: float
    fail_status: int = 0  # 0: never fail
    fail_count: int = -1  # with fail_status: fail this many API calls; -1: all of them
    stream_usage: bool = True  # False: streams never carry a usage chunk (llama-cpp-python)


@dataclass
class _Stats:
    requests: int = 0
    api_requests: int = 0  # chat, completions, embeddings (the calls a gateway forwards)
    failed: int = 0  # answered with the injected fail_status
    in_flight: int = 0
    cancelled: int = 0
    completed: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=itertools.count)


_CONFIG = web.AppKey("fake_upstream_config", _Config)
_STATS = web.AppKey("fake_upstream_stats", _Stats)


def _count_words(value: Any) -> int:
    """Rough token count; good enough for usage fields that tests compare loosely."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_count_words(v) for v in value)
    if isinstance(value, dict):
        # Chat messages and multi-part content: only text carries "tokens".
        return _count_words(value.get("content")) + _count_words(value.get("text"))
    return 0


def _track(request: web.Request) -> _Stats:
    """Only API calls are tracked, so polling /stats never hides the headers under test.

    Header names are lower-cased: clients differ in casing, and tests should not care.
    """
    stats = request.app[_STATS]
    stats.requests += 1
    stats.last_headers = {k.lower(): v for k, v in request.headers.items()}
    return stats


async def _models(request: web.Request) -> web.Response:
    _track(request)
    data = [
        {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
        for m in request.app[_CONFIG].model_list
    ]
    return wire.json_response({"object": "list", "data": data})


async def _health(_request: web.Request) -> web.Response:
    return wire.json_response({"status": "ok"})


async def _stats(request: web.Request) -> web.Response:
    s = request.app[_STATS]
    return wire.json_response(
        {
            "requests": s.requests,
            "in_flight": s.in_flight,
            "cancelled": s.cancelled,
            "completed": s.completed,
            "api_requests": s.api_requests,
            "failed": s.failed,
            "last_headers": s.last_headers,
        }
    )


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


def _injected_failure(request: web.Request, stats: _Stats) -> web.Response | None:
    """Count an API call; answer it with the configured failure while any remain."""
    cfg = request.app[_CONFIG]
    stats.api_requests += 1
    if not cfg.fail_status or (0 <= cfg.fail_count <= stats.failed):
        return None
    stats.failed += 1
    body = {
        "error": {
            "message": f"fake upstream: injected failure {cfg.fail_status}",
            "type": "server_error",
            "code": "injected_failure",
        }
    }
    return web.Response(
        status=cfg.fail_status, text=wire.DUMPS(body), content_type="application/json"
    )


async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    stats = _track(request)
    if (failure := _injected_failure(request, stats)) is not None:
        return failure
    cfg = request.app[_CONFIG]
    parsed = await wire.read_generation(request, cfg.models, cfg.tokens)
    if isinstance(parsed, web.Response):
        return parsed
    body, model, n = parsed
    prompt_tokens = _count_words(body.get("messages") if chat else body.get("prompt"))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": n,
        "total_tokens": prompt_tokens + n,
    }
    rid = f"{'chatcmpl' if chat else 'cmpl'}-fake{next(stats.ids):08x}"
    created = int(time.time())

    stats.in_flight += 1
    try:
        if cfg.latency_s > 0:
            await asyncio.sleep(cfg.latency_s)
        if body.get("stream") is True:
            return await _stream(request, stats, cfg, body, model, rid, created, n, usage, chat)
        resp = wire.json_response(wire.completion(rid, created, model, n, usage, chat), model)
        stats.completed += 1
        return resp
    finally:
        stats.in_flight -= 1


async def _stream(
    request: web.Request,
    stats: _Stats,
    cfg: _Config,
    body: dict[str, Any],
    model: str,
    rid: str,
    created: int,
    n: int,
    usage: dict[str, int],
    chat: bool,
) -> web.StreamResponse:
    """Write one SSE event per token; a client hanging up mid-way counts as cancelled."""
    resp = wire.sse_response(model)
    try:
        await resp.prepare(request)
        for i in range(max(n, 1)):
            if i and cfg.token_delay_s > 0:
                await asyncio.sleep(cfg.token_delay_s)
            await resp.write(wire.chunk(rid, created, model, chat, [wire.token_choice(i, n, chat)]))
        if cfg.stream_usage and wire.wants_usage(body):
            await resp.write(wire.chunk(rid, created, model, chat, [], {"usage": usage}))
        await resp.write(wire.DONE)
        await resp.write_eof()
    except asyncio.CancelledError:
        stats.cancelled += 1
        raise
    except ConnectionResetError:
        # Nothing more can be sent; returning lets aiohttp tidy up quietly.
        stats.cancelled += 1
        return resp
    stats.completed += 1
    return resp


def _embedding(text: str, dims: int) -> list[float]:
    """Deterministic in the input so tests can compare vectors across calls."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for (v,) in struct.iter_unpack("<H", digest):
            out.append(round(v / 32767.5 - 1.0, 6))
        counter += 1
    return out[:dims]


async def _embeddings(request: web.Request) -> web.Response:
    stats = _track(request)
    if (failure := _injected_failure(request, stats)) is not None:
        return failure
    parsed = await wire.read_request(request, request.app[_CONFIG].models)
    if isinstance(parsed, web.Response):
        return parsed
    body, model = parsed
    raw = body.get("input")
    if isinstance(raw, str):
        inputs: list[Any] = [raw]
    elif isinstance(raw, list) and raw:
        # A flat list of ints is one tokenised input; otherwise one input per item.
        inputs = [raw] if all(isinstance(x, int) for x in raw) else raw
    else:
        return wire.error(400, "'input' must be a string or a non-empty list.")
    dims = body.get("dimensions")
    if dims is None:
        dims = _EMBED_DIMS
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 4096:
        return wire.error(400, "'dimensions' must be an integer between 1 and 4096.")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(inputs):
        vec = _embedding(item if isinstance(item, str) else wire.DUMPS(item), dims)
        emb: list[float] | str = vec
        if as_base64:
            # The openai SDK asks for base64 by default and decodes float32 little-endian.
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(len(x) if isinstance(x, list) else _count_words(x) for x in inputs)
    stats.completed += 1
    return wire.json_response(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        model,
    )


def build_app(
    models: list[str],
    tokens: int = 16,
    token_delay_s: float = 0.0,
    latency_s: float = 0.0,
    fail_status: int = 0,
    fail_count: int = -1,
    stream_usage: bool = True,
) -> web.Application:
    """Build the app without binding, so tests can host it in-process on any loop."""
    app = web.Application()
    app[_CONFIG] = _Config(
        models=frozenset(models),
        model_list=list(dict.fromkeys(models)),
        tokens=tokens,
        token_delay_s=token_delay_s,
        latency_s=latency_s,
        fail_status=fail_status,
        fail_count=fail_count,
        stream_usage=stream_usage,
    )
    app[_STATS] = _Stats()
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/stats", _stats)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/embeddings", _embeddings)
    return app


async def _serve(args: argparse.Namespace) -> None:
    app = build_app(
        args.model,
        tokens=args.tokens,
        token_delay_s=args.token_delay_ms / 1000.0,
        latency_s=args.latency_ms / 1000.0,
        fail_status=args.fail_status,
        fail_count=args.fail_count,
        stream_usage=not args.no_stream_usage,
    )
    await serve_until_signal(web.AppRunner(app, access_log=None), args.host, args.port)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m opentela.testing.fake_upstream",
        description="Fake OpenAI-compatible upstream for tests and benchmarks.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--model", action="append", required=True, help="repeatable")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--token-delay-ms", type=float, default=0.0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument(
        "--fail-status",
        type=int,
        default=0,
        help="answer API calls with this HTTP status (e.g. 503) and an OpenAI-shaped error",
    )
    p.add_argument(
        "--fail-count",
        type=int,
        default=-1,
        help="with --fail-status: fail only the first N API calls (default: all)",
    )
    p.add_argument(
        "--no-stream-usage",
        action="store_true",
        help="never send a usage chunk in streams, even when asked (like llama-cpp-python)",
    )
    args = p.parse_args(argv)
    if args.fail_status and not 400 <= args.fail_status <= 599:
        p.error("--fail-status must be an HTTP error status (400-599)")
    return args


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; exits cleanly on SIGINT/SIGTERM."""
    args = _parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
