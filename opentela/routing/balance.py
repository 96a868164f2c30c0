"""Order the replicas of one tier: which peer to try first, then which on retry.

Every policy returns a full ordering of the (deduplicated) candidates, never a peer outside
them, so the gateway's retries can walk it. Candidates are filtered (draining, suspect, dead,
already tried) by ``plan`` before they get here.

``random``
    uniform shuffle; what ``plan`` does on its own (the upstream behaviour).
``round-robin``
    rotates through the candidate set, one counter per distinct set (``RoundRobin``).
``least-loaded``
    power of two choices (Mitzenmacher) over the expected wait: two candidates drawn at
    random, the one with the shorter wait first, then the rest by wait. Two random probes
    rather than the global minimum, because every entry node sees the same stale gossip and
    would all pick the same minimum at once (herding); with two choices their picks spread.
    The expected wait of peer ``i`` is ``(estimate_i + 1) / w_i`` (``expected_wait``): the
    requests ahead of this one plus itself, drained at ``w_i``, the peer's service rate over the
    candidates' mean rate (``rate.ServiceRates.weights``; 1 when unknown, so with no rates
    known it orders by estimate, as before rates existed). A replica 4x faster drains 4
    requests in the time a slow one drains 1, so it is given 4x the queue.
``affinity``
    consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, SODA 2018) over a
    prefix key, so requests sharing a prompt prefix or session land on the replica that has
    it in its KV cache. A peer accepts the key if the queue ahead of the request, in units of
    an average replica's request time (``estimate / w``), is at most the paper's bound
    ``c * (mean estimate + 1)``. With every ``w = 1`` this is ``estimate <= c * (mean + 1)``,
    the unweighted rule; a replica twice as fast as the mean may hold about twice the load
    before it sheds keys, one half as fast about half of it. The request being placed is not
    weighted: an idle owner always keeps its keys, and one with a request or two ahead keeps
    them unless it is clearly slow. Rates are learned from whole requests, so they also
    measure cache hits: on vLLM the replica that missed took 1.1-2.8 s and the one that hit
    0.2 s for the same 960-token prompts, a weight of ~0.3. Counting the placed request as
    ``1 / w`` (as an earlier rule did, the expected wait ``(estimate + 1) / w`` against
    ``bound + 1``) let that error alone, with one stale request in the gossiped load, move a
    key off its owner to the replica that already held the cache, and keep it there. The order
    is the peers that accept, clockwise from the key's point on the ring (the first is the
    key's owner unless it is overloaded, then the next owner clockwise under the bound), then
    the ones over the bound by ascending expected wait, for retries. With ``c >= 1`` some peer
    always accepts: the weights have mean 1, so the smallest ``estimate_i / w_i`` is at most
    ``sum estimate / sum w`` = the mean, below the bound; were none to (``c < 1``), the order
    is by expected wait.
    ``c = 1.25`` (``DEFAULT_C``): the paper bounds every peer's load by about ``c *`` the
    average while the cost of the bound (peers probed per key, keys moved per change) grows
    like ``1/(c-1)^2`` as ``c → 1``. 1.25 trades up to 25 % imbalance for cache locality; it
    is the common default (brpc's bounded-load ring, liblb). The ``+ 1`` in the bound counts
    the request being placed and keeps an idle pool (mean 0) from rejecting a peer with one
    request.
    No randomness: two entry nodes with the same candidates and estimates pick the same order
    for a key. Without a key (``None``) it falls back to least-loaded.

Pure: randomness comes from the ``rng`` argument, memory from explicit state objects.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Policy(StrEnum):
    RANDOM = "random"
    ROUND_ROBIN = "round-robin"
    LEAST_LOADED = "least-loaded"
    AFFINITY = "affinity"


DEFAULT_C = 1.25
DEFAULT_VNODES = 128
_CACHE_SETS = 1024  # distinct candidate sets remembered by RoundRobin and RingCache


def _unique(candidates: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(candidates))


def _hash64(data: str) -> int:
    """Stable across processes and machines (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


# -- random / round-robin ----------------------------------------------------------------------


def shuffled(candidates: Sequence[str], rng: random.Random) -> list[str]:
    # Sorted first so that a seeded rng gives the same order whatever the input order.
    out = sorted(_unique(candidates))
    rng.shuffle(out)
    return out


class RoundRobin:
    """One rotating counter per distinct candidate set (as a set: order does not matter).

    When the set changes (a replica joins or leaves) a fresh counter starts for the new set;
    the least recently used sets are forgotten beyond ``max_sets``.
    """

    def __init__(self, max_sets: int = _CACHE_SETS) -> None:
        self.max_sets = max_sets
        self._next: OrderedDict[tuple[str, ...], int] = OrderedDict()

    def order(self, candidates: Sequence[str]) -> list[str]:
        ring = tuple(sorted(_unique(candidates)))
        if not ring:
            return []
        i = self._next.pop(ring, 0)
        self._next[ring] = (i + 1) % len(ring)
        while len(self._next) > self.max_sets:
            self._next.popitem(last=False)
        return list(ring[i:] + ring[:i])


# -- least-loaded ------------------------------------------------------------------------------


def expected_wait(estimate: float, weight: float) -> float:
    """Requests ahead plus this one, over the peer's relative service rate (the unit of an
    average replica's request time). A weight <= 0 (never produced by ``rate``) is 1."""
    return (estimate + 1.0) / (weight if weight > 0 else 1.0)


def queue_ahead(estimate: float, weight: float) -> float:
    """The requests ahead alone, in the same unit as ``expected_wait``."""
    return estimate / (weight if weight > 0 else 1.0)


def least_loaded(
    candidates: Sequence[str],
    estimates: Mapping[str, float],
    rng: random.Random,
    weights: Mapping[str, float] | None = None,
) -> list[str]:
    """Power of two choices: two at random (the shorter expected wait first), then the rest
    by expected wait.

    A peer missing from ``estimates`` counts as 0, from ``weights`` as 1. Ties keep a random
    order.
    """
    order = shuffled(candidates, rng)
    if len(order) < 2:
        return order
    w = weights or {}
    wait = {p: expected_wait(estimates.get(p, 0.0), w.get(p, 1.0)) for p in order}
    a, b = order[0], order[1]  # a uniform random pair, since ``order`` is a uniform shuffle
    first = [b, a] if wait[b] < wait[a] else [a, b]
    rest = sorted(order[2:], key=wait.__getitem__)  # stable: ties stay shuffled
    return first + rest


# -- affinity ----------------------------------------------------------------------------------


class HashRing:
    """A consistent-hash ring with ``vnodes`` points per peer (blake2b, stable everywhere)."""

    def __init__(self, peers: Iterable[str], vnodes: int = DEFAULT_VNODES) -> None:
        self.peers = tuple(sorted(set(peers)))
        points = sorted((_hash64(f"{p}#{i}"), p) for p in self.peers for i in range(vnodes))
        self._pos = [h for h, _ in points]
        self._owner = [p for _, p in points]

    def walk(self, key: str) -> list[str]:
        """Every peer once, in order of first appearance clockwise from the key's point."""
        n = len(self.peers)
        if n == 0:
            return []
        start = bisect_left(self._pos, _hash64(key))
        seen: dict[str, None] = {}
        total = len(self._owner)
        for j in range(total):
            seen.setdefault(self._owner[(start + j) % total])
            if len(seen) == n:
                break
        return list(seen)


class RingCache:
    """Rings by candidate set, so a ring is built once per set rather than per request."""

    def __init__(self, vnodes: int = DEFAULT_VNODES, max_sets: int = _CACHE_SETS) -> None:
        self.vnodes = vnodes
        self.max_sets = max_sets
        self._rings: OrderedDict[frozenset[str], HashRing] = OrderedDict()

    def get(self, candidates: Iterable[str]) -> HashRing:
        key = frozenset(candidates)
        ring = self._rings.pop(key, None)
        if ring is None:
            ring = HashRing(key, self.vnodes)
        self._rings[key] = ring
        while len(self._rings) > self.max_sets:
            self._rings.popitem(last=False)
        return ring


def affinity(
    candidates: Sequence[str],
    estimates: Mapping[str, float],
    key: str,
    *,
    c: float = DEFAULT_C,
    ring: HashRing | None = None,
    weights: Mapping[str, float] | None = None,
) -> list[str]:
    """Consistent hashing with bounded loads, each peer's load measured as its expected wait
    under its relative rate (``weights``, missing = 1); deterministic in its inputs.

    ``ring`` may be passed (from a ``RingCache``) to avoid rebuilding it; it must have been
    built from exactly these candidates.
    """
    cands = _unique(candidates)
    if not cands:
        return []
    if ring is None or set(ring.peers) != set(cands):
        ring = HashRing(cands)
    w = weights or {}
    load = {p: estimates.get(p, 0.0) for p in cands}
    bound = c * (sum(load.values()) / len(cands) + 1.0)
    accepts = {p: queue_ahead(load[p], w.get(p, 1.0)) <= bound for p in cands}
    clockwise = ring.walk(key)
    under = [p for p in clockwise if accepts[p]]
    over = sorted(
        (p for p in clockwise if not accepts[p]),
        key=lambda p: expected_wait(load[p], w.get(p, 1.0)),
    )
    return under + over


# -- the prefix key ----------------------------------------------------------------------------

SESSION_HEADERS = ("x-session-id", "x-otela-session")


def _text(content: Any) -> str:
    """Text of a message's content: a string or OpenAI content parts (text parts only)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def _prompt_text(prompt: Any) -> str:
    """``prompt`` of /v1/completions: a string, a list of strings, token ids, or lists of them."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, str):
            return first
        if isinstance(first, int) and not isinstance(first, bool):
            return " ".join(str(t) for t in prompt if isinstance(t, int))
        if isinstance(first, list):
            return " ".join(str(t) for t in first if isinstance(t, int))
    return ""


def prefix_key(body: Mapping[str, Any], headers: Mapping[str, str], k: int = 256) -> str | None:
    """What a request shares with earlier ones that a replica may still have cached.

    In order: a session header (``X-Session-ID``, ``X-Otela-Session``; any case), the OpenAI
    ``user`` field, else the first ``k`` characters of the system message(s) before the first
    user message followed by that user message (chat), or of ``prompt`` (completions). The
    namespace tag (``s:``, ``u:``, ``p:``) keeps a session id from colliding with a prompt.
    None when nothing usable is there.
    """
    lowered = {str(name).lower(): value for name, value in headers.items()}
    for name in SESSION_HEADERS:
        value = lowered.get(name)
        if isinstance(value, str) and value.strip():
            return "s:" + value.strip()[:k]
    if not isinstance(body, Mapping):
        return None
    user = body.get("user")
    if isinstance(user, str) and user.strip():
        return "u:" + user.strip()[:k]
    text = ""
    messages = body.get("messages")
    if isinstance(messages, list):
        pieces = []
        for msg in messages:
            if not isinstance(msg, dict):
                continue
            role = msg.get("role")
            if role in ("system", "developer"):
                pieces.append(_text(msg.get("content")))
            elif role == "user":
                pieces.append(_text(msg.get("content")))
                break
        text = "\n".join(p for p in pieces if p)
    elif "prompt" in body:
        text = _prompt_text(body.get("prompt"))
    text = text[:k]
    return "p:" + text if text.strip() else None


# -- one entry point ---------------------------------------------------------------------------


@dataclass
class BalanceState:
    """What the policies remember between requests: one per entry node (shared by requests)."""

    round_robin: RoundRobin = field(default_factory=RoundRobin)
    rings: RingCache = field(default_factory=RingCache)
    c: float = DEFAULT_C


def order(
    policy: Policy | str,
    candidates: Sequence[str],
    estimates: Mapping[str, float],
    key: str | None,
    rng: random.Random,
    state: BalanceState,
    weights: Mapping[str, float] | None = None,
) -> list[str]:
    """Order one tier's candidates under ``policy`` (a ``Policy`` or its name).

    ``estimates`` and ``weights`` (relative service rates, missing = 1) are only read by
    ``least-loaded`` and ``affinity``, ``key`` only by ``affinity`` (None → least-loaded),
    ``state`` only by ``round-robin`` and ``affinity``.
    Raises ValueError for an unknown policy name.
    """
    policy = Policy(policy)
    cands = _unique(candidates)
    if len(cands) < 2:
        return cands
    if policy is Policy.RANDOM:
        return shuffled(cands, rng)
    if policy is Policy.ROUND_ROBIN:
        return state.round_robin.order(cands)
    if policy is Policy.LEAST_LOADED or key is None:
        return least_loaded(cands, estimates, rng, weights)
    return affinity(cands, estimates, key, c=state.c, ring=state.rings.get(cands), weights=weights)


POLICIES: tuple[str, ...] = tuple(p.value for p in Policy)
