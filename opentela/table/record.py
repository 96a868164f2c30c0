"""NodeRecord: what one node says about itself, in a canonical msgpack encoding.

The encoding is canonical (fixed field order, no maps with unordered keys at the top level)
so that the bytes a node signs are exactly the bytes every other node verifies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

RECORD_FORMAT = 1
MAX_RECORD_BYTES = 64 * 1024
"""A record's encoded body: a node with 32 addresses, 64 services and 16 GPUs is ~10 KiB;
anything larger is refused before it is verified, decoded, stored or relayed."""

# Node status values. "left" is a tombstone: the node said goodbye and must not be routed to.
READY = "ready"
DRAINING = "draining"
LEFT = "left"
STATUSES = (READY, DRAINING, LEFT)

# Reachability (``--reachability``): whether other nodes can dial this one. A private node
# names the reachable nodes that relay for it (``relays``, peer IDs); see ``overlay/relay``.
PUBLIC = "public"
PRIVATE = "private"
REACHABILITY = (PUBLIC, PRIVATE)

MAX_LABELS = 64
MAX_LABEL_KEY = 63
MAX_LABEL_VALUE = 256
MAX_RELAYS = 8


class RecordError(ValueError):
    """A record could not be decoded or is not well formed."""


@dataclass(frozen=True)
class Gpu:
    name: str
    total_memory_mib: int
    used_memory_mib: int


@dataclass(frozen=True)
class Service:
    """A backend a node serves. ``identity_groups`` drive routing (``model=<id>``, ``model=*``,
    ``all``); an empty list means "never selected", as upstream."""

    name: str
    status: str = READY
    identity_groups: tuple[str, ...] = ()

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(
            g.removeprefix("model=")
            for g in self.identity_groups
            if g.startswith("model=") and g != "model=*"
        )


@dataclass(frozen=True)
class NodeRecord:
    peer_id: str
    version: int
    timestamp: float
    role: str = "head"
    status: str = READY
    addrs: tuple[str, ...] = ()
    http_addr: str = ""
    services: tuple[Service, ...] = ()
    gpus: tuple[Gpu, ...] = ()
    load: int = 0
    software: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    grant: bytes = b""
    """The authority's grant for this peer (``access/grant``); empty in an open pool."""
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    """What runs where, for people and routing: ``site``, ``hostname``, ``arch``,
    ``slurm_job_id``, ``expires_at``, ``framework``, ``--label key=value``... Self-declared
    (signed by the node, not vouched for by the authority)."""
    reachability: str = PUBLIC
    relays: tuple[str, ...] = ()
    """A private node's relays: peer IDs of reachable nodes it holds a connection to."""

    def encode(self) -> bytes:
        # Fields after ``extra`` are optional: trailing defaults are left out, so a record of
        # an open, single-site pool encodes as it did before they existed.
        tail: list[object] = [
            self.grant,
            sorted(self.labels.items()),
            self.reachability,
            list(self.relays),
        ]
        defaults: list[object] = [b"", [], PUBLIC, []]
        while tail and tail[-1] == defaults[len(tail) - 1]:
            tail.pop()
        return msgpack.packb(
            [
                RECORD_FORMAT,
                self.peer_id,
                self.version,
                self.timestamp,
                self.role,
                self.status,
                list(self.addrs),
                self.http_addr,
                [[s.name, s.status, list(s.identity_groups)] for s in self.services],
                [[g.name, g.total_memory_mib, g.used_memory_mib] for g in self.gpus],
                self.load,
                self.software,
                sorted(self.extra.items()),
                *tail,
            ],
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> NodeRecord:
        if len(data) > MAX_RECORD_BYTES:
            raise RecordError(f"record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
        try:
            items = msgpack.unpackb(data, raw=False, strict_map_key=True)
            if not isinstance(items, list) or not items or items[0] != RECORD_FORMAT:
                raise RecordError("unknown record format")
            (
                _fmt,
                peer_id,
                version,
                timestamp,
                role,
                status,
                addrs,
                http_addr,
                services,
                gpus,
                load,
                software,
                extra,
            ) = items[:13]
            # Later fields are optional: a record of an open pool encodes as before.
            grant = items[13] if len(items) > 13 else b""
            if not isinstance(grant, bytes):
                raise RecordError("grant must be bytes")
            labels = items[14] if len(items) > 14 else []
            reachability = items[15] if len(items) > 15 else PUBLIC
            relays = items[16] if len(items) > 16 else []
            if not isinstance(labels, list) or len(labels) > MAX_LABELS:
                raise RecordError(f"labels must be a list of at most {MAX_LABELS} pairs")
            if not isinstance(relays, list) or len(relays) > MAX_RELAYS:
                raise RecordError(f"relays must be a list of at most {MAX_RELAYS} peer IDs")
            rec = cls(
                peer_id=str(peer_id),
                version=int(version),
                timestamp=float(timestamp),
                role=str(role),
                status=str(status),
                addrs=tuple(str(a) for a in addrs),
                http_addr=str(http_addr),
                services=tuple(
                    Service(str(n), str(st), tuple(str(g) for g in groups))
                    for n, st, groups in services
                ),
                gpus=tuple(Gpu(str(n), int(t), int(u)) for n, t, u in gpus),
                load=int(load),
                software=str(software),
                extra={str(k): str(v) for k, v in extra},
                grant=grant,
                labels={str(k): str(v) for k, v in labels},
                reachability=str(reachability),
                relays=tuple(str(r) for r in relays),
            )
        except RecordError:
            raise
        except (
            ValueError,
            TypeError,
            OverflowError,
            msgpack.ExtraData,
            msgpack.FormatError,
        ) as exc:
            raise RecordError(f"malformed record: {exc}") from exc
        if rec.status not in STATUSES:
            raise RecordError(f"unknown status {rec.status!r}")
        if rec.reachability not in REACHABILITY:
            raise RecordError(f"unknown reachability {rec.reachability!r}")
        for k, v in rec.labels.items():
            if not (0 < len(k) <= MAX_LABEL_KEY and len(v) <= MAX_LABEL_VALUE):
                raise RecordError(
                    f"label {k[:MAX_LABEL_KEY]!r}: keys are 1-{MAX_LABEL_KEY} characters, "
                    f"values at most {MAX_LABEL_VALUE}"
                )
        if not (0 <= rec.version < 2**63 and 0 <= rec.load < 2**31):
            raise RecordError("version and load must be non-negative 63/31-bit integers")
        return rec

    @property
    def models(self) -> tuple[str, ...]:
        out: list[str] = []
        for s in self.services:
            if s.status == READY:
                out.extend(m for m in s.models if m not in out)
        return tuple(out)
