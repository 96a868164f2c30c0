"""The connection budget's decision (pure), and the per-peer senders it relies on: a one-way
stream closed under a sender costs no message, an idle sender lets its stream go."""

from __future__ import annotations

import contextlib
from typing import Any

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.overlay import framing
from opentela.overlay.connections import Conn, ConnectionBudget, to_close
from opentela.overlay.host import StreamFailed, open_host
from opentela.overlay.peer_senders import PeerSenders
from opentela.testing.serving import free_port

NOW = 1000.0


def conns(*specs: tuple[str, float | None, int]) -> list[Conn]:
    return [Conn(pid, last, streams) for pid, last, streams in specs]


def test_under_the_cap_nothing_is_closed() -> None:
    cs = conns(("a", 0.0, 0), ("b", 0.0, 0))
    assert to_close(NOW, cs, 2, frozenset(), 5.0) == []


def test_over_the_cap_the_least_recently_used_idle_ones_go() -> None:
    cs = conns(("a", NOW - 50, 0), ("b", NOW - 10, 0), ("c", NOW - 30, 0), ("d", NOW - 1, 0))
    assert to_close(NOW, cs, 2, frozenset(), 5.0) == ["a", "c"]


def test_never_used_connections_go_first() -> None:
    cs = conns(("a", NOW - 50, 0), ("b", None, 0), ("c", NOW - 1, 0))
    assert to_close(NOW, cs, 2, frozenset(), 5.0) == ["b"]


def test_recently_used_connections_stay_even_over_the_cap() -> None:
    cs = conns(("a", NOW - 1, 0), ("b", NOW - 4.9, 0), ("c", NOW - 20, 0))
    assert to_close(NOW, cs, 1, frozenset(), 5.0) == ["c"]


def test_protected_peers_and_open_streams_are_never_closed() -> None:
    cs = conns(("boot", NOW - 100, 0), ("busy", NOW - 100, 1), ("x", NOW - 60, 0))
    assert to_close(NOW, cs, 1, frozenset({"boot"}), 5.0) == ["x"]
    # Nothing closable: over the cap it stays, rather than breaking a request.
    assert to_close(NOW, cs[:2], 1, frozenset({"boot"}), 5.0) == []


def test_ties_are_broken_by_peer_id_so_the_choice_is_deterministic() -> None:
    cs = conns(("b", NOW - 10, 0), ("a", NOW - 10, 0), ("c", NOW - 10, 0))
    assert to_close(NOW, cs, 1, frozenset(), 5.0) == ["a", "b"]


# -- PeerSenders with a fake host -------------------------------------------------------------


class FakeStream:
    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.frames: list[Any] = []
        self.closed = self.reset_called = False

    async def send(self, *frames: bytes) -> None:
        await trio.lowlevel.checkpoint()
        if self.host.break_next:
            self.host.break_next = False
            raise StreamFailed("connection closed under the stream")
        for f in frames:
            self.frames.extend(fr.payload for fr in framing.Decoder().feed(f))

    async def close(self) -> None:
        self.closed = True

    async def reset(self) -> None:
        self.reset_called = True


class FakeHost:
    peer_id = "self"

    def __init__(self) -> None:
        self.opened: list[FakeStream] = []
        self.break_next = False
        self.unreachable = False

    async def open_stream(self, peer_id: str, protocol: str, *, redial: bool = False) -> Any:
        assert redial
        await trio.lowlevel.checkpoint()
        if self.unreachable:
            raise StreamFailed("dial failed")
        self.opened.append(FakeStream(self))
        return self.opened[-1]


def sent(host: FakeHost) -> list[Any]:
    return [p for s in host.opened for p in s.frames]


def test_senders_keep_one_stream_retry_once_when_it_broke_and_close_when_idle() -> None:
    async def main() -> None:
        host = FakeHost()
        senders = PeerSenders(host, "/t/1", idle_s=5.0)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            await nursery.start(senders.run)
            for i in range(3):
                assert senders.send("p", b"m%d" % i)
            await trio.sleep(0.1)
            assert len(host.opened) == 1 and sent(host) == [b"m0", b"m1", b"m2"]
            host.break_next = True  # the connection budget closed it: resent on a new one
            senders.send("p", b"m3")
            await trio.sleep(0.1)
            assert len(host.opened) == 2 and host.opened[0].reset_called
            assert sent(host)[-1] == b"m3" and senders.stats["dropped"] == 0
            assert senders.active() == 1
            await trio.sleep(5.1)  # idle: stream closed, task gone
            assert host.opened[1].closed and senders.active() == 0
            senders.send("p", b"m4")
            await trio.sleep(0.1)
            assert len(host.opened) == 3 and sent(host)[-1] == b"m4"
            assert senders.stats["sent"] == 5
            assert senders.stats["bytes_sent"] == 5 * len(framing.encode(framing.BODY, b"m0"))
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_senders_drop_when_unreachable_full_or_not_running() -> None:
    async def main() -> None:
        host = FakeHost()
        senders = PeerSenders(host, "/t/1", queue_size=2)  # type: ignore[arg-type]
        assert not senders.send("p", b"x")  # not running
        async with trio.open_nursery() as nursery:
            await nursery.start(senders.run)
            host.unreachable = True
            results = [senders.send("p", b"%d" % i) for i in range(4)]
            assert results == [True, True, False, False]  # queue of 2, the rest dropped
            await trio.sleep(3)
            assert senders.stats["sent"] == 0 and senders.stats["dropped"] == 5
            host.unreachable = False
            senders.send("p", b"back")
            await trio.sleep(0.1)
            assert sent(host) == [b"back"]
            senders.forget("p")
            await trio.sleep(0.1)
            assert senders.active() == 0
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- the driver on real hosts (loopback) -------------------------------------------------------


def test_the_budget_closes_idle_connections_but_not_one_with_a_stream_in_use() -> None:
    async def hold(stream: Any) -> None:
        with contextlib.suppress(StreamFailed):
            await stream.receive(30)

    async def main() -> None:
        key = Ed25519PrivateKey.generate
        async with (
            open_host(key(), "127.0.0.1", free_port("127.0.0.1")) as a,
            open_host(key(), "127.0.0.1", free_port("127.0.0.1")) as b,
            open_host(key(), "127.0.0.1", free_port("127.0.0.1")) as c,
            open_host(key(), "127.0.0.1", free_port("127.0.0.1")) as d,
        ):
            for h in (b, c, d):
                h.set_handler("/one-way/1", hold)
                h.set_handler("/request/1", hold)
                a.add_peer_addrs(h.peer_id, h.addrs())
            one_way = await a.open_stream(b.peer_id, "/one-way/1")  # reopens on demand
            busy = await a.open_stream(c.peer_id, "/request/1")  # a request in flight
            await a.open_stream(d.peer_id, "/one-way/1")
            await one_way.send(framing.encode(framing.BODY, b"x"))  # b: used last
            want = {b.peer_id: 0, c.peer_id: 1, d.peer_id: 0}
            with trio.fail_after(5):  # libp2p's identify exchange on each new connection
                while a.open_streams(frozenset({"/one-way/1"})) != want:
                    await trio.sleep(0.01)
            budget = ConnectionBudget(
                a,
                1,
                one_way=frozenset({"/one-way/1"}),
                protected=lambda: frozenset({b.peer_id}),
                idle_s=0.0,
            )
            assert budget.plan(trio.current_time()) == [d.peer_id]  # b protected, c in use
            budget.protected = frozenset
            assert budget.plan(trio.current_time()) == [d.peer_id, b.peer_id]  # LRU first
            assert await budget.sweep() == 2
            with trio.fail_after(5):
                while set(a.connected_peers()) != {c.peer_id}:
                    await trio.sleep(0.01)
            assert budget.stats == {"connections": 1, "connections_closed": 2}
            await busy.send(framing.encode(framing.BODY, b"still works"))

    trio.run(main)
