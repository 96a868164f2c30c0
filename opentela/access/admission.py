"""Who is admitted right now: the grants a node has verified, per peer, from handshakes and from
records. Pure (``now`` is wall-clock seconds, passed in).

Verifying a grant costs an Ed25519 check (~50 µs); a member presents the same grant on every
connection and in every record version until it is renewed, so verified grants are cached by
their bytes and a per-request check is one dict lookup and one comparison.
"""

from __future__ import annotations

from collections import OrderedDict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import grant as grants
from .grant import Grant, GrantInvalid

CACHE_SIZE = 4096  # verified grant blobs kept (one or two per member)
LOG_EVERY_S = 60.0  # a refused peer is logged at most once per this period
MAX_LOGGED_PEERS = 4096


class Admission:
    def __init__(self, authority: Ed25519PublicKey, self_id: str) -> None:
        self.authority = authority
        self.self_id = self_id
        self.own: bytes = b""  # our own grant, presented to every peer
        self._verified: OrderedDict[bytes, Grant] = OrderedDict()
        self._grants: dict[str, Grant] = {}
        self._logged: OrderedDict[str, float] = OrderedDict()

    def verify(self, peer_id: str, blob: bytes, now: float) -> Grant:
        """``blob`` as a valid grant for ``peer_id`` at ``now``, or ``GrantInvalid``."""
        cached = self._verified.get(blob)
        if cached is None:
            cached = grants.verify(blob, self.authority, peer_id, now)
            self._verified[blob] = cached
            if len(self._verified) > CACHE_SIZE:
                self._verified.popitem(last=False)
        elif cached.peer_id != peer_id:
            raise GrantInvalid(f"grant is for {cached.peer_id}, not {peer_id}")
        elif now >= cached.expires_at:
            raise GrantInvalid(f"grant expired {now - cached.expires_at:.0f}s ago")
        return cached

    def admit(self, peer_id: str, blob: bytes, now: float) -> Grant:
        """Verify and remember; the grant that lasts longest wins (a renewal replaces the old
        one, an old copy relayed late does not shorten it)."""
        g = self.verify(peer_id, blob, now)
        held = self._grants.get(peer_id)
        if held is None or g.expires_at >= held.expires_at:
            self._grants[peer_id] = g
        return g

    def admitted(self, peer_id: str, now: float) -> bool:
        if peer_id == self.self_id:
            return True
        g = self._grants.get(peer_id)
        return g is not None and now < g.expires_at

    def grant_of(self, peer_id: str) -> Grant | None:
        return self._grants.get(peer_id)

    def forget_expired(self, now: float) -> list[str]:
        gone = [p for p, g in self._grants.items() if now >= g.expires_at]
        for p in gone:
            del self._grants[p]
        return gone

    def should_log(self, peer_id: str, now: float) -> bool:
        """Refusals are logged once per peer per ``LOG_EVERY_S``, not once per attempt."""
        last = self._logged.get(peer_id)
        if last is not None and now - last < LOG_EVERY_S:
            return False
        self._logged[peer_id] = now
        self._logged.move_to_end(peer_id)
        if len(self._logged) > MAX_LOGGED_PEERS:
            self._logged.popitem(last=False)
        return True
