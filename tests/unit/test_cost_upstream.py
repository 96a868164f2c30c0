"""The cost-model upstream: its pure parts first, then the server in-process and as a CLI.

No pytest-asyncio: each async test runs its own loop via asyncio.run, bounded by wait_for.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI

from opentela.testing.cost_upstream import (
    CostModel,
    FifoSlots,
    PrefixCache,
    block_hashes,
    build_app,
    build_runner,
    metrics_text,
    prompt_tokens,
)
from opentela.worker.metrics import BackendLoad, parse_prometheus

MODEL = "cost-llm"
CLI = [sys.executable, "-m", "opentela.testing.cost_upstream"]
TEST_TIMEOUT_S = 20.0


def words(n: int, tag: str = "w") -> list[str]:
    return [f"{tag}{i}" for i in range(n)]


# -- tokens ------------------------------------------------------------------------------------


def test_prompt_tokens_chat_and_completions() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi  there"}, {"type": "x"}]},
        ]
    }
    assert prompt_tokens(chat, chat=True) == [
        "<|system|>",
        "be",
        "brief",
        "<|user|>",
        "hi",
        "there",
    ]
    assert prompt_tokens({"prompt": "a b\nc"}, chat=False) == ["a", "b", "c"]
    assert prompt_tokens({"prompt": ["a b", "c"]}, chat=False) == ["a", "b"]
    assert prompt_tokens({"prompt": [5, 6]}, chat=False) == ["5", "6"]
    assert prompt_tokens({"prompt": [[5, 6], [7]]}, chat=False) == ["5", "6"]
    assert prompt_tokens({"messages": "junk"}, chat=True) == []
    assert prompt_tokens({}, chat=False) == []


# -- prefix cache ------------------------------------------------------------------------------


def test_block_hashes_are_chained_and_full_blocks_only() -> None:
    a = block_hashes(words(40), 16)
    assert len(a) == 2  # 8 trailing tokens do not fill a block
    b = block_hashes(["other", *words(39)[1:]], 16)
    assert a[0] != b[0] and a[1] != b[1]  # same second block, different prefix: different hash
    assert block_hashes([*words(32), "x"], 16) == a
    assert block_hashes(words(15), 16) == []


def test_cache_hits_shared_prefix_only() -> None:
    cache = PrefixCache(capacity_tokens=1000, block_tokens=16)
    assert cache.admit(words(50)) == 0
    assert len(cache) == 3
    assert cache.admit(words(50)) == 48
    assert cache.admit(words(40) + words(30, "z")) == 32  # diverges inside block 3
    assert cache.admit(words(10, "q") + words(40)) == 0  # different start: nothing shared
    assert cache.lookup(words(64)) == 48


def test_cache_always_computes_one_token() -> None:
    cache = PrefixCache(1000, 16)
    cache.admit(words(32))
    assert cache.admit(words(32)) == 31
    assert cache.admit([]) == 0


def test_cache_capacity_and_lru_evicts_tails_first() -> None:
    cache = PrefixCache(capacity_tokens=64, block_tokens=16)  # 4 blocks
    cache.admit(words(48, "a"))  # 3 blocks
    cache.admit(words(32, "b"))  # 2 more: one of a's goes, its tail
    assert len(cache) == 4
    assert cache.lookup(words(48, "a")) == 32
    cache.admit(words(64, "c"))  # fills the cache alone
    assert cache.lookup(words(64, "c")) == 64
    assert cache.lookup(words(48, "a")) == 0
    assert cache.lookup(words(32, "b")) == 0


def test_cache_recency_protects_hot_prefixes() -> None:
    cache = PrefixCache(capacity_tokens=96, block_tokens=16)  # 6 blocks
    hot = words(32, "hot")
    cache.admit(hot)
    for i in range(10):
        assert cache.admit(hot) == 31
        cache.admit(words(32, f"cold{i}"))
    assert cache.lookup(hot) == 32


def test_cache_disabled() -> None:
    cache = PrefixCache(capacity_tokens=0)
    cache.admit(words(64))
    assert cache.admit(words(64)) == 0
    assert len(cache) == 0
    with pytest.raises(ValueError):
        PrefixCache(100, 0)


# -- cost model --------------------------------------------------------------------------------


def test_cost_model() -> None:
    cost = CostModel(prefill_ms_per_token=0.5, decode_ms_per_token=10, speed=2.0)
    assert cost.prefill_s(1000) == pytest.approx(0.25)
    assert cost.decode_s(20) == pytest.approx(0.1)
    assert cost.service_s(1000, 800, 20) == pytest.approx(0.05 + 0.1)
    assert cost.prefill_s(-5) == 0.0


# -- slots -------------------------------------------------------------------------------------


def test_slots_are_fifo_and_cancel_safe() -> None:
    async def main() -> None:
        slots = FifoSlots(2)
        order: list[str] = []

        async def job(name: str, hold: asyncio.Event) -> None:
            await slots.acquire()
            order.append(name)
            try:
                await hold.wait()
            finally:
                slots.release()

        holds = {n: asyncio.Event() for n in "abcde"}
        tasks = {}
        for n in "abcde":
            tasks[n] = asyncio.create_task(job(n, holds[n]))
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert order == ["a", "b"]
        assert (slots.running, slots.waiting) == (2, 3)
        tasks["c"].cancel()  # leaves the queue
        await asyncio.sleep(0)
        assert slots.waiting == 2
        holds["b"].set()
        await asyncio.sleep(0.01)
        assert order == ["a", "b", "d"]
        assert (slots.running, slots.waiting) == (2, 1)
        holds["a"].set()  # a's slot goes straight to "e", the last in the queue
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        for n in "de":
            holds[n].set()
        await asyncio.wait_for(asyncio.gather(tasks["d"], tasks["e"], tasks["a"]), 5)
        assert order == ["a", "b", "d", "e"]
        assert (slots.running, slots.waiting) == (0, 0)

    asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))


def test_slot_granted_then_cancelled_is_passed_on() -> None:
    async def main() -> None:
        slots = FifoSlots(1)
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire())
        third = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        slots.release()  # hands the slot to ``waiter`` ...
        waiter.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.wait_for(third, 5)
        assert (slots.running, slots.waiting) == (1, 0)
        slots.release()
        assert slots.running == 0

    asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))


def test_metrics_text_reads_back() -> None:
    stats = {"running": 3, "queue": 2, "prompt_tokens": 10, "cached_tokens": 4, "completed": 1}
    text = metrics_text(stats, 'odd "name"')
    assert parse_prometheus(text) == BackendLoad(3, 2)
    assert 'model_name="odd \\"name\\""' in text


# -- the server --------------------------------------------------------------------------------


@asynccontextmanager
async def _serve(**kw: Any) -> AsyncIterator[str]:
    runner = build_runner(build_app([MODEL], **kw))
    await runner.setup()
    try:
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _run(fn: Callable[[str, aiohttp.ClientSession], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        async with _serve(**kw) as base, aiohttp.ClientSession() as s:
            await fn(base, s)

    asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))


async def _post(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with s.post(url, json=body) as r:
        return r.status, await r.json()


async def _get(s: aiohttp.ClientSession, url: str) -> Any:
    async with s.get(url) as r:
        return await r.json() if r.content_type == "application/json" else await r.text()


def _chat(text: str, **kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **kw}


def test_server_queue_cache_and_metrics() -> None:
    """One slot: a second request queues behind the first (seen in /metrics), and a repeated
    prompt is served from the prefix cache (seen in usage, /stats and its latency)."""

    async def body(base: str, s: aiohttp.ClientSession) -> None:
        prompt = " ".join(words(159))  # + the role word = 160 tokens = 10 blocks
        url = f"{base}/v1/chat/completions"
        t0 = time.monotonic()
        first = asyncio.create_task(_post(s, url, _chat(prompt, max_tokens=4)))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(_post(s, url, _chat(prompt, max_tokens=4)))
        load = None
        for _ in range(100):  # bounded poll: until the second one is seen waiting
            load = parse_prometheus(await _get(s, f"{base}/metrics"))
            if load == BackendLoad(1, 1):
                break
            await asyncio.sleep(0.01)
        assert load == BackendLoad(1, 1)
        (st1, r1), (st2, r2) = await first, await second
        elapsed = time.monotonic() - t0
        assert st1 == st2 == 200
        assert r1["usage"]["prompt_tokens"] == 160
        assert r1["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert r2["usage"]["prompt_tokens_details"]["cached_tokens"] == 159
        assert r1["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3"
        # First: 160 x 2 ms prefill + 4 x 10 ms decode = 0.36 s; second: 1 token + 40 ms.
        assert 0.36 <= elapsed < 2.0
        stats = await _get(s, f"{base}/stats")
        assert stats["requests"] == stats["completed"] == 2
        assert (stats["running"], stats["queue"]) == (0, 0)
        assert stats["prompt_tokens"] == 320 and stats["cached_tokens"] == 159
        assert stats["hit_ratio"] == pytest.approx(159 / 320)
        assert parse_prometheus(await _get(s, f"{base}/metrics")) == BackendLoad(0, 0)

    _run(body, slots=1, prefill_ms_per_token=2.0, decode_ms_per_token=10.0)


def test_server_cached_prompt_is_faster() -> None:
    async def body(base: str, s: aiohttp.ClientSession) -> None:
        url = f"{base}/v1/completions"
        req = {"model": MODEL, "prompt": " ".join(words(400)), "max_tokens": 1}
        times = []
        for _ in range(2):
            t0 = time.monotonic()
            status, _ = await _post(s, url, req)
            times.append(time.monotonic() - t0)
            assert status == 200
        assert times[0] >= 0.4  # 400 tokens x 1 ms
        assert times[1] < times[0] / 2

    _run(body, prefill_ms_per_token=1.0, decode_ms_per_token=1.0)


def test_server_streams_for_the_sdk() -> None:
    async def main() -> None:
        async with _serve(decode_ms_per_token=1.0) as base:
            client = AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=10)
            try:
                stream = await client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "hello there"}],
                    max_tokens=5,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                chunks = [c async for c in stream]
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                assert text == "tok0 tok1 tok2 tok3 tok4"
                assert chunks[-1].usage is not None
                assert chunks[-1].usage.completion_tokens == 5
                assert chunks[-1].usage.prompt_tokens == 3
                finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
                assert finishes[-1] == "length" and set(finishes[:-1]) == {None}

                comp = await client.completions.create(
                    model=MODEL, prompt="a b c", max_tokens=3, stream=True
                )
                parts = [c async for c in comp]
                assert "".join(c.choices[0].text for c in parts) == "tok0 tok1 tok2"
                assert all(c.usage is None for c in parts)

                models = await client.models.list()
                assert [m.id for m in models.data] == [MODEL]
            finally:
                await client.close()

    asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))


def test_server_errors() -> None:
    async def body(base: str, s: aiohttp.ClientSession) -> None:
        url = f"{base}/v1/chat/completions"
        status, err = await _post(s, url, {"model": "nope", "messages": []})
        assert status == 404 and err["error"]["code"] == "model_not_found"
        status, err = await _post(s, url, _chat("x", max_tokens=-1))
        assert status == 400
        async with s.post(url, data=b"{not json") as r:
            assert r.status == 400
        assert (await _get(s, f"{base}/stats"))["requests"] == 0

    _run(body)


def test_disconnect_frees_the_slot() -> None:
    """A client that hangs up mid-stream gives its slot to the next request at once."""

    async def body(base: str, s: aiohttp.ClientSession) -> None:
        url = f"{base}/v1/chat/completions"
        async with s.post(url, json=_chat("hi", max_tokens=10_000, stream=True)) as r:
            assert r.status == 200
            assert (await r.content.readline()).startswith(b"data: ")
        # 10 000 tokens x 5 ms would hold the only slot for 50 s.
        t0 = time.monotonic()
        status, resp = await _post(s, url, _chat("next", max_tokens=2))
        assert status == 200 and resp["choices"][0]["message"]["content"] == "tok0 tok1"
        assert time.monotonic() - t0 < 2.0
        stats = await _get(s, f"{base}/stats")
        assert stats["cancelled"] == 1 and stats["completed"] == 1
        assert (stats["running"], stats["queue"]) == (0, 0)

    _run(body, slots=1)


def test_cli_prints_ready_and_serves_metrics() -> None:
    proc = subprocess.Popen(
        [*CLI, "--port", "0", "--model", MODEL, "--slots", "2", "--speed", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        base = line.split()[1]

        async def check() -> None:
            async with aiohttp.ClientSession() as s:
                text = await _get(s, f"{base}/metrics")
                assert parse_prometheus(text) == BackendLoad(0, 0)
                stats = await _get(s, f"{base}/stats")
                assert stats["slots"] == 2
                status, body = await _post(
                    s, f"{base}/v1/completions", {"model": MODEL, "prompt": "x"}
                )
                assert status == 200 and json.dumps(body)

        asyncio.run(asyncio.wait_for(check(), TEST_TIMEOUT_S))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0
