"""Per-peer limits (issue 9, item 6): the pure limiters, and each place that applies them — the
host's inbound-stream slots, the table protocol's rate and sizes, membership's flood drop,
record size. No network: fake libp2p objects, a fake host for TableSync."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.overlay import framing, identity, limits
from opentela.overlay.host import Host, PeerStream, StreamFailed
from opentela.overlay.membership import messages
from opentela.overlay.membership.runtime import MembershipRuntime
from opentela.overlay.membership.state import Membership
from opentela.table import sync as table_sync
from opentela.table.record import MAX_RECORD_BYTES, NodeRecord, RecordError
from opentela.table.signing import InvalidRecord, sign, verify
from opentela.table.sync import TableSync
from opentela.testing.offline_host import OfflineHost

# -- the pure limiters ----------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    rate = limits.PeerRate(rate=10.0, burst=5)
    assert [rate.allow("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert rate.allow("b", 0.0)  # another peer has its own bucket
    assert not rate.allow("a", 0.05)  # half a token
    assert rate.allow("a", 0.1)  # one token after 1/rate seconds
    assert [rate.allow("a", 100.0) for _ in range(6)] == [True] * 5 + [False]  # capped at burst
    assert rate.refused == 3


def test_token_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = limits.TokenBucket(rate=1.0, burst=1.0, tokens=0.0, updated=10.0)
    assert not bucket.take(5.0)
    assert bucket.take(11.0)


def test_peer_rate_remembers_a_bounded_number_of_peers() -> None:
    rate = limits.PeerRate(rate=1.0, burst=1, max_peers=100)
    for i in range(10_000):
        rate.allow(f"p{i}", 0.0)
    assert len(rate._buckets) == 100


def test_peer_slots_count_per_peer() -> None:
    slots = limits.PeerSlots(limit=2)
    assert slots.acquire("a") and slots.acquire("a") and not slots.acquire("a")
    assert slots.acquire("b")
    slots.release("a")
    assert slots.acquire("a")
    for _ in range(3):
        slots.release("a")
    assert "a" not in slots.active and slots.refused == 1


def test_log_once_per_key_per_period() -> None:
    once = limits.LogOnce(every_s=60.0, max_keys=10)
    assert once.should_log("a", 0.0) and not once.should_log("a", 59.0)
    assert once.should_log("b", 1.0) and once.should_log("a", 60.0)
    for i in range(100):
        once.should_log(str(i), 100.0)
    assert len(once._last) == 10


# -- the host: concurrent inbound streams per peer -------------------------------------------------


class _Conn:
    def __init__(self, peer: str) -> None:
        self.peer_id = peer


class _RawStream:
    def __init__(self, peer: str) -> None:
        self.muxed_conn = _Conn(peer)
        self.was_reset = False

    async def reset(self) -> None:
        self.was_reset = True

    async def close(self) -> None:
        pass


class _RawHost:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def set_stream_handler(self, protocol: str, handler: Any) -> None:
        self.handlers[protocol] = handler


def test_streams_beyond_the_per_peer_limit_are_reset_and_others_served() -> None:
    async def main() -> None:
        raw = _RawHost()
        host = Host(raw, "12D3KooWSelf")
        host.streams.limit = 3
        release = trio.Event()
        served: list[str] = []

        async def handler(stream: PeerStream) -> None:
            served.append(stream.remote_peer)
            await release.wait()

        host.set_handler("/t/1", handler)
        wrapped = raw.handlers["/t/1"]
        flood = [_RawStream("hog") for _ in range(10)]
        other = _RawStream("polite")
        async with trio.open_nursery() as n:
            for s in [*flood, other]:
                n.start_soon(wrapped, s)
            await trio.testing.wait_all_tasks_blocked()
            assert served.count("hog") == 3 and served.count("polite") == 1
            assert sum(s.was_reset for s in flood) == 7 and not other.was_reset
            release.set()
        assert host.streams.active == {}  # every slot given back
        # Slots free again: the peer is served once more.
        release = trio.Event()
        release.set()
        await wrapped(_RawStream("hog"))
        assert served.count("hog") == 4

    trio.run(main)


# -- records: size -------------------------------------------------------------------------------


def _key_and_record(**kw: Any) -> tuple[Ed25519PrivateKey, NodeRecord]:
    key = Ed25519PrivateKey.generate()
    return key, NodeRecord(peer_id=identity.peer_id(key), version=1, timestamp=0.0, **kw)


def test_a_record_over_the_size_limit_is_rejected_with_a_reason() -> None:
    key, rec = _key_and_record(extra={"pad": "x" * (MAX_RECORD_BYTES + 1)})
    signed = sign(rec, key)
    with pytest.raises(InvalidRecord, match="exceeds"):
        verify(signed.pack())
    with pytest.raises(RecordError, match="exceeds"):
        NodeRecord.decode(signed.body)
    key, small = _key_and_record(extra={"pad": "x" * 1000})
    assert verify(sign(small, key).pack()).record == small


# -- the table protocol ----------------------------------------------------------------------------


def make_sync() -> TableSync:
    """Call inside trio (TableSync reads trio's clock)."""
    key, rec = _key_and_record()
    return TableSync(OfflineHost(rec.peer_id), key, rec)  # type: ignore[arg-type]


class _FramesRaw:
    """A raw stream that yields ``data`` then EOF, and decodes what is written back."""

    def __init__(self, data: bytes) -> None:
        self._in = data
        self.replies: list[Any] = []
        self._decoder = framing.Decoder()

    async def read(self, n: int) -> bytes:
        chunk, self._in = self._in[:n], self._in[n:]
        return chunk

    async def write(self, data: bytes) -> None:
        self.replies += [f.payload for f in self._decoder.feed(data)]

    async def close(self) -> None:
        pass

    async def reset(self) -> None:
        pass


def test_table_messages_beyond_the_rate_are_refused_unprocessed() -> None:
    async def main() -> None:
        ts = make_sync()
        n = limits.TABLE_BURST + 50
        raw = _FramesRaw(b"".join(framing.encode(framing.BODY, {"op": "hash"}) for _ in range(n)))
        await ts.handle(PeerStream(raw, "12D3KooWHog"))
        assert len(raw.replies) == n  # every message answered ...
        limited = [r for r in raw.replies if r == {"error": "rate limited"}]
        assert len(limited) >= 50 - 5  # ... the excess with an error (a few tokens refill)
        assert all("digest" in r for r in raw.replies[: limits.TABLE_BURST])
        # Another peer is not affected.
        raw2 = _FramesRaw(framing.encode(framing.BODY, {"op": "hash"}))
        await ts.handle(PeerStream(raw2, "12D3KooWPolite"))
        assert "digest" in raw2.replies[0]

    trio.run(main)


def test_push_with_too_many_records_is_refused() -> None:
    async def main() -> None:
        ts = make_sync()
        msg = {
            "op": "push",
            "records": [[b"", b"", b""]] * (table_sync.MAX_RECORDS_PER_MESSAGE + 1),
        }
        reply = ts._serve(framing.Frame(framing.BODY, msg), "12D3KooWHog")
        assert "error" in reply and ts.stats["rejected"] == 0  # not even looked at
        reply = ts._serve(framing.Frame(framing.BODY, {"op": "push", "records": 7}), "x")
        assert "error" in reply

    trio.run(main)


def test_huge_or_malformed_want_lists_cost_nothing() -> None:
    async def main() -> None:
        ts = make_sync()
        t0 = time.perf_counter()
        huge = {"op": "pull", "want": [f"p{i}" for i in range(10**6)]}
        assert "error" in ts._serve(framing.Frame(framing.BODY, huge), "x")
        assert time.perf_counter() - t0 < 0.5
        odd = {"op": "pull", "want": [[1], {"a": 1}, None, 3, ts.host.peer_id]}
        reply = ts._serve(framing.Frame(framing.BODY, odd), "x")
        assert len(reply["records"]) == 1  # only the str that names a record
        assert "error" in ts._serve(framing.Frame(framing.BODY, {"op": "pull", "want": 5}), "x")

    trio.run(main)


def test_a_peers_digest_is_bounded_and_checked() -> None:
    with pytest.raises(StreamFailed, match="at most"):
        table_sync._remote_digest({f"p{i}": 1 for i in range(table_sync.MAX_DIGEST_ENTRIES + 1)})
    for bad in (None, [1], {"p": "1"}, {"p": -1}, {"p": 2**64}, {"p": 1.5}):
        with pytest.raises(StreamFailed):
            table_sync._remote_digest(bad)
    assert table_sync._remote_digest({"p": 3}) == {"p": 3}


def test_frames_above_the_maximum_are_a_frame_error() -> None:
    header = (framing.MAX_FRAME + 1).to_bytes(4, "big")
    with pytest.raises(framing.FrameError, match="exceeds"):
        framing.Decoder().feed(header)
    with pytest.raises(framing.FrameError):
        framing.encode(framing.BODY, b"x" * framing.MAX_FRAME)


# -- membership: a flood is dropped ----------------------------------------------------------------


def test_a_swim_flood_from_one_peer_is_dropped_beyond_the_rate() -> None:
    async def main() -> None:
        m = Membership("12D3KooWSelf")
        runtime = MembershipRuntime(OfflineHost("12D3KooWSelf"), m, lambda e: None)  # type: ignore[arg-type]
        ping = messages.encode(messages.Ping(1, "=", 0, ()))
        n = limits.SWIM_BURST + 500
        data = b"".join(framing.encode(framing.BODY, ping) for _ in range(n))
        await runtime.handle(PeerStream(_FramesRaw(data), "12D3KooWHog"))
        assert runtime.stats["received"] == n
        assert runtime.stats["flooded"] >= 500 - 10

    trio.run(main)
