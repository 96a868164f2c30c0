"""An OpenAI-compatible test server whose latency follows an LLM server's cost model.

``fake_upstream`` answers at a fixed speed whatever the load; this one behaves like one vLLM
replica, so benchmarks can tell routing policies apart (queueing, prefix-cache locality):

* at most ``slots`` requests run at once; the others wait in a FIFO queue;
* a running request first pays prefill for the prompt tokens its prefix cache does not hold,
  ``uncached * prefill_ms_per_token / speed``, which also yields the first output token; each
  output token then takes ``decode_ms_per_token / speed`` (``max_tokens`` of them; the first is
  sent after one decode step, so decode time is ``output * decode cost`` as stated). Batching
  effects (decode slowing as the batch grows) are not modelled: ``slots`` stands for them;
* tokens are whitespace-separated words of the prompt; a chat prompt is its messages in
  order, each preceded by a ``<|role|>`` word as a chat template would. Real tokenizers give
  ~1.3 tokens per English word; only ratios between requests matter here;
* the prefix cache works like vLLM's automatic prefix caching: the prompt is cut into
  ``block_tokens``-token blocks, each named by a hash chained over all blocks before it, so a
  block is reused only after an identical prefix. Only full blocks are cached, a hit is a run
  of leading blocks, at least one prompt token is always computed, and blocks are evicted
  least recently used, a prompt's last block before its first (a prefix outlives its tails).
  Capacity is ``cache_tokens`` (rounded down to whole blocks).

``/metrics`` exposes vLLM's Prometheus names (``vllm:num_requests_running``,
``vllm:num_requests_waiting``, ``vllm:prefix_cache_queries_total``,
``vllm:prefix_cache_hits_total``), ``/stats`` the same as JSON, and ``usage`` carries
``prompt_tokens_details.cached_tokens`` as vLLM and OpenAI report it.

A client that disconnects frees its slot (or its place in the queue) at once, as vLLM aborts
the request; ``build_runner`` turns on the aiohttp handler cancellation that needs.

CLI::

    python -m opentela.testing.cost_upstream --host 127.0.0.1 --port 0 --model NAME \
        [--slots 4] [--speed 1.0] [--prefill-ms-per-token 0.2] [--decode-ms-per-token 5] \
        [--cache-tokens 20000] [--block-tokens 16] [--tokens 16]

It prints ``READY http://HOST:PORT`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import openai_wire as wire
from .serving import serve_until_signal

# -- pure parts: tokens, prefix cache, cost ----------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p if isinstance(p, str) else str(p.get("text") or "")
            for p in content
            if isinstance(p, str | dict)
        )
    return ""


def prompt_tokens(body: dict[str, Any], *, chat: bool) -> list[str]:
    """The request's prompt as "tokens" (words; see the module docstring)."""
    if chat:
        out: list[str] = []
        messages = body.get("messages")
        for msg in messages if isinstance(messages, list) else []:
            if isinstance(msg, dict):
                out.append(f"<|{msg.get('role', 'user')}|>")
                out.extend(_text(msg.get("content")).split())
        return out
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):  # one prompt as token ids
            return [str(t) for t in prompt]
        prompt = prompt[0] if prompt else ""  # a batch: the first prompt stands for it
    if isinstance(prompt, list):  # token ids
        return [str(t) for t in prompt]
    return prompt.split() if isinstance(prompt, str) else []


def block_hashes(tokens: list[str], block_tokens: int) -> list[bytes]:
    """One hash per *full* block, each chained over the previous one (vLLM's scheme)."""
    out: list[bytes] = []
    prev = b""
    for start in range(0, len(tokens) - block_tokens + 1, block_tokens):
        h = hashlib.blake2b(prev, digest_size=16)
        h.update("\x00".join(tokens[start : start + block_tokens]).encode())
        prev = h.digest()
        out.append(prev)
    return out


class PrefixCache:
    """LRU set of prompt blocks; ``admit`` is a lookup and an insert in one step."""

    def __init__(self, capacity_tokens: int, block_tokens: int = 16) -> None:
        if block_tokens < 1:
            raise ValueError("block_tokens must be >= 1")
        self.block_tokens = block_tokens
        self.capacity_blocks = max(0, capacity_tokens) // block_tokens
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup(self, tokens: list[str]) -> int:
        """Leading tokens already cached (whole blocks); does not change the LRU order."""
        hit = 0
        for h in block_hashes(tokens, self.block_tokens):
            if h not in self._blocks:
                break
            hit += self.block_tokens
        return hit

    def admit(self, tokens: list[str]) -> int:
        """Tokens of ``tokens`` served from the cache, then cache all of its full blocks.

        At least one token is always left to compute, as a server must run the model on the
        last prompt token to produce the first output token.
        """
        hashes = block_hashes(tokens, self.block_tokens)
        hit = 0
        for h in hashes:
            if h not in self._blocks:
                break
            hit += self.block_tokens
        if self.capacity_blocks:
            # Touch the tail first so the prompt's leading blocks end up most recently used.
            for h in reversed(hashes):
                self._blocks[h] = None
                self._blocks.move_to_end(h)
            while len(self._blocks) > self.capacity_blocks:
                self._blocks.popitem(last=False)
        return min(hit, max(0, len(tokens) - 1))


@dataclass(frozen=True)
class CostModel:
    prefill_ms_per_token: float = 0.2
    decode_ms_per_token: float = 5.0
    speed: float = 1.0

    def prefill_s(self, uncached_tokens: int) -> float:
        return max(0, uncached_tokens) * self.prefill_ms_per_token / self.speed / 1000.0

    def decode_s(self, output_tokens: int) -> float:
        return max(0, output_tokens) * self.decode_ms_per_token / self.speed / 1000.0

    def service_s(self, prompt_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """Time a request holds its slot."""
        return self.prefill_s(prompt_tokens - cached_tokens) + self.decode_s(output_tokens)


class FifoSlots:
    """A counting semaphore that serves waiters strictly in arrival order.

    ``running`` and ``waiting`` are what ``/metrics`` reports. A waiter cancelled in the queue
    leaves it; one cancelled just after being handed a slot passes the slot on.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        if self.running < self.slots and not self._waiters:
            self.running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted and cancelled in the same instant: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        # Hand the slot straight to the next waiter, so ``running`` never dips in between and
        # no newcomer can overtake the queue.
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.running -= 1


# -- the server --------------------------------------------------------------------------------


@dataclass
class _Config:
    models: frozenset[str]
    model_list: list[str]
    tokens: int
    cost: CostModel


@dataclass
class _State:
    slots: FifoSlots
    cache: PrefixCache
    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "running": self.slots.running,
            "queue": self.slots.waiting,
            "slots": self.slots.slots,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "hit_ratio": self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0,
            "output_tokens": self.output_tokens,
            "cache_blocks": len(self.cache),
            "cache_capacity_blocks": self.cache.capacity_blocks,
        }


_CONFIG = web.AppKey("cost_upstream_config", _Config)
_STATE = web.AppKey("cost_upstream_state", _State)


async def _models(request: web.Request) -> web.Response:
    data = [
        {"id": m, "object": "model", "created": 0, "owned_by": "cost-upstream"}
        for m in request.app[_CONFIG].model_list
    ]
    return wire.json_response({"object": "list", "data": data})


async def _health(_request: web.Request) -> web.Response:
    return wire.json_response({"status": "ok"})


async def _stats(request: web.Request) -> web.Response:
    return wire.json_response(request.app[_STATE].stats())


def metrics_text(stats: dict[str, Any], model: str) -> str:
    """Prometheus text exposition with vLLM's metric names."""
    label = '{model_name="' + model.replace("\\", "\\\\").replace('"', '\\"') + '"}'
    rows = [
        ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", "running"),
        ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", "queue"),
        ("vllm:prefix_cache_queries_total", "counter", "Prefix cache queries, in queried tokens.", "prompt_tokens"),
        ("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in cached tokens.", "cached_tokens"),
        ("vllm:request_success_total", "counter", "Count of successfully processed requests.", "completed"),
    ]  # fmt: skip
    out: list[str] = []
    for name, kind, doc, key in rows:
        out += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", f"{name}{label} {stats[key]:.1f}"]
    return "\n".join(out) + "\n"


async def _metrics(request: web.Request) -> web.Response:
    text = metrics_text(request.app[_STATE].stats(), request.app[_CONFIG].model_list[0])
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    cfg, st = request.app[_CONFIG], request.app[_STATE]
    parsed = await wire.read_generation(request, cfg.models, cfg.tokens)
    if isinstance(parsed, web.Response):
        return parsed
    body, model, n = parsed
    tokens = prompt_tokens(body, chat=chat)
    st.requests += 1
    rid = f"{'chatcmpl' if chat else 'cmpl'}-cost{next(st.ids):08x}"
    gen = _Gen(request, cfg, st, body, model, rid, int(time.time()), n, tokens, chat)
    try:
        if body.get("stream") is True:
            return await gen.stream()
        return await gen.whole()
    except asyncio.CancelledError:
        st.cancelled += 1
        raise


@dataclass
class _Gen:
    request: web.Request
    cfg: _Config
    st: _State
    body: dict[str, Any]
    model: str
    rid: str
    created: int
    n: int
    tokens: list[str]
    chat: bool
    cached: int = 0
    holding: bool = False  # owns a slot

    def usage(self) -> dict[str, Any]:
        p = len(self.tokens)
        return {
            "prompt_tokens": p,
            "completion_tokens": self.n,
            "total_tokens": p + self.n,
            "prompt_tokens_details": {"cached_tokens": self.cached},
        }

    async def _start(self) -> float:
        """Wait for a slot, then consult the cache; returns when prefill ends (loop time)."""
        await self.st.slots.acquire()
        self.holding = True
        self.cached = self.st.cache.admit(self.tokens)
        self.st.prompt_tokens += len(self.tokens)
        self.st.cached_tokens += self.cached
        prefill = self.cfg.cost.prefill_s(len(self.tokens) - self.cached)
        return asyncio.get_running_loop().time() + prefill

    async def whole(self) -> web.Response:
        try:
            t0 = await self._start()
            await _sleep_until(t0 + self.cfg.cost.decode_s(self.n))
        finally:
            self._release()
        self._done()
        return wire.json_response(
            wire.completion(self.rid, self.created, self.model, self.n, self.usage(), self.chat),
            self.model,
        )

    def _release(self) -> None:
        if self.holding:
            self.holding = False
            self.st.slots.release()

    def _done(self) -> None:
        self.st.completed += 1
        self.st.output_tokens += self.n

    def _chunk(self, choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
        return wire.chunk(self.rid, self.created, self.model, self.chat, choices, extra)

    async def stream(self) -> web.StreamResponse:
        resp = wire.sse_response(self.model)
        include_usage = wire.wants_usage(self.body)
        step = self.cfg.cost.decode_s(1)
        try:
            # Headers go out at once, as vLLM's do; tokens follow the cost model.
            await resp.prepare(self.request)
            t0 = await self._start()
            n = self.n
            for i in range(max(n, 1)):
                await _sleep_until(t0 + step * (i + 1) if n else t0)
                await resp.write(self._chunk([wire.token_choice(i, n, self.chat)]))
            self._release()
            if include_usage:
                await resp.write(self._chunk([], {"usage": self.usage()}))
            await resp.write(wire.DONE)
            await resp.write_eof()
        except ConnectionResetError:
            self.st.cancelled += 1
            return resp
        finally:
            self._release()
        self._done()
        return resp


async def _sleep_until(deadline: float) -> None:
    """Sleep to an absolute loop time, so per-token delays do not accumulate drift."""
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


def build_app(
    models: list[str],
    *,
    slots: int = 4,
    speed: float = 1.0,
    prefill_ms_per_token: float = 0.2,
    decode_ms_per_token: float = 5.0,
    cache_tokens: int = 20000,
    block_tokens: int = 16,
    tokens: int = 16,
) -> web.Application:
    """Build the app without binding; host it with ``build_runner`` (handler cancellation)."""
    if not models:
        raise ValueError("at least one model")
    if speed <= 0:
        raise ValueError("speed must be > 0")
    app = web.Application()
    app[_CONFIG] = _Config(
        models=frozenset(models),
        model_list=list(dict.fromkeys(models)),
        tokens=tokens,
        cost=CostModel(prefill_ms_per_token, decode_ms_per_token, speed),
    )
    app[_STATE] = _State(FifoSlots(slots), PrefixCache(cache_tokens, block_tokens))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/stats", _stats)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    return app


def build_runner(app: web.Application) -> web.AppRunner:
    """A runner that cancels a handler whose client went away, freeing its slot at once."""
    return web.AppRunner(app, access_log=None, handler_cancellation=True)


async def _serve(args: argparse.Namespace) -> None:
    app = build_app(
        args.model,
        slots=args.slots,
        speed=args.speed,
        prefill_ms_per_token=args.prefill_ms_per_token,
        decode_ms_per_token=args.decode_ms_per_token,
        cache_tokens=args.cache_tokens,
        block_tokens=args.block_tokens,
        tokens=args.tokens,
    )
    await serve_until_signal(build_runner(app), args.host, args.port)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m opentela.testing.cost_upstream",
        description="OpenAI-compatible test upstream with slots, a prefix cache and a cost model.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--model", action="append", required=True, help="repeatable")
    p.add_argument("--slots", type=int, default=4, help="requests running at once")
    p.add_argument("--speed", type=float, default=1.0, help="divides every cost")
    p.add_argument("--prefill-ms-per-token", type=float, default=0.2)
    p.add_argument("--decode-ms-per-token", type=float, default=5.0)
    p.add_argument("--cache-tokens", type=int, default=20000, help="prefix cache capacity")
    p.add_argument("--block-tokens", type=int, default=16, help="prefix cache block size")
    p.add_argument("--tokens", type=int, default=16, help="output tokens without max_tokens")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; exits cleanly on SIGINT/SIGTERM."""
    args = _parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
