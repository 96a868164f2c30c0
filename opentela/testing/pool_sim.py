"""A whole pool in one process: SWIM membership and the table on one virtual clock, with loss.

``MemoryNetwork`` (``overlay/membership/transport.py``) already simulates SWIM with the real
codec. ``PoolSim`` extends it with the table layer as the runtime will drive it, so that the
cost of the control plane can be measured at sizes no machine runs as processes (issue 10:
1,000 nodes):

- per node a ``Gossip`` (``table/gossip.py``) ticked every ``gossip_interval_s`` with the
  members SWIM believes up as peers; a rumor that is newer than what the node holds is
  verified once and offered on, with the sender as its source;
- each record that is news hands its author to SWIM (``join``), as ``pool_member.py`` does;
- anti-entropy as ``table/sync.py`` does it: every ``ae_interval_s * U(0.5, 1.5)`` one random
  live peer, a 16-byte digest hash, and on a mismatch the per-author versions, then pull and
  push of the difference (records learned that way are not gossiped again);
- load: every worker signs a new load every ``direct_interval_s`` and sends it straight to the
  ``entries`` entry nodes (the ones that forward it requests), and gossips it at most every
  ``max(0.5 s, n / pool_load_rate_per_s)`` (so the pool as a whole gossips ~10 loads/s).

Every table message is encoded for real (gossip as ``table/sync.py`` frames it, anti-entropy
as its exchanges), so byte counts are the wire's, but never decoded or verified: the receiver gets
the rumors as objects and *counts* the decode and the signature check it would have done
(``Counters``), which the benchmark multiplies by measured unit costs. Records are real signed
``NodeRecord``s the size of a typical worker's; load updates reuse one signature per worker
(the bytes have the real size, nobody checks them).

Table messages are dropped with the same ``loss`` as SWIM datagrams, although they travel on
streams: a pessimistic model of a stream that fails. A lost anti-entropy message ends that
round, as a timed-out exchange does.

Start-up is a *warm start*: every node already knows every other one as alive and holds every
record, as in a pool that converged long ago. Bootstrapping 1,000 nodes through real joins
costs O(N^2) introductions and is not what is being measured; joins are measured one at a time
(``join_node``). Keys are derived from the seed so runs are reproducible: never do that for real.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..overlay import framing, identity
from ..overlay.membership.queue import BroadcastQueue
from ..overlay.membership.state import (
    Effect,
    Member,
    MemberDown,
    MemberLeft,
    MembershipConfig,
    MemberState,
    MemberSuspect,
    MemberUp,
    Refuted,
)
from ..overlay.membership.transport import MemoryNetwork
from ..table import gossip as gsp
from ..table.load import LoadUpdate, sign_load
from ..table.record import Gpu, NodeRecord, Service
from ..table.signing import sign

SWIM, GOSSIP, AE, DIRECT = 0, 1, 2, 3
KINDS = ("swim", "gossip", "ae", "direct")
AE_INTERVAL_S = 5.0  # as table/sync.py (not imported: it pulls in libp2p)
VERSION_BASE_MS = 1_780_000_000_000  # versions are milliseconds since the epoch, as in sync.py


@dataclass(frozen=True)
class PoolConfig:
    """The pool's knobs; defaults are the ones the runtime is meant to use."""

    entries: int = 2
    """Entry nodes (the first ``entries`` ids): they get every worker's load directly and
    publish none; every other node is a worker."""
    fanout: int = gsp.DEFAULT_FANOUT
    gossip_interval_s: float = gsp.DEFAULT_INTERVAL_S
    retransmit_mult: int = gsp.DEFAULT_RETRANSMIT_MULT
    ae_interval_s: float = AE_INTERVAL_S
    direct_interval_s: float = 0.5
    """A busy worker's load changes up to twice a second; each change goes to the entries."""
    pool_load_rate_per_s: float = gsp.POOL_LOAD_RATE
    min_load_interval_s: float = gsp.LOAD_MIN_GOSSIP_S
    membership: MembershipConfig = field(default_factory=MembershipConfig)

    def load_interval_s(self, n: int) -> float:
        """How often one worker gossips its load: the pool as a whole gossips a fixed rate."""
        return max(self.min_load_interval_s, n / self.pool_load_rate_per_s)


class Counters:
    """One node's traffic by kind (sent/received messages and bytes) and the work it did."""

    __slots__ = ("ops", "recv_bytes", "recv_msgs", "sent_bytes", "sent_msgs")

    def __init__(self) -> None:
        self.sent_msgs = [0, 0, 0, 0]
        self.sent_bytes = [0, 0, 0, 0]
        self.recv_msgs = [0, 0, 0, 0]
        self.recv_bytes = [0, 0, 0, 0]
        # table_enc / table_dec: table messages encoded / decoded, with their bytes;
        # verify_record / verify_load: signatures checked; digest_hash: digests hashed.
        self.ops: dict[str, int] = dict.fromkeys(
            (
                "table_enc",
                "table_enc_bytes",
                "table_dec",
                "table_dec_bytes",
                "verify_record",
                "verify_load",
                "digest_hash",
            ),
            0,
        )

    def copy(self) -> Counters:
        c = Counters()
        c.sent_msgs, c.sent_bytes = list(self.sent_msgs), list(self.sent_bytes)
        c.recv_msgs, c.recv_bytes = list(self.recv_msgs), list(self.recv_bytes)
        c.ops = dict(self.ops)
        return c

    def minus(self, before: Counters) -> Counters:
        c = Counters()
        c.sent_msgs = [a - b for a, b in zip(self.sent_msgs, before.sent_msgs, strict=True)]
        c.sent_bytes = [a - b for a, b in zip(self.sent_bytes, before.sent_bytes, strict=True)]
        c.recv_msgs = [a - b for a, b in zip(self.recv_msgs, before.recv_msgs, strict=True)]
        c.recv_bytes = [a - b for a, b in zip(self.recv_bytes, before.recv_bytes, strict=True)]
        c.ops = {k: v - before.ops[k] for k, v in self.ops.items()}
        return c


class _Peers:
    """The members one node believes up: O(1) add/remove, and a list ``Gossip.tick`` samples."""

    __slots__ = ("_at", "items")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self.items: list[str] = list(ids)
        self._at = {x: i for i, x in enumerate(self.items)}

    def add(self, x: str) -> None:
        if x not in self._at:
            self._at[x] = len(self.items)
            self.items.append(x)

    def discard(self, x: str) -> None:
        i = self._at.pop(x, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self._at[last] = i

    def __len__(self) -> int:
        return len(self.items)


class TableNode:
    """What one node's table layer holds in the simulation: versions, not records."""

    def __init__(self, node_id: str, index: int, cfg: PoolConfig, now_s: float, seed: int):
        self.id = node_id
        self.index = index
        self.gossip = gsp.Gossip(
            fanout=cfg.fanout,
            interval_s=cfg.gossip_interval_s,
            retransmit_mult=cfg.retransmit_mult,
            now_s=now_s,
        )
        self.records: dict[str, int] = {}  # author → record version held
        self.fingerprint = 0  # order-free fingerprint of ``records``: equal tables, equal value
        self.loads: dict[str, int] = {}  # author → load version held
        self.peers = _Peers()
        self.rng = random.Random(f"table:{seed}:{node_id}")
        self.counters = Counters()

    def hold_record(self, author: str, version: int) -> bool:
        old = self.records.get(author)
        if old is not None and old >= version:
            return False
        if old is not None:
            self.fingerprint ^= hash((author, old))
        self.fingerprint ^= hash((author, version))
        self.records[author] = version
        return True


Handler = Callable[["PoolSim", str, str, Any], None]
"""What a table message or timer runs on delivery: ``fn(sim, to_id, from_id, arg)``."""


class _Msg:
    """A table message (``kind`` >= 0, counted) or a timer (``kind`` -1) on the heap."""

    __slots__ = ("arg", "fn", "kind", "size")

    def __init__(self, kind: int, size: int, fn: Handler, arg: Any) -> None:
        self.kind, self.size, self.fn, self.arg = kind, size, fn, arg


def _key(seed: int, index: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"pool-sim:{seed}:{index}".encode()).digest()
    )


def worker_record(peer_id: str, index: int, version: int) -> NodeRecord:
    """A typical worker's record: three addresses, one model service, four GPUs."""
    a, b = divmod(index, 250)
    return NodeRecord(
        peer_id=peer_id,
        version=version,
        timestamp=version / 1000,
        role="worker",
        addrs=(
            f"/ip4/10.{a}.{b}.17/tcp/4001",
            f"/ip4/10.{a}.{b}.17/udp/4001/quic-v1",
            f"/ip6/fd00::{a:x}:{b:x}:17/tcp/4001",
        ),
        http_addr=f"http://10.{a}.{b}.17:8080",
        services=(
            Service(
                "vllm-0",
                "ready",
                ("model=meta-llama/Llama-3.1-8B-Instruct", "model=llama-3.1-8b"),
            ),
        ),
        gpus=tuple(Gpu("NVIDIA H100 80GB HBM3", 81559, 70000 + i) for i in range(4)),
        load=3,
        software="opentela/0.1.0 vllm/0.6.3",
    )


def _frame(payload: object) -> bytes:
    return framing.encode(framing.BODY, payload)


def gossip_wire(rumors: Iterable[gsp.Rumor]) -> bytes:
    """A gossip message as ``table/sync.py`` sends it: a BODY frame around
    ``gossip.encode_message``."""
    return framing.encode(framing.BODY, gsp.encode_message(rumors))


def direct_wire(rumor: gsp.Rumor) -> bytes:
    """A load update a worker sends straight to an entry (``gossip.encode_direct``)."""
    return framing.encode(framing.BODY, gsp.encode_direct(rumor.data))


class PoolSim(MemoryNetwork):
    """``MemoryNetwork`` plus the table layer (see the module docstring)."""

    def __init__(
        self,
        n: int,
        *,
        cfg: PoolConfig | None = None,
        seed: int = 0,
        loss: float = 0.01,
        resolution_s: float | None = 0.01,
    ) -> None:
        super().__init__(seed=seed, loss=loss, resolution_s=resolution_s)
        self.cfg = cfg or PoolConfig()
        self.tables: dict[str, TableNode] = {}
        self.ids: list[str] = []
        self.entries: list[str] = []
        self._keys: dict[str, Ed25519PrivateKey] = {}
        self._rumors: dict[tuple[str, int], tuple[gsp.Rumor, list]] = {}  # records only
        self._load_sig: dict[str, LoadUpdate] = {}
        self._next_index = 0
        self._trng = random.Random(f"pool:{seed}")
        # Observations.
        self.watch: dict[tuple[str, int], dict[str, float]] = {}  # record → node → arrival
        self.born_s: dict[str, float] = {}  # when each node joined (0 for the warm start)
        self.load_delays: list[float] = []  # publish → arrival, each gossiped load at each node
        self.load_reach: dict[tuple[str, int], int] = {}  # gossiped load → nodes it reached
        self.load_published_s: dict[tuple[str, int], float] = {}
        self.downs: dict[str, dict[str, float]] = {}  # victim → observer → time
        self.false_downs: list[tuple[float, str, str]] = []  # (at, observer, member)
        self.suspicions = 0
        self.refutations = 0
        self.load_on = False
        self.load_started_s = 0.0
        self._load_phase: dict[str, float] = {}  # each worker's next gossip publish
        self._load_first: dict[str, float] = {}  # and its first one
        self._load_period_s = 0.0
        self._warm(n)

    # -- building the pool ------------------------------------------------------------------------

    def _new_identity(self) -> tuple[str, int]:
        i = self._next_index
        self._next_index += 1
        key = _key(self.seed, i)
        node_id = identity.peer_id(key)
        self._keys[node_id] = key
        pub = identity.public_key_bytes(key)
        self._load_sig[node_id] = sign_load(key, VERSION_BASE_MS, 0)
        assert self._load_sig[node_id].public_key == pub
        return node_id, i

    def _version(self) -> int:
        return VERSION_BASE_MS + round(self.now_s * 1000)

    def _sign_record(self, node_id: str, index: int, version: int) -> tuple[str, int]:
        signed = sign(worker_record(node_id, index, version), self._keys[node_id])
        data = signed.wire()
        self._rumors[(node_id, version)] = (
            gsp.Rumor(gsp.RECORD, node_id, version, data),
            signed.pack(),
        )
        return node_id, version

    def _warm(self, n: int) -> None:
        mcfg = self.cfg.membership
        idents = [self._new_identity() for _ in range(n)]
        self.ids = [i for i, _ in idents]
        self.entries = self.ids[: self.cfg.entries]
        for node_id, index in idents:
            self._sign_record(node_id, index, VERSION_BASE_MS)
        alive = Member(MemberState.ALIVE, 0, (), self.now_s)  # immutable: shared by all views
        for node_id, index in idents:
            node = self.spawn(node_id, mcfg, addrs=(f"/ip4/10.0.0.{index % 250}/tcp/4001",))
            # Warm start (private state, on purpose): every other member known alive, and no
            # join news left to spread. Probes start at random phases, as in a real pool.
            node._members = dict.fromkeys((x for x in self.ids if x != node_id), alive)
            node._queue = BroadcastQueue(mcfg.retransmit_mult)
            node._next_probe_s = self.now_s + self._trng.uniform(0, mcfg.probe_interval_s)
            node._dirty = True
            self.born_s[node_id] = self.now_s
            t = self._table(node_id, index)
            t.peers = _Peers(x for x in self.ids if x != node_id)
            for x in self.ids:
                t.hold_record(x, VERSION_BASE_MS)
            self._start_timers(node_id)
            self._schedule(node_id)

    def _table(self, node_id: str, index: int) -> TableNode:
        t = self.tables.get(node_id)
        if t is None:
            t = self.tables[node_id] = TableNode(node_id, index, self.cfg, self.now_s, self.seed)
        return t

    def _start_timers(self, node_id: str, ae_in_s: float | None = None) -> None:
        t = self.tables[node_id]
        self._at(self.now_s + t.rng.uniform(0, self.cfg.gossip_interval_s), node_id, _gossip_tick)
        if ae_in_s is None:
            ae_in_s = self.cfg.ae_interval_s * t.rng.uniform(0.5, 1.5)
        self._at(self.now_s + ae_in_s, node_id, _ae_start)

    # -- actions ------------------------------------------------------------------------------------

    def change_record(self, author: str) -> tuple[str, int]:
        """``author`` re-signs its record (a status or service change) and gossips it."""
        key = self._sign_record(author, self.tables[author].index, self._version())
        self.watch[key] = {}
        self.tables[author].hold_record(*key)
        self.tables[author].gossip.offer(self._rumors[key][0])
        return key

    def join_node(self, seed_id: str | None = None) -> tuple[str, int]:
        """A new node joins through ``seed_id`` as the runtime does it: SWIM join, its record
        pushed to the seed, a full anti-entropy round with it, and its record gossiped."""
        seed_id = seed_id or self.entries[0]
        node_id, index = self._new_identity()
        key = self._sign_record(node_id, index, self._version())
        self.watch[key] = {}
        self.ids.append(node_id)
        self.born_s[node_id] = self.now_s
        t = self._table(node_id, index)
        t.hold_record(*key)
        self.spawn(node_id, self.cfg.membership, addrs=("/ip4/10.9.9.9/tcp/4001",), seeds=[seed_id])
        t.gossip.offer(self._rumors[key][0])
        self._send_records(node_id, seed_id, [key], gossip_on=True)
        self._start_timers(node_id, ae_in_s=0.01)
        t.peers.add(seed_id)  # the first AE round and gossip go to the seed
        return key

    def start_load(self) -> None:
        """Every worker's load now changes all the time (each publishes at its allowed rate)."""
        self.load_on = True
        self.load_started_s = self.now_s
        self._load_period_s = self.cfg.load_interval_s(len(self.running()))
        for w in self.running():
            if w in self.entries:
                continue
            rng = self.tables[w].rng
            self._load_phase[w] = self.now_s + rng.uniform(0, self._load_period_s)
            self._load_first[w] = self._load_phase[w]
            self._at(self.now_s + rng.uniform(0, self.cfg.direct_interval_s), w, _load_tick)

    def stop_load(self) -> None:
        self.load_on = False

    def load_age_s(self, holder: str, worker: str) -> float:
        """How old the load ``holder`` has for ``worker`` is. Before the load phase, each
        worker's previous publish (one period before its first) is assumed to have reached
        everyone, so this is the steady state's age, not the start-up's."""
        v = self.tables[holder].loads.get(worker)
        pub_s = (v - VERSION_BASE_MS) / 1000 if v is not None else -math.inf
        before_s = self._load_first.get(worker, self.load_started_s) - self._load_period_s
        return self.now_s - max(pub_s, before_s)

    def kill(self, node_id: str) -> None:
        self.downs.setdefault(node_id, {})
        super().kill(node_id)

    # -- the network ----------------------------------------------------------------------------------

    def _at(self, at_s: float, node_id: str, fn: Handler, arg: Any = None) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (at_s, self._counter, node_id, node_id, _Msg(-1, 0, fn, arg)))

    def send_table(
        self, kind: int, from_id: str, to_id: str, data: bytes, fn: Handler, arg: Any
    ) -> None:
        """Count ``data`` as sent by ``from_id``; unless lost, run ``fn`` at ``to_id`` later."""
        c = self.tables[from_id].counters
        c.sent_msgs[kind] += 1
        c.sent_bytes[kind] += len(data)
        c.ops["table_enc"] += 1
        c.ops["table_enc_bytes"] += len(data)
        if (from_id, to_id) in self._blocked or self._rng.random() < self.loss:
            return
        at_s = self.now_s + self.delay_s + self._rng.uniform(0.0, self.jitter_s)
        self._counter += 1
        msg = _Msg(kind, len(data), fn, arg)
        heapq.heappush(self._heap, (at_s, self._counter, to_id, from_id, msg))

    def _deliver(self, to_id: str, from_id: str, data: Any) -> None:
        if to_id not in self._running:
            return
        if to_id in self._paused:
            self._paused[to_id].append((from_id, data))
            return
        if type(data) is bytes:
            c = self.tables[to_id].counters
            c.recv_msgs[SWIM] += 1
            c.recv_bytes[SWIM] += len(data)
            super()._deliver(to_id, from_id, data)
            return
        if data.kind >= 0:
            c = self.tables[to_id].counters
            c.recv_msgs[data.kind] += 1
            c.recv_bytes[data.kind] += data.size
            c.ops["table_dec"] += 1
            c.ops["table_dec_bytes"] += data.size
        data.fn(self, to_id, from_id, data.arg)

    def _handle(self, node_id: str, effects: list[Effect]) -> None:
        table = self.tables.get(node_id)
        for e in effects:
            t = type(e)
            if t is MemberUp:
                if table is not None:
                    table.peers.add(e.member_id)
            elif t is MemberDown or t is MemberLeft:
                if table is not None:
                    table.peers.discard(e.member_id)
                victim = self.downs.get(e.member_id)
                if victim is not None:
                    victim.setdefault(node_id, self.now_s)
                if e.member_id in self._running:
                    self.false_downs.append((self.now_s, node_id, e.member_id))
            elif t is MemberSuspect:
                self.suspicions += 1
            elif t is Refuted:
                self.refutations += 1
        super()._handle(node_id, effects)

    # -- table plumbing -------------------------------------------------------------------------------

    def accept_record(self, node_id: str, key: tuple[str, int], source: str | None) -> None:
        """``node_id`` got record ``key``; if it is news: verify (counted), hold, and offer it
        to gossip when it came as a rumor (``source`` set)."""
        t = self.tables[node_id]
        held = t.records.get(key[0])
        if held is not None and held >= key[1]:
            return
        t.counters.ops["verify_record"] += 1
        t.hold_record(*key)
        if key[0] != node_id:
            # As pool_member.py does (``on_peer``): a record's author is handed to SWIM, which
            # pings it unless it already knows it alive. A joiner whose introduction to some
            # member was lost learns it this way, from the table it pulled.
            self.join(node_id, key[0])
        w = self.watch.get(key)
        if w is not None:
            w.setdefault(node_id, self.now_s)
        if source is not None:
            t.gossip.offer(self._rumors[key][0], source)

    def _send_records(
        self, from_id: str, to_id: str, keys: list[tuple[str, int]], *, gossip_on: bool
    ) -> None:
        data = _frame(
            {
                "op": "push",
                "records": [self._rumors[k][1] for k in keys],
                "ages": {k[0]: 0.123 for k in keys},
            }
        )
        self.send_table(AE, from_id, to_id, data, _ae_records, (keys, gossip_on, True))


# -- handlers: fn(sim, to_id, from_id, arg) ---------------------------------------------------------


def _gossip_tick(sim: PoolSim, node_id: str, _from: str, _arg: object) -> None:
    t = sim.tables[node_id]
    peers = t.peers.items
    for send in t.gossip.tick(sim.now_s + 1e-9, peers, t.rng, len(peers) + 1):
        data = gossip_wire(send.rumors)
        sim.send_table(GOSSIP, node_id, send.to_id, data, _on_gossip, send.rumors)
    sim._at(sim.now_s + sim.cfg.gossip_interval_s, node_id, _gossip_tick)


def _on_gossip(sim: PoolSim, node_id: str, from_id: str, rumors: tuple[gsp.Rumor, ...]) -> None:
    t = sim.tables[node_id]
    for r in rumors:
        if r.kind == gsp.RECORD:
            sim.accept_record(node_id, (r.author, r.version), from_id)
            continue
        held = t.loads.get(r.author)
        if (held is not None and held >= r.version) or r.author == node_id:
            continue
        t.counters.ops["verify_load"] += 1
        t.loads[r.author] = r.version
        t.gossip.offer(r, from_id)
        if sim.load_on:
            sim.load_delays.append(sim.now_s - (r.version - VERSION_BASE_MS) / 1000)
            k = (r.author, r.version)
            sim.load_reach[k] = sim.load_reach.get(k, 0) + 1


def _load_tick(sim: PoolSim, node_id: str, _from: str, _arg: object) -> None:
    if not sim.load_on:
        return
    t = sim.tables[node_id]
    version = sim._version()
    tpl = sim._load_sig[node_id]
    load = t.rng.randrange(0, 64)
    data = LoadUpdate(node_id, version, load, tpl.public_key, tpl.signature).wire()
    rumor = gsp.Rumor(gsp.LOAD, node_id, version, data)
    t.loads[node_id] = version
    direct = direct_wire(rumor)  # as sync.publish_load: {"d": [update]}, never forwarded
    for e in sim.entries:
        if e != node_id and e in sim.tables:
            sim.send_table(DIRECT, node_id, e, direct, _on_direct, rumor)
    if sim.now_s >= sim._load_phase[node_id]:
        sim._load_phase[node_id] += sim._load_period_s
        t.gossip.offer(rumor)
        sim.load_reach.setdefault((node_id, version), 0)
        sim.load_published_s[(node_id, version)] = sim.now_s
    sim._at(sim.now_s + sim.cfg.direct_interval_s, node_id, _load_tick)


def _on_direct(sim: PoolSim, node_id: str, _from: str, rumor: gsp.Rumor) -> None:
    t = sim.tables[node_id]
    held = t.loads.get(rumor.author)
    if held is None or held < rumor.version:
        # From its author over an authenticated session: applied unchecked and not passed on
        # (``TableSync._on_load_rumor``).
        t.loads[rumor.author] = rumor.version


def _ae_start(sim: PoolSim, node_id: str, _from: str, _arg: object) -> None:
    t = sim.tables[node_id]
    sim._at(sim.now_s + sim.cfg.ae_interval_s * t.rng.uniform(0.5, 1.5), node_id, _ae_start)
    if not t.peers.items:
        return
    peer = t.rng.choice(t.peers.items)
    t.counters.ops["digest_hash"] += 1
    data = _frame({"op": "hash", "hash": b"\0" * 16})
    sim.send_table(AE, node_id, peer, data, _ae_hash, t.fingerprint)


def _ae_hash(sim: PoolSim, node_id: str, from_id: str, fingerprint: int) -> None:
    t = sim.tables[node_id]
    t.counters.ops["digest_hash"] += 1
    if fingerprint == t.fingerprint:
        sim.send_table(AE, node_id, from_id, _frame({"same": True}), _ae_done, None)
        return
    digest = dict(t.records)
    sim.send_table(AE, node_id, from_id, _frame({"digest": digest}), _ae_digest, digest)


def _ae_done(sim: PoolSim, node_id: str, from_id: str, _arg: object) -> None:
    pass


def _ae_digest(sim: PoolSim, node_id: str, from_id: str, remote: dict[str, int]) -> None:
    local = sim.tables[node_id].records
    want = sorted(p for p, v in remote.items() if v > local.get(p, -1))
    send = [(p, v) for p, v in sorted(local.items()) if v > remote.get(p, -1)]
    if want:
        data = _frame({"op": "pull", "want": want})
        sim.send_table(AE, node_id, from_id, data, _ae_pull, want)
    if send:
        sim._send_records(node_id, from_id, send, gossip_on=False)


def _ae_pull(sim: PoolSim, node_id: str, from_id: str, want: list[str]) -> None:
    held = sim.tables[node_id].records
    keys = [(p, held[p]) for p in want if p in held]
    data = _frame(
        {"records": [sim._rumors[k][1] for k in keys], "ages": {k[0]: 0.123 for k in keys}}
    )
    sim.send_table(AE, node_id, from_id, data, _ae_records, (keys, False, False))


def _ae_records(
    sim: PoolSim, node_id: str, from_id: str, arg: tuple[list[tuple[str, int]], bool, bool]
) -> None:
    keys, gossip_on, answer = arg
    for k in keys:
        sim.accept_record(node_id, k, from_id if gossip_on else None)
    if answer:
        sim.send_table(AE, node_id, from_id, _frame({"ok": True}), _ae_done, None)
