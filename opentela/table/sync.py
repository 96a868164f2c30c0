"""Replicating the table over libp2p: bounded fan-out gossip, mutual introduction,
anti-entropy, and load as small signed updates.

- A change of a node's own record is gossiped (``gossip.py``): every ``GOSSIP_INTERVAL_S`` a
  node sends at most ``fanout`` one-way messages (protocol ``/opentela/gossip/1``, one long-lived
  stream per peer) to random live peers, each carrying a batch of rumors; a node that accepts a
  rumor as news passes it on. Per-node cost is bounded whatever the pool's size, and a change
  reaches a 1,000-node pool in about a second (``scripts/bench_scale.py``). Each record
  version is verified once per node: copies of what we already hold are dropped by
  (author, version) before any signature check.
- Load is not a record change: a worker signs a ~110-byte load update (``load.py``) and sends
  it straight to the entry nodes that forwarded it requests recently (they route on it), and
  gossips it at most every ``max(0.5 s, n / POOL_LOAD_RATE)`` (``gossip.load_gossip_interval``),
  so the whole pool carries about ``POOL_LOAD_RATE`` load rumors per second however many
  workers are busy.
- When it hears of a peer for the first time it pushes its own record to that peer, so a
  worker that bootstrapped from the head introduces itself to every other worker.
- Every ``AE_INTERVAL_S`` it exchanges a 16-byte digest hash with one random peer and, on a
  mismatch, the per-author versions, then pulls and pushes the difference. What gossip misses
  is repaired within a few intervals; nothing depends on a message arriving. A round costs a
  new stream and its negotiation (~90 trio task steps on the initiating node alone, of an
  idle node's ~290 per second in a 3-node pool before this pacing), so a quiet node skips
  rounds: it runs one every period for ``AE_ACTIVE_S`` after its table changed (its own record,
  a record it accepted, a round that found a difference) or when its set of live peers
  changed, and otherwise every ``AE_QUIET_S``. Lost gossip is still repaired within a few
  periods: every node that accepted the news it missed is in its active window and asks.
- Records are only re-signed when they change: liveness is the membership protocol's job
  (SWIM, ``overlay/membership``), so idle table traffic is one digest hash per ``AE_QUIET_S``,
  whatever the pool size. A record relayed by a third party counts as alive for ``TTL_S``
  until membership reaches its author. A node that leaves publishes a ``left`` tombstone, pushed
  at once to the peers it is connected to and gossiped to the rest; peers honour it at once.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import msgpack
import structlog
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..overlay import framing, limits
from ..overlay.host import Host, PeerStream, StreamFailed
from ..overlay.peer_senders import PeerSenders
from . import digest as dg
from . import gossip as gs
from .load import InvalidLoad, LoadUpdate, peek, sign_load, verify_load
from .record import LEFT, NodeRecord
from .signing import InvalidRecord, SignedRecord, sign, verify
from .store import DEAD, GONE, TableStore

PROTOCOL = "/opentela/table/1"
GOSSIP_PROTOCOL = "/opentela/gossip/1"
GOSSIP_INTERVAL_S = gs.DEFAULT_INTERVAL_S
GOSSIP_IDLE_S = 60.0  # a gossip stream unused this long is closed (and its task ends)
MAX_LOADS_PER_MESSAGE = 4096
_FRAME_OVERHEAD = 8  # length prefix and msgpack [kind, bytes] header of one BODY frame
TTL_S = 30.0  # a record membership has not confirmed is routable this long after it arrived
MAINTENANCE_S = 5.0  # how often forgotten authors are expired
AE_INTERVAL_S = 5.0  # anti-entropy period (one random peer per period; repairs lost pushes)
AE_ACTIVE_S = 60.0  # after a table change, rounds run every period for this long ...
AE_QUIET_S = 30.0  # ... otherwise (and while the live peers stay the same) this often
EXCHANGE_TIMEOUT_S = 3.0  # bound on any one control-plane exchange
MAX_RECORDS_PER_MESSAGE = 512  # records per push or pull answer (~10 KiB each, < MAX_FRAME)
MAX_DIGEST_ENTRIES = 16384  # authors in a digest or a want list: far above any pool's size

log = structlog.get_logger("opentela.table")


class TableSync:
    def __init__(
        self,
        host: Host,
        key: Ed25519PrivateKey,
        initial: NodeRecord,
        *,
        rng: random.Random | None = None,
        on_peer: Callable[[NodeRecord], None] | None = None,
        admit: Callable[[SignedRecord, float], SignedRecord | None] | None = None,
    ) -> None:
        self.host = host
        self._key = key
        self._rng = rng or random.Random()
        self.store = TableStore(host.peer_id, TTL_S)
        self._own = initial
        self._on_peer = on_peer
        self._admit = admit  # closed pool: checks the author's grant, bounds its claims
        self._nursery: trio.Nursery | None = None
        self.stats = {
            "rejected": 0,
            "pushes_sent": 0,
            "syncs": 0,
            "bytes_sent": 0,
            "gossip_sent": 0,
            "gossip_received": 0,
            "gossip_bytes_sent": 0,
            "gossip_bytes_received": 0,
            "duplicates": 0,
            "loads_accepted": 0,
            "loads_sent_direct": 0,
        }
        self._rate = limits.PeerRate(limits.TABLE_RATE_PER_S, limits.TABLE_BURST)
        self._gossip_rate = limits.PeerRate(limits.GOSSIP_RATE_PER_S, limits.GOSSIP_BURST)
        self._over_logged = limits.LogOnce()
        self._bad_load_logged = limits.LogOnce()
        self.gossip = gs.Gossip(now_s=trio.current_time())
        self.senders = PeerSenders(host, GOSSIP_PROTOCOL, idle_s=GOSSIP_IDLE_S)
        self._own_load: LoadUpdate | None = None
        self._load_gossiped_at = -1e18
        self._load_gossip_due = False  # an update is waiting for its turn in gossip
        self._wake = trio.Event()
        self._changed_at = trio.current_time()  # last table change (anti-entropy pacing)
        self._publish_local(initial)

    # -- own record ---------------------------------------------------------------------------

    @property
    def own(self) -> NodeRecord:
        return self._own

    def _next_version(self, floor: int = 0) -> int:
        # Milliseconds since the epoch, kept strictly increasing: a restarted node's record
        # outranks its previous life's (even its tombstone) without persisting a counter.
        # Load updates draw from the same counter, so "newer" compares across both.
        if self._own_load is not None:
            floor = max(floor, self._own_load.version)
        return max(self._own.version + 1, floor + 1, int(time.time() * 1000))

    def _publish_local(self, rec: NodeRecord) -> SignedRecord:
        signed = sign(rec, self._key)
        self._own = rec
        self._changed_at = trio.current_time()
        self.store.apply([signed], trio.current_time())
        return signed

    def update(self, **changes: Any) -> None:
        """Change our own record and gossip it."""
        if "load" not in changes and self._own_load is not None:
            changes["load"] = self._own_load.load  # a record signed now carries today's load
        rec = replace(self._own, **changes, version=self._next_version(), timestamp=time.time())
        signed = self._publish_local(rec)
        self._offer_record(signed, None)

    def publish_load(self, load: int, direct_to: Iterable[str] = ()) -> None:
        """Our load changed: a signed update, sent at once to ``direct_to`` (the entries that
        route to us) and gossiped when the pool's load budget gives us a turn."""
        if self._own.status == LEFT:
            return
        version = self._next_version()
        upd = sign_load(self._key, version, load)
        self._own_load = upd
        self.store.apply_load(self.host.peer_id, version, load)
        if direct_to:
            payload = gs.encode_direct(upd.wire())
            for pid in direct_to:
                if pid != self.host.peer_id and self.senders.send(pid, payload):
                    self.stats["loads_sent_direct"] += 1
                    self._count_sent(payload)
        self._load_gossip_due = True
        self._wake.set()

    def load_gossip_interval(self) -> float:
        return gs.load_gossip_interval(len(self.peers()) + 1)

    def _offer_record(self, signed: SignedRecord, source: str | None) -> None:
        r = signed.record
        self.gossip.offer(gs.Rumor(gs.RECORD, r.peer_id, r.version, signed.wire()), source)
        self._wake.set()

    # -- peers ---------------------------------------------------------------------------------

    def peers(self) -> list[str]:
        now = trio.current_time()
        return [
            pid
            for pid in self.store.records()
            if pid != self.host.peer_id and self.store.alive(pid, now)
        ]

    # -- gossip ---------------------------------------------------------------------------------

    def _count_sent(self, payload: bytes) -> None:
        self.stats["gossip_sent"] += 1
        self.stats["gossip_bytes_sent"] += len(payload) + _FRAME_OVERHEAD

    async def _gossip_loop(self) -> None:
        while True:
            now = trio.current_time()
            if (
                self._load_gossip_due
                and self._own_load is not None
                and now - self._load_gossiped_at >= self.load_gossip_interval()
            ):
                upd = self._own_load
                self.gossip.offer(gs.Rumor(gs.LOAD, upd.author, upd.version, upd.wire()))
                self._load_gossip_due, self._load_gossiped_at = False, now
            live = self.peers() if len(self.gossip) else []
            for send in self.gossip.tick(now, self._gossip_peers(live), self._rng, len(live) + 1):
                payload = gs.encode_message(send.rumors)
                if self.senders.send(send.to_id, payload):
                    self._count_sent(payload)
            self._wake = trio.Event()
            wait = self.gossip.next_deadline_s() - now
            if self._load_gossip_due:
                wait = min(wait, self._load_gossiped_at + self.load_gossip_interval() - now)
            # Nothing to send: asleep until something is offered (``_wake``), not polling.
            with trio.move_on_after(max(0.0, wait)):
                await self._wake.wait()

    def _gossip_peers(self, live: list[str]) -> list[str]:
        """Live peers we are connected to, when there are enough of them: gossip then needs no
        dial (the connection budget keeps a bounded, changing set of them, so over time news
        still takes random paths); all live peers otherwise."""
        connected = set(self.host.connected_peers())
        near = [p for p in live if p in connected]
        return near if len(near) >= self.gossip.fanout else live

    async def handle_gossip(self, stream: PeerStream) -> None:
        """One peer's long-lived gossip stream: every frame is one batch of rumors."""
        source = stream.remote_peer
        while True:
            try:
                frames = await stream.receive(3600.0)
            except StreamFailed:
                return
            for frame in frames:
                if frame.kind != framing.BODY or not isinstance(frame.payload, bytes):
                    continue
                self.stats["gossip_received"] += 1
                self.stats["gossip_bytes_received"] += len(frame.payload) + _FRAME_OVERHEAD
                now = trio.current_time()
                if not self._gossip_rate.allow(source, now):
                    if self._over_logged.should_log(source, now):
                        log.warning("table.gossip_rate_limited", peer=source)
                    continue
                try:
                    self._on_gossip(frame.payload, source)
                except Exception:
                    log.exception("table.gossip_error", peer=source)

    def _on_gossip(self, payload: bytes, source: str) -> None:
        try:
            msg = msgpack.unpackb(payload, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError):
            self.stats["rejected"] += 1
            return
        if not isinstance(msg, dict):
            return
        records = msg.get("r") or []
        if isinstance(records, list):
            for item in records[:MAX_RECORDS_PER_MESSAGE]:
                self._on_record_rumor(item, source)
        for key, forward in (("l", True), ("d", False)):
            loads = msg.get(key) or []
            if isinstance(loads, list):
                for data in loads[:MAX_LOADS_PER_MESSAGE]:
                    self._on_load_rumor(data, source, forward)

    def _on_record_rumor(self, item: Any, source: str) -> None:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], bytes)):
            self.stats["rejected"] += 1
            return
        author, version, data = item
        have = self.store.get(author) if isinstance(author, str) else None
        if have is not None and isinstance(version, int) and version <= have.record.version:
            self.stats["duplicates"] += 1  # a copy of what we hold: no decode, no signature
            return
        try:
            packed = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError):
            self.stats["rejected"] += 1
            return
        for signed in self._accept([packed], source):
            if signed.record.peer_id != self.host.peer_id:
                self._offer_record(signed, source)

    def _on_load_rumor(self, data: Any, source: str, forward: bool) -> None:
        """A load update: ``forward`` when it came by gossip (``"l"``), not when a worker sent
        it straight to us (``"d"``): direct updates go out at the worker's full rate, and
        passing them on would put that rate on the whole pool instead of its budget."""
        try:
            packed = msgpack.unpackb(data, raw=False) if isinstance(data, bytes) else None
            author, version = peek(packed)
        except (InvalidLoad, ValueError, msgpack.ExtraData, msgpack.FormatError):
            self.stats["rejected"] += 1
            return
        if author == self.host.peer_id or version <= self.store.load_version(author):
            self.stats["duplicates"] += 1
            return
        if self.store.get(author) is None:
            return  # load news of an author we have no (admitted) record of: not ours to keep
        if source != author:
            # Relayed: only the signature says the author wrote it. Sent by the author itself
            # (directly, to the entries it serves), the Noise session already proved who is
            # speaking: no check, which is what keeps an entry's cost per update low. Whoever
            # we pass it on to checks it (for them it is relayed).
            try:
                verify_load(packed)
            except InvalidLoad as exc:
                self.stats["rejected"] += 1
                if self._bad_load_logged.should_log(source, trio.current_time()):
                    log.warning("table.load_rejected", source=source, reason=str(exc))
                return
        _, _, load, _ = packed
        if self.store.apply_load(author, version, load):
            self.stats["loads_accepted"] += 1
            if forward:
                self.gossip.offer(gs.Rumor(gs.LOAD, author, version, data), source)
                self._wake.set()

    # -- wire ----------------------------------------------------------------------------------

    async def _exchange(self, stream: PeerStream, msg: dict[str, Any]) -> dict[str, Any]:
        data = framing.encode(framing.BODY, msg)
        self.stats["bytes_sent"] += len(data)
        await stream.send(data)
        frames = await stream.receive(EXCHANGE_TIMEOUT_S)
        frame = frames[0]
        if frame.kind != framing.BODY or not isinstance(frame.payload, dict):
            raise StreamFailed("unexpected table frame")
        return frame.payload

    async def _push_to(self, peer_id: str, records: list[SignedRecord]) -> None:
        try:
            stream = await self.host.open_stream(peer_id, PROTOCOL)
        except StreamFailed as exc:
            log.debug("table.push_failed", peer=peer_id, error=str(exc))
            return
        try:
            with trio.move_on_after(EXCHANGE_TIMEOUT_S):
                await self._exchange(stream, {"op": "push", "records": [r.pack() for r in records]})
                self.stats["pushes_sent"] += 1
        except StreamFailed as exc:
            log.debug("table.push_failed", peer=peer_id, error=str(exc))
        finally:
            await stream.close()

    def _accept(self, packed: list[Any], source: str, ages: Any = None) -> list[SignedRecord]:
        good: list[SignedRecord] = []
        now = trio.current_time()
        for item in packed[:MAX_RECORDS_PER_MESSAGE]:
            try:
                signed = verify(item)
            except InvalidRecord as exc:
                self.stats["rejected"] += 1
                log.warning("table.record_rejected", source=source, reason=str(exc))
                continue
            if self._admit is not None and signed.record.peer_id != self.host.peer_id:
                admitted = self._admit(signed, now)
                if admitted is None:
                    self.stats["rejected"] += 1  # logged by the admission check, rate-limited
                    continue
                signed = admitted
            good.append(signed)
        age_s: dict[str, float] = {}
        if isinstance(ages, dict):  # only the accepted authors' ages: bounded by the records
            for r in good:
                v = ages.get(r.record.peer_id)
                if isinstance(v, int | float):
                    age_s[r.record.peer_id] = float(v)
        before = {r.record.peer_id: self.store.get(r.record.peer_id) for r in good}
        fresh = self.store.apply(good, now, age_s)
        if fresh:
            self._changed_at = now
        for rec in fresh:
            r = rec.record
            if r.peer_id == self.host.peer_id:
                # A newer record "from us" can only be our previous life's: outrank it.
                self.update(status=self._own.status)
                continue
            self.host.add_peer_addrs(r.peer_id, list(r.addrs))
            # News from an author means it is up (maybe restarted): forget failed dials to it.
            self.host.unblock(r.peer_id)
            if self._on_peer is not None and r.status != LEFT:
                self._on_peer(r)
            log.info(
                "table.record",
                peer=r.peer_id,
                status=r.status,
                version=r.version,
                models=list(r.models),
                via=source,
            )
        # Introduce ourselves to peers that are new to us, or back after leaving or dying; a
        # routine update (e.g. load) from a peer that already knows us needs no answer.
        new_peers = [
            r
            for r in fresh
            if r.record.peer_id != self.host.peer_id
            and (
                (old := before.get(r.record.peer_id)) is None
                or old.record.status == LEFT
                or self.store.liveness(r.record.peer_id) in (DEAD, GONE)
            )
        ]
        own = self.store.get(self.host.peer_id)
        if own is not None and self._nursery is not None:
            for rec in new_peers:
                if rec.record.status != LEFT and rec.record.peer_id != source:
                    self._nursery.start_soon(self._push_to, rec.record.peer_id, [own])
        return fresh

    async def handle(self, stream: PeerStream) -> None:
        """Serve one inbound control-plane conversation (push or sync)."""
        try:
            while True:
                try:
                    frames = await stream.receive(EXCHANGE_TIMEOUT_S)
                except StreamFailed:
                    return
                for frame in frames:
                    if self._rate.allow(stream.remote_peer, trio.current_time()):
                        reply = self._serve(frame, stream.remote_peer)
                    else:
                        reply = {"error": "rate limited"}  # not processed; the peer retries
                        if self._over_logged.should_log(stream.remote_peer, trio.current_time()):
                            log.warning("table.rate_limited", peer=stream.remote_peer)
                    data = framing.encode(framing.BODY, reply)
                    self.stats["bytes_sent"] += len(data)
                    await stream.send(data)
        except StreamFailed:
            return
        except Exception:
            log.exception("table.serve_error", peer=stream.remote_peer)

    def _serve(self, frame: framing.Frame, source: str) -> dict[str, Any]:
        msg = frame.payload if isinstance(frame.payload, dict) else {}
        op = msg.get("op")
        records = self.store.records()
        if op == "push":
            packed = msg.get("records") or []
            if not isinstance(packed, list):
                return {"error": "records must be a list"}
            if len(packed) > MAX_RECORDS_PER_MESSAGE:
                return {"error": f"more than {MAX_RECORDS_PER_MESSAGE} records in one push"}
            self._accept(packed, source, msg.get("ages"))
            return {"ok": True}
        if op == "hash":
            d = dg.digest(records)
            if msg.get("hash") == dg.digest_hash(d):
                return {"same": True}
            return {"digest": d}
        if op == "pull":
            asked = msg.get("want") or []
            if not isinstance(asked, list) or len(asked) > MAX_DIGEST_ENTRIES:
                return {"error": f"want must be a list of at most {MAX_DIGEST_ENTRIES} peer ids"}
            want = [p for p in asked if isinstance(p, str) and p in records]
            want = want[:MAX_RECORDS_PER_MESSAGE]
            return {"records": [records[p].pack() for p in want], "ages": self._ages(want)}
        return {"error": f"unknown op {op!r}"}

    def _ages(self, peer_ids: list[str]) -> dict[str, float]:
        """How old our news of each author is; an author our membership declared dead or
        gone is sent as stale, so the receiver waits for its own probes before routing."""
        now = trio.current_time()
        return {
            p: TTL_S + 1
            if self.store.liveness(p) in (DEAD, GONE)
            else round(self.store.age(p, now), 3)
            for p in peer_ids
        }

    async def sync_with(self, peer_id: str) -> int:
        """One anti-entropy round with ``peer_id``; returns how many records we learned."""
        stream = await self.host.open_stream(peer_id, PROTOCOL)
        learned = 0
        try:
            with trio.fail_after(EXCHANGE_TIMEOUT_S):
                local = dg.digest(self.store.records())
                reply = await self._exchange(stream, {"op": "hash", "hash": dg.digest_hash(local)})
                self.stats["syncs"] += 1
                if reply.get("same"):
                    return 0
                self._changed_at = trio.current_time()  # we differ: keep asking for a while
                remote = _remote_digest(reply.get("digest"))
                want, send = dg.difference(local, remote)
                want = want[:MAX_RECORDS_PER_MESSAGE]  # the rest comes in the next rounds
                if want:
                    got = await self._exchange(stream, {"op": "pull", "want": want})
                    records_in = list(got.get("records") or [])
                    learned = len(self._accept(records_in, peer_id, got.get("ages")))
                if send:
                    records = self.store.records()
                    send = send[:MAX_RECORDS_PER_MESSAGE]
                    await self._exchange(
                        stream,
                        {
                            "op": "push",
                            "records": [records[p].pack() for p in send],
                            "ages": self._ages(send),
                        },
                    )
        except trio.TooSlowError as exc:
            raise StreamFailed(f"sync with {peer_id[-8:]} timed out") from exc
        finally:
            await stream.close()
        return learned

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.host.set_handler(PROTOCOL, self.handle)
            self.host.set_handler(GOSSIP_PROTOCOL, self.handle_gossip)
            await nursery.start(self.senders.run)
            nursery.start_soon(self._maintenance_loop)
            nursery.start_soon(self._anti_entropy_loop)
            nursery.start_soon(self._gossip_loop)
            task_status.started()

    async def _maintenance_loop(self) -> None:
        while True:
            await trio.sleep(MAINTENANCE_S)
            for pid in self.store.expire(trio.current_time()):
                self.gossip.drop(pid)
                log.info("table.forgot", peer=pid)

    async def _anti_entropy_loop(self) -> None:
        last_round, last_peers = -math.inf, frozenset[str]()
        while True:
            await trio.sleep(AE_INTERVAL_S * self._rng.uniform(0.5, 1.5))
            peers = self.peers()
            now = trio.current_time()
            if not peers or not ae_round_due(
                now, self._changed_at, last_round, last_peers != frozenset(peers)
            ):
                continue
            last_round, last_peers = now, frozenset(peers)
            peer = self._rng.choice(peers)
            try:
                await self.sync_with(peer)
            except StreamFailed as exc:
                log.debug("table.sync_failed", peer=peer, error=str(exc))
            except Exception:
                # A bug in one round must not take the node's replication down with it.
                log.exception("table.sync_error", peer=peer)

    async def join(self, peer_id: str) -> None:
        """First contact with a bootstrap peer: push ourselves, then pull everything."""
        own = self.store.get(self.host.peer_id)
        assert own is not None
        await self._push_to(peer_id, [own])
        await self.sync_with(peer_id)

    async def leave(self, timeout_s: float = 2.0) -> None:
        """Publish a tombstone and wait (bounded) until peers have it: pushed at once to the
        peers we are connected to (no dials on the way out), gossiped to the rest."""
        connected = set(self.host.connected_peers())
        peers = [p for p in self.peers() if p in connected]
        rec = replace(self._own, status=LEFT, version=self._next_version(), timestamp=time.time())
        signed = self._publish_local(rec)
        self._offer_record(signed, None)
        with trio.move_on_after(timeout_s):
            async with trio.open_nursery() as n:
                for pid in peers:
                    n.start_soon(self._push_to, pid, [signed])


def ae_round_due(now: float, changed_at: float, last_round: float, peers_changed: bool) -> bool:
    """Whether this anti-entropy period runs a round (see the module doc): always while the
    table changed in the last ``AE_ACTIVE_S`` or the live peers are not those of the last
    round, else once per ``AE_QUIET_S``. Pure, for the tests."""
    return peers_changed or now - changed_at < AE_ACTIVE_S or now - last_round >= AE_QUIET_S


def _remote_digest(raw: Any) -> dg.Digest:
    """A peer's digest, checked: at most ``MAX_DIGEST_ENTRIES`` authors, each a str → int."""
    if not isinstance(raw, dict) or len(raw) > MAX_DIGEST_ENTRIES:
        raise StreamFailed(f"digest must be a map of at most {MAX_DIGEST_ENTRIES} authors")
    out: dg.Digest = {}
    for k, v in raw.items():
        if not (isinstance(k, str) and isinstance(v, int) and 0 <= v < 2**63):
            raise StreamFailed("digest entries must be peer id → version")
        out[k] = v
    return out
