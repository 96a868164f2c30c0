"""The local OpenAI-compatible backend, seen through aiohttp (asyncio side of the bridge)."""

from __future__ import annotations

import json

import aiohttp

from ..httpheaders import CLIENT_CREDENTIALS
from . import bridge
from .framework import (
    LLAMA_CPP_PYTHON,
    framework_of_answer,
    is_llama_cpp_python,
    may_be_llama_cpp_python,
)
from .metrics import BackendLoad
from .metrics import parse as parse_metrics


class BackendError(Exception):
    """The backend could not be reached or answered garbage; the message names the URL."""


def _reason(exc: BaseException) -> str:
    """aiohttp's text for a connection error, e.g. ``ClientConnectorError: Cannot connect to
    host 127.0.0.1:8080 ssl:default [Connect call failed ('127.0.0.1', 8080)]``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Backend:
    def __init__(self, base_url: str, api_key: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key  # --service.api-key: never logged, never in an error message
        self._session: aiohttp.ClientSession | None = None
        self.framework = ""
        """What the backend's last ``/v1/models`` answer says it is (``worker/framework.py``);
        "" until it says."""
        self.kind = ""
        """The backend kind the worker bridges for (``worker/bridge.py``): ``llama-cpp-python``
        once its ``/openapi.json`` said so, else the framework; "" until known."""

    async def open(self) -> None:
        # The worker's own key rides on every request of this session: forwarded ones, the
        # health probe, metrics reads, and the entry's local path (which uses this session).
        # Clients' credentials never get here (dropped at the entry and again in serve.py).
        # No cookie jar: a Set-Cookie from one user's answer must not ride on the next user's.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            auto_decompress=False,  # bytes pass through unchanged, Content-Encoding stays true
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            headers={"Authorization": f"Bearer {self._api_key}"} if self._api_key else None,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Closed while the node stops: a probe or a request still under way gets the error
            # its caller handles, not aiohttp's RuntimeError("Session is closed").
            raise BackendError("backend client is not open")
        return self._session

    async def list_models(self, timeout_s: float = 3.0) -> tuple[str, ...]:
        """``GET /v1/models`` doubles as the health probe (llama.cpp's server has no /health)
        and tells which framework answers (``framework``). Errors name the full URL: a base
        URL given with a path shows up doubled there."""
        url = f"{self.base_url}/v1/models"
        try:
            async with self.session.get(
                url, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                if resp.status != 200:
                    raise BackendError(f"GET {url} answered {resp.status}")
                data = json.loads(await resp.read())
                server = resp.headers.get("Server", "")
        except TimeoutError as exc:
            raise BackendError(f"GET {url}: no answer in {timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:
            raise BackendError(f"GET {url}: {_reason(exc)}") from exc
        except ValueError as exc:
            raise BackendError(f"GET {url} did not answer JSON: {exc}") from exc
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise BackendError(f"GET {url} has no 'data' list")
        self.framework = framework_of_answer(data, server) or self.framework
        if not may_be_llama_cpp_python(data):
            self.kind = self.framework
        elif self.kind != LLAMA_CPP_PYTHON:
            self.kind = LLAMA_CPP_PYTHON if await self._openapi_is_llama_cpp_python() else ""
        return tuple(str(m["id"]) for m in items if isinstance(m, dict) and "id" in m)

    async def _openapi_is_llama_cpp_python(self, timeout_s: float = 3.0) -> bool:
        """Reads ``/openapi.json`` (once per backend start: the answer is remembered while
        ``owned_by`` stays ``"me"``). Any failure means "not known", never a failed probe."""
        try:
            async with self.session.get(
                f"{self.base_url}/openapi.json", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                return resp.status == 200 and is_llama_cpp_python(json.loads(await resp.read()))
        except (TimeoutError, aiohttp.ClientError, ValueError, BackendError):
            return False

    async def count_tokens(
        self, text: str, model: str | None, timeout_s: float = 10.0
    ) -> int | None:
        """llama-cpp-python's ``POST /extras/tokenize/count``: the prompt's exact token count
        (the bridged usage chunk, ``worker/bridge.py``); None when it does not answer."""
        body: dict[str, str] = {"input": text}
        if model:
            body["model"] = model
        try:
            async with self.session.post(
                f"{self.base_url}/extras/tokenize/count",
                json=body,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                if resp.status != 200:
                    return None
                count = json.loads(await resp.read()).get("count")
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError, BackendError):
            return None
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    async def bridge_request(
        self, method: str, path: str, body: bytes
    ) -> tuple[bytes, bridge.UsageSynth | None]:
        """The body to send and, for a stream that asked for usage, what adds the usage chunk
        (``worker/bridge.py``). Both the worker's handler and the entry's local path (a node
        that serves its own model) call this, so a client sees the same answer either way.
        The client's body and None for every kind that needs no bridge."""
        plan = bridge.plan(self.kind, method, path, body)
        if plan is None:
            return body, None
        if plan.usage is not None and plan.tokenize is not None:
            # Before the request, never during it: llama-cpp-python serves one request at a
            # time, and by default a new one interrupts the stream in progress.
            count = await self.count_tokens(plan.tokenize, plan.model)
            if count is not None:
                plan.usage.exact_prompt(count)
        return plan.body, plan.usage

    async def read_load(self, path: str, timeout_s: float = 1.0) -> BackendLoad | None:
        """The backend's own queue (vLLM/SGLang/llama.cpp ``/metrics``, llama.cpp ``/slots``);
        None when the endpoint is missing or says nothing we understand."""
        try:
            async with self.session.get(
                f"{self.base_url}{path}", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                if resp.status != 200:
                    return None
                return parse_metrics(await resp.read())
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def start(
        self, method: str, path: str, headers: list[list[str]], body: bytes
    ) -> aiohttp.ClientResponse:
        """Send a request; the caller reads the body from ``resp.content`` and releases it."""
        url = f"{self.base_url}{path}"
        try:
            # No redirects: a backend's Location must not send the worker to another host.
            return await self.session.request(
                method,
                url,
                headers=[(k, v) for k, v in headers if k.lower() not in CLIENT_CREDENTIALS],
                data=body,
                allow_redirects=False,
            )
        except aiohttp.ClientError as exc:
            raise BackendError(f"{method} {url}: {_reason(exc)}") from exc

    async def start_and_read(
        self, method: str, path: str, headers: list[list[str]], body: bytes
    ) -> tuple[aiohttp.ClientResponse, bytes, bool]:
        """Send a request and read what is already there, in one trip to the asyncio side:
        (response, first bytes, whether that was the whole body). Small JSON answers complete
        here, so the worker can send head, body and end in one frame batch."""
        resp = await self.start(method, path, headers, body)
        try:
            first = await self.read_chunk(resp)
        except BaseException:
            resp.close()
            raise
        return resp, first, resp.content.at_eof()

    @staticmethod
    async def read_chunk(resp: aiohttp.ClientResponse) -> bytes:
        """Whatever is available now; b"" at the end. Never waits for a full buffer, so SSE
        events pass through one by one."""
        try:
            return await resp.content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
