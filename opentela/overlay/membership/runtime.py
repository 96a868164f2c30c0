"""The trio driver of ``Membership`` over libp2p: feeds it time and messages, carries out its
effects.

Messages travel on one long-lived outbound stream per peer (protocol ``/opentela/swim/1``),
one frame per message (``overlay/peer_senders.py``): opening a stream per probe would cost
~6 ms and several packets. A hung peer can only delay messages to itself; a full queue drops,
as UDP would, and the failure detector copes with loss by design. A stream idle for
``SEND_IDLE_S`` (a peer no longer probed, in a large pool) is closed and its task ends; an open
one-way stream does not keep a connection from being reaped (``overlay/connections.py``), and
the next message reopens it. 60 s is longer than the gap between two messages to a member in
any pool up to ~200 nodes at the default probe interval (a node probes each member once per
N intervals, and answers its probes as often), so there a stream lives as long as its peer.
Each reopen costs a multistream negotiation: with 10 s, 12 nodes at ``--probe-interval 1``
sent 477 B/s per node at idle, with 60 s 346 B/s (``bench_membership.py --n 12``).

On the wire, a message's own ``from_id`` (52 characters, in every Ping and Ack) is replaced by
``SELF_MARK``: the Noise handshake already authenticates the sending peer, so the receiver
restores it from the stream. That is half of a Ping's bytes, and half of idle traffic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

import structlog
import trio

from .. import framing, limits
from ..host import Host, PeerStream, StreamFailed
from ..peer_senders import PeerSenders
from .messages import MessageError, decode, encode
from .state import Effect, MemberDown, Membership, MemberSuspect, Refuted, Send

PROTOCOL = "/opentela/swim/1"
SELF_MARK = "="  # "the peer at the other end of this stream"
SEND_QUEUE = 32  # messages waiting per peer before new ones are dropped
SEND_TIMEOUT_S = 1.0  # a write (including dial) that takes longer is abandoned
SEND_IDLE_S = 60.0  # a peer's stream is closed after this long without a message to it

log = structlog.get_logger("opentela.membership")


class MembershipRuntime:
    def __init__(
        self,
        host: Host,
        membership: Membership,
        on_effect: Callable[[Effect], None],
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.m = membership
        self._on_effect = on_effect
        self._rng = rng or random.Random()
        self.senders = PeerSenders(
            host,
            PROTOCOL,
            queue_size=SEND_QUEUE,
            send_timeout_s=SEND_TIMEOUT_S,
            idle_s=SEND_IDLE_S,
        )
        self._wake = trio.Event()
        self._asleep_until = math.inf  # when the driver wakes by itself (inf: not asleep yet)
        # One dict: the senders count "sent", "dropped" and "bytes_sent" in it themselves.
        self.stats = self.senders.stats
        self.stats.update(received=0, bytes_received=0)
        self.stats["flooded"] = 0  # inbound messages dropped: the peer was over its rate
        # Membership events this node produced (``opentela_membership_*_total``).
        self.stats.update(suspicions=0, deaths=0, refutations=0)
        self._rate = limits.PeerRate(limits.SWIM_RATE_PER_S, limits.SWIM_BURST)
        self._over_logged = limits.LogOnce()

    # -- inputs ------------------------------------------------------------------------------

    def join(self, peer_id: str, addrs: list[str]) -> None:
        """A peer learned from bootstrap or the table: let SWIM probe it."""
        if peer_id == self.m.self_id:
            return
        state = self.m.members().get(peer_id)
        if state is not None and state[0] in ("alive", "suspect"):
            return
        self._apply(self.m.join(peer_id, addrs, trio.current_time()))

    def leave(self) -> None:
        self._apply(self.m.leave(trio.current_time()))

    async def handle(self, stream: PeerStream) -> None:
        """An inbound stream from one peer: every frame is one membership message."""
        while True:
            try:
                frames = await stream.receive(3600.0)
            except StreamFailed:
                return
            now = trio.current_time()
            for frame in frames:
                if frame.kind != framing.BODY or not isinstance(frame.payload, bytes):
                    continue
                self.stats["received"] += 1
                self.stats["bytes_received"] += len(frame.payload) + 8
                if not self._rate.allow(stream.remote_peer, now):
                    # A flood from one peer: dropped unread, as UDP would; SWIM copes with loss.
                    self.stats["flooded"] += 1
                    if self._over_logged.should_log(stream.remote_peer, now):
                        log.warning("membership.rate_limited", peer=stream.remote_peer)
                    continue
                try:
                    msg = decode(frame.payload)
                except MessageError as exc:
                    log.warning("membership.bad_message", peer=stream.remote_peer, error=str(exc))
                    continue
                if msg.from_id == SELF_MARK:
                    msg = replace(msg, from_id=stream.remote_peer)
                self._apply(self.m.receive(stream.remote_peer, msg, now, self._rng))

    # -- effects -----------------------------------------------------------------------------

    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                msg = effect.msg
                if msg.from_id == self.m.self_id:
                    msg = replace(msg, from_id=SELF_MARK)
                self.senders.send(effect.to_id, encode(msg))
                continue
            if isinstance(effect, MemberSuspect):
                self.stats["suspicions"] += 1
            elif isinstance(effect, MemberDown):
                self.stats["deaths"] += 1
            elif isinstance(effect, Refuted):
                self.stats["refutations"] += 1
            self._on_effect(effect)
        # Wake the driver only when this input armed a timer earlier than the one it sleeps
        # until: most inputs (an Ack, a Ping answered here and now) arm none, and waking for
        # them was about half of the driver's wake-ups in an idle pool.
        if self.m.next_deadline_s() < self._asleep_until:
            self._wake.set()

    # -- driver ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.senders.run)
            self.host.set_handler(PROTOCOL, self.handle)
            task_status.started()
            while True:
                now = trio.current_time()
                self._apply(self.m.tick(now, self._rng))
                self._wake = trio.Event()
                # Asleep until the next timer, or an input (``_apply``) that may have armed an
                # earlier one: no polling, an idle pool wakes only for its probes. (A 50 ms cap
                # here was 20 of the ~45 wake-ups per second of an idle node.)
                self._asleep_until = self.m.next_deadline_s()
                with trio.move_on_at(self._asleep_until):
                    await self._wake.wait()
