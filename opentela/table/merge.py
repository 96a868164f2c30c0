"""Per-author merge: deterministic, commutative, associative, idempotent.

The newest version per author wins; equal versions with different bytes (an author that
re-signed after a crash with a reused counter) are broken by the larger signature bytes, so
every node converges on the same record whatever order messages arrive in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .signing import SignedRecord


def newer(a: SignedRecord, b: SignedRecord | None) -> bool:
    """Is ``a`` strictly preferred over ``b`` (the one we hold)?"""
    if b is None:
        return True
    if a.record.version != b.record.version:
        return a.record.version > b.record.version
    return (a.signature, a.body) > (b.signature, b.body)


def merge(
    table: Mapping[str, SignedRecord], incoming: Iterable[SignedRecord]
) -> tuple[dict[str, SignedRecord], list[SignedRecord]]:
    """Return the merged table and the records that changed it (in arrival order)."""
    out = dict(table)
    changed: list[SignedRecord] = []
    for rec in incoming:
        pid = rec.record.peer_id
        if newer(rec, out.get(pid)):
            out[pid] = rec
            changed.append(rec)
    return out, changed
