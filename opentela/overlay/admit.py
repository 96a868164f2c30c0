"""Admission to a closed pool (``--authority``): the handshake that shows a grant, the gate every
stream handler asks, and this node's own grant, obtained and renewed.

Protocol ``/opentela/admit/1``, the only one a non-member may open: one request frame, one
answer frame, then the stream closes.

- ``present {grant}`` → ``{ok, grant}``: each side shows its grant (the answer carries the
  server's), so both know the other is a member before either opens another protocol. Done once
  per connection by ``Gate.ensure``, called from ``Host.open_stream``.
- ``redeem {token}`` → ``{ok, grant, mine}``: a node started with ``--join-token`` asks a
  granting node (one with ``--authority-key``) for a grant bound to its Noise-authenticated
  peer ID; the token's owner, patterns and roles bound it.

Every other handler is wrapped by ``Host.set_handler``: a peer without a valid grant has its
stream reset and its connection closed before a byte of payload is read, and a connection that
shows no grant within ``GRACE_S`` is closed by the sweep. Refusals are logged once per peer per
minute (``Admission.should_log``). Grant checks are cached: a request costs one dict lookup.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from ..access.admission import Admission
from ..access.grant import Grant, GrantInvalid
from . import framing
from .host import Host, PeerStream, StreamFailed

PROTOCOL = "/opentela/admit/1"
HANDSHAKE_TIMEOUT_S = 5.0
GRACE_S = 3.0  # a connection that shows no grant is closed after this (+ one sweep)
SWEEP_S = 1.0
RENEW_AT = 0.5  # renew our grant when this fraction of its lifetime is left
RETRY_S = (1.0, 10.0)  # renewal retries: first, cap

log = structlog.get_logger("opentela.admission")

Granter = Callable[[str, str], Awaitable[bytes]]  # (token, peer id) → grant; raises Refused


class Refused(StreamFailed):
    """The other side is not a member, or would not admit us: the reason says which."""


class Gate:
    def __init__(
        self,
        host: Host,
        admission: Admission,
        granter: Granter | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.admission = admission
        self.granter = granter
        self._wall = wall
        self._presented: dict[str, int | None] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._unadmitted_since: dict[str, float] = {}
        self.stats = {"refused": 0, "closed": 0, "presented": 0, "redeemed": 0}

    # -- the Host's questions ------------------------------------------------------------------

    def exempt(self, protocol: str) -> bool:
        return protocol == PROTOCOL

    def allows(self, peer_id: str) -> bool:
        return self.admission.admitted(peer_id, self._wall())

    def refuse(self, peer_id: str, protocol: str, reason: str = "") -> None:
        self.stats["refused"] += 1
        if self.admission.should_log(peer_id, self._wall()):
            g = self.admission.grant_of(peer_id)
            log.warning(
                "admission.refused",
                peer=peer_id,
                protocol=protocol,
                reason=reason or ("grant expired" if g else "no valid grant shown"),
            )

    async def ensure(self, peer_id: str) -> None:
        key = self.host.connection_key(peer_id)
        if key is not None and self._presented.get(peer_id) == key:
            return
        lock = self._locks.setdefault(peer_id, trio.Lock())
        async with lock:
            key = self.host.connection_key(peer_id)
            if key is not None and self._presented.get(peer_id) == key:
                return
            await self.present(peer_id)

    # -- client side ---------------------------------------------------------------------------

    async def _ask(self, peer_id: str, msg: dict[str, Any]) -> dict[str, Any]:
        stream = await self.host.open_stream(peer_id, PROTOCOL)
        try:
            await stream.send(framing.encode(framing.BODY, msg))
            frames = await stream.receive(HANDSHAKE_TIMEOUT_S)
        finally:
            await stream.close()
        reply = frames[0].payload if frames and frames[0].kind == framing.BODY else None
        if not isinstance(reply, dict):
            raise Refused(f"{peer_id[-8:]} answered the admission handshake with garbage")
        if not reply.get("ok"):
            raise Refused(f"{peer_id[-8:]} refused us: {reply.get('error') or 'no reason'}")
        return reply

    def _admit_remote(self, peer_id: str, blob: Any) -> None:
        try:
            self.admission.admit(peer_id, blob if isinstance(blob, bytes) else b"", self._wall())
        except GrantInvalid as exc:
            raise Refused(f"{peer_id[-8:]} is not a member of this pool: {exc}") from exc
        self._presented[peer_id] = self.host.connection_key(peer_id)

    async def present(self, peer_id: str) -> None:
        """Show our grant and check theirs (once per connection)."""
        if not self.admission.own:
            raise Refused("this node holds no grant yet (join token not redeemed)")
        reply = await self._ask(peer_id, {"op": "present", "grant": self.admission.own})
        self._admit_remote(peer_id, reply.get("grant"))
        self.stats["presented"] += 1

    async def redeem(self, peer_id: str, token: str) -> bytes:
        """Trade a join token for our grant at a granting node."""
        reply = await self._ask(peer_id, {"op": "redeem", "token": token})
        blob = reply.get("grant")
        try:
            self.admission.verify(
                self.admission.self_id, blob if isinstance(blob, bytes) else b"", self._wall()
            )
        except GrantInvalid as exc:
            raise Refused(f"{peer_id[-8:]} issued a grant we cannot use: {exc}") from exc
        assert isinstance(blob, bytes)
        self._admit_remote(peer_id, reply.get("mine"))
        return blob

    # -- server side ---------------------------------------------------------------------------

    async def handle(self, stream: PeerStream) -> None:
        peer = stream.remote_peer
        try:
            frames = await stream.receive(HANDSHAKE_TIMEOUT_S)
        except StreamFailed:
            return
        msg = frames[0].payload if frames[0].kind == framing.BODY else None
        op = msg.get("op") if isinstance(msg, dict) else None
        reply: dict[str, Any]
        if op == "present":
            try:
                self.admission.admit(peer, _bytes(msg.get("grant")), self._wall())
                self._presented[peer] = self.host.connection_key(peer)
                reply = {"ok": True, "grant": self.admission.own}
            except GrantInvalid as exc:
                self.refuse(peer, PROTOCOL, str(exc))
                reply = {"ok": False, "error": f"not admitted: {exc}"}
        elif op == "redeem" and self.granter is None:
            reply = {
                "ok": False,
                "error": "this node cannot redeem join tokens (no --authority-key)",
            }
        elif op == "redeem":
            assert self.granter is not None
            try:
                blob = await self.granter(str(msg.get("token") or ""), peer)
                self.admission.admit(peer, blob, self._wall())
                self._presented[peer] = self.host.connection_key(peer)
                self.stats["redeemed"] += 1
                log.info("admission.granted", peer=peer, owner=self.admission.grant_of(peer).owner)
                reply = {"ok": True, "grant": blob, "mine": self.admission.own}
            except Refused as exc:
                self.refuse(peer, PROTOCOL, str(exc))
                reply = {"ok": False, "error": str(exc)}
        else:
            reply = {"ok": False, "error": f"unknown admission op {op!r}"}
        try:
            await stream.send(framing.encode(framing.BODY, reply))
        except StreamFailed:
            return
        if not reply["ok"]:
            await stream.close()
            await self.host.close_peer(peer)

    # -- the sweep -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Close connections that show no valid grant within ``GRACE_S`` (or whose grant
        expired): a non-member costs the node nothing lasting."""
        self.host.set_handler(PROTOCOL, self.handle)
        task_status.started()
        while True:
            await trio.sleep(SWEEP_S)
            now, wall = trio.current_time(), self._wall()
            connected = set(self.host.connected_peers())
            for peer in list(self._unadmitted_since):
                if peer not in connected:
                    del self._unadmitted_since[peer]
            for peer in connected:
                if self.admission.admitted(peer, wall):
                    self._unadmitted_since.pop(peer, None)
                    continue
                since = self._unadmitted_since.setdefault(peer, now)
                if now - since >= GRACE_S:
                    self.stats["closed"] += 1
                    self.refuse(peer, "connection")
                    self._unadmitted_since.pop(peer, None)
                    self._presented.pop(peer, None)
                    await self.host.close_peer(peer)
            self.admission.forget_expired(wall)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else b""


class OwnGrant:
    """Obtains and renews this node's grant: issued to itself with ``--authority-key``, else
    redeemed with ``--join-token`` at a granting peer (the bootstrap it dialed, or any member
    that grants). ``on_grant`` publishes it (our record carries it to every peer)."""

    def __init__(
        self,
        gate: Gate,
        on_grant: Callable[[bytes], None],
        *,
        issue_self: Callable[[], bytes] | None = None,
        token: str = "",
        granting_peers: Callable[[], list[str]] = list,
    ) -> None:
        self.gate = gate
        self.admission = gate.admission
        self._on_grant = on_grant
        self._issue_self = issue_self
        self._token = token
        self._granting_peers = granting_peers
        self._failing = False
        self.stats = {"renewals": 0, "renewal_failures": 0}
        if issue_self is not None:
            self._set(issue_self())

    def _set(self, blob: bytes) -> None:
        self.admission.own = blob
        self._on_grant(blob)

    def _current(self) -> Grant | None:
        """Our grant while it is valid (verification is cached by the blob)."""
        try:
            return self.admission.verify(self.admission.self_id, self.admission.own, time.time())
        except GrantInvalid:
            return None

    def _expires_at(self) -> float:
        g = self._current()
        return g.expires_at if g else 0.0

    def _renew_at(self) -> float:
        g = self._current()
        return g.expires_at - RENEW_AT * (g.expires_at - g.issued_at) if g else 0.0

    async def ensure_from(self, peer_id: str) -> None:
        """Before joining through ``peer_id``: hold a grant that is not due for renewal."""
        if time.time() < self._renew_at():
            return
        if self._issue_self is not None:
            self._set(self._issue_self())
            return
        self._set(await self.gate.redeem(peer_id, self._token))
        log.info(
            "admission.joined", via=peer_id, expires_in_s=round(self._expires_at() - time.time())
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        delay = RETRY_S[0]
        while True:
            if not self.admission.own:
                await trio.sleep(RETRY_S[0])  # the first grant comes with the first join
                continue
            wait = self._renew_at() - time.time()
            if wait > 0:
                await trio.sleep(wait)
            if await self._renew():
                delay = RETRY_S[0]
            else:
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_S[1])

    async def _renew(self) -> bool:
        if self._issue_self is not None:
            self._set(self._issue_self())
            self.stats["renewals"] += 1
            return True
        errors = []
        for peer in self._granting_peers():
            try:
                self._set(await self.gate.redeem(peer, self._token))
            except StreamFailed as exc:
                errors.append(str(exc))
                continue
            self.stats["renewals"] += 1
            if self._failing:
                log.info("admission.renewed", via=peer)
            self._failing = False
            return True
        self.stats["renewal_failures"] += 1
        if not self._failing:
            log.warning(
                "admission.renewal_failed",
                errors=errors or ["no granting peer reachable"],
                expires_in_s=round(self._expires_at() - time.time(), 1),
            )
        self._failing = True
        return False
