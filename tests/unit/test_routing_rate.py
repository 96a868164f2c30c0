"""Capacity-aware balancing: learned service rates, the expected wait, the rate-scaled bound,
and the heterogeneous-replica setting of issue 13 replayed on a virtual clock."""

from __future__ import annotations

import heapq
import random
from collections import Counter

import pytest
from test_routing import PIDS, snapshot

from opentela.gateway.balancer import Balancer
from opentela.routing.balance import (
    BalanceState,
    HashRing,
    Policy,
    affinity,
    expected_wait,
    least_loaded,
    order,
    prefix_key,
    queue_ahead,
)
from opentela.routing.plan import plan
from opentela.routing.rate import ALPHA, MIN_SAMPLES, STALE_S, ServiceRates, relative
from opentela.table.record import NodeRecord, Service

# -- ServiceRates -----------------------------------------------------------------------------


def test_rate_counts_after_min_samples_and_is_an_ewma() -> None:
    r = ServiceRates()
    for i in range(MIN_SAMPLES - 1):
        r.observe("a", 0.5, None, now=float(i))
    assert r.rate("a", 10.0) is None
    r.observe("a", 0.5, None, now=10.0)
    assert r.rate("a", 10.0) == pytest.approx(2.0)
    r.observe("a", 0.25, None, now=11.0)  # 4 req/s
    assert r.rate("a", 11.0) == pytest.approx((1 - ALPHA) * 2.0 + ALPHA * 4.0)


def test_rate_goes_stale_and_unknown_peers_are_none() -> None:
    r = ServiceRates()
    for i in range(MIN_SAMPLES):
        r.observe("a", 1.0, None, now=float(i))
    assert r.rate("a", MIN_SAMPLES - 1 + STALE_S) is not None
    assert r.rate("a", MIN_SAMPLES + STALE_S + 0.1) is None
    assert r.rate("nobody", 0.0) is None


def test_zero_duration_is_clamped_not_infinite() -> None:
    r = ServiceRates()
    for i in range(MIN_SAMPLES):
        r.observe("a", 0.0, 10, now=float(i))
    assert r.rate("a", 3.0) == pytest.approx(1000.0)
    assert r.rate("a", 3.0, "tokens") == pytest.approx(10.0)  # a decode rate, as given


def test_weights_use_tokens_only_when_every_known_peer_has_them() -> None:
    r = ServiceRates()
    for i in range(MIN_SAMPLES):
        r.observe("fast", 1.0, 100, now=float(i))  # decodes 100 tok/s, 1 req/s
        r.observe("slow", 1.0, 25, now=float(i))  # decodes 25 tok/s, 1 req/s
    w = r.weights(["fast", "slow"], 3.0)
    assert w["fast"] == pytest.approx(1.6) and w["slow"] == pytest.approx(0.4)
    for i in range(MIN_SAMPLES):
        r.observe("embed", 0.5, None, now=float(i))  # not streamed: compare requests/s
    w = r.weights(["fast", "slow", "embed"], 3.0)
    assert w["embed"] == pytest.approx(2.0 / (4 / 3)) and w["fast"] == w["slow"]


def test_weights_are_neutral_until_two_are_known() -> None:
    r = ServiceRates()
    assert r.weights(["a", "b"], 0.0) == {"a": 1.0, "b": 1.0}
    for i in range(MIN_SAMPLES):
        r.observe("a", 0.1, None, now=float(i))
    assert r.weights(["a", "b"], 3.0) == {"a": 1.0, "b": 1.0}


def test_relative_gives_unknown_peers_the_mean() -> None:
    w = relative({"a": 4.0, "b": 1.0}, ["a", "b", "c"])
    assert w["c"] == pytest.approx(1.0)
    assert sum(w.values()) / 3 == pytest.approx(1.0)
    assert w["a"] / w["b"] == pytest.approx(4.0)


def test_retain_forgets() -> None:
    r = ServiceRates()
    for i in range(MIN_SAMPLES):
        r.observe("a", 1.0, None, now=float(i))
    r.retain(["b"])
    assert r.rate("a", 3.0) is None


# -- the policies with weights ----------------------------------------------------------------


def test_expected_wait() -> None:
    assert expected_wait(3, 1.0) == 4.0
    assert expected_wait(3, 2.0) == 2.0
    assert expected_wait(3, 0.0) == 4.0  # never divides by zero


def test_least_loaded_prefers_the_faster_replica_at_equal_load() -> None:
    for seed in range(20):
        out = least_loaded(["a", "b"], {"a": 2, "b": 2}, random.Random(seed), {"a": 1.6, "b": 0.4})
        assert out[0] == "a"
    # 4x faster: worth taking up to 4x the queue (7+1)/1.6 = 5 < (1+1)/0.4 = 5 is a tie; 8 not.
    out = least_loaded(["a", "b"], {"a": 8, "b": 1}, random.Random(0), {"a": 1.6, "b": 0.4})
    assert out[0] == "b"


def test_without_weights_the_policies_are_unchanged() -> None:
    est = {"a": 3, "b": 0, "c": 5, "d": 1}
    ones = dict.fromkeys(est, 1.0)
    for seed in range(10):
        assert least_loaded(list(est), est, random.Random(seed)) == least_loaded(
            list(est), est, random.Random(seed), ones
        )
    for key in ("k1", "k2", "k3"):
        assert affinity(list(est), est, key) == affinity(list(est), est, key, weights=ones)


def test_affinity_bound_scales_with_rate() -> None:
    peers = ["slow", "fast"]
    key = next(k for k in (f"k{i}" for i in range(100)) if affinity(peers, {}, k)[0] == "slow")
    w = {"slow": 0.4, "fast": 1.6}
    # mean load 2.5, bound 1.25 * 3.5 = 4.375: unweighted the slow owner keeps the key at 4 ...
    assert affinity(peers, {"slow": 4, "fast": 1}, key)[0] == "slow"
    # ... weighted the queue ahead of it is 4 / 0.4 = 10 average requests: the fast one takes it.
    assert affinity(peers, {"slow": 4, "fast": 1}, key, weights=w)[0] == "fast"
    # Idle, the slow owner keeps its key whatever its weight: no queue to bound, and a rate
    # learned from whole requests may only say that it missed the cache so far ...
    assert affinity(peers, {"slow": 0, "fast": 1}, key, weights=w)[0] == "slow"
    assert (
        affinity(peers, {"slow": 0, "fast": 0}, key, weights={"slow": 0.1, "fast": 1.9})[0]
        == "slow"
    )
    # ... and with one request ahead too (1 / 0.4 = 2.5 <= 1.25 * 2): the request being
    # placed is not weighted, so a weight's error alone does not move a key ...
    assert affinity(peers, {"slow": 1, "fast": 1}, key, weights=w)[0] == "slow"
    # ... but two ahead there are five average requests (> 1.25 * 2.5): the fast one takes it,
    assert affinity(peers, {"slow": 2, "fast": 1}, key, weights=w)[0] == "fast"
    # while unweighted the same loads keep the owner (2 <= 3.125).
    assert affinity(peers, {"slow": 2, "fast": 1}, key)[0] == "slow"


def test_some_peer_always_accepts_with_weights() -> None:
    rng = random.Random(5)
    for _ in range(300):
        peers = [f"p{i}" for i in range(rng.randint(2, 6))]
        est = {p: float(rng.randint(0, 20)) for p in peers}
        raw = {p: rng.uniform(0.1, 10) for p in peers}
        w = relative(raw, peers)
        out = affinity(peers, est, "key", weights=w)
        bound = 1.25 * (sum(est.values()) / len(peers) + 1)
        assert queue_ahead(est[out[0]], w[out[0]]) <= bound
        assert sorted(out) == sorted(peers)


@pytest.mark.parametrize("policy", list(Policy))
def test_order_accepts_weights_for_every_policy(policy: Policy) -> None:
    peers = ["a", "b", "c"]
    out = order(policy, peers, {}, "k", random.Random(0), BalanceState(), {"a": 2.0})
    assert sorted(out) == peers


# -- issue 13's setting, on a virtual clock ---------------------------------------------------

MODEL = "m"


def two_replicas():
    recs = [
        NodeRecord(PIDS[i], 1, 0.0, role="worker", services=(Service("llm", "ready", (f"model={MODEL}",)),))
        for i in (0, 1)
    ]  # fmt: skip
    return snapshot(*recs)


def owned_by(owner: str | None, peers: list[str]) -> dict:
    """A chat body whose prefix key ``owner`` owns on the ring of ``peers`` (peer ids are
    fresh in every test run, so a fixed prompt would have a random owner)."""
    owner = owner or peers[0]
    for i in range(1000):
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"hello {i}"}]}
        key = prefix_key(body, {})
        assert key is not None
        if HashRing(peers).walk(key)[0] == owner:
            return body
    raise AssertionError("no prompt with that owner")


def closed_loop(
    balancer: Balancer,
    snap,
    service_s: dict[str, float],
    clients: int,
    n: int,
    hops_s: float = 0.0,
    owner: str | None = None,
) -> Counter:
    """``clients`` clients, each sending the next request when its last one ends; a replica
    takes ``service_s`` per request whatever its load (a batching backend below its batch
    limit) plus ``hops_s`` of relaying (the same for every replica), and decodes 16 tokens in
    its service time. One prompt, whose key ``owner`` (default: the first of ``service_s``)
    owns on the affinity ring. Returns requests served per peer."""
    clock = [0.0]
    balancer.clock = lambda: clock[0]
    body = owned_by(owner, list(service_s))
    events: list[tuple[float, int, object]] = []
    served: Counter = Counter()
    seq = 0

    def send() -> None:
        nonlocal seq
        targets = balancer.arrange(snap, plan(snap, MODEL, rng=balancer.rng), body, {})
        pid = targets[0].peer_id
        started = balancer.start(pid)
        seq += 1
        heapq.heappush(events, (clock[0] + service_s[pid] + hops_s, seq, started))
        served[pid] += 1

    for _ in range(clients):
        send()
    while sum(served.values()) < n:
        clock[0], _, started = heapq.heappop(events)
        pid = started.peer_id  # type: ignore[attr-defined]
        balancer.finish(started, ok=True, decode_tps=16 / service_s[pid])  # type: ignore[arg-type]
        send()
    return served


@pytest.mark.parametrize("hops_s", [0.0, 0.05])
@pytest.mark.parametrize("policy", ["affinity", "least-loaded"])
def test_slow_replica_share_is_at_most_0_6_of_random(policy: str, hops_s: float) -> None:
    """Also when relaying adds as much time as the fast replica's whole request: the decode
    rate, not the duration, carries the 4x."""
    snap = two_replicas()
    slow, fast = PIDS[0], PIDS[1]
    service = {slow: 0.2, fast: 0.05}  # the slow one owns the prompt: the hard case
    shares = {}
    for p in ("random", policy):
        b = Balancer(p, random.Random(3))
        served = closed_loop(b, snap, service, clients=8, n=2000, hops_s=hops_s)
        shares[p] = served[slow] / sum(served.values())
    assert shares["random"] == pytest.approx(0.5, abs=0.05)
    assert shares[policy] <= 0.6 * shares["random"], shares


def test_affinity_keeps_one_key_on_its_owner_when_the_owner_is_fast() -> None:
    snap = two_replicas()
    slow, fast = PIDS[0], PIDS[1]
    served = closed_loop(
        Balancer("affinity", random.Random(1)), snap, {fast: 0.05, slow: 0.2}, clients=2, n=400
    )
    # Two clients never push the fast owner over its bound: the key stays there, its prefix
    # cache warm.
    assert served[fast] >= 0.95 * 400


# -- where the tokens come from ---------------------------------------------------------------


def test_usage_observer_times_the_decode_span(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentela.gateway import usage

    obs = usage.UsageRecorder(lambda _r: None).prepare({"model": "m"}, None, "m", True)[1]
    ticks = iter([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    monkeypatch.setattr(usage.time, "perf_counter", lambda: next(ticks))
    obs.on_head(200, [("Content-Type", "text/event-stream")])
    for _ in range(5):  # 5 chunks of text (the first also reads the first-byte clock)
        obs.on_body(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n')
    assert obs.decode_rate() is None  # not ended yet
    obs.on_end(True)
    # no usage chunk: one token per chunk; 4 after the first, from 1.1 to 1.5 s
    assert obs.decode_rate() == pytest.approx(4 / 0.4)


def test_decode_rate_counts_the_usage_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentela.gateway import usage

    obs = usage.UsageRecorder(lambda _r: None).prepare({"model": "m"}, None, "m", True)[1]
    ticks = iter([1.0, 1.0, 2.0])
    monkeypatch.setattr(usage.time, "perf_counter", lambda: next(ticks))
    obs.on_head(200, [("Content-Type", "text/event-stream")])
    obs.on_body(b'data: {"choices":[{"delta":{"content":"ab"}}]}\n\n')
    obs.on_body(b'data: {"choices":[{"delta":{"content":"cd"}}]}\n\n')
    obs.on_body(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n')
    obs.on_end(True)
    assert obs.decode_rate() == pytest.approx(2.0)  # 2 tokens per chunk, one chunk in 1 s


def test_usage_observer_has_no_decode_rate_without_a_complete_stream() -> None:
    from opentela.gateway.usage import UsageRecorder

    obs = UsageRecorder(lambda _r: None).prepare({"model": "m"}, None, "m", False)[1]
    obs.on_head(200, [("Content-Type", "application/json")])
    obs.on_body(b'{"choices": [{"message": {"content": "hi"}}]}')
    obs.on_end(True)
    assert obs.decode_rate() is None  # not streamed
    obs = UsageRecorder(lambda _r: None).prepare({"model": "m"}, None, "m", True)[1]
    obs.on_head(200, [("Content-Type", "text/event-stream")])
    obs.on_body(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n')
    obs.on_body(b'data: {"choices":[{"delta":{"content":"y"}}]}\n\n')
    obs.on_end(False)
    assert obs.decode_rate() is None  # broken off
