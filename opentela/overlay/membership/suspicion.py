"""Lifeguard suspicion: how long a suspect has to refute before it is declared dead. Sans-I/O.

A suspicion starts at a *maximum* timeout and shrinks towards a *minimum* as other members
independently confirm it (each one that also failed to reach the suspect). A real failure is
confirmed by many probers within a few probe intervals and is declared quickly; a suspicion
that only we hold (our own packet loss, a slow event loop) gets the long timeout, giving the
suspect time to hear about it and refute. (Lifeguard, Dadgar et al. 2018, section 4.2.)

Timers are values, as in foca: a ``Suspicion`` carries the incarnation it was raised at, so
after a refutation (higher incarnation) it is simply discarded; nothing needs cancelling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


def suspicion_timeout(n: int, suspicion_mult: float, probe_interval_s: float) -> float:
    """The *minimum* suspicion timeout for a cluster of ``n``:
    ``suspicion_mult * max(1, log10(max(1, n))) * probe_interval_s``.

    Log10 with a floor of 1, exactly as memberlist's ``suspicionTimeout`` (util.go) computes it
    (its config doc says log(N+1); the code is what runs): flat up to 10 nodes, then growing
    slowly, because news takes O(log n) rounds to spread. The maximum is a multiple of this.
    """
    node_scale = max(1.0, math.log10(max(1, n)))
    return suspicion_mult * node_scale * probe_interval_s


def remaining_suspicion_time(
    confirmations: int, k: int, elapsed_s: float, min_s: float, max_s: float
) -> float:
    """Time left before a suspicion expires, after ``confirmations`` of the ``k`` wanted.

    memberlist's ``remainingSuspicionTime`` (suspicion.go), row for row:

        frac    = log(confirmations + 1) / log(k + 1)
        timeout = max(min_s, floor_ms(max_s - frac * (max_s - min_s)))
        return    timeout - elapsed_s

    The log makes the first confirmations count most: one of three (k=3) already halves the
    distance from max to min. The result is negative when the suspicion is already overdue.
    With ``k < 1`` (too few members to expect confirmations) the timeout is ``min_s``.
    """
    if k < 1:
        return min_s - elapsed_s
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = max_s - frac * (max_s - min_s)
    timeout = max(min_s, math.floor(1000.0 * raw) / 1000.0)
    return timeout - elapsed_s


def confirmations_wanted(suspicion_mult: int, n: int) -> int:
    """``k``: independent confirmations that bring the timeout down to its minimum.

    ``suspicion_mult - 2``, as memberlist: with no known phase between probers, this reaches
    the nominal timeout about two probe intervals short of ``suspicion_mult`` intervals. Zero
    when the cluster is too small to produce that many confirmers (``n`` minus ourselves and
    the suspect), so a small cluster does not wait for confirmations that cannot come.
    """
    k = suspicion_mult - 2
    return 0 if n - 2 < k else max(0, k)


@dataclass(frozen=True, slots=True)
class Suspicion:
    """One running suspicion of ``member`` at ``incarnation``.

    ``accuser`` raised it (as far as we know); ``accusers`` holds it plus each independent
    confirmer, so nobody confirms twice and the accuser's own repeats do not count.
    """

    member: str
    incarnation: int
    accuser: str
    started_s: float
    k: int
    min_s: float
    max_s: float
    accusers: frozenset[str]

    @classmethod
    def start(
        cls,
        member: str,
        incarnation: int,
        accuser: str,
        now_s: float,
        *,
        n: int,
        suspicion_mult: int,
        max_timeout_mult: float,
        probe_interval_s: float,
        allowance_s: float = 0.0,
    ) -> Suspicion:
        """``allowance_s`` is added to both the minimum and the maximum: time for the
        refutation to travel (``rtt.suspicion_allowance_s``), which confirmations do not
        shorten."""
        min_s = suspicion_timeout(n, suspicion_mult, probe_interval_s)
        return cls(
            member=member,
            incarnation=incarnation,
            accuser=accuser,
            started_s=now_s,
            k=confirmations_wanted(suspicion_mult, n),
            min_s=min_s + allowance_s,
            max_s=max_timeout_mult * min_s + allowance_s,
            accusers=frozenset({accuser}),
        )

    @property
    def confirmations(self) -> int:
        return len(self.accusers) - 1

    @property
    def deadline_s(self) -> float:
        """When the suspect is declared dead unless refuted first."""
        return self.started_s + remaining_suspicion_time(
            self.confirmations, self.k, 0.0, self.min_s, self.max_s
        )

    def confirm(self, from_id: str) -> Suspicion | None:
        """The suspicion with ``from_id``'s confirmation added, or None if it adds nothing
        (already counted, or ``k`` reached): only new confirmations are worth re-gossiping."""
        if self.confirmations >= self.k or from_id in self.accusers:
            return None
        return replace(self, accusers=self.accusers | {from_id})

    def postponed(self, delay_s: float) -> Suspicion:
        """The same suspicion, expiring ``delay_s`` later (after we ourselves stalled)."""
        return replace(self, started_s=self.started_s + delay_s)
