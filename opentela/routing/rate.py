"""How fast each replica drains requests, as this entry node sees it finish them.

The load estimate (``estimate.py``) counts requests in flight; two replicas with the same count
are not equally busy when one finishes a request four times faster (a GH200 next to an A100).
The policies divide by a replica's *service rate* to compare them (``balance.py``), so each
entry learns every replica's rate from the requests it forwards there:

* a sample is taken when a request ends with a successful answer (a fast error says nothing
  about speed, and would make a broken replica look quick). Two kinds, kept apart:
  ``1 / duration`` (requests/s; any answer) and, for a streamed answer, its *decode rate*:
  generated tokens per second between its first and its last chunk of text, which the usage
  observer times as the chunks pass (``gateway/usage.py``). The decode rate is the better
  measure: both of its ends cross the same relay hops, so their delay cancels, while a whole
  request's duration adds the same hops' time to every replica and so shrinks the ratio
  between a fast and a slow one (tens of milliseconds on a loaded entry against a fast
  replica's 50 ms request: a 4x difference in speed read as 2x). Rates are compared as decode
  rates when every candidate with a fresh rate has one, else in requests/s;
* per replica and unit, an exponentially weighted mean with weight ``ALPHA = 0.2`` on the new
  sample: about the last 10 requests matter (a replica's speed changes when its batch or GPU
  clocks do, over seconds, not per request), one slow outlier moves it by a fifth;
* ``MIN_SAMPLES = 3`` before a rate counts, and a rate whose last sample is older than
  ``STALE_S = 60`` does not count: a replica the policy starved because it looked slow is then
  compared as an average one again, gets traffic and is measured afresh (exploration, so a
  replica that recovered is not penalised for ever). An unknown rate is neutral (weight 1).

The duration is the whole request as the entry sees it, so it includes queueing at the replica
and the network, and a decode rate falls as a replica's batch grows: a busy replica looks
slower, which makes the policy send it less until it drains. That is what a client
experiences; the weights stay a ratio between replicas averaged over ~10 requests, so they
move slowly next to the load estimate.

``weights`` returns each candidate's rate divided by the candidates' mean rate (mean 1; all 1
when nothing is known), which is all the policies need: the units cancel.

Pure: the clock is the ``now`` argument; memory is bounded by ``retain``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ALPHA = 0.2
MIN_SAMPLES = 3
STALE_S = 60.0
MIN_DURATION_S = 1e-3  # a sample faster than a millisecond is clamped, never infinite


@dataclass
class _Mean:
    value: float = 0.0
    samples: int = 0
    last_s: float = float("-inf")

    def add(self, x: float, now: float) -> None:
        self.value = x if self.samples == 0 else (1 - ALPHA) * self.value + ALPHA * x
        self.samples += 1
        self.last_s = now

    def fresh(self, now: float) -> bool:
        return self.samples >= MIN_SAMPLES and now - self.last_s <= STALE_S


@dataclass
class _Peer:
    tokens: _Mean
    requests: _Mean


class ServiceRates:
    """Per entry node, one instance shared by all requests (one event loop; not thread-safe)."""

    def __init__(self) -> None:
        self._peers: dict[str, _Peer] = {}

    def observe(
        self, peer_id: str, duration_s: float, decode_tps: float | None, now: float
    ) -> None:
        """A request to ``peer_id`` ended with a successful answer after ``duration_s``;
        ``decode_tps``: its decode rate in tokens/s when measured (None or <= 0: not)."""
        d = max(MIN_DURATION_S, float(duration_s))
        p = self._peers.setdefault(peer_id, _Peer(_Mean(), _Mean()))
        p.requests.add(1.0 / d, now)
        if decode_tps is not None and decode_tps > 0:
            p.tokens.add(float(decode_tps), now)

    def rate(self, peer_id: str, now: float, unit: str = "requests") -> float | None:
        """The learned rate (``unit`` "tokens": decode tokens/s, "requests": requests/s), or None
        when it does not count (too few samples, stale, unknown peer)."""
        p = self._peers.get(peer_id)
        if p is None:
            return None
        m = p.tokens if unit == "tokens" else p.requests
        return m.value if m.fresh(now) else None

    def weights(self, peer_ids: Iterable[str], now: float) -> dict[str, float]:
        """Relative speed of each peer: its rate over the mean rate of those known (1.0 for a
        peer without a rate that counts, and for all when fewer than two are known)."""
        ids = list(dict.fromkeys(peer_ids))
        tok = {p: self.rate(p, now, "tokens") for p in ids}
        req = {p: self.rate(p, now, "requests") for p in ids}
        known_req = [p for p in ids if req[p] is not None]
        use_tokens = bool(known_req) and all(tok[p] is not None for p in known_req)
        rates = tok if use_tokens else req
        return relative({p: r for p, r in rates.items() if r is not None}, ids)

    def retain(self, peer_ids: Iterable[str]) -> None:
        """Forget peers not in ``peer_ids`` (the table forgot them)."""
        keep = set(peer_ids)
        for pid in [q for q in self._peers if q not in keep]:
            del self._peers[pid]


def relative(rates: Mapping[str, float], peer_ids: Iterable[str]) -> dict[str, float]:
    """``rates`` (some of ``peer_ids``) as weights of mean 1 over ``peer_ids``: a peer without a
    rate is given the mean of the known ones, so it weighs 1. Fewer than two known: all 1."""
    ids = list(peer_ids)
    known = {p: r for p, r in rates.items() if p in set(ids) and r > 0}
    if len(known) < 2:
        return dict.fromkeys(ids, 1.0)
    mean_known = sum(known.values()) / len(known)
    full = {p: known.get(p, mean_known) for p in ids}
    mean = sum(full.values()) / len(full)
    return {p: r / mean for p, r in full.items()}
