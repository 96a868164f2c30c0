"""The closed pool as one component of the node (``--authority``): admission state, the gate on
every protocol, this node's own grant and, on a granting node (``--authority-key``), the
redemption of join tokens against the store.

What each part does is in ``access/`` (grants, tokens: pure), ``overlay/admit.py`` (handshake,
gate, renewal) and ``table/admitted.py`` (records and their claims); this module only builds
them from the configuration and owns their start and stats.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

from .access import authority as authority_keys
from .access import grant as grants
from .access.admission import Admission
from .access.grant import Grant
from .access.token import TokenRejected
from .config import Config
from .overlay.admit import Gate, OwnGrant, Refused
from .overlay.host import Host
from .table.admitted import admit_record
from .table.signing import SignedRecord

GRANTS_EXTRA = "access.grants"  # in a granting node's record: members renew their grants here

log = structlog.get_logger("opentela.admission")


class ClosedPoolError(Exception):
    """A closed-pool setting that cannot work (unreadable key, key of another authority)."""


class ClosedPool:
    def __init__(self, cfg: Config, host: Host, peer_id: str) -> None:
        self.cfg = cfg
        self.peer_id = peer_id
        pub = authority_keys.parse_public_key(cfg.authority)
        self.admission = Admission(pub, peer_id)
        self._key = None
        self.store: Any = None
        if cfg.authority_key:
            try:
                self._key = authority_keys.load(Path(cfg.authority_key).expanduser())
            except authority_keys.AuthorityError as exc:
                raise ClosedPoolError(str(exc)) from exc
            if authority_keys.public_key_text(self._key) != authority_keys.public_key_text(pub):
                raise ClosedPoolError(
                    f"--authority-key {cfg.authority_key} is not the key of --authority "
                    f"{cfg.authority} (it is {authority_keys.public_key_text(self._key)})"
                )
            from .store import StoreError, open_store

            try:
                self.store = open_store(cfg.db or cfg.home_path)
            except StoreError as exc:
                raise ClosedPoolError(f"cannot open the token store: {exc}") from exc
        self.gate = Gate(host, self.admission, self._redeem if self._key else None)
        self.own: OwnGrant | None = None

    @property
    def grants(self) -> bool:
        return self._key is not None

    def record_extra(self) -> dict[str, str]:
        return {GRANTS_EXTRA: "1"} if self.grants else {}

    def admit(self, signed: SignedRecord, now_s: float) -> SignedRecord | None:
        return admit_record(self.admission, signed, now_s, time.time())

    def _issue(
        self,
        peer: str,
        owner: str,
        models: tuple[str, ...],
        roles: tuple[str, ...],
        token_id: str,
        not_after: float,
    ) -> bytes:
        assert self._key is not None
        now = time.time()
        g = Grant(
            peer, owner, models, roles, token_id, now, min(now + self.cfg.grant_ttl_s, not_after)
        )
        return grants.issue(self._key, g)

    def _issue_self(self) -> bytes:
        roles = (self.cfg.effective_role,)
        return self._issue(self.peer_id, "authority", ("*",), roles, "authority", float("inf"))

    async def _redeem(self, token: str, peer: str) -> bytes:
        from .store import StoreError

        try:
            info = await trio.to_thread.run_sync(self.store.redeem_token, token, time.time())
        except TokenRejected as exc:
            raise Refused(str(exc)) from exc
        except StoreError as exc:
            log.error("admission.store_failed", error=str(exc))
            raise Refused("the granting node cannot read its token store; retry later") from exc
        return self._issue(peer, info.owner, info.models, info.roles, info.id, info.expires_at)

    def start_own(
        self, on_grant: Callable[[bytes], None], granting_peers: Callable[[], list[str]]
    ) -> OwnGrant:
        self.own = OwnGrant(
            self.gate,
            on_grant,
            issue_self=self._issue_self if self._key is not None else None,
            token=self.cfg.join_token,
            granting_peers=granting_peers,
        )
        return self.own

    async def ensure_member(self, peer_id: str) -> None:
        """Before joining through ``peer_id``: hold a grant (redeem the token there if not)."""
        if self.own is not None:
            await self.own.ensure_from(peer_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.own is not None
        async with trio.open_nursery() as nursery:
            await nursery.start(self.gate.run)
            await nursery.start(self.own.run)
            task_status.started()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    @property
    def stats(self) -> dict[str, Any]:
        try:
            mine = grants.decode(self.admission.own)[0] if self.admission.own else None
        except grants.GrantInvalid:
            mine = None
        return {
            **self.gate.stats,
            **(self.own.stats if self.own else {}),
            "grant_expires_in_s": round(mine.expires_at - time.time(), 1) if mine else None,
            "owner": mine.owner if mine else None,
        }
