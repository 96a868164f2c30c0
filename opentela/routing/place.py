"""Prefer replicas in the entry node's own site while their load is comparable.

A pool spans sites (Slurm clusters, a Kubernetes head) tens of milliseconds apart. A request
served in the entry's own site saves the round trips to another site (request, and every
window of a streamed answer) and keeps the traffic off the WAN link; a busy local replica
costs more than that. The rule, applied to one tier's candidates after the balancing policy
ordered them (``site_order``):

``local``
    the candidates whose ``site`` label is the entry's own, **and those with no site label**
    (unknown place: treated as today, neither preferred nor avoided). ``remote``: the others.
``wait_i``
    ``(estimate_i + 1) / w_i``, the expected wait of ``balance.expected_wait`` in units of an
    average replica's request time (``w_i`` its relative service rate, ``rate.py``).
``cost_r`` of a remote candidate
    ``SITE_FACTOR * wait_r + rtt_r / RTT_PER_REQUEST_S``, ``rtt_r`` the round-trip time
    membership probes measure to it (seconds; unknown counts as 0).

The local candidates come first, in the policy's order, then the remote ones, when
``min(wait_local) <= min(cost_remote)``; otherwise the remote ones come first (in the
policy's order), then the local ones. Either way every candidate is in the order, so retries
may cross sites. With no own site, no local or no remote candidate, the policy's order is
returned unchanged (one site, or none labelled: as before sites existed).

``SITE_FACTOR = 1.5``: "comparable" is within 50 %, so a local replica is kept while it has at
most about half again the wait of the best remote one; it is also the hysteresis that keeps a
small, noisy difference in load from flipping traffic between sites request by request.
``RTT_PER_REQUEST_S = 0.010``: every 10 ms of round trip is worth one more request of wait at
the local site (an LLM request takes hundreds of milliseconds to seconds and a batching backend
takes a few more at little cost, so a 40 ms link is worth about 4 queued requests). Two idle
sites: local. A local replica holding 8 requests against an idle remote one 40 ms away
(``9 > 1.5 * 1 + 4``): remote, until the local one drains to 4 (``5 <= 5.5``).

Pure: inputs are mappings; no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .balance import expected_wait

SITE_FACTOR = 1.5
RTT_PER_REQUEST_S = 0.010


def site_order(
    order: Sequence[str],
    sites: Mapping[str, str],
    own_site: str,
    estimates: Mapping[str, float],
    weights: Mapping[str, float],
    rtt: Callable[[str], float | None],
) -> list[str]:
    """``order`` (a policy's order of one tier) regrouped by place under the module's rule.
    ``sites``: each candidate's site label ("" or missing: unknown); ``rtt(peer)``: seconds,
    or None when not measured."""
    out = list(dict.fromkeys(order))
    if not own_site:
        return out
    local = [p for p in out if sites.get(p, "") in ("", own_site)]
    remote = [p for p in out if sites.get(p, "") not in ("", own_site)]
    if not local or not remote:
        return out

    def wait(p: str) -> float:
        return expected_wait(estimates.get(p, 0.0), weights.get(p, 1.0))

    def cost(p: str) -> float:
        r = rtt(p)
        return SITE_FACTOR * wait(p) + (max(0.0, r) if r is not None else 0.0) / RTT_PER_REQUEST_S

    if min(map(wait, local)) <= min(map(cost, remote)):
        return local + remote
    return remote + local
