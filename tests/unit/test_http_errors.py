"""Every HTTP error the node produces is OpenAI-shaped JSON with the right status: its route
handlers, aiohttp's routing (404/405/413) and aiohttp's HTTP parser (431, 414, 400), which
answers before any handler or middleware runs; and nothing escapes as a text/plain page.

The gateway is served by the node's own runner (``Gateway.runner``) on a loopback socket; the
parser cases write raw bytes. No pytest-asyncio: each test runs its own loop, bounded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from opentela.gateway.app import Gateway, NodeView
from opentela.gateway.errors import MAX_JSON_DEPTH, json_depth_exceeds, parser_error
from opentela.gateway.server import MAX_HEADER_FIELD, MAX_REQUEST_LINE, JsonErrorRunner
from opentela.table.store import TableStore

TIMEOUT_S = 20.0
ME = "12D3KooWSelf"


def _broken_stats() -> dict[str, Any]:
    raise RuntimeError("stats exploded")


def gateway(max_body: int = 1024) -> Gateway:
    store = TableStore(ME, ttl_s=30)
    view = NodeView(
        peer_id=ME,
        version="test",
        snapshot=lambda: store.snapshot(0.0),
        addrs=lambda: [],
        connected=lambda: [],
        stats=_broken_stats,  # /v1/dnt/stats: an unexpected exception in a handler
        now=lambda: 0.0,
        joined=lambda: True,
    )
    return Gateway(view, None, None, max_body)  # type: ignore[arg-type]  # nothing is forwarded


async def _read_all(request: web.Request) -> web.Response:
    """aiohttp's own body limit (client_max_size) raises 413 from ``request.read``."""
    await request.read()
    return web.json_response({})


@asynccontextmanager
async def serve(runner: web.AppRunner) -> AsyncIterator[int]:
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def run(test: Callable[[int], Awaitable[None]], runner: web.AppRunner | None = None) -> None:
    async def main() -> None:
        async with serve(runner or gateway().runner()) as port:
            await test(port)

    asyncio.run(asyncio.wait_for(main(), TIMEOUT_S))


async def raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Write bytes as they are; read the whole answer (errors close the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        answer = await reader.read()  # to EOF
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def assert_openai_error(headers: dict[str, str], body: bytes, code: str | None = None) -> dict:
    assert headers["content-type"].startswith("application/json"), headers
    err = json.loads(body)["error"]
    assert set(err) >= {"message", "type", "code"} and isinstance(err["message"], str)
    if code is not None:
        assert err["code"] == code, err
    return err


def get(port: int, path: str, **headers: str) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()


# -- the HTTP parser ---------------------------------------------------------------------------


def test_header_over_the_limit_is_json_431_without_echo() -> None:
    secret = "S3CR3T" + "x" * (MAX_HEADER_FIELD + 100)

    async def t(port: int) -> None:
        status, headers, body = await raw(port, get(port, "/v1/models", Authorization=secret))
        assert status == 431
        err = assert_openai_error(headers, body, "request_header_too_large")
        assert "S3CR3T" not in body.decode() and str(MAX_HEADER_FIELD) in err["message"]
        # The limit is the one the README states: a header just under it is fine.
        ok = "y" * (MAX_HEADER_FIELD - 100)
        status, headers, body = await raw(
            port, get(port, "/v1/models", Connection="close", X_Big=ok)
        )
        assert status == 200, body

    run(t)


def test_too_many_headers_is_431() -> None:
    many = {f"X-H{i}": "1" for i in range(200)}

    async def t(port: int) -> None:
        status, headers, body = await raw(port, get(port, "/v1/models", **many))
        assert status == 431
        assert_openai_error(headers, body, "request_header_too_large")

    run(t)


def test_request_line_too_long_is_json_414() -> None:
    async def t(port: int) -> None:
        status, headers, body = await raw(port, get(port, "/v1/" + "a" * (MAX_REQUEST_LINE + 10)))
        assert status == 414
        err = assert_openai_error(headers, body, "request_line_too_long")
        assert "aaaa" not in err["message"]

    run(t)


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/9.Z\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS ClientHello on the HTTP port
    ],
)
def test_malformed_requests_are_json_400(data: bytes) -> None:
    async def t(port: int) -> None:
        status, headers, body = await raw(port, data)
        assert status == 400
        err = assert_openai_error(headers, body, "bad_request")
        assert err["type"] == "invalid_request_error"

    run(t)


def test_broken_chunked_body_is_json_400() -> None:
    async def t(port: int) -> None:
        data = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
        )
        status, headers, body = await raw(port, data)
        assert status == 400
        assert_openai_error(headers, body)

    run(t)


def test_parser_error_mapping_is_pure() -> None:
    from aiohttp import http_exceptions as hx

    assert parser_error(hx.LineTooLong(b"x", 8192), 8192)[0] == 431
    assert parser_error(hx.LineTooLong(b"x", 8190), 8192)[0] == 414
    assert parser_error(hx.BadHttpMessage("Too many headers received"), 8192)[0] == 431
    status, message, _ = parser_error(hx.InvalidHeader(b"tok=SECRET"), 8192)
    assert status == 400 and "SECRET" not in message
    status, message, _ = parser_error(
        hx.BadHttpMessage("Invalid header value char:\n\n  b'SECRET'\n  ^"), 8192
    )
    assert message == "malformed HTTP request: Invalid header value char"
    assert parser_error(None, 8192)[0] == 400


# -- routing and handlers ---------------------------------------------------------------------


def test_unknown_route_is_json_404() -> None:
    async def t(port: int) -> None:
        status, headers, body = await raw(port, get(port, "/nope", Connection="close"))
        assert status == 404
        assert "/nope" in assert_openai_error(headers, body, "not_found")["message"]

    run(t)


def test_wrong_method_is_json_405_with_allow() -> None:
    async def t(port: int) -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/v1/chat/completions") as r:
                assert r.status == 405
                assert r.headers["Allow"] == "POST"
                err = (await r.json())["error"]
                assert err["code"] == "method_not_allowed" and "POST" in err["message"]
            async with s.delete(f"http://127.0.0.1:{port}/v1/models") as r:
                assert r.status == 405
                assert set(r.headers["Allow"].split(",")) >= {"GET", "HEAD"}

    run(t)


def test_unknown_expect_is_json_417() -> None:
    async def t(port: int) -> None:
        data = get(port, "/v1/models", Expect="teapot", Connection="close")
        status, headers, body = await raw(port, data)
        assert status == 417
        assert_openai_error(headers, body)

    run(t)


def test_body_too_large_is_json_413_both_ways() -> None:
    gw = gateway(max_body=100)
    app = gw.app()
    app.router.add_post("/test/read", _read_all)
    runner = JsonErrorRunner(app, access_log=None)

    async def t(port: int) -> None:
        async with aiohttp.ClientSession() as s:
            # The gateway's own limit (Content-Length known up front, and chunked).
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            async with s.post(url, data=b"x" * 500) as r:
                assert r.status == 413
                assert (await r.json())["error"]["code"] == "request_too_large"

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(5):
                    yield b"y" * 50

            async with s.post(url, data=chunks()) as r:
                assert r.status == 413
                assert (await r.json())["error"]["code"] == "request_too_large"
            # aiohttp's client_max_size, for any handler that reads the body itself.
            async with s.post(f"http://127.0.0.1:{port}/test/read", data=b"z" * 500) as r:
                assert r.status == 413
                assert (await r.json())["error"]["code"] == "request_too_large"

    run(t, runner)


def test_handler_exception_is_json_500_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def t(port: int) -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{port}/v1/dnt/stats") as r,
        ):
            assert r.status == 500
            assert r.content_type == "application/json"
            err = (await r.json())["error"]
            assert err["type"] == "internal_error" and err["code"] == "internal_error"
            assert "exploded" not in err["message"]  # internals stay in the log

    with structlog.testing.capture_logs() as logs, caplog.at_level(logging.DEBUG):
        run(t)
    failures = [e for e in logs if e["event"] == "request.internal_error"]
    assert len(failures) == 1, logs
    assert isinstance(failures[0]["exc_info"], RuntimeError)  # the traceback is rendered
    assert not [r for r in caplog.records if r.name.startswith("aiohttp.server")]


# -- JSON depth ---------------------------------------------------------------------------------


def test_deeply_nested_json_is_400_not_500() -> None:
    deep = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    async def t(port: int) -> None:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            async with s.post(url, data=deep) as r:
                assert r.status == 400
                err = (await r.json())["error"]
                assert err["code"] == "json_too_deep" and str(MAX_JSON_DEPTH) in err["message"]

    with structlog.testing.capture_logs() as logs:
        asyncio.run(asyncio.wait_for(_with_big_gateway(t), TIMEOUT_S))
    assert not [e for e in logs if "exc_info" in e], logs


async def _with_big_gateway(test: Callable[[int], Awaitable[None]]) -> None:
    async with serve(gateway(max_body=1 << 20).runner()) as port:
        await test(port)


def test_json_depth_scan() -> None:
    assert not json_depth_exceeds(b"[" * 128 + b"]" * 128)
    assert json_depth_exceeds(b"[" * 129 + b"]" * 129)
    assert json_depth_exceeds(b"[" * 1_000_000)  # stops early; unbalanced is fine
    # Brackets inside strings (escaped quotes included) do not count.
    assert not json_depth_exceeds(json.dumps({"p": "[" * 500 + '\\"[[' + "{" * 500}).encode())
    # Many shallow brackets are not deep.
    wide = json.dumps({"messages": [{"role": "user", "content": "x"}] * 1000}).encode()
    assert not json_depth_exceeds(wide)
    assert json_depth_exceeds(json.dumps({"a": [[[[1]]]]}).encode(), limit=4)
    assert not json_depth_exceeds(json.dumps({"a": [[[1]]]}).encode(), limit=4)
