"""Keeps a node in its pool: dials bootstraps and remembered members (``redial`` decides which,
``peer_memory`` keeps them across restarts).

Resource handling: dials run in this component's nursery, each bounded by the host's dial
timeout; the memory file is written every ``SAVE_S`` when it changed and once more by ``save()``
when the node stops. Error handling: a dial that fails is logged once per address (the first
failure; later ones at debug level) and once more when the address answers again; an
unwritable home is logged once and the node carries on without a memory.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import structlog
import trio

from . import peer_memory
from .host import WrongPeer
from .redial import BOOTSTRAP, RedialPlan, Target

TICK_S = 0.25  # how often the plan is consulted (dials themselves are backed off per address)
SAVE_S = 5.0  # how often the memory is written when it changed
SEEN_RESOLUTION_S = 600.0  # "last seen" times are written when they moved this much (TTL: a week)
URL_BACKOFF_S = (1.0, 30.0)  # --bootstrap-url: first retry, cap

log = structlog.get_logger("opentela.rejoin")

View = Mapping[str, tuple[tuple[str, ...], str]]  # peer → (addresses, alive|dead|left)


class Rejoiner:
    def __init__(
        self,
        self_id: str,
        home: Path,
        bootstraps: list[str],
        join: Callable[[str], Awaitable[object]],
        alive: Callable[[str], bool],
        live_peers: Callable[[], int],
        view: Callable[[], View],
        rng: random.Random,
        *,
        bootstrap_url: str = "",
        fetch_url: Callable[[str], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.self_id = self_id
        self.home = home
        self.bootstraps = [a for a in bootstraps if f"/p2p/{self_id}" not in a]
        self.bootstrap_url = bootstrap_url
        self._join = join
        self._alive = alive
        self._live_peers = live_peers
        self._view = view
        self._rng = rng
        self._fetch_url = fetch_url
        self._plan = RedialPlan(self_id)
        self._busy: set[str] = set()
        self._url_addrs: list[str] = []
        self._url_next_at = 0.0
        self._url_delay_s = URL_BACKOFF_S[0]
        self._save_failed = False
        self.memory = peer_memory.load(home)
        self._saved = dict(self.memory)
        # A node that was configured to join, or that belonged to a pool before, is not
        # ready until it holds a live peer: alone, it would answer "no such model" for all.
        self.expects_peers = bool(self.bootstraps or bootstrap_url or self.memory)
        self.stats = {"dials": 0, "dial_failures": 0, "joins": 0, "remembered": len(self.memory)}

    def joined(self) -> bool:
        return not self.expects_peers or self._live_peers() > 0

    # -- memory ------------------------------------------------------------------------------

    def remember(self, now_wall: float) -> None:
        self.memory = peer_memory.updated(self.memory, self._view(), now_wall)
        self.stats["remembered"] = len(self.memory)

    def save(self, now_wall: float) -> None:
        """Fold in the current view and write the file if anything changed."""
        self.remember(now_wall)
        if not worth_writing(self.memory, self._saved):
            return
        try:
            peer_memory.save(self.home, self.memory)
            self._saved = dict(self.memory)
        except OSError as exc:
            if not self._save_failed:
                log.warning(
                    "rejoin.memory_unwritable",
                    path=str(self.home / peer_memory.FILE),
                    error=str(exc),
                )
            self._save_failed = True

    # -- dialing -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            last_save = trio.current_time()
            while True:
                now = trio.current_time()
                lonely = self._live_peers() == 0
                if lonely and self.bootstrap_url and now >= self._url_next_at:
                    await self._refresh_url(now)
                if lonely and self.memory:
                    self.remember(time.time())  # members that just left are not worth a dial
                remembered = {pid: r.addrs for pid, r in self.memory.items()}
                for target in self._plan.due(
                    self.bootstraps + self._url_addrs,
                    remembered,
                    self._alive,
                    lonely,
                    self._busy,
                    now,
                    self._rng,
                ):
                    self._busy.add(target.addr)
                    nursery.start_soon(self._dial, target)
                if now - last_save >= SAVE_S:
                    self.save(time.time())
                    last_save = now
                await trio.sleep(TICK_S)

    async def _refresh_url(self, now: float) -> None:
        assert self._fetch_url is not None
        try:
            addrs = await self._fetch_url(self.bootstrap_url)
        except Exception as exc:
            log.warning(
                "bootstrap.url_failed",
                url=self.bootstrap_url,
                error=str(exc),
                retry_in_s=self._url_delay_s,
            )
            self._url_next_at = now + self._url_delay_s
            self._url_delay_s = min(self._url_delay_s * 2, URL_BACKOFF_S[1])
            return
        self._url_addrs = [a for a in addrs if f"/p2p/{self.self_id}" not in a]
        self._url_next_at = now + URL_BACKOFF_S[1]
        self._url_delay_s = URL_BACKOFF_S[0]

    async def _dial(self, target: Target) -> None:
        self.stats["dials"] += 1
        try:
            await self._join(target.addr)
        except Exception as exc:  # StreamFailed, or a bug: neither may end the rejoin loop
            self.stats["dial_failures"] += 1
            n = self._plan.failed(
                target.addr, trio.current_time(), self._rng, hopeless=isinstance(exc, WrongPeer)
            )
            event = "bootstrap.unreachable" if target.kind == BOOTSTRAP else "rejoin.unreachable"
            if n == 1:
                log.warning(
                    event, addr=target.addr, error=str(exc) or repr(exc), retrying="with backoff"
                )
            else:
                log.debug(event, addr=target.addr, error=str(exc), failures=n)
        else:
            self.stats["joins"] += 1
            failures = self._plan.succeeded(target.addr, trio.current_time())
            log.info(
                "bootstrap.joined" if target.kind == BOOTSTRAP else "rejoin.joined",
                via=target.addr,
                peer=target.peer_id,
                failed_before=failures,
            )
        finally:
            self._busy.discard(target.addr)


def worth_writing(
    memory: Mapping[str, peer_memory.Remembered],
    saved: Mapping[str, peer_memory.Remembered],
    resolution_s: float = SEEN_RESOLUTION_S,
) -> bool:
    """Whether the memory differs from the file in what matters: who is remembered, at which
    addresses, or a "last seen" time that moved by ``resolution_s`` or more. Every live
    member's time moves at every save, so comparing them exactly rewrote the file every
    ``SAVE_S`` on an idle node; a week's TTL does not need them to the second."""
    if memory.keys() != saved.keys():
        return True
    return any(
        r.addrs != saved[pid].addrs or abs(r.seen - saved[pid].seen) >= resolution_s
        for pid, r in memory.items()
    )
