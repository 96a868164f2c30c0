"""A ``Host`` with no network, for driving protocol handlers (table, membership, admission) in
unit tests and the fuzzer: every handler registration and address hint is accepted and
forgotten, and any dial fails as an unreachable peer would."""

from __future__ import annotations

from typing import Any

from ..overlay.host import PeerStream, StreamFailed


class OfflineHost:
    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id

    def set_handler(self, protocol: str, handler: Any) -> None:
        pass

    def add_peer_addrs(self, peer_id: str, addrs: list[str]) -> None:
        pass

    def unblock(self, peer_id: str) -> None:
        pass

    def connection_key(self, peer_id: str) -> int | None:
        return 1

    async def close_peer(self, peer_id: str) -> None:
        pass

    async def open_stream(self, peer_id: str, protocol: str, **kw: Any) -> PeerStream:
        raise StreamFailed("offline host: no network")
