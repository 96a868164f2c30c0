"""aiohttp's HTTP server with every error OpenAI-shaped and logged once through structlog.

Three places produce errors, and each gets the same JSON body:

- route handlers (``ApiError``, aiohttp's ``HTTPException`` such as 404/405/413, anything
  unexpected): ``errors_middleware``;
- aiohttp's own dispatch around the middlewares (an ``Expect:`` header it refuses, a
  middleware bug): the wrapper ``JsonErrorRunner`` puts around the application;
- the HTTP parser, before any handler runs (a header over the limit, a garbled request line):
  aiohttp answers those from ``RequestHandler.handle_error`` with a ``text/plain`` page that
  quotes the offending bytes; ``_JsonRequestHandler`` overrides that one method.

aiohttp has no public setting for the per-connection handler class, so ``JsonErrorRunner``
(an ``AppRunner``) switches the server it builds to a subclass that makes ours. Everything
else (shutdown, handler cancellation, limits) stays aiohttp's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from .errors import ApiError, error_body, http_error_type, parser_error

log = structlog.get_logger("opentela.gateway")

MAX_REQUEST_LINE = 8190
"""Bytes in ``METHOD /target HTTP/1.1`` (aiohttp's default); longer → 414."""
MAX_HEADER_FIELD = 8192
"""Bytes in one header name or value; longer → 431. Differs from ``MAX_REQUEST_LINE`` on
purpose: the parser reports only the limit it hit, and that tells the two apart."""

HEADER_TIMEOUT_S = 10.0
"""From a connection's first byte (or the first byte of its next request) to the end of the
request's headers; aiohttp has no such bound (a client sending one byte a second held a
connection and a task for ever). Beyond: JSON 408 and the connection is closed."""
BODY_TIMEOUT_S = 60.0
"""From the end of the headers to the end of the body: reading it then fails with a JSON 408
(aiohttp reads bodies without a deadline)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyTimeout(TimeoutError):
    """The client did not send the request body within ``BODY_TIMEOUT_S``. A TimeoutError, so
    aiohttp's lingering read after the handler treats it as the timeout it is."""


def json_error(
    status: int, message: str, type_: str, code: str | None = None, **headers: str
) -> web.Response:
    return web.json_response(
        error_body(message, type_, code), status=status, headers=headers or None
    )


def _http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    status = exc.status
    headers: dict[str, str] = {}
    if status == 404:
        message, code = f"no route for {request.method} {request.path[:200]}", "not_found"
    elif status == 405:
        allowed = exc.headers.get("Allow", "")
        headers["Allow"] = allowed
        message = f"{request.method} is not allowed on {request.path[:200]}; allowed: {allowed}"
        code = "method_not_allowed"
    elif status == 413:
        message, code = exc.text or "request body too large", "request_too_large"
    else:
        text = exc.text or ""
        message = text if text and not text.startswith(f"{status}:") else exc.reason
        code = exc.reason.lower().replace(" ", "_") if exc.reason else None
    if "Retry-After" in exc.headers:
        headers["Retry-After"] = exc.headers["Retry-After"]
    return json_error(status, message, http_error_type(status), code, **headers)


def error_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The JSON answer for an exception out of a handler; re-raises what is not an error
    (redirects, a client that went away, a response already under way)."""
    if isinstance(exc, ApiError):
        log.info("request.rejected", path=request.path, status=exc.status, reason=exc.message)
        return json_error(exc.status, exc.message, exc.type, exc.code, **exc.headers)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return _http_exception(request, exc)
    if isinstance(exc, BodyTimeout):
        log.info("request.body_timeout", path=request.path)
        return json_error(408, str(exc), "invalid_request_error", "request_timeout")
    if isinstance(exc, RequestPayloadError | HttpProcessingError):
        # The body broke while being read: bad chunked encoding, short Content-Length...
        log.info(
            "request.bad_body", path=request.path, error=(str(exc).splitlines() or [""])[0][:200]
        )
        return json_error(
            400, "malformed request body framing", "invalid_request_error", "bad_request"
        )
    if isinstance(exc, ConnectionError):
        raise exc  # the client went away: nobody to answer
    if request.writer.output_size > 0:
        # Headers are out: an error body cannot follow. aiohttp closes the connection.
        log.error("request.failed_midresponse", path=request.path, exc_info=exc)
        raise ConnectionError("the response had started when the handler failed") from exc
    if isinstance(exc, TimeoutError):
        log.warning("request.timeout", path=request.path)
        return json_error(504, "the request timed out", "timeout", "timeout")
    log.error("request.internal_error", method=request.method, path=request.path, exc_info=exc)
    return json_error(
        500,
        "internal error while handling the request; the node logged the cause",
        "internal_error",
        "internal_error",
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        return error_response(request, exc)


class _JsonRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol; the error page differs, and slow clients are cut off
    (``HEADER_TIMEOUT_S``, ``BODY_TIMEOUT_S``)."""

    __slots__ = ("_header_timer", "_partial")
    header_timeout_s = HEADER_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S

    def connection_made(self, transport: Any) -> None:
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial = False  # bytes of a request whose headers are not complete yet
        super().connection_made(transport)
        self._arm_header_timer()  # a connection that never completes a request is closed too

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self._loop.call_later(self.header_timeout_s, self._headers_late)

    def data_received(self, data: bytes) -> None:
        before = len(self._messages)
        count = self._request_count
        super().data_received(data)
        if self._request_count > count:
            self._partial = False
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            for _msg, payload in list(self._messages)[before:]:
                if not payload.is_eof():
                    self._loop.call_later(
                        self.body_timeout_s, _body_late, payload, self.body_timeout_s
                    )
        elif self._waiter is not None:  # bytes of a request whose headers are not complete
            self._partial = True
            self._arm_header_timer()

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._messages or self._waiter is None or self.transport is None:
            return  # a request is being handled: its headers were complete
        if not self._partial:
            self.force_close()  # connected, never said a word: nobody to answer
            return
        log.info("request.header_timeout", remote=self.remote_address())
        body = json.dumps(
            error_body(
                f"request headers not received within {self.header_timeout_s:g}s",
                "invalid_request_error",
                "request_timeout",
            )
        ).encode()
        with contextlib.suppress(Exception):
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        self.force_close()

    def remote_address(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; cannot send an error")
        if status >= 500:
            if status == 504:
                log.warning("request.timeout", path=request.path)
                resp = json_error(504, "the request timed out", "timeout", "timeout")
            else:
                log.error("request.internal_error", path=request.path, exc_info=exc)
                resp = json_error(
                    status,
                    "internal error while handling the request",
                    "internal_error",
                    "internal_error",
                )
        else:
            status, text, code = parser_error(exc, self.max_field_size)
            # Non-HTTP bytes on the port (scanners, TLS) are routine: keep them out of the log.
            first = self._request_count <= 1
            level = log.debug if isinstance(exc, BadHttpMethod) and first else log.info
            level("request.unparsable", status=status, reason=text, remote=request.remote)
            resp = json_error(status, text, "invalid_request_error", code)
        resp.force_close()
        return resp


class _JsonServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonRequestHandler(self, loop=self._loop, **self._kwargs)


def _last_resort(handler: Handler) -> Handler:
    """Around the whole application: what escapes aiohttp's dispatch (e.g. the 417 of an
    unknown ``Expect:``) is answered in JSON too."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            return error_response(request, exc)

    return wrapped


class JsonErrorRunner(web.AppRunner):
    """``web.AppRunner`` whose server answers parser errors in JSON (see module doc)."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_REQUEST_LINE)
        kwargs.setdefault("max_field_size", MAX_HEADER_FIELD)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonServer
        server.request_handler = _last_resort(server.request_handler)
        return server


def _body_late(payload: Any, seconds: float) -> None:
    """The body deadline of one request: its reader fails, and the handler answers 408."""
    if not payload.is_eof() and payload.exception() is None:
        payload.set_exception(BodyTimeout(f"request body not received within {seconds:g}s"))
