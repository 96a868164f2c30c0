"""How membership bytes travel: the ``Transport`` contract, and ``MemoryNetwork`` for tests.

``Transport`` is what ``runtime.py`` needs from the libp2p side. ``MemoryNetwork`` is a
discrete-event simulator that connects ``Membership`` state machines directly, with loss,
delay, partitions and paused or killed nodes, on a virtual clock: no event loop, no sleeps,
deterministic for a given seed. Every message goes through the real codec, so byte counts are
the real ones.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .messages import decode, encode
from .state import (
    Effect,
    MemberDown,
    MemberLeft,
    Membership,
    MembershipConfig,
    MemberSuspect,
    MemberUp,
    Refuted,
    Send,
)


class Transport(Protocol):
    """Datagram-like delivery of encoded membership messages to a member by its id.

    Concurrency contract: ``send`` may be called from several tasks at once. Delivery is best
    effort, and SWIM is built for that: an unreachable or slow peer is a lost message, so
    ``send`` should not raise for it, and should give up within about ``probe_timeout_s``
    rather than block the caller (a late Ping is worth no more than a lost one).
    """

    async def send(self, to_id: str, data: bytes) -> None: ...


Report = MemberUp | MemberSuspect | MemberDown | MemberLeft | Refuted


@dataclass(frozen=True, slots=True)
class Observed:
    """A non-Send effect, as ``node_id`` reported it at simulated time ``at_s``."""

    at_s: float
    node_id: str
    effect: Report


class MemoryNetwork:
    """In-process network on a virtual clock.

    ``run_until(t)`` processes events in time order: message deliveries (each at its send time
    plus ``delay_s`` plus up to ``jitter_s``) and ticks. With ``resolution_s`` set, every
    running node ticks on that fixed beat; with ``resolution_s=None``, each node ticks exactly
    at its own ``next_deadline_s()``, recomputed after every input, which is how a runtime that
    sleeps until the next deadline drives it. Deliveries due at the same instant as a tick go
    first, as a woken process would read its socket before its timers fire.

    - ``loss``: probability that any one message is dropped (each direction independently).
    - ``link(a, b, delay_s, jitter_s)``: messages between a member of ``a`` and one of ``b``
      take that long instead (sites: short links inside, a WAN link between).
    - ``partition(a, b)``: no message passes between a member of ``a`` and one of ``b``.
    - ``kill(id)``: the node stops and everything sent to it is lost (kill -9).
    - ``pause(id)`` / ``resume(id)``: the node stops ticking; messages to it wait and are all
      delivered on resume (SIGSTOP / SIGCONT, or a long GC pause).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        loss: float = 0.0,
        delay_s: float = 0.001,
        jitter_s: float = 0.001,
        resolution_s: float | None = 0.01,
        now_s: float = 0.0,
    ) -> None:
        self.seed = seed
        self.loss = loss
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.resolution_s = resolution_s
        self.now_s = now_s
        self.nodes: dict[str, Membership] = {}
        self.observed: list[Observed] = []
        self.bytes_sent: Counter[str] = Counter()
        self.messages_sent: Counter[str] = Counter()
        self._rng = random.Random(f"net:{seed}")
        self._node_rngs: dict[str, random.Random] = {}
        self._running: set[str] = set()
        self._paused: dict[str, list[tuple[str, bytes]]] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._links: dict[tuple[str, str], tuple[float, float]] = {}  # (from, to) -> delay, jitter
        # (at_s, order, to_id, from_id, data); data None is a tick of to_id (deadline mode).
        self._heap: list[tuple[float, int, str, str, bytes | None]] = []
        self._counter = 0
        self._tick_index = math.ceil(now_s / resolution_s) if resolution_s else 0
        self._tick_at: dict[str, float] = {}  # deadline mode: the earliest tick queued per node

    # -- nodes ----------------------------------------------------------------------------------

    def spawn(
        self,
        node_id: str,
        config: MembershipConfig | None = None,
        *,
        addrs: Iterable[str] = (),
        seeds: Iterable[str] = (),
    ) -> Membership:
        """Start a node now (replacing a killed one with the same id) and join ``seeds``."""
        node = Membership(node_id, config, self.now_s, addrs=addrs)
        self.nodes[node_id] = node
        self._node_rngs[node_id] = random.Random(f"node:{self.seed}:{node_id}:{self.now_s}")
        self._running.add(node_id)
        self._paused.pop(node_id, None)
        self._tick_at.pop(node_id, None)
        for seed in seeds:
            self._handle(node_id, node.join(seed, (), self.now_s))
        self._schedule(node_id)
        return node

    def join(self, node_id: str, seed_id: str) -> None:
        self._handle(node_id, self.nodes[node_id].join(seed_id, (), self.now_s))
        self._schedule(node_id)

    def leave(self, node_id: str) -> None:
        self._handle(node_id, self.nodes[node_id].leave(self.now_s))
        self._schedule(node_id)

    def kill(self, node_id: str) -> None:
        self._running.discard(node_id)
        self._paused.pop(node_id, None)

    def pause(self, node_id: str) -> None:
        self._paused.setdefault(node_id, [])

    def resume(self, node_id: str) -> None:
        for from_id, data in self._paused.pop(node_id, []):
            self._deliver(node_id, from_id, data)
        self._tick_at.pop(node_id, None)
        self._schedule(node_id)

    def running(self) -> list[str]:
        """Nodes that are neither killed nor paused."""
        return sorted(i for i in self._running if i not in self._paused)

    # -- links ----------------------------------------------------------------------------------

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        a, b = list(side_a), list(side_b)
        self._blocked.update((x, y) for x in a for y in b)
        self._blocked.update((y, x) for x in a for y in b)

    def link(
        self, side_a: Iterable[str], side_b: Iterable[str], delay_s: float, jitter_s: float = 0.0
    ) -> None:
        """Messages between ``side_a`` and ``side_b`` (both ways) take ``delay_s`` plus up to
        ``jitter_s``, instead of the network's defaults."""
        a, b = list(side_a), list(side_b)
        for x in a:
            for y in b:
                self._links[x, y] = self._links[y, x] = (delay_s, jitter_s)

    def heal(self) -> None:
        self._blocked.clear()

    # -- the clock ------------------------------------------------------------------------------

    def run_until(self, until_s: float) -> None:
        while True:
            beat_s = self._tick_index * self.resolution_s if self.resolution_s else math.inf
            event_s = self._heap[0][0] if self._heap else math.inf
            if min(beat_s, event_s) > until_s:
                break
            if event_s <= beat_s:
                at_s, _, to_id, from_id, data = heapq.heappop(self._heap)
                self.now_s = at_s
                if data is None:
                    self._tick(to_id, at_s)
                else:
                    self._deliver(to_id, from_id, data)
            else:
                self.now_s = beat_s
                self._tick_index += 1
                for node_id in sorted(self._running):
                    self._tick(node_id, beat_s)
        self.now_s = max(self.now_s, until_s)

    def run_for(self, duration_s: float) -> None:
        self.run_until(self.now_s + duration_s)

    # -- plumbing -------------------------------------------------------------------------------

    def _tick(self, node_id: str, now_s: float) -> None:
        if node_id not in self._running or node_id in self._paused:
            return
        if self.resolution_s is None:
            if self._tick_at.get(node_id) != now_s:
                return  # superseded by an earlier deadline, already ticked
            del self._tick_at[node_id]
        node = self.nodes[node_id]
        self._handle(node_id, node.tick(now_s, self._node_rngs[node_id]))
        self._schedule(node_id)

    def _schedule(self, node_id: str) -> None:
        """Deadline mode: queue a tick at the node's next deadline unless one is due sooner."""
        if self.resolution_s is not None or node_id not in self._running:
            return
        at_s = max(self.now_s, self.nodes[node_id].next_deadline_s())
        if at_s == math.inf or self._tick_at.get(node_id, math.inf) <= at_s:
            return
        self._tick_at[node_id] = at_s
        self._counter += 1
        heapq.heappush(self._heap, (at_s, self._counter, node_id, node_id, None))

    def _deliver(self, to_id: str, from_id: str, data: bytes) -> None:
        if to_id not in self._running:
            return
        if to_id in self._paused:
            self._paused[to_id].append((from_id, data))
            return
        node = self.nodes[to_id]
        effects = node.receive(from_id, decode(data), self.now_s, self._node_rngs[to_id])
        self._handle(to_id, effects)
        self._schedule(to_id)

    def _handle(self, node_id: str, effects: list[Effect]) -> None:
        for e in effects:
            if not isinstance(e, Send):
                self.observed.append(Observed(self.now_s, node_id, e))
                continue
            data = encode(e.msg)
            self.bytes_sent[node_id] += len(data)
            self.messages_sent[node_id] += 1
            if (node_id, e.to_id) in self._blocked or self._rng.random() < self.loss:
                continue
            delay_s, jitter_s = self._links.get((node_id, e.to_id), (self.delay_s, self.jitter_s))
            at_s = self.now_s + delay_s + self._rng.uniform(0.0, jitter_s)
            self._counter += 1
            heapq.heappush(self._heap, (at_s, self._counter, e.to_id, node_id, data))
