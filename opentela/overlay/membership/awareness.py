"""Lifeguard local health ("awareness"): how much to distrust our own timing. Sans-I/O.

A node that is itself slow (overloaded event loop, long GC, lossy NIC) sees everybody else as
slow and would accuse healthy members. Lifeguard (section 4.1) has it measure its own health
from evidence that only a sick node would see, and stretch its probe timeouts accordingly:

- up by one per PingReq helper that did not even Nack: helpers are picked among live members,
  so silence from them points at us;
- up by one for a failed probe when there were no helpers to ask;
- up by one when we had to refute a suspicion of ourselves (others could not reach us);
- down by one for each probe acked directly within the probe timeout.

The score stays in ``0 .. max_multiplier - 1`` and timeouts are multiplied by ``score + 1``,
so a healthy node uses the configured timeouts exactly. (memberlist's awareness.go.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Awareness:
    max_multiplier: int = 8
    score: int = 0

    def apply(self, delta: int) -> Awareness:
        """The health after ``delta`` (positive: worse), clamped to ``0 .. max_multiplier-1``."""
        score = min(max(0, self.score + delta), max(0, self.max_multiplier - 1))
        return self if score == self.score else replace(self, score=score)

    @property
    def multiplier(self) -> int:
        return self.score + 1

    def scale(self, timeout_s: float) -> float:
        """``timeout_s`` stretched by our current (ill) health."""
        return timeout_s * (self.score + 1)
