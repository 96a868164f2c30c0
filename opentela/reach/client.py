"""A private node's reservations: keep ``WANTED`` relays, move to another when one dies, come
back to a relay that restarted.

Each reservation is a task holding one ``reserve`` stream (``reach/relay.py``) open to a relay
over a connection we dialed. The stream breaking (the relay died, restarted or dropped us), no
keep-alive for ``3 * KEEPALIVE_S`` (a hung relay), or membership declaring the relay dead ends
it; the relay then waits out a backoff and the next candidate is reserved at once. Every change
of the set is published in our record (``relays``), which is how entries learn where to reach
us.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog
import trio

from ..overlay import framing
from ..overlay.host import RELAY_HANDSHAKE_S, RELAY_PROTOCOL, Host, StreamFailed
from .choose import WANTED, Candidate, choose, next_backoff
from .relay import KEEPALIVE_S

CHECK_S = 1.0  # how often the set is reconsidered when nothing happened

log = structlog.get_logger("opentela.relay")


class RelayClient:
    def __init__(
        self,
        host: Host,
        candidates: Callable[[], Iterable[Candidate]],
        alive: Callable[[str], bool],
        on_change: Callable[[tuple[str, ...]], None],
        wanted: int = WANTED,
    ) -> None:
        self.host = host
        self.candidates = candidates
        self.alive = alive  # membership's view: a dead relay is dropped without waiting
        self.on_change = on_change
        self.wanted = wanted
        self.held: dict[str, trio.CancelScope] = {}  # relay -> its reservation task
        self._order: list[str] = []  # held relays in the order they were reserved
        self._trying: set[str] = set()
        self._backoff_s: dict[str, float] = {}
        self._backoff_until: dict[str, float] = {}
        self._wake = trio.Event()
        self.stats = {"reserved": 0, "lost": 0, "failed": 0}

    @property
    def relays(self) -> tuple[str, ...]:
        return tuple(r for r in self._order if r in self.held)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                now = trio.current_time()
                for relay, scope in list(self.held.items()):
                    if not self.alive(relay):
                        scope.cancel()  # membership says it is dead: do not wait for TCP
                busy = set(self.held) | self._trying
                for relay in choose(
                    self.host.peer_id,
                    self.candidates(),
                    busy,
                    self._backoff_until,
                    now,
                    self.wanted,
                ):
                    self._trying.add(relay)
                    nursery.start_soon(self._hold, relay)
                with trio.move_on_after(CHECK_S):
                    await self._wake.wait()
                self._wake = trio.Event()

    def _changed(self) -> None:
        self.on_change(self.relays)
        self._wake.set()

    async def _hold(self, relay: str) -> None:
        reserved = False
        try:
            with trio.CancelScope() as scope:
                try:
                    stream = await self.host.open_direct(relay, RELAY_PROTOCOL, redial=True)
                    try:
                        await stream.send(framing.encode(framing.BODY, {"op": "reserve"}))
                        frames = await stream.receive(RELAY_HANDSHAKE_S)
                        reply = frames[0].payload if frames[0].kind == framing.BODY else None
                        if not isinstance(reply, dict) or not reply.get("ok"):
                            why = reply.get("error") if isinstance(reply, dict) else "garbled"
                            raise StreamFailed(f"relay {relay[-8:]} refused: {why}")
                        reserved = True
                        self._trying.discard(relay)
                        self.held[relay] = scope
                        self._order = [r for r in self._order if r != relay] + [relay]
                        self._backoff_s.pop(relay, None)
                        self.stats["reserved"] += 1
                        log.info("relay.reservation", relay=relay, relays=len(self.held))
                        self._changed()
                        while True:  # keep-alives; a silence of three means a hung relay
                            await stream.receive(3 * KEEPALIVE_S)
                    finally:
                        await stream.reset()
                except StreamFailed as exc:
                    if reserved:
                        log.warning("relay.reservation_lost", relay=relay, error=str(exc))
                    else:
                        self.stats["failed"] += 1
                        log.info("relay.reservation_failed", relay=relay, error=str(exc))
            if reserved and scope.cancelled_caught:
                log.warning("relay.reservation_lost", relay=relay, error="relay declared dead")
        finally:
            self._trying.discard(relay)
            wait = next_backoff(self._backoff_s.get(relay))
            self._backoff_s[relay] = wait
            self._backoff_until[relay] = trio.current_time() + wait
            if self.held.pop(relay, None) is not None:
                self.stats["lost"] += 1
                self._changed()
            else:
                self._wake.set()
