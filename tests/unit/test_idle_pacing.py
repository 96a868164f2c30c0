"""What an idle node does per second: no polling ticks, anti-entropy and metrics reads paced
by activity, the peer memory written when it matters (issue 12, scope 4)."""

from __future__ import annotations

import math
import random

import trio
import trio.testing

from opentela.overlay.host import StreamFailed
from opentela.overlay.membership.runtime import MembershipRuntime
from opentela.overlay.membership.state import Membership, MembershipConfig
from opentela.overlay.peer_memory import Remembered
from opentela.overlay.rejoin import SEEN_RESOLUTION_S, worth_writing
from opentela.table.sync import AE_ACTIVE_S, AE_QUIET_S, ae_round_due
from opentela.worker.agent import IDLE_METRICS_S, metrics_due


class _Host:
    """Just enough of ``Host`` for the membership runtime: every dial fails."""

    peer_id = "self"

    def set_handler(self, protocol: str, handler: object) -> None:
        pass

    async def open_stream(self, peer_id: str, protocol: str, redial: bool = False) -> object:
        raise StreamFailed("no network in this test")


class _Counting(Membership):
    ticks = 0

    def tick(self, now_s: float, rng: random.Random) -> list:
        self.ticks += 1
        return super().tick(now_s, rng)


def _ticks_in(seconds: float, members: int) -> int:
    m = _Counting("self", MembershipConfig(probe_interval_s=0.25, probe_timeout_s=0.1))
    rt = MembershipRuntime(_Host(), m, lambda effect: None, random.Random(1))  # type: ignore[arg-type]

    async def main() -> None:
        async with trio.open_nursery() as n:
            await n.start(rt.run)
            for i in range(members):
                rt.join(f"peer{i}", [])
            await trio.sleep(seconds)
            n.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return m.ticks


def test_membership_runtime_sleeps_until_its_next_timer() -> None:
    # Alone: nothing to time, so (almost) no ticks; the old 50 ms cap made 200 in 10 s.
    assert _ticks_in(10.0, 0) <= 2
    # With members (unreachable here: probed, suspected, down, then retried every second):
    # ticks at its timers only, far from the 20 a second of a polling loop.
    ticks = _ticks_in(10.0, 2)
    assert 3 <= ticks <= 60, ticks


def test_anti_entropy_rounds_follow_activity() -> None:
    changed = 0.0
    assert ae_round_due(10.0, changed, 5.0, False)  # the table changed a moment ago
    assert ae_round_due(AE_ACTIVE_S - 1, changed, AE_ACTIVE_S - 6, False)
    quiet = AE_ACTIVE_S + 100
    assert not ae_round_due(quiet, changed, quiet - 5, False)  # quiet: skip ...
    assert ae_round_due(quiet, changed, quiet - AE_QUIET_S, False)  # ... until AE_QUIET_S
    assert ae_round_due(quiet, changed, quiet - 5, True)  # a peer came or went: at once
    assert ae_round_due(0.0, changed, -math.inf, False)  # the first round


def test_backend_metrics_are_read_every_tick_only_under_load() -> None:
    assert not metrics_due(0.25, 0, 0, 0)
    assert not metrics_due(0.25, 0, 0, None)
    assert metrics_due(IDLE_METRICS_S, 0, 0, 0)
    assert metrics_due(0.25, 1, 0, 0)  # in flight here
    assert metrics_due(0.25, 0, 3, 0)  # load still published
    assert metrics_due(0.25, 0, 0, 2)  # the backend has other clients' work


def test_peer_memory_is_written_when_it_matters() -> None:
    a = {"p1": Remembered(("/ip4/127.0.0.1/tcp/1/p2p/p1",), 1000.0)}
    same_but_seen_later = {"p1": Remembered(a["p1"].addrs, 1000.0 + 5)}
    assert not worth_writing(same_but_seen_later, a)
    assert worth_writing({"p1": Remembered(a["p1"].addrs, 1000.0 + SEEN_RESOLUTION_S)}, a)
    assert worth_writing({"p1": Remembered(("/ip4/127.0.0.1/tcp/2/p2p/p1",), 1000.0)}, a)
    assert worth_writing({}, a) and worth_writing({**a, "p2": a["p1"]}, a)
