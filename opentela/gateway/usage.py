"""Usage accounting at the entry node: what each forwarded API call costs, counted exactly.

``UsageRecorder.prepare`` readies a request (merging ``stream_options.include_usage`` into a
stream) and hands back a ``UsageObserver`` (a ``forward.ResponseObserver``) that
``Forwarder.forward`` feeds the response to.
The observer reads the backend's ``usage`` (the JSON body, or the usage chunk of a stream),
removes the usage chunk the client did not ask for, and, for a backend that sends no usage
(llama-cpp-python), estimates from the content chunks. One ``UsageRow`` per request goes to
the ``UsageWriter``, which batches, merges, sorts and retries the store writes.

Why here and not in the worker: the entry node is where the key is known, and where an
aborted stream is seen; a worker cannot be trusted with another node's budget.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from ..access import quota
from ..openai_text import (
    DUMPS,
    EVENT_END,
    MAX_SSE_EVENT,
    estimate_prompt_tokens,
    has_content,
    sse_data,
    text_len,
)
from ..store.usage import UsageRow

log = structlog.get_logger("opentela.usage")

ANONYMOUS_KEY = "-"
ANONYMOUS_OWNER = "anonymous"
# Paths whose calls are counted (chat, completions, embeddings); anything else is not usage.
COUNTED_SUFFIXES = ("/chat/completions", "/completions", "/embeddings")
# A non-streamed answer larger than this is not parsed for usage (the tokens are estimated).
MAX_JSON_BODY = 16 * 1024 * 1024


def counted(path: str) -> bool:
    """Whether a call to ``path`` (query allowed) is usage: chat, completions, embeddings."""
    return path.split("?", 1)[0].rstrip("/").endswith(COUNTED_SUFFIXES)


def _usage_of(obj: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of a ``usage`` object, or None when there is none."""
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return None
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens") or 0
    if not isinstance(p, int) or not isinstance(c, int) or isinstance(p, bool):
        return None
    return p, c


class SseUsage:
    """Incremental SSE reader: events may be split across chunks at any byte.

    ``strip`` (the client did not ask for usage): the usage chunk is removed from the client's
    bytes (a chunk that also carries choices keeps them, only its ``usage`` field goes), and
    a partial event is held back until it is complete. Otherwise the client's bytes are the
    backend's, untouched, and events are only read.
    """

    def __init__(self, strip: bool) -> None:
        self.strip = strip
        self.usage: tuple[int, int] | None = None
        self.usage_estimated = False  # the usage chunk says so (a worker's bridge estimated it)
        self.content_chunks = 0
        self.error = False
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        self._buf += chunk
        last = 0
        out: list[bytes] = []
        for m in EVENT_END.finditer(self._buf):
            event = bytes(self._buf[last : m.end()])
            last = m.end()
            kept = self._event(event, m.end() - m.start())
            if self.strip:
                out.append(kept)
        del self._buf[:last]
        if len(self._buf) > MAX_SSE_EVENT:
            # No event is this large: not ours to read; hand it on rather than hold it.
            out.append(bytes(self._buf))
            self._buf.clear()
        if not self.strip:
            return chunk
        return b"".join(out)

    def _event(self, event: bytes, sep_len: int) -> bytes:
        """Reads one event; returns what the client gets of it (with ``strip``)."""
        payload = sse_data(event)
        if payload is None:
            return event
        if not payload.startswith(b"{"):
            return event  # [DONE], or something that is not ours to read
        try:
            obj = json.loads(payload)
        except ValueError:
            return event
        if not isinstance(obj, dict):
            return event
        if "error" in obj and "choices" not in obj:
            self.error = True
        if has_content(obj):
            self.content_chunks += 1
        usage = _usage_of(obj)
        if usage is None:
            return event
        self.usage = usage  # continuous usage stats are cumulative: the last one counts
        self.usage_estimated = obj["usage"].get("estimated") is True
        if not self.strip:
            return event
        if not obj.get("choices"):
            return b""  # the chunk the client did not ask for: gone
        del obj["usage"]
        return b"data: " + DUMPS(obj).encode() + event[-sep_len:]


class UsageObserver:
    """One request's accounting; ``done`` (called once by the handler) emits its row."""

    def __init__(
        self,
        recorder: UsageRecorder,
        body: dict[str, Any],
        key_id: str,
        owner: str,
        model: str,
        stream: bool,
        client_asked: bool,
    ) -> None:
        self.recorder = recorder
        self.body = body
        self.key_id = key_id
        self.owner = owner
        self.model = model
        self.stream = stream
        self.retries = 0
        self.status: int | None = None
        self.peer: str | None = None
        self.first_byte: float | None = None  # perf_counter() of the first body byte
        self.complete = False
        self.sse: SseUsage | None = None
        self._client_asked = client_asked
        self._json = bytearray()
        self._json_over = False
        self.row: UsageRow | None = None
        self.started = time.perf_counter()  # TTFT is first_byte - started (status page)
        # perf_counter() of the first and the last body chunk that carried generated text
        # (the decode span ``decode_rate`` measures).
        self._first_token_s: float | None = None
        self._last_token_s: float | None = None

    def on_head(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        self.status = status
        sse = False
        for k, v in headers:
            lk = k.lower()
            if lk == "content-type" and "text/event-stream" in v:
                sse = True
            elif lk == "x-computing-node":
                self.peer = v
        if sse:
            self.sse = SseUsage(strip=not self._client_asked)

    def on_body(self, chunk: bytes) -> bytes:
        if self.first_byte is None and chunk:
            self.first_byte = time.perf_counter()
        if self.sse is not None:
            before = self.sse.content_chunks
            out = self.sse.feed(chunk)
            if self.sse.content_chunks > before:
                self._last_token_s = time.perf_counter()
                if self._first_token_s is None:
                    self._first_token_s = self._last_token_s
            return out
        if not self._json_over:
            if len(self._json) + len(chunk) > MAX_JSON_BODY:
                self._json_over = True
                self._json.clear()
            else:
                self._json += chunk
        return chunk

    def on_end(self, complete: bool) -> None:
        self.complete = complete

    @property
    def first_token(self) -> float | None:
        """``perf_counter()`` of the first body chunk of a stream that carried generated text
        (TTFT is ``first_token - started``), None when no such chunk came."""
        return self._first_token_s

    def decode_rate(self) -> float | None:
        """Tokens per second between the first and the last chunk of generated text of a
        complete streamed answer (``forward.ResponseObserver``), else None. Both ends are
        seen here, after the same relay hops, so the hops' delay cancels out: what is left
        is the replica's own per-token speed."""
        sse, first, last = self.sse, self._first_token_s, self._last_token_s
        if not self.complete or sse is None or first is None or last is None or last <= first:
            return None
        if self.status is None or self.status >= 400 or sse.error or sse.content_chunks < 2:
            return None
        tokens = sse.usage[1] if sse.usage is not None else sse.content_chunks
        # The span starts after the first chunk: count the tokens of the other chunks.
        per_chunk = max(1.0, tokens / sse.content_chunks)
        return (sse.content_chunks - 1) * per_chunk / (last - first)

    def done(self, status: int | None = None) -> UsageRow:
        """The request is over (``status``: what the client got, when the forwarder answered
        itself). Builds the row once and hands it to the recorder's sink."""
        if self.row is not None:
            return self.row
        now = self.recorder.clock()
        counts: dict[str, int] = {}
        status = self.status if self.status is not None else status
        if status is None:
            counts["aborted"] = 1  # gone before any answer: nothing was generated for it
        elif status >= 400:
            counts["errors"] = 1
        else:
            usage, estimated = self._tokens()
            counts["prompt_tokens"], counts["completion_tokens"] = usage
            if estimated:
                counts["estimated"] = 1
            if self.sse is not None and self.sse.error:
                counts["errors"] = 1  # an error event mid-stream: what came before still counts
            elif not self.complete:
                counts["aborted"] = 1
        self.row = UsageRow.at(now, self.key_id, self.owner, self.model, **counts)
        self.recorder.sink(self.row)
        for listen in self.recorder.listeners:  # e.g. the status page's recent window
            listen(self)
        return self.row

    def _tokens(self) -> tuple[tuple[int, int], bool]:
        """(prompt, completion) and whether they are estimated."""
        if self.sse is not None:
            if self.sse.usage is not None:
                return self.sse.usage, self.sse.usage_estimated
            return (estimate_prompt_tokens(self.body), self.sse.content_chunks), True
        if self._json and self.complete:
            try:
                obj = json.loads(self._json)
            except ValueError:
                obj = None
            usage = _usage_of(obj)
            if usage is not None:
                return usage, False
            text = 0
            if isinstance(obj, dict) and isinstance(obj.get("choices"), list):
                text = sum(
                    text_len(c.get("message")) + text_len(c.get("text"))
                    for c in obj["choices"]
                    if isinstance(c, dict)
                )
            return (estimate_prompt_tokens(self.body), (text + 3) // 4), True
        return (estimate_prompt_tokens(self.body), 0), True


class UsageRecorder:
    """Prepares counted requests; every finished request's row goes to ``sink``."""

    def __init__(
        self, sink: Callable[[UsageRow], None], clock: Callable[[], float] = time.time
    ) -> None:
        self.sink = sink
        self.clock = clock
        # Called with the observer once each request's row is built (its status, timings
        # and row are final then); a listener must not raise.
        self.listeners: list[Callable[[UsageObserver], None]] = []

    def prepare(
        self,
        body_obj: dict[str, Any],
        key: Any,
        model: str,
        stream: bool,
        raw: bytes | None = None,
    ) -> tuple[bytes, UsageObserver]:
        """The body to forward and the request's observer. A stream gets
        ``stream_options.include_usage: true`` merged in (other stream options kept); ``raw``
        (the client's bytes) is forwarded as is when nothing had to change."""
        opts = body_obj.get("stream_options")
        asked = isinstance(opts, dict) and opts.get("include_usage") is True
        changed = False
        if stream and not asked and (opts is None or isinstance(opts, dict)):
            body_obj = {**body_obj, "stream_options": {**(opts or {}), "include_usage": True}}
            changed = True
        body = DUMPS(body_obj).encode() if changed or raw is None else raw
        key_id = getattr(key, "id", None) or ANONYMOUS_KEY
        owner = getattr(key, "owner", None) or ANONYMOUS_OWNER
        obs = UsageObserver(self, body_obj, key_id, owner, model, stream, asked)
        return body, obs


async def forward_counted(
    fwd: Any,
    recorder: UsageRecorder | None,
    request: Any,
    targets: list[Any],
    path: str,
    body: bytes,
    obj: dict[str, Any] | None,
    model: str | None,
) -> Any:
    """``fwd.forward`` with usage accounting for a counted call (``counted(path)`` with a JSON
    body naming a model); the observer goes in ``request["otela.usage"]`` for the access log."""
    if recorder is None or obj is None or not model or not counted(path):
        return await fwd.forward(request, targets, path, body, model=model)
    stream = obj.get("stream") is True
    body, obs = recorder.prepare(obj, request.get("otela.key"), model, stream, raw=body)
    request["otela.usage"] = obs
    status: int | None = None
    try:
        resp = await fwd.forward(request, targets, path, body, observer=obs, model=model)
        status = resp.status
        return resp
    finally:
        obs.done(status)


# -- the writer ---------------------------------------------------------------------------------

# How long stored batches are remembered for ``pending(stored_after=...)``: longer than any
# cache of the store's rate window.
KEEP_STORED_S = 5.0


def merge_rows(rows: Iterable[UsageRow]) -> list[UsageRow]:
    """Rows summed per (day, minute, key, model), sorted by that key: fewer upserts, and
    every writer takes row locks in the same order (unordered batches deadlock)."""
    acc: dict[tuple[str, int, str, str], UsageRow] = {}
    for r in rows:
        k = (r.day, r.minute, r.key_id, r.model)
        a = acc.get(k)
        if a is None:
            acc[k] = r
            continue
        acc[k] = UsageRow(
            r.day,
            r.minute,
            r.key_id,
            r.owner,
            r.model,
            a.requests + r.requests,
            a.prompt_tokens + r.prompt_tokens,
            a.completion_tokens + r.completion_tokens,
            a.errors + r.errors,
            a.aborted + r.aborted,
            a.estimated + r.estimated,
            max(a.last_active, r.last_active),
        )
    return [acc[k] for k in sorted(acc, key=lambda k: (k[0], k[2], k[3], k[1]))]


def window_share(rows: Iterable[UsageRow], key_id: str, now: float) -> tuple[float, float]:
    """(requests, tokens) of ``key_id`` in the last 60 s, weighted as ``Store.window_usage``
    weighs minutes (``quota.weighted``): the current one whole, the previous by the part
    still inside the window."""
    cur = quota.minute(now)
    buckets = {cur - 1: [0, 0], cur: [0, 0]}
    for r in rows:
        b = buckets.get(r.minute) if r.key_id == key_id else None
        if b is not None:
            b[0] += r.requests
            b[1] += r.tokens
    prev, this = buckets[cur - 1], buckets[cur]
    return quota.weighted(prev[0], this[0], now), quota.weighted(prev[1], this[1], now)


class UsageWriter:
    """Batches rows to ``store.add_usage``: at most ``interval_s`` after the first row of a
    batch, or at once when ``max_rows`` rows wait (a count, not a sum over the rows: ``add``
    runs per request). 1000: a busy entry commits about once a second, not eight times (5 %
    of its CPU at 800 req/s went to those commits). A failed write keeps its rows and is
    retried with backoff (one warning per failure streak); ``flush`` writes what is left
    (the node's graceful stop). Runs on the asyncio side; store calls go to a thread."""

    def __init__(
        self,
        store: Callable[[], Any],
        interval_s: float = 1.0,
        max_rows: int = 1000,
        max_backoff_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        self._stored: list[tuple[float, list[UsageRow]]] = []  # (stored at, rows), recent
        self.interval_s = interval_s
        self.max_rows = max_rows
        self.max_backoff_s = max_backoff_s
        self._rows: list[UsageRow] = []
        self._writing: list[UsageRow] = []
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self.written = 0  # requests stored (for stats and tests)
        self._flushing = False

    def add(self, row: UsageRow) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.max_rows:
            self._kick()
        elif self._timer is None and self._task is None:
            self._arm(self.interval_s)

    def pending(
        self, key_id: str, now: float, stored_after: float | None = None
    ) -> tuple[float, float]:
        """What this node counted for ``key_id`` in the rate window but has not stored yet.
        ``stored_after`` (``time.time()`` of a cached read of the store's window): rows this
        node stored after it count too, since that read cannot hold them (else a cached
        window plus ``pending`` misses up to a cache lifetime of this node's own use)."""
        rows = [*self._writing, *self._rows]
        if stored_after is not None:
            rows += [r for at, batch in self._stored if at > stored_after for r in batch]
        return window_share(rows, key_id, now)

    def _arm(self, delay: float) -> None:
        if not self._flushing:  # a flush writes everything itself
            self._timer = asyncio.get_running_loop().call_later(delay, self._kick)

    def _kick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is None and not self._flushing:
            self._task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            ok = await self._write_once()
        finally:
            self._task = None
        if self._rows:
            self._arm(self._backoff() if not ok else 0.0 if self._full() else self.interval_s)

    def _full(self) -> bool:
        return len(self._rows) >= self.max_rows

    def _backoff(self) -> float:
        base = max(self.interval_s, 0.1)
        return min(self.max_backoff_s, base * 2 ** min(self._failures - 1, 10))

    async def _write_once(self) -> bool:
        batch, self._rows = merge_rows(self._rows), []
        if not batch:
            return True
        self._writing = batch
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._store_write, batch)
        except Exception as exc:  # any store failure: keep the rows, try again later
            self._rows = batch + self._rows
            self._failures += 1
            if self._failures == 1:
                log.warning("usage.write_failed", rows=len(batch), error=str(exc)[:300])
            return False
        finally:
            self._writing = []
        if self._failures:
            log.info("usage.write_recovered", after_failures=self._failures)
            self._failures = 0
        self.written += sum(r.requests for r in batch)
        at = self._clock()
        self._stored = [(t, b) for t, b in self._stored if t > at - KEEP_STORED_S]
        self._stored.append((at, batch))
        return True

    def _store_write(self, batch: list[UsageRow]) -> None:
        store = self._store()  # in the thread: opening the store may block
        if store is None:
            raise RuntimeError("no usage store")
        store.add_usage(batch)

    async def flush(self, attempts: int = 3) -> bool:
        """Write everything buffered now (the graceful stop); True when nothing is left."""
        self._flushing = True  # no timer or background write starts while we flush
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            while self._task is not None:
                await asyncio.shield(self._task)
            for i in range(attempts):
                if not self._rows:
                    break
                if not await self._write_once():
                    await asyncio.sleep(min(0.2 * 2**i, 1.0))
            if self._rows:
                log.error("usage.lost_on_stop", requests=sum(r.requests for r in self._rows))
        finally:
            self._flushing = False
        if self._rows:
            self._arm(self.interval_s)  # not the stop after all: keep trying in the background
        return not self._rows
