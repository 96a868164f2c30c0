"""Round trips to each member, measured from the probes we send anyway, and the timeouts they
set. Sans-I/O.

Every Ping we send carries a sequence number and is answered by an Ack; the time between the
two, when the Ack comes straight from the pinged member, is one round-trip sample. No extra
traffic: probes, their retries, introductions and the Pings we send for others' PingReqs are
all samples. Samples feed a TCP-style estimator (RFC 6298: smoothed RTT and mean deviation,
gains 1/8 and 1/4), whose ``srtt + 4 * rttvar`` bounds a round trip with a margin, like
TCP's retransmission timeout.

A fixed probe timeout tuned for a LAN (80-100 ms) is shorter than a 40 ms one-way link's
round trip: every probe across it would go indirect, and the indirect path (two legs of
that link) cannot finish within the interval. What adapts, each formula in one function here:

- ``direct_timeout_s``: the wait for a direct Ack, ``srtt + 4 rttvar`` but never below the
  configured probe timeout nor above ``DIRECT_CAP`` of the interval;
- ``indirect_window_s``: the wait for an indirect (PingReq) Ack, two legs;
- ``nack_timeout_s``: a PingReq helper's wait before it Nacks, one leg to the target;
- ``suspicion_allowance_s``: time added to a suspicion so the refutation's own round trip
  (and one retransmission of it) fits.

On a LAN the measured round trips are far below the configured timeouts, so all of these
reduce to the fixed values (the allowances to a few milliseconds).
"""

from __future__ import annotations

from dataclasses import dataclass

ALPHA = 1 / 8  # srtt gain (RFC 6298)
BETA = 1 / 4  # rttvar gain
K = 4  # deviations of margin in a round-trip bound
DIRECT_CAP = 0.8  # the direct wait never exceeds this share of the probe interval
LEG_CAP = 1.0  # one leg is never assumed longer than this many probe intervals
MAX_SAMPLE = 2.0  # a sample is clamped to this many probe intervals
SUSPICION_ROUND_TRIPS = 2  # refutation's round trip, plus one retransmission of it


@dataclass(frozen=True, slots=True)
class RttEstimate:
    """Smoothed round trip and its mean deviation to one member, in seconds."""

    srtt_s: float
    rttvar_s: float
    samples: int = 1

    @classmethod
    def first(cls, sample_s: float) -> RttEstimate:
        return cls(sample_s, sample_s / 2)

    def update(self, sample_s: float) -> RttEstimate:
        """RFC 6298 section 2.3: the deviation first, from the old srtt."""
        rttvar = (1 - BETA) * self.rttvar_s + BETA * abs(self.srtt_s - sample_s)
        srtt = (1 - ALPHA) * self.srtt_s + ALPHA * sample_s
        return RttEstimate(srtt, rttvar, self.samples + 1)

    @property
    def bound_s(self) -> float:
        """A round trip with margin: ``srtt + 4 * rttvar`` (TCP's RTO before its floor)."""
        return self.srtt_s + K * self.rttvar_s


def observe(est: RttEstimate | None, sample_s: float, probe_interval_s: float) -> RttEstimate:
    """``est`` after one more sample. A sample above ``MAX_SAMPLE`` intervals is clamped to it:
    an Ack that late still says "slow", but one freak (a peer's GC pause, a TCP retransmission
    after a long backoff) must not stretch the timeouts for long."""
    sample_s = min(max(0.0, sample_s), MAX_SAMPLE * probe_interval_s)
    return RttEstimate.first(sample_s) if est is None else est.update(sample_s)


def direct_timeout_s(
    est: RttEstimate | None, probe_timeout_s: float, probe_interval_s: float
) -> float:
    """The wait for a direct Ack before going indirect (before Lifeguard's awareness scaling):
    ``min(max(probe_timeout, srtt + 4 rttvar), max(probe_timeout, DIRECT_CAP * interval))``.

    The floor keeps LAN behaviour exactly as configured; the cap keeps a very slow or freshly
    unstable member from holding the probe loop (its Ack still counts until the probe's
    deadline, the indirect path just starts earlier). Unknown round trip: the configured value.
    """
    if est is None:
        return probe_timeout_s
    cap = max(probe_timeout_s, DIRECT_CAP * probe_interval_s)
    return min(max(probe_timeout_s, est.bound_s), cap)


def leg_s(est: RttEstimate | None, probe_interval_s: float) -> float:
    """One measured round trip with margin, at most ``LEG_CAP`` intervals; 0 when unknown."""
    return 0.0 if est is None else min(est.bound_s, LEG_CAP * probe_interval_s)


def indirect_window_s(
    target: RttEstimate | None, helpers: list[RttEstimate | None], probe_interval_s: float
) -> float:
    """How long after sending PingReqs an indirect Ack may still come: two legs, us to a helper
    and the helper to the target, each bounded by the longest round trip we measured to the
    target or to a helper (we cannot see the helper's leg; across sites, one of the two
    is the slow one). A probe's deadline is the later of its start plus the interval and the
    moment it went indirect plus this window; on a LAN this window is a few milliseconds and
    the interval decides. Members never measured add nothing."""
    legs = [leg_s(e, probe_interval_s) for e in (target, *helpers)]
    return 2 * max(legs, default=0.0)


def nack_timeout_s(
    target: RttEstimate | None, probe_timeout_s: float, probe_interval_s: float
) -> float:
    """A PingReq helper's wait for the target's Ack before it Nacks the requester: the
    configured probe timeout, or one measured round trip to the target if that is longer, so
    a helper across a slow link does not Nack an Ack that is still on its way."""
    return max(probe_timeout_s, leg_s(target, probe_interval_s))


def suspicion_allowance_s(suspect: RttEstimate | None, probe_interval_s: float) -> float:
    """Added to a suspicion's minimum (and so its maximum): ``SUSPICION_ROUND_TRIPS`` measured
    round trips to the suspect, at most ``LEG_CAP`` intervals each. To survive, a suspect must
    hear the news and its refutation must come back: one round trip, and one more for a lost
    and retransmitted message. On a LAN a few milliseconds; across a 40 ms link ~0.2 s."""
    return SUSPICION_ROUND_TRIPS * leg_s(suspect, probe_interval_s)
