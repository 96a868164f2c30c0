"""Version digests for anti-entropy: tell a peer what you have in a few bytes per author."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from .signing import SignedRecord

Digest = dict[str, int]


def digest(table: Mapping[str, SignedRecord]) -> Digest:
    return {pid: s.record.version for pid, s in table.items()}


def digest_hash(d: Mapping[str, int]) -> bytes:
    """A short fingerprint: equal tables exchange 16 bytes and stop there."""
    h = hashlib.blake2b(digest_size=16)
    for pid in sorted(d):
        h.update(pid.encode())
        h.update(d[pid].to_bytes(8, "big", signed=False))
    return h.digest()


def difference(local: Mapping[str, int], remote: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """(authors the remote holds newer than us → we want, authors we hold newer → we send)."""
    want = sorted(p for p, v in remote.items() if v > local.get(p, -1))
    send = sorted(p for p, v in local.items() if v > remote.get(p, -1))
    return want, send
