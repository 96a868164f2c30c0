"""A pooled stream found dead is replaced once by a new one to the same peer (forward.py)."""

from __future__ import annotations

import pytest
import trio

from opentela.gateway.forward import Forwarder
from opentela.overlay import framing
from opentela.overlay.host import StreamAborted, StreamFailed, StreamTimeout

ANSWER = [framing.Frame(framing.RESP_HEAD, {"status": 200}), framing.Frame(framing.END)]


class _Stream:
    def __init__(self, fail: BaseException | None) -> None:
        self.fail = fail
        self.remote_peer = "peer"
        self.broken = False

    async def send(self, *frames: bytes) -> None:
        pass

    async def receive(self, timeout_s: float) -> list[framing.Frame]:
        if self.fail is not None:
            raise self.fail
        return ANSWER


class _Pool:
    """Holds one idle stream that fails with ``first``; new streams answer."""

    def __init__(self, first: BaseException, via: str | None = None) -> None:
        self.idle = [_Stream(first)]
        self.acquired: list[bool] = []  # fresh? per acquire
        self.discarded = 0
        self.via = via  # the relay that carried the last stream (``StreamPool.relay_of``)
        self.relays_failed: list[str] = []

    def idle_for(self, peer_id: str) -> int:
        return len(self.idle)

    def relay_of(self, peer_id: str) -> str | None:
        return self.via

    def relay_failed(self, peer_id: str, relay_id: str) -> None:
        self.relays_failed.append(relay_id)
        self.via = None

    async def acquire(self, peer_id: str, fresh: bool = False) -> _Stream:
        self.acquired.append(fresh)
        return _Stream(None) if fresh or not self.idle else self.idle.pop()

    async def release(self, stream: _Stream) -> None:
        pass

    async def discard(self, stream: _Stream) -> None:
        self.discarded += 1


def _exchange(pool: _Pool) -> list[framing.Frame]:
    fwd = Forwarder(pool, "self", 5.0, None, "")  # type: ignore[arg-type]

    async def main() -> list[framing.Frame]:
        _, frames, finished = await fwd._exchange("peer", {}, b"")
        assert finished
        return frames

    out = trio.run(main)
    retried = pool.acquired == [False, True]
    assert fwd.stats.stale_streams + fwd.stats.relay_retries == (1 if retried else 0)
    return out


def test_a_dead_pooled_stream_is_replaced_by_a_new_one() -> None:
    pool = _Pool(StreamFailed("stream from peer ended: StreamReset()"))
    assert _exchange(pool) == ANSWER
    assert pool.acquired == [False, True] and pool.discarded == 1


@pytest.mark.parametrize(
    "failure",
    [StreamTimeout("no data from peer in 5s"), StreamAborted("peer is dead")],
    ids=["slow peer: another try would wait as long", "dead peer: nothing to redial"],
)
def test_no_second_try_for_a_slow_or_dead_peer(failure: StreamFailed) -> None:
    pool = _Pool(failure)
    with pytest.raises(type(failure)):
        _exchange(pool)
    assert pool.acquired == [False]


def test_a_stream_broken_at_its_relay_is_retried_through_another() -> None:
    """A fresh (not reused) stream through a relay that died: the relay is marked failed and
    the request goes once more, on a new stream (``open_stream`` then picks another relay)."""
    pool = _Pool(StreamFailed("stream from peer ended: StreamReset()"), via="R1")
    pool.idle = []  # nothing pooled: the failing stream is the fresh one
    first = _Stream(StreamFailed("stream from peer ended: StreamReset()"))
    streams = [first, _Stream(None)]

    async def acquire(peer_id: str, fresh: bool = False) -> _Stream:
        pool.acquired.append(fresh)
        return streams.pop(0)

    pool.acquire = acquire  # type: ignore[method-assign]
    assert _exchange(pool) == ANSWER
    assert pool.acquired == [False, True] and pool.relays_failed == ["R1"]
