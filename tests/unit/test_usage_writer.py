"""UsageWriter (gateway/usage.py): batching, merging, sorting, retry, flush, pending."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from opentela.gateway.usage import UsageWriter, merge_rows, window_share
from opentela.store.usage import UsageRow

T0 = 1_700_000_080.0  # 40 s into a minute


def row(key: str = "k1", model: str = "m", now: float = T0, **counts: int) -> UsageRow:
    return UsageRow.at(now, key, "o", model, **counts)


class FakeStore:
    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.batches: list[list[UsageRow]] = []
        self.calls = 0
        self.lock = threading.Lock()

    def add_usage(self, rows: list[UsageRow]) -> None:
        with self.lock:
            self.calls += 1
            if self.fail:
                self.fail -= 1
                raise RuntimeError("database is locked")
            self.batches.append(list(rows))

    def requests(self) -> int:
        return sum(r.requests for b in self.batches for r in b)


async def until(cond: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_merge_sums_same_key_and_sorts() -> None:
    rows = [
        row("k2", prompt_tokens=1),
        row("k1", "b", prompt_tokens=2),
        row("k1", "a", completion_tokens=3),
        row("k2", prompt_tokens=4, errors=1, now=T0 + 5),
    ]
    merged = merge_rows(rows)
    assert [(r.key_id, r.model) for r in merged] == [("k1", "a"), ("k1", "b"), ("k2", "m")]
    k2 = merged[2]
    assert (k2.requests, k2.prompt_tokens, k2.errors, k2.last_active) == (2, 5, 1, T0 + 5)


def test_window_share_weights_previous_minute() -> None:
    rows = [row(prompt_tokens=60), row(now=T0 - 60, prompt_tokens=60), row("other")]
    # 40 s into the minute: the previous minute counts for its last 20 s (1/3).
    req, tok = window_share(rows, "k1", T0)
    assert abs(req - (1 + 1 / 3)) < 1e-9 and abs(tok - 80) < 1e-9
    assert window_share(rows, "k1", T0 + 120) == (0, 0)


def test_batches_within_interval() -> None:
    async def main() -> None:
        store = FakeStore()
        w = UsageWriter(lambda: store, interval_s=0.05)
        for _ in range(5):
            w.add(row(prompt_tokens=1))
        assert w.pending("k1", T0) == (5, 5)
        await until(lambda: store.requests() == 5)
        assert len(store.batches) == 1 and len(store.batches[0]) == 1  # merged to one row
        # Stored rows leave pending once the write returns (briefly counted twice: safe side).
        await until(lambda: w.pending("k1", T0) == (0, 0))

    asyncio.run(main())


def test_pending_after_a_cached_read_includes_rows_stored_since() -> None:
    async def main() -> None:
        store = FakeStore()
        clock = [T0]
        w = UsageWriter(lambda: store, interval_s=3600.0, clock=lambda: clock[0])
        w.add(row(prompt_tokens=10))
        read_at = T0 - 0.1  # a window read just before the write: it lacks these rows
        clock[0] = T0 + 0.2
        assert await w.flush()
        assert w.pending("k1", T0) == (0, 0)
        assert w.pending("k1", T0, stored_after=read_at) == (1, 10)
        assert w.pending("k1", T0, stored_after=T0 + 0.3) == (0, 0)  # read after: in the store

    asyncio.run(main())


def test_full_batch_written_at_once() -> None:
    async def main() -> None:
        store = FakeStore()
        w = UsageWriter(lambda: store, interval_s=60.0, max_rows=10)
        for i in range(10):
            w.add(row(f"k{i:02d}"))
        await until(lambda: w.written == 10)
        keys = [r.key_id for r in store.batches[0]]
        assert keys == sorted(keys)

    asyncio.run(main())


def test_failure_retried_with_backoff_and_logged_once(capsys: Any) -> None:
    async def main() -> None:
        store = FakeStore(fail=3)
        w = UsageWriter(lambda: store, interval_s=0.01, max_backoff_s=0.05)
        w.add(row(prompt_tokens=2))
        w.add(row(prompt_tokens=3))
        await until(lambda: w.written == 2)  # counted on the loop once the write returned
        assert store.requests() == 2 and store.calls == 4
        assert store.batches[0][0].prompt_tokens == 5
        assert w._failures == 0

    asyncio.run(main())
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("usage.write_failed") == 1
    assert "usage.write_recovered" in text


def test_flush_writes_everything_now() -> None:
    async def main() -> None:
        store = FakeStore()
        w = UsageWriter(lambda: store, interval_s=3600.0)
        w.add(row())
        w.add(row("k2"))
        assert await w.flush()
        assert store.requests() == 2
        assert await w.flush()  # nothing left: fine
        assert store.calls == 1

    asyncio.run(main())


def test_flush_waits_for_a_write_in_flight_and_retries() -> None:
    async def main() -> None:
        store = FakeStore(fail=1)
        w = UsageWriter(lambda: store, interval_s=0.0)
        w.add(row())
        await asyncio.sleep(0)  # the timer fires: a write is (about to be) in flight
        assert await w.flush()
        assert store.requests() == 1

    asyncio.run(main())


def test_rows_added_during_a_write_are_not_lost() -> None:
    async def main() -> None:
        store = FakeStore()
        w = UsageWriter(lambda: store, interval_s=0.01)
        for i in range(50):
            w.add(row(prompt_tokens=1))
            if i % 7 == 0:
                await asyncio.sleep(0.003)
        await until(lambda: w.written == 50)
        assert sum(r.prompt_tokens for b in store.batches for r in b) == 50

    asyncio.run(main())


def test_real_sqlite_store(tmp_path: Path) -> None:
    from opentela.store import open_store

    store = open_store(tmp_path)
    try:

        async def main() -> None:
            w = UsageWriter(lambda: store, interval_s=0.01)
            w.add(row(prompt_tokens=3, completion_tokens=4))
            w.add(row(prompt_tokens=1, completion_tokens=1, aborted=1))
            w.add(row("k2", errors=1))
            assert await w.flush()

        asyncio.run(main())
        by_model = store.usage_by_model(30, T0, key_id="k1")
        assert len(by_model) == 1
        m = by_model[0]
        assert (m["requests"], m["prompt_tokens"], m["completion_tokens"]) == (2, 4, 5)
        assert store.window_usage("k1", T0)[0] == 2
    finally:
        store.close()
