"""The fake upstream must satisfy the official SDK, or tests built on it prove nothing.

No pytest-asyncio here: each test runs its own loop via asyncio.run, bounded by
asyncio.wait_for so a hung server fails fast instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from openai import AsyncOpenAI

from opentela.testing.fake_upstream import build_app

MODEL = "fake-llm"
TEST_TIMEOUT_S = 20.0


@asynccontextmanager
async def _serve(**kw: Any) -> AsyncIterator[str]:
    """Host the app on a real loopback socket so the SDK goes through actual HTTP."""
    runner = web.AppRunner(build_app([MODEL, "fake-embed"], **kw), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _run(fn: Callable[[str, AsyncOpenAI], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        async with _serve(**kw) as base:
            client = AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=10)
            try:
                await fn(base, client)
            finally:
                await client.close()

    asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.json()


def test_models_and_health() -> None:
    async def body(base: str, client: AsyncOpenAI) -> None:
        models = await client.models.list()
        assert [m.id for m in models.data] == [MODEL, "fake-embed"]
        assert models.data[0].owned_by == "fake"
        assert await _get_json(f"{base}/health") == {"status": "ok"}

    _run(body)


def test_chat_non_stream() -> None:
    async def body(base: str, client: AsyncOpenAI) -> None:
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hello there"}],
            extra_headers={"X-Probe": "42"},
        )
        assert raw.headers["x-upstream-model"] == MODEL
        resp = raw.parse()
        assert resp.object == "chat.completion"
        assert resp.model == MODEL
        assert resp.choices[0].message.role == "assistant"
        assert resp.choices[0].message.content == " ".join(f"tok{i}" for i in range(16))
        assert resp.choices[0].finish_reason == "length"
        assert resp.usage is not None
        assert resp.usage.completion_tokens == 16
        assert resp.usage.prompt_tokens == 2
        assert resp.usage.total_tokens == 18
        stats = await _get_json(f"{base}/stats")
        assert stats["last_headers"]["x-probe"] == "42"
        assert stats["completed"] == 1
        assert stats["in_flight"] == 0

    _run(body)


def test_chat_stream_with_usage_and_max_tokens() -> None:
    async def body(_base: str, client: AsyncOpenAI) -> None:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=5,
        )
        chunks = [c async for c in stream]
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        content = [c for c in chunks if c.choices]
        assert len(content) == 5
        assert content[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in content)
        assert text == "tok0 tok1 tok2 tok3 tok4"
        assert content[-1].choices[0].finish_reason == "length"
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 5

    _run(body)


def test_completions_stream() -> None:
    async def body(_base: str, client: AsyncOpenAI) -> None:
        stream = await client.completions.create(
            model=MODEL, prompt="once upon a time", stream=True, max_tokens=3
        )
        chunks = [c async for c in stream]
        assert [c.object for c in chunks] == ["text_completion"] * 3
        assert "".join(c.choices[0].text for c in chunks) == "tok0 tok1 tok2"
        assert chunks[-1].choices[0].finish_reason == "length"
        assert all(c.usage is None for c in chunks)

        full = await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
        assert full.object == "text_completion"
        assert full.choices[0].text == "tok0 tok1"

    _run(body)


def test_embeddings_deterministic() -> None:
    async def body(_base: str, client: AsyncOpenAI) -> None:
        # The SDK requests base64 by default; ask for floats explicitly too.
        a = await client.embeddings.create(model="fake-embed", input=["alpha", "beta"])
        b = await client.embeddings.create(
            model="fake-embed", input="alpha", encoding_format="float"
        )
        assert [d.index for d in a.data] == [0, 1]
        assert all(len(d.embedding) == 8 for d in a.data)
        assert a.data[0].embedding != a.data[1].embedding
        assert b.data[0].embedding == pytest.approx(a.data[0].embedding, abs=1e-6)
        # Deterministic in the input, not in the process: a fresh server gives the same vector.
        fresh = await _embed_on_fresh_server("alpha")
        assert fresh == b.data[0].embedding
        short = await client.embeddings.create(
            model="fake-embed", input="alpha", dimensions=3, encoding_format="float"
        )
        assert short.data[0].embedding == b.data[0].embedding[:3]

    _run(body)


async def _embed_on_fresh_server(text: str) -> list[float]:
    async with _serve() as base, aiohttp.ClientSession() as s:
        payload = {"model": "fake-embed", "input": text, "encoding_format": "float"}
        async with s.post(f"{base}/v1/embeddings", json=payload) as r:
            assert r.status == 200
            return (await r.json())["data"][0]["embedding"]


def test_unknown_model_is_not_found() -> None:
    async def body(_base: str, client: AsyncOpenAI) -> None:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "x"}]
            )
        assert info.value.code == "model_not_found"

    _run(body)


def test_malformed_bodies_give_400() -> None:
    async def body(base: str, client: AsyncOpenAI) -> None:
        async with aiohttp.ClientSession() as s:
            for path, payload in [
                ("/v1/chat/completions", b"{not json"),
                ("/v1/chat/completions", b'{"messages": []}'),
                ("/v1/completions", b"[1, 2]"),
                ("/v1/embeddings", b'{"model": 3}'),
            ]:
                async with s.post(
                    f"{base}{path}", data=payload, headers={"Content-Type": "application/json"}
                ) as r:
                    assert r.status == 400, (path, payload)
                    err = json.loads(await r.text())["error"]
                    assert err["type"] == "invalid_request_error"
                    assert err["code"] is None
                    assert err["message"]
        # A valid request but for max_tokens: the 400 is about max_tokens, not the messages.
        with pytest.raises(openai.BadRequestError, match="max_tokens"):
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=-1
            )
        assert (await _get_json(f"{base}/stats"))["completed"] == 0

    _run(body)


def test_early_close_counts_as_cancelled() -> None:
    async def body(base: str, client: AsyncOpenAI) -> None:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
        )
        got = 0
        async for _chunk in stream:
            got += 1
            if got == 2:
                break
        await stream.close()

        deadline = time.monotonic() + 5.0
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = await _get_json(f"{base}/stats")
            if stats["cancelled"] >= 1 and stats["in_flight"] == 0:
                break
            await asyncio.sleep(0.02)
        assert stats["cancelled"] == 1, stats
        assert stats["in_flight"] == 0
        assert stats["completed"] == 0

    _run(body, tokens=10_000, token_delay_s=0.005)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_fail_status_fails_the_first_n_api_calls(status: int) -> None:
    async def body(base: str, client: AsyncOpenAI) -> None:
        for _ in range(2):
            with pytest.raises(openai.APIStatusError) as info:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "x"}]
                )
            assert info.value.status_code == status
            assert info.value.code == "injected_failure"
        # Health and the model list keep answering, so a node keeps advertising the model.
        assert [m.id for m in (await client.models.list()).data] == [MODEL, "fake-embed"]
        resp = await client.completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert resp.choices[0].text == "tok0"
        stats = await _get_json(f"{base}/stats")
        assert (stats["api_requests"], stats["failed"], stats["completed"]) == (3, 2, 1)

    _run(body, fail_status=status, fail_count=2)


def test_fail_status_without_count_fails_every_api_call() -> None:
    async def body(base: str, client: AsyncOpenAI) -> None:
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                await client.embeddings.create(model="fake-embed", input="x")
        stats = await _get_json(f"{base}/stats")
        assert (stats["api_requests"], stats["failed"], stats["completed"]) == (3, 3, 0)

    _run(body, fail_status=503)


def test_latency_delays_first_byte() -> None:
    async def body(_base: str, client: AsyncOpenAI) -> None:
        t0 = time.monotonic()
        await client.completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert time.monotonic() - t0 >= 0.1

    _run(body, latency_s=0.1)


def test_cli_prints_ready_and_serves() -> None:
    async def main() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "opentela.testing.fake_upstream",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--model",
            MODEL,
            "--tokens",
            "4",
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
            assert line.startswith("READY http://127.0.0.1:")
            base = line.split(" ", 1)[1]
            assert not base.endswith(":0")
            client = AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=10)
            try:
                resp = await client.completions.create(model=MODEL, prompt="x")
                assert resp.choices[0].text == "tok0 tok1 tok2 tok3"
            finally:
                await client.close()
        finally:
            if proc.returncode is None:
                proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 10) == 0

    asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))
