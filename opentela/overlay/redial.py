"""Which addresses to dial now, so a node that lost its pool finds it again. Pure.

Membership (SWIM) keeps a pool together only while its members can still reach one another. Two
cases it cannot heal by itself, both of them every Kubernetes rollout of a head:

- a worker's bootstrap peer left (or died) and came back: the workers still see each other, so
  nothing made them dial the bootstrap again, and the new head stayed alone;
- a restarted node with no bootstrap of its own (the head) knows nobody.

So a node keeps dialing each bootstrap address whose peer is not a live member, and, while it
has no live peer at all, the members it remembers from its previous life (``peer_memory``).
Each address has its own exponential backoff with jitter, reset once its peer is alive, so a
dead address costs one refused connection every few seconds and a returning one is found
within about a second. Remembered members are tried a few at a time: one success is enough,
the table and membership bring the rest.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

FIRST_S = 0.5  # first retry after a failed dial
CAP_S = 5.0  # longest wait between two dials of one address
JITTER = 0.25  # ± fraction, so a whole pool does not redial a returning head in lockstep
REMEMBERED_PER_ROUND = 4  # remembered members dialed at once while alone

BOOTSTRAP, REMEMBERED = "bootstrap", "remembered"


def peer_of(addr: str) -> str:
    """The peer ID a ``.../p2p/<id>`` multiaddr names ('' when it names none)."""
    parts = addr.rstrip("/").split("/")
    return parts[parts.index("p2p") + 1] if "p2p" in parts[:-1] else ""


@dataclass(frozen=True)
class Target:
    addr: str
    peer_id: str
    kind: str  # BOOTSTRAP or REMEMBERED


@dataclass
class _Backoff:
    next_at: float = 0.0
    delay_s: float = FIRST_S
    failures: int = 0


@dataclass
class RedialPlan:
    """Per-address backoff state; ``due`` says what to dial, ``failed`` what did not answer."""

    self_id: str
    _state: dict[str, _Backoff] = field(default_factory=dict)

    def due(
        self,
        bootstraps: list[str],
        remembered: dict[str, tuple[str, ...]],
        alive: Callable[[str], bool],
        lonely: bool,
        busy: set[str],
        now: float,
        rng: random.Random,
    ) -> list[Target]:
        """Targets to dial now: bootstraps whose peer is not ``alive``; while ``lonely`` (no
        live peer at all), also up to ``REMEMBERED_PER_ROUND`` remembered members. ``busy``
        addresses are being dialed already."""
        for addr in [a for a in self._state if alive(peer_of(a))]:
            del self._state[addr]  # its peer is back: start fast again next time it goes
        out: list[Target] = []
        for addr in bootstraps:
            pid = peer_of(addr)
            if pid and pid != self.self_id and not alive(pid) and self._ready(addr, busy, now):
                out.append(Target(addr, pid, BOOTSTRAP))
        if lonely:
            named = {t.peer_id for t in out}
            candidates = [
                Target(addrs[0], pid, REMEMBERED)
                for pid, addrs in sorted(remembered.items())
                if addrs
                and pid != self.self_id
                and pid not in named
                and self._ready(addrs[0], busy, now)
            ]
            rng.shuffle(candidates)
            out += candidates[:REMEMBERED_PER_ROUND]
        return out

    def _ready(self, addr: str, busy: set[str], now: float) -> bool:
        state = self._state.get(addr)
        return addr not in busy and (state is None or now >= state.next_at)

    def failed(self, addr: str, now: float, rng: random.Random, hopeless: bool = False) -> int:
        """Record a failed dial; returns how many in a row (1 = first: worth a log line).
        ``hopeless`` (another peer answers there) waits the longest at once."""
        state = self._state.setdefault(addr, _Backoff())
        if hopeless:
            state.delay_s = CAP_S
        state.failures += 1
        wait = state.delay_s * (1 + rng.uniform(-JITTER, JITTER))
        state.next_at = now + wait
        state.delay_s = min(state.delay_s * 2, CAP_S)
        return state.failures

    def succeeded(self, addr: str, now: float) -> int:
        """Record a successful dial; returns how many failures preceded it. The address rests
        briefly: membership needs a moment to confirm the peer alive."""
        state = self._state.get(addr)
        failures = state.failures if state else 0
        self._state[addr] = _Backoff(next_at=now + 2 * FIRST_S)
        return failures
