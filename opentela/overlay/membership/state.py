"""SWIM + Lifeguard membership: all state transitions, and nothing else. Sans-I/O.

Two rules, as in h11's ``_state.py``:

1. Every change to membership state happens in this file, in ``Membership``.
2. This file does no I/O and owns no clock or randomness: each input carries ``now_s`` (and an
   ``rng`` where a choice is made) and returns a list of effects for the caller to carry out.
   ``runtime.py`` drives it over libp2p; ``transport.MemoryNetwork`` drives it in tests.

Inputs and effects
------------------
Inputs are method calls: ``tick`` (time passed), ``receive`` (a decoded message arrived),
``join`` (we learned a seed's address) and ``leave`` (graceful shutdown). Effects are frozen
dataclasses: ``Send`` a message, and ``MemberUp`` / ``MemberSuspect`` / ``MemberDown`` /
``MemberLeft`` / ``Refuted`` to report changes.

Timers are driven by ``tick(now_s, rng)`` rather than emitted as timer effects. Every timer is
a deadline stored as a value in our own state (a probe's timeout, a suspicion's expiry, a
relay's nack), checked on each tick; stale ones are dropped because they carry the
incarnation or sequence number they were set for, so nothing is ever cancelled. The driver
only has to call ``tick`` at least as often as ``next_deadline_s()`` asks (or on a fixed beat),
which keeps the runtime to one loop instead of a timer wheel with cancellation.

The protocol
------------
- Every ``probe_interval_s`` we probe one member, round-robin over a shuffled list that is
  reshuffled after each full round (SWIM section 4.3: bounded worst-case detection time).
- No Ack within ``probe_timeout_s``: ask ``indirect_checks`` random live members to probe it
  (PingReq) and ping it directly once more (like memberlist's TCP fallback: a lost packet is
  the likeliest cause). No Ack by the end of the interval: suspect it.
- A suspicion expires into Dead after the Lifeguard timeout (``suspicion.py``), which shrinks
  as other members independently confirm it. Both timeouts stretch with our own ill health
  (``awareness.py``).
- Each Ack answering one of our Pings is a round-trip sample of its sender (``rtt.py``). The
  direct probe timeout, the indirect probe's window (two legs), a helper's Nack timer and
  suspicions adapt to those round trips, so a member across a slow link is neither probed
  with a LAN timeout nor given a LAN-sized time to refute.
- A member that hears it is suspected (or declared dead) refutes: it bumps its incarnation and
  broadcasts Alive. For any member, news at a higher incarnation wins; at equal incarnation
  Dead and Left beat Suspect, which beats Alive. Left is final for its incarnation: a node
  that comes back must use a higher one (``MembershipConfig.initial_incarnation``).
- All news rides on Pings, Acks, PingReqs and Nacks through the broadcast queue
  (``queue.py``), so per-node traffic is one probe per interval plus a bounded piggyback,
  whatever the cluster size.

Beyond memberlist, each for a reason given where it is implemented:

- *buddy system* (Lifeguard 4.3): a message to a member we suspect or believe dead carries
  that news first, so the member can refute at once;
- *direct refutation*: the refuting Alive is also sent straight to the accuser and to
  anyone seen passing the accusation on;
- *introductions*: a member we learn of from someone else gets a Ping from us carrying our
  own Alive and as many other members as fit, so a newcomer learns the cluster without a
  full state exchange;
- *anti-entropy refreshes*: each probe also carries one live member's current Alive, in
  rotation, which repairs views that a burst of news left incomplete;
- *reconnect probes*: every ``reconnect_interval_s`` one member believed dead is pinged, so
  two halves of a healed partition find each other again;
- *stall detection*: a tick that comes far later than asked means *we* were not running, and
  expiring the timers that ran out meanwhile would accuse members for our own pause.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from .awareness import Awareness
from .messages import (
    PIGGYBACK_OVERHEAD,
    Ack,
    Alive,
    Dead,
    Left,
    Message,
    Nack,
    Ping,
    PingReq,
    Suspect,
    Update,
    update_size,
)
from .queue import BroadcastQueue
from .rtt import (
    RttEstimate,
    direct_timeout_s,
    indirect_window_s,
    leg_s,
    nack_timeout_s,
    observe,
    suspicion_allowance_s,
)
from .suspicion import Suspicion

INTRODUCTION_REFRESHES = 8  # other members' Alive in an introduction, budget permitting
MAX_RELAYS = 256  # PingReqs we serve at once; more are dropped (a peer cannot exhaust memory)
MAX_PINGS_OUT = 64  # Pings remembered for their round trip; the oldest is forgotten first


# -- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MembershipConfig:
    """Knobs of the failure detector. The defaults target a LAN or loopback pool of up to ~25
    nodes: a kill -9 noticed by every node within 3 s (p99), and no false Down under 10 %
    packet loss in both directions. ``tests/sim/test_membership_sim.py`` checks both. Across
    sites (WAN) the timeouts toward each member adapt to its measured round trip
    (``adapt_to_rtt``, ``rtt.py``): a 40 ms link with 1 % loss needs no change
    (``tests/sim/test_wan_membership.py``, docs/wan.md); raise ``probe_interval_s`` (and
    ``probe_timeout_s`` with it) only for round trips near the interval.

    Time for *every* node to mark a killed one Down is the sum of

    1. until some member probes it: about one interval on average, but ~4 intervals at p99
       for 25 nodes (the first of 24 round-robin probers, each visiting it once per round);
    2. one interval: that probe failing, direct and indirect;
    3. the minimum suspicion timeout, reached once ``suspicion_mult - 2`` other probers have
       independently confirmed (they keep probing it: about one per interval);
    4. a little gossip for the last nodes (most nodes' own timers expire at about the same
       time, since the Suspect reached them early).

    With the defaults that is ~1.2 s (p50) and ~2.5 s (p99) at N=25 in the simulator.
    """

    probe_interval_s: float = 0.2
    """Period of the probe loop, and a probe's overall deadline. The main speed knob: terms 1
    to 3 above all scale with it, so 0.5 s cannot meet 3 s at N=25 (p99 ~4.9 s in the
    simulator) and 0.25 s only just misses (~3.3 s). The price is one Ping and one Ack per
    interval per node, ~1 kB/s whatever the cluster size; on loopback or a LAN that is
    nothing, and it is independent of N."""

    probe_timeout_s: float = 0.08
    """Wait for a direct Ack before going indirect (PingReq plus one direct retry). Far above a
    loopback or LAN round trip (~1 ms) and a busy Python event loop's usual lag, yet leaves
    60 % of the interval for the four hops of an indirect probe and the helpers' Nacks (sent
    after their own ``probe_timeout_s``). A slow but live target is not accused for missing
    it: any Ack before the interval ends counts."""

    indirect_checks: int = 3
    """PingReq helpers per failed direct probe (SWIM's k). With the direct retry, a probe of a
    live member fails at 10 % loss with probability ~0.036 (both direct round trips) x ~0.04
    (each helper's 4-hop path fails with 34 %; all three), so about once per 700 probes;
    fewer helpers make false suspicions much commoner, more cost 2 messages each, but only
    when a direct probe has failed."""

    suspicion_mult: int = 4
    """The minimum suspicion timeout, in probe intervals, scaled by log10(n) from 10 nodes up
    (``suspicion.suspicion_timeout``): 0.8 s up to 10 nodes, 1.1 s at 25. It also sets how
    many independent confirmations bring a suspicion down to that minimum
    (``suspicion.confirmations_wanted``: 4 - 2 = 2). Lower detects faster, but a node that
    stalls (GC, SIGSTOP) for longer than ~interval + minimum is declared Down."""

    suspicion_max_timeout_mult: float = 3.0
    """The maximum suspicion timeout as a multiple of the minimum: 2.4 s up to 10 nodes, 3.4 s
    at 25. A suspicion nobody confirms, the typical false one caused by a lossy path, waits
    this long for the refutation (which usually takes one round trip: the suspect hears it
    from the buddy system and answers its accuser directly); a real failure is confirmed
    within a few intervals and falls to the minimum. memberlist's LAN preset uses 6 with a
    5x longer interval; 3 suffices here because refutation does not depend on gossip alone."""

    retransmit_mult: int = 4
    """Each update is piggybacked ``retransmit_mult * ceil(log10(n+1))`` times per node that
    learns it (``queue.retransmit_limit``): 4 up to 9 nodes, 8 up to 99, 12 up to 999 (as
    memberlist's LAN preset). Higher reaches every node more surely under loss, at the cost of
    more piggyback bytes after each change. With 3, at N = 1,000 and 5 % loss, a refutation
    failed to reach a few of the 1,000 nodes before their suspicion ran out: false deaths in
    ``scripts/bench_scale.py``; with 4, none."""

    awareness_max_multiplier: int = 8
    """Cap on Lifeguard's local-health stretch of probe timeouts (``awareness.py``): an
    unhealthy node probes up to 8x more patiently instead of accusing healthy members."""

    max_piggyback_bytes: int = 1024
    """Budget for piggybacked updates per message (~12 Alive updates with an address each).
    Bounds per-message size whatever the churn; larger spreads bursts of news faster."""

    reconnect_interval_s: float = 1.0
    """How often one member believed dead is pinged anyway, so that a partition heals without
    outside help. One message per interval, only while someone is dead."""

    tombstone_s: float = 60.0
    """How long a Dead or Left member is remembered. Must outlive stale gossip about it (a few
    seconds) and is how long a partition can last and still heal by itself; after that, the
    runtime has to ``join`` again (e.g. from the table)."""

    join_retry_s: float = 1.0
    """Interval between Pings to a seed that has not answered yet."""

    join_attempts: int = 10
    """Pings to a seed before giving up on it; the runtime may call ``join`` again."""

    stall_threshold_s: float = 0.5
    """A tick this much later than the earliest deadline means our process stalled (GC, SIGSTOP,
    a blocked event loop): overdue timers are postponed by one interval instead of expiring,
    so the input that queued up meanwhile is handled first."""

    adapt_to_rtt: bool = True
    """Let measured round trips stretch the timeouts toward each member (``rtt.py``): the
    direct probe timeout up to 0.8 of the interval, the probe's deadline to cover an indirect
    probe's two legs, a helper's Nack timer, and each suspicion by two round trips. On a LAN
    nothing changes (round trips are far below the configured timeouts). False gives the
    fixed timeouts, for comparison: at 40 ms one way and 1 % loss, 4 real nodes in 3 sites
    raised 24 false suspicion reports in 60 s with them and none adapted, and 9 simulated
    nodes 34 in 10 minutes at these defaults (docs/wan.md). Round trips are measured either
    way (``Membership.rtt``)."""

    initial_incarnation: int = 0
    """Our incarnation at start. Use something monotonic across restarts, such as
    ``int(time.time() * 1000)``, so a restarted node outranks its previous life's Dead or Left
    without persisting a counter (as the table's record versions do)."""

    def __post_init__(self) -> None:
        if not 0 < self.probe_timeout_s < self.probe_interval_s:
            raise ValueError("need 0 < probe_timeout_s < probe_interval_s")
        if self.indirect_checks < 0 or self.suspicion_mult < 1 or self.retransmit_mult < 1:
            raise ValueError("indirect_checks >= 0, suspicion_mult >= 1, retransmit_mult >= 1")
        if self.suspicion_max_timeout_mult < 1 or self.awareness_max_multiplier < 1:
            raise ValueError("suspicion_max_timeout_mult and awareness_max_multiplier >= 1")
        if self.max_piggyback_bytes < 256:
            raise ValueError("max_piggyback_bytes must fit at least one update (>= 256)")


# -- state --------------------------------------------------------------------------------------


class MemberState(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


_PROBED = (MemberState.ALIVE, MemberState.SUSPECT)
_GONE = (MemberState.DEAD, MemberState.LEFT)


@dataclass(frozen=True, slots=True)
class Member:
    """What we believe about one other member."""

    state: MemberState
    incarnation: int
    addrs: tuple[str, ...]
    changed_s: float


# -- effects ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``msg`` to ``to_id``. Best effort: a lost message is normal, never report it back."""

    to_id: str
    msg: Message


@dataclass(frozen=True, slots=True)
class MemberUp:
    """``member_id`` is alive: newly learned, refuted a suspicion, came back, or changed
    ``addrs`` (repeated with the new ones)."""

    member_id: str
    incarnation: int
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MemberSuspect:
    """``member_id`` missed a probe; it is still routable, but may be Down soon."""

    member_id: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class MemberDown:
    """``member_id`` failed (its suspicion ran out, or someone else's did)."""

    member_id: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class MemberLeft:
    """``member_id`` left gracefully."""

    member_id: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class Refuted:
    """Someone suspected us or declared us dead; we now claim ``incarnation`` (for logs: a
    node refuting often is slow or on a lossy path)."""

    incarnation: int
    accuser: str


Effect = Send | MemberUp | MemberSuspect | MemberDown | MemberLeft | Refuted


# -- timers as values -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Probe:
    target: str
    seq: int
    timeout_s: float  # direct Ack due; then go indirect
    deadline_s: float  # any Ack due; then suspect
    indirect: bool = False
    retry_seq: int = 0  # the direct retry's own seq, so its Ack is a clean round-trip sample
    helpers: tuple[str, ...] = ()
    nacks: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _Relay:
    """A PingReq we serve: our Ping to the target went out under our own seq."""

    requester: str
    seq: int  # the requester's
    nack_s: float
    expire_s: float
    nacked: bool = False


@dataclass(frozen=True, slots=True)
class _Seed:
    addrs: tuple[str, ...]
    attempts: int
    next_s: float


@dataclass
class _Outbox:
    """The effects of one input, and the time of that input (for Pings sent deep inside)."""

    now_s: float
    effects: list[Effect] = field(default_factory=list)

    def add(self, effect: Effect) -> None:
        self.effects.append(effect)


# -- the state machine ----------------------------------------------------------------------------


class Membership:
    """One node's view of the cluster. Not thread-safe: feed it from one task."""

    def __init__(
        self,
        self_id: str,
        config: MembershipConfig | None = None,
        now_s: float = 0.0,
        *,
        addrs: Iterable[str] = (),
    ) -> None:
        self.self_id = self_id
        self.config = config or MembershipConfig()
        self.addrs = tuple(addrs)
        self._incarnation = self.config.initial_incarnation
        self._leaving = False
        self._members: dict[str, Member] = {}
        # When each member last proved itself alive to us (any message from it, or an Ack to
        # our probe of it, possibly relayed): "last seen" for people, on our own clock.
        self._heard: dict[str, float] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._queue = BroadcastQueue(self.config.retransmit_mult)
        self._awareness = Awareness(self.config.awareness_max_multiplier)
        self._seq = 0
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._probe_pos = 0
        self._refresh_pos = 0
        self._next_probe_s = now_s
        self._next_reconnect_s = now_s + self.config.reconnect_interval_s
        self._relays: dict[int, _Relay] = {}
        self._seeds: dict[str, _Seed] = {}
        self._told_alive: set[str] = set()  # got our current Alive directly (see _refute)
        self._rtt: dict[str, RttEstimate] = {}
        self._pings_out: dict[int, tuple[str, float]] = {}  # seq -> (to, sent at), for RTT
        self._wake_s = math.inf  # no timer armed yet, so no first tick can look like a stall
        self._dirty = True
        # Announce ourselves to whoever we talk to first.
        self._queue.queue(self._self_alive())

    # -- views ---------------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._incarnation

    @property
    def leaving(self) -> bool:
        return self._leaving

    @property
    def awareness(self) -> int:
        """Local health score (0 = healthy); probe timeouts are multiplied by score + 1."""
        return self._awareness.score

    def members(self) -> dict[str, tuple[MemberState, int]]:
        """Every other member we know of (Dead and Left until their tombstone expires)."""
        return {mid: (m.state, m.incarnation) for mid, m in self._members.items()}

    def member(self, member_id: str) -> Member | None:
        return self._members.get(member_id)

    def last_heard(self, member_id: str) -> float | None:
        """When ``member_id`` last proved alive to us: a message from it, or an Ack (direct or
        relayed) to our probe of it. ``None`` if never, or once its tombstone is gone. Unlike
        ``Member.changed_s`` it moves on every exchange, so a healthy member reads as recent."""
        return self._heard.get(member_id)

    def rtt(self, member_id: str) -> float | None:
        """Smoothed round trip to ``member_id`` in seconds, from our Pings and its Acks (no
        extra traffic); ``None`` before the first sample, or once its tombstone is gone."""
        est = self._rtt.get(member_id)
        return est.srtt_s if est is not None else None

    def rtt_estimate(self, member_id: str) -> RttEstimate | None:
        """Smoothed round trip and deviation (what the timeouts use), or ``None``."""
        return self._rtt.get(member_id)

    def rtt_stats(self) -> dict[str, float | int]:
        """For a node's stats: how many members have a measured round trip, and the smallest
        and largest smoothed one (milliseconds): a pool across sites shows both."""
        srtts = [e.srtt_s for mid, e in self._rtt.items() if mid in self._members]
        if not srtts:
            return {"rtt_known": 0}
        return {
            "rtt_known": len(srtts),
            "srtt_min_ms": round(1000 * min(srtts), 2),
            "srtt_max_ms": round(1000 * max(srtts), 2),
        }

    def alive_ids(self) -> list[str]:
        return sorted(i for i, m in self._members.items() if m.state is MemberState.ALIVE)

    def suspect_ids(self) -> list[str]:
        return sorted(i for i, m in self._members.items() if m.state is MemberState.SUSPECT)

    def next_deadline_s(self) -> float:
        """When ``tick`` has something to do next (``inf``: only input can change anything).
        A driver that sleeps until then must recompute it after every input."""
        if self._dirty:
            self._wake_s = self._earliest_deadline()
            self._dirty = False
        return self._wake_s

    # -- inputs --------------------------------------------------------------------------------

    def tick(self, now_s: float, rng: random.Random) -> list[Effect]:
        """Time has passed: run whatever timers are due. Cheap when nothing is."""
        if self._dirty:
            # An input arrived since the last tick and may have armed a timer; the previous
            # ``_wake_s`` stays valid as the reference for stall detection below.
            self._dirty = False
        elif now_s < self._wake_s:
            return []
        out = _Outbox(now_s)
        if now_s - self._wake_s > self.config.stall_threshold_s:
            self._recover_from_stall(now_s)
        self._tick_relays(now_s, out)
        self._tick_probe(now_s, rng, out)
        self._tick_suspicions(now_s, out)
        self._tick_reconnect(now_s, rng, out)
        self._tick_seeds(now_s, out)
        self._tick_tombstones(now_s)
        self._wake_s = self._earliest_deadline()
        return out.effects

    def receive(self, from_id: str, msg: Message, now_s: float, rng: random.Random) -> list[Effect]:
        """``from_id`` (as authenticated by the transport) sent us ``msg``.

        A message whose ``from_id`` disagrees with the transport is dropped: the transport's
        identity is the authenticated one, and replies go to it.
        """
        if msg.from_id != from_id or from_id == self.self_id:
            return []
        self._dirty = True
        out = _Outbox(now_s)
        known = self._members.get(from_id)
        for update in msg.piggyback:
            self._apply(update, from_id, now_s, rng, out)
        match msg:
            case Ping():
                self._on_ping(msg, known, now_s, rng, out)
            case Ack():
                self._on_ack(msg, now_s, out)
            case PingReq():
                self._on_ping_req(msg, now_s, out)
            case Nack():
                p = self._probe
                if p is not None and msg.seq == p.seq and from_id in p.helpers:
                    self._probe = replace(p, nacks=p.nacks | {from_id})
        self._seeds.pop(from_id, None)  # it answered: no more join retries
        if from_id in self._members:
            self._heard[from_id] = now_s
        return out.effects

    def join(self, member_id: str, addrs: Iterable[str], now_s: float) -> list[Effect]:
        """We learned a possible member's address (bootstrap list, the table): say hello.

        The seed only becomes a member once it answers (its Ack introduces it); until then it
        is pinged every ``join_retry_s``, ``join_attempts`` times. Joining a member we believe
        dead pings it too: if it is back, the exchange makes one of us refute.
        """
        if member_id == self.self_id or self._leaving:
            return []
        self._dirty = True
        m = self._members.get(member_id)
        if m is not None and m.state in _PROBED:
            return []
        out = _Outbox(now_s)
        if m is None:
            self._seeds[member_id] = _Seed(tuple(addrs), 1, now_s + self.config.join_retry_s)
        self._introduce(member_id, out)
        return out.effects

    def leave(self, now_s: float) -> list[Effect]:
        """Graceful goodbye: a Left at a bumped incarnation, sent to every live member at once
        (one message each, once) and gossiped on. Afterwards we stop probing and refuting, but
        keep answering, so stragglers still get the news; the driver should keep running for
        about a second before closing the transport."""
        if self._leaving:
            return []
        self._dirty = True
        self._leaving = True
        self._incarnation += 1
        left = Left(self.self_id, self._incarnation)
        self._queue.queue(left)
        self._probe = None
        self._seeds.clear()
        out = _Outbox(now_s)
        for mid, m in self._members.items():
            if m.state in _PROBED:
                out.add(self._ping(mid, self._next_seq(), now_s, front=[left]))
        return out.effects

    # -- messages --------------------------------------------------------------------------------

    def _on_ping(
        self,
        msg: Ping,
        known: Member | None,
        now_s: float,
        rng: random.Random,
        out: _Outbox,
    ) -> None:
        sender = msg.from_id
        # Introduce ourselves to a sender that may not know us: one we had never heard of, one
        # we thought gone, or one at a new incarnation (it may have restarted and lost its
        # state). That is how a joining node learns its seed.
        stranger = known is None or known.state in _GONE or msg.incarnation > known.incarnation
        # A Ping that carries its sender's own Alive is an introduction (``join``): the sender
        # may not know us (a restarted node, a joiner whose seed already knew it), and would
        # otherwise drop us from its seeds without learning us until we happen to probe it.
        stranger = stranger or any(
            isinstance(u, Alive) and u.member == sender for u in msg.piggyback
        )
        # A Ping proves its sender alive at the incarnation it carries.
        self._apply_alive(Alive(sender, msg.incarnation), sender, now_s, rng, out)
        front = [self._self_alive()] if stranger else []
        pb = self._piggyback(sender, front, refresh=INTRODUCTION_REFRESHES if stranger else 0)
        out.add(Send(sender, Ack(msg.seq, self.self_id, pb)))

    def _on_ack(self, msg: Ack, now_s: float, out: _Outbox) -> None:
        self._sample_rtt(msg, now_s)
        p = self._probe
        if p is not None and (msg.seq == p.seq or (p.indirect and msg.seq == p.retry_seq)):
            if msg.from_id == p.target and now_s <= p.timeout_s:
                self._awareness = self._awareness.apply(-1)
            if p.target in self._members:
                self._heard[p.target] = now_s  # a relayed Ack proves the target alive too
            self._probe = None
            return
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            pb = self._piggyback(relay.requester)
            out.add(Send(relay.requester, Ack(relay.seq, self.self_id, pb)))

    def _on_ping_req(self, msg: PingReq, now_s: float, out: _Outbox) -> None:
        if msg.target_id == self.self_id:
            out.add(Send(msg.from_id, Ack(msg.seq, self.self_id, self._piggyback(msg.from_id))))
            return
        if len(self._relays) >= MAX_RELAYS:
            return
        seq = self._next_seq()
        # The nack timer uses our own unscaled probe timeout, as memberlist: the requester
        # judges its health by whether we answer at all, not by how fast. Across a slow link
        # it waits for one measured round trip to the target instead.
        cfg = self.config
        nack_s, expire_s = cfg.probe_timeout_s, cfg.probe_interval_s
        if cfg.adapt_to_rtt:
            est = self._rtt.get(msg.target_id)
            nack_s = nack_timeout_s(est, cfg.probe_timeout_s, cfg.probe_interval_s)
            expire_s = max(expire_s, 2 * leg_s(est, cfg.probe_interval_s))
        self._relays[seq] = _Relay(
            requester=msg.from_id,
            seq=msg.seq,
            nack_s=now_s + nack_s,
            expire_s=now_s + expire_s,
        )
        out.add(self._ping(msg.target_id, seq, now_s))

    # -- updates ---------------------------------------------------------------------------------

    def _apply(
        self, u: Update, sender: str, now_s: float, rng: random.Random, out: _Outbox
    ) -> None:
        match u:
            case Alive():
                self._apply_alive(u, sender, now_s, rng, out)
            case Suspect():
                self._apply_suspect(u, sender, now_s, out)
            case Dead():
                self._apply_dead(u, sender, now_s, out)
            case Left():
                self._apply_left(u, sender, now_s, out)

    def _apply_alive(
        self, u: Alive, sender: str, now_s: float, rng: random.Random, out: _Outbox
    ) -> None:
        mid = u.member
        if mid == self.self_id:
            if u.incarnation > self._incarnation and not self._leaving:
                # A newer "us" than we are: our previous life, if the clock went backwards
                # across a restart. Outrank it.
                self._incarnation = u.incarnation + 1
                self._queue.queue(self._self_alive())
            return
        m = self._members.get(mid)
        if m is not None and u.incarnation <= m.incarnation:
            return  # not news; Alive never beats anything at the same incarnation
        seed = self._seeds.pop(mid, None)
        addrs = u.addrs or (m.addrs if m is not None else ()) or (seed.addrs if seed else ())
        prev = m.state if m is not None else None
        self._members[mid] = Member(MemberState.ALIVE, u.incarnation, addrs, now_s)
        self._suspicions.pop(mid, None)
        self._queue.queue(Alive(mid, u.incarnation, addrs))
        if m is None or prev is not MemberState.ALIVE or addrs != m.addrs:
            out.add(MemberUp(mid, u.incarnation, addrs))
        if prev is None or prev in _GONE:
            self._add_to_probe_order(mid, rng)
        # Introductions: a member we heard of from someone else may not know us (it is new,
        # or restarted and lost its state), so greet it with our own Alive. Not after a
        # refuted suspicion: that member was talking to us all along.
        if sender != mid and prev is not MemberState.SUSPECT:
            self._introduce(mid, out)

    def _apply_suspect(self, u: Suspect, sender: str, now_s: float, out: _Outbox) -> None:
        mid = u.member
        if mid == self.self_id:
            self._on_accusation(u.incarnation, u.from_id, sender, out)
            return
        m = self._members.get(mid)
        if m is None or u.incarnation < m.incarnation or m.state in _GONE:
            return
        if m.state is MemberState.SUSPECT and u.incarnation == m.incarnation:
            s = self._suspicions.get(mid)
            confirmed = s.confirm(u.from_id) if s is not None else None
            if confirmed is not None:
                self._suspicions[mid] = confirmed
                # Re-gossip each new confirmation so others can count it too.
                self._queue.queue(u)
            return
        self._members[mid] = replace(
            m, state=MemberState.SUSPECT, incarnation=u.incarnation, changed_s=now_s
        )
        self._suspicions[mid] = Suspicion.start(
            mid,
            u.incarnation,
            u.from_id,
            now_s,
            n=self._cluster_size(),
            suspicion_mult=self.config.suspicion_mult,
            max_timeout_mult=self.config.suspicion_max_timeout_mult,
            probe_interval_s=self.config.probe_interval_s,
            allowance_s=suspicion_allowance_s(self._rtt.get(mid), self.config.probe_interval_s)
            if self.config.adapt_to_rtt
            else 0.0,
        )
        self._queue.queue(u)
        out.add(MemberSuspect(mid, u.incarnation))

    def _apply_dead(self, u: Dead, sender: str, now_s: float, out: _Outbox) -> None:
        mid = u.member
        if mid == self.self_id:
            self._on_accusation(u.incarnation, u.from_id, sender, out)
            return
        m = self._members.get(mid)
        if m is None or u.incarnation < m.incarnation or m.state in _GONE:
            return
        self._members[mid] = replace(
            m, state=MemberState.DEAD, incarnation=u.incarnation, changed_s=now_s
        )
        self._suspicions.pop(mid, None)
        self._queue.queue(u)
        out.add(MemberDown(mid, u.incarnation))

    def _apply_left(self, u: Left, sender: str, now_s: float, out: _Outbox) -> None:
        mid = u.member
        if mid == self.self_id:
            # Only a previous life of ours can have left at our incarnation or later.
            self._on_accusation(u.incarnation, sender, sender, out)
            return
        m = self._members.get(mid)
        if m is None or u.incarnation < m.incarnation or m.state is MemberState.LEFT:
            return
        # Left also replaces Dead: "it said goodbye" is the better explanation.
        self._members[mid] = replace(
            m, state=MemberState.LEFT, incarnation=u.incarnation, changed_s=now_s
        )
        self._suspicions.pop(mid, None)
        self._queue.queue(u)
        out.add(MemberLeft(mid, u.incarnation))

    def _on_accusation(self, accused: int, accuser: str, sender: str, out: _Outbox) -> None:
        """Someone says we are suspect, dead or gone at incarnation ``accused``."""
        if self._leaving:
            return
        if accused >= self._incarnation:
            self._refute(accused, accuser, sender, out)
        else:
            # Already refuted, but the accusation is still going round: whoever raised it or
            # passed it on has a suspicion timer running and has not heard our Alive yet.
            self._tell_alive((accuser, sender), out)

    def _refute(self, accused: int, accuser: str, sender: str, out: _Outbox) -> None:
        """We are suspected or declared dead at ``accused``: outrank it and say so.

        Besides gossiping the new Alive, send it straight to the accuser and to whoever told
        us, and later to anyone else we see passing the old accusation on (``_on_accusation``).
        Gossip alone can be slower than the minimum suspicion timeout (0.8 s by default); these
        direct messages, at most one per member per refutation, make refutation one round trip.
        """
        self._incarnation = max(self._incarnation, accused) + 1
        self._queue.queue(self._self_alive())
        self._awareness = self._awareness.apply(1)
        self._told_alive.clear()
        out.add(Refuted(self._incarnation, accuser))
        self._tell_alive((accuser, sender), out)

    def _tell_alive(self, to_ids: Iterable[str], out: _Outbox) -> None:
        for to in dict.fromkeys(to_ids):
            if to and to != self.self_id and to not in self._told_alive:
                self._told_alive.add(to)
                out.add(self._ping(to, self._next_seq(), out.now_s, front=[self._self_alive()]))

    # -- timers ------------------------------------------------------------------------------------

    def _tick_probe(self, now_s: float, rng: random.Random, out: _Outbox) -> None:
        p = self._probe
        if p is not None and not p.indirect and now_s >= p.timeout_s:
            candidates = [
                mid
                for mid, m in self._members.items()
                if m.state is MemberState.ALIVE and mid != p.target
            ]
            helpers = tuple(
                rng.sample(candidates, min(self.config.indirect_checks, len(candidates)))
            )
            for h in helpers:
                pb = self._piggyback(h)
                out.add(Send(h, PingReq(p.seq, self.self_id, p.target, pb)))
            retry = self._next_seq()
            out.add(self._ping(p.target, retry, now_s))  # a second chance for a lost Ping or Ack
            deadline_s = p.deadline_s
            if self.config.adapt_to_rtt:
                # The indirect Acks travel two legs: wait for them even past the interval.
                window_s = indirect_window_s(
                    self._rtt.get(p.target),
                    [self._rtt.get(h) for h in helpers],
                    self.config.probe_interval_s,
                )
                deadline_s = max(deadline_s, now_s + self._awareness.scale(window_s))
            p = self._probe = replace(
                p, indirect=True, helpers=helpers, retry_seq=retry, deadline_s=deadline_s
            )
        if p is not None and now_s >= p.deadline_s:
            self._probe = None
            # Lifeguard: helpers that did not even nack suggest the problem is ours.
            missed = len(p.helpers) - len(p.nacks) if p.helpers else 1
            self._awareness = self._awareness.apply(missed)
            m = self._members.get(p.target)
            if m is not None and m.state in _PROBED:
                self._apply_suspect(Suspect(p.target, m.incarnation, self.self_id), "", now_s, out)
        if self._probe is None and now_s >= self._next_probe_s and not self._leaving:
            target = self._next_target(rng)
            if target is None:
                self._next_probe_s = now_s + self.config.probe_interval_s
                return
            seq = self._next_seq()
            cfg = self.config
            interval = self._awareness.scale(cfg.probe_interval_s)
            timeout = cfg.probe_timeout_s
            if cfg.adapt_to_rtt:
                est = self._rtt.get(target)
                timeout = direct_timeout_s(est, cfg.probe_timeout_s, cfg.probe_interval_s)
            self._probe = _Probe(
                target=target,
                seq=seq,
                timeout_s=now_s + self._awareness.scale(timeout),
                deadline_s=now_s + interval,
            )
            self._next_probe_s = now_s + interval
            out.add(self._ping(target, seq, now_s, refresh=1))

    def _tick_relays(self, now_s: float, out: _Outbox) -> None:
        for seq, r in list(self._relays.items()):
            if now_s >= r.expire_s:
                del self._relays[seq]
            elif not r.nacked and now_s >= r.nack_s:
                self._relays[seq] = replace(r, nacked=True)
                pb = self._piggyback(r.requester)
                out.add(Send(r.requester, Nack(r.seq, self.self_id, pb)))

    def _tick_suspicions(self, now_s: float, out: _Outbox) -> None:
        for mid, s in list(self._suspicions.items()):
            if now_s < s.deadline_s:
                continue
            del self._suspicions[mid]
            m = self._members.get(mid)
            if m is not None and m.state is MemberState.SUSPECT and m.incarnation == s.incarnation:
                self._apply_dead(Dead(mid, s.incarnation, self.self_id), "", now_s, out)

    def _tick_reconnect(self, now_s: float, rng: random.Random, out: _Outbox) -> None:
        if now_s < self._next_reconnect_s:
            return
        self._next_reconnect_s = now_s + self.config.reconnect_interval_s
        dead = [mid for mid, m in self._members.items() if m.state is MemberState.DEAD]
        if dead and not self._leaving:
            # The Ping carries our Alive and Dead(target) (buddy system): if it is alive after
            # all, it refutes, and its Ack tells us whether *we* are dead in its eyes. Kept
            # small (no refreshes): most of these go to members that really are dead.
            target = rng.choice(dead)
            out.add(self._ping(target, self._next_seq(), now_s, front=[self._self_alive()]))

    def _tick_seeds(self, now_s: float, out: _Outbox) -> None:
        for mid, seed in list(self._seeds.items()):
            if now_s < seed.next_s:
                continue
            if seed.attempts >= self.config.join_attempts:
                del self._seeds[mid]
                continue
            self._seeds[mid] = replace(
                seed, attempts=seed.attempts + 1, next_s=now_s + self.config.join_retry_s
            )
            self._introduce(mid, out)

    def _tick_tombstones(self, now_s: float) -> None:
        cutoff = now_s - self.config.tombstone_s
        for mid in [
            i for i, m in self._members.items() if m.state in _GONE and m.changed_s <= cutoff
        ]:
            del self._members[mid]
            self._heard.pop(mid, None)
            self._rtt.pop(mid, None)

    def _recover_from_stall(self, now_s: float) -> None:
        """We did not run for a while. Whatever timed out meanwhile says nothing about the
        others: drop the probe without judging it, give overdue suspicions one more interval
        (the refutations may be sitting in our input queue), and skip overdue nacks."""
        grace_s = self.config.probe_interval_s
        if self._probe is not None:
            self._probe = None
        self._awareness = self._awareness.apply(1)
        self._next_probe_s = now_s
        for mid, s in list(self._suspicions.items()):
            if s.deadline_s < now_s + grace_s:
                self._suspicions[mid] = s.postponed(now_s + grace_s - s.deadline_s)
        for seq, r in list(self._relays.items()):
            if r.nack_s <= now_s:
                self._relays[seq] = replace(r, nacked=True)

    def _earliest_deadline(self) -> float:
        times = [s.deadline_s for s in self._suspicions.values()]
        times += [r.expire_s if r.nacked else r.nack_s for r in self._relays.values()]
        times += [s.next_s for s in self._seeds.values()]
        if self._probe is not None:
            p = self._probe
            times.append(p.deadline_s if p.indirect else p.timeout_s)
        gone = [m.changed_s for m in self._members.values() if m.state in _GONE]
        if gone:
            times.append(min(gone) + self.config.tombstone_s)
        if not self._leaving:
            if self._probe is None and any(m.state in _PROBED for m in self._members.values()):
                times.append(self._next_probe_s)
            if any(m.state is MemberState.DEAD for m in self._members.values()):
                times.append(self._next_reconnect_s)
        return min(times, default=math.inf)

    # -- helpers -----------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _sample_rtt(self, msg: Ack, now_s: float) -> None:
        """An Ack straight from the member we pinged under its seq: one round-trip sample.

        Not after we stalled (the Ack waited in our own input queue: the time says nothing
        about the path), and not for strangers (a seed that has not introduced itself).
        """
        sent = self._pings_out.get(msg.seq)
        if sent is None or sent[0] != msg.from_id:
            return  # unknown seq, or a helper relaying an Ack (not a round trip to it)
        del self._pings_out[msg.seq]
        if msg.from_id not in self._members or now_s - self._wake_s > self.config.stall_threshold_s:
            return
        self._rtt[msg.from_id] = observe(
            self._rtt.get(msg.from_id), now_s - sent[1], self.config.probe_interval_s
        )

    def _self_alive(self) -> Alive:
        return Alive(self.self_id, self._incarnation, self.addrs)

    def _cluster_size(self) -> int:
        return 1 + sum(1 for m in self._members.values() if m.state in _PROBED)

    def _next_target(self, rng: random.Random) -> str | None:
        """Round-robin over a shuffled list; a new shuffle after each full round."""
        for _ in range(2):
            while self._probe_pos < len(self._probe_order):
                mid = self._probe_order[self._probe_pos]
                self._probe_pos += 1
                m = self._members.get(mid)
                if m is not None and m.state in _PROBED:
                    return mid
            self._probe_order = [i for i, m in self._members.items() if m.state in _PROBED]
            rng.shuffle(self._probe_order)
            self._probe_pos = 0
        return None

    def _add_to_probe_order(self, mid: str, rng: random.Random) -> None:
        # At a random place in what is left of this round, so a newcomer is probed within one
        # round but does not always go last (memberlist inserts at a random offset too).
        rest = self._probe_order[self._probe_pos :]
        if mid not in rest:
            self._probe_order.insert(rng.randint(self._probe_pos, len(self._probe_order)), mid)

    def _rumor_about(self, mid: str) -> Update | None:
        """What ``mid`` must hear about itself (buddy system): that we suspect it or think it
        dead, so it can refute without waiting for gossip to reach it."""
        m = self._members.get(mid)
        if m is None:
            return None
        if m.state is MemberState.SUSPECT:
            s = self._suspicions.get(mid)
            return Suspect(mid, m.incarnation, s.accuser if s is not None else self.self_id)
        if m.state is MemberState.DEAD:
            return Dead(mid, m.incarnation, self.self_id)
        return None

    def _piggyback(
        self, to_id: str, front: Sequence[Update] = (), *, refresh: int = 0
    ) -> tuple[Update, ...]:
        """``front`` first, then what ``to_id`` must hear about itself, then queued news that
        fits the budget, then up to ``refresh`` anti-entropy refreshes (see ``_refreshes``)."""
        pb = list(front)
        rumor = self._rumor_about(to_id)
        if rumor is not None:
            pb.append(rumor)
        budget = self.config.max_piggyback_bytes - PIGGYBACK_OVERHEAD
        budget -= sum(update_size(u) for u in pb)
        # News about the recipient is wasted on it; keep that transmission for someone else.
        exclude = {to_id, *(u.member for u in pb)}
        news = self._queue.take(budget, self._cluster_size(), exclude)
        pb += news
        if refresh:
            budget -= sum(update_size(u) for u in news)
            exclude.update(u.member for u in news)
            pb += self._refreshes(refresh, budget, exclude)
        return tuple(pb)

    def _refreshes(self, count: int, budget: int, exclude: set[str]) -> list[Alive]:
        """Up to ``count`` live members' current Alive, in rotation: anti-entropy at a trickle.

        Piggybacked news is sent a limited number of times, so a burst (two dozen nodes
        joining at once) can leave two members that never heard of each other, and nothing
        would repair it: they never probe each other. memberlist repairs that with a periodic
        full state exchange; we add one member's current Alive to each probe instead (~90
        bytes whatever the cluster size), and fill introductions with them, so that every
        view converges within a few rounds.
        """
        alive = [i for i, m in self._members.items() if m.state is MemberState.ALIVE]
        out: list[Alive] = []
        for _ in range(len(alive)):
            if len(out) >= count:
                break
            self._refresh_pos = (self._refresh_pos + 1) % len(alive)
            mid = alive[self._refresh_pos]
            if mid in exclude:
                continue
            m = self._members[mid]
            # Without addresses (empty = "unchanged"): a refresh only has to say "this member
            # exists at this incarnation"; addresses travel with news and introductions, and
            # opentela's table carries every member's addresses anyway. Halves a Ping.
            u = Alive(mid, m.incarnation, ())
            size = update_size(u)
            if size > budget:
                break
            out.append(u)
            budget -= size
        return out

    def _ping(
        self,
        to_id: str,
        seq: int,
        now_s: float,
        front: Sequence[Update] = (),
        *,
        refresh: int = 0,
    ) -> Send:
        """A Ping, remembered (bounded) so that its Ack gives a round-trip sample."""
        pb = self._piggyback(to_id, front, refresh=refresh)
        self._pings_out[seq] = (to_id, now_s)
        if len(self._pings_out) > MAX_PINGS_OUT:
            del self._pings_out[next(iter(self._pings_out))]
        return Send(to_id, Ping(seq, self.self_id, self._incarnation, pb))

    def _introduce(self, to_id: str, out: _Outbox) -> None:
        """An unsolicited Ping carrying our own Alive and as many other members as fit (the
        recipient may know nobody yet); its Ack is only a round-trip sample."""
        front = [self._self_alive()]
        out.add(
            self._ping(to_id, self._next_seq(), out.now_s, front, refresh=INTRODUCTION_REFRESHES)
        )
