"""What relaying may cost a relay (pure: ``now`` is passed in). A relay is never unlimited: one
member that relays a flood, or one private node that attracts one, meets its own bound and the
relay keeps serving everyone else.

Bounds, with why they are where they are:

- ``MAX_CLIENTS`` (512) private nodes holding a reservation: a head carries a few hundred
  Slurm jobs; more clients should spread over more heads or relays.
- ``MAX_STREAMS_PER_ORIGIN`` (256) relayed streams from one origin at once: an entry node's
  stream pool to one worker (one stream per concurrent request, up to the worker's own
  per-peer bound of 256) plus its membership and table streams.
- ``MAX_STREAMS_PER_TARGET`` (1024) relayed streams to one private node at once, from all
  origins together; ``MAX_STREAMS`` (4096) in all.
- ``RATE_BYTES_PER_S`` (32 MiB/s) and ``BURST_BYTES`` (8 MiB) per peer, origin and target each
  counted, both directions: LLM traffic is kilobytes per request, so this binds a bulk
  transfer, not inference. Over it, the copy waits (TCP-style back-pressure), nothing is cut.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

MAX_CLIENTS = 512
MAX_STREAMS_PER_ORIGIN = 256
MAX_STREAMS_PER_TARGET = 1024
MAX_STREAMS = 4096
RATE_BYTES_PER_S = 32 * 1024 * 1024
BURST_BYTES = 8 * 1024 * 1024
MAX_TRACKED = 4096


@dataclass(slots=True)
class ByteBucket:
    """A token bucket in bytes: ``take`` returns how long to wait before sending ``n`` bytes."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, n: int, now: float) -> float:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        self.tokens -= n  # may go negative: the debt is the wait
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass
class RelayLimits:
    """Counts of relayed streams and per-peer byte buckets. ``open`` says why a stream may not
    be relayed (None: it may, and it is counted until ``close``)."""

    max_streams_per_origin: int = MAX_STREAMS_PER_ORIGIN
    max_streams_per_target: int = MAX_STREAMS_PER_TARGET
    max_streams: int = MAX_STREAMS
    rate: float = RATE_BYTES_PER_S
    burst: float = BURST_BYTES
    by_origin: dict[str, int] = field(default_factory=dict)
    by_target: dict[str, int] = field(default_factory=dict)
    buckets: OrderedDict[str, ByteBucket] = field(default_factory=OrderedDict)

    @property
    def streams(self) -> int:
        return sum(self.by_origin.values())

    def open(self, origin: str, target: str) -> str | None:
        if self.streams >= self.max_streams:
            return f"this relay carries {self.max_streams} streams already"
        if self.by_origin.get(origin, 0) >= self.max_streams_per_origin:
            return f"your node has {self.max_streams_per_origin} relayed streams open here"
        if self.by_target.get(target, 0) >= self.max_streams_per_target:
            return f"{target[-8:]} has {self.max_streams_per_target} relayed streams open here"
        self.by_origin[origin] = self.by_origin.get(origin, 0) + 1
        self.by_target[target] = self.by_target.get(target, 0) + 1
        return None

    def close(self, origin: str, target: str) -> None:
        for counts, pid in ((self.by_origin, origin), (self.by_target, target)):
            left = counts.get(pid, 0) - 1
            if left > 0:
                counts[pid] = left
            else:
                counts.pop(pid, None)

    def wait_for(self, peers: tuple[str, ...], n: int, now: float) -> float:
        """Seconds to wait before copying ``n`` more bytes between ``peers``."""
        wait = 0.0
        for pid in peers:
            b = self.buckets.pop(pid, None) or ByteBucket(self.rate, self.burst, self.burst, now)
            self.buckets[pid] = b
            wait = max(wait, b.take(n, now))
        while len(self.buckets) > MAX_TRACKED:
            self.buckets.popitem(last=False)
        return wait
