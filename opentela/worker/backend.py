"""The local OpenAI-compatible backend, seen through aiohttp (asyncio side of the bridge)."""

from __future__ import annotations

import json

import aiohttp

from .metrics import BackendLoad
from .metrics import parse as parse_metrics


class BackendError(Exception):
    """The backend could not be reached or answered garbage."""


class Backend:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            auto_decompress=False,  # bytes pass through unchanged, Content-Encoding stays true
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise BackendError("backend client is not open")
        return self._session

    async def list_models(self, timeout_s: float = 3.0) -> tuple[str, ...]:
        """``GET /v1/models`` doubles as the health probe (llama.cpp's server has no /health)."""
        try:
            async with self.session.get(
                f"{self.base_url}/v1/models", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                if resp.status != 200:
                    raise BackendError(f"/v1/models answered {resp.status}")
                data = json.loads(await resp.read())
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise BackendError("/v1/models has no data list")
        return tuple(str(m["id"]) for m in items if isinstance(m, dict) and "id" in m)

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
        try:
            return await self.session.request(
                method, f"{self.base_url}{path}", headers=[(k, v) for k, v in headers], data=body
            )
        except aiohttp.ClientError as exc:
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc

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
