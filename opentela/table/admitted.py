"""A record in a closed pool: kept only with a valid grant for its author, and stripped of the
model claims the grant does not cover.

The signed bytes are left as they are (peers relay the record exactly as its author signed
it); only the local view (``SignedRecord.record``) loses the refused identity groups, so
routing and ``/v1/models`` never see them. The record stops being routable when the grant
expires (``admitted_until_s``), even if no newer record arrives.
"""

from __future__ import annotations

from dataclasses import replace

import structlog

from ..access.admission import Admission
from ..access.grant import GrantInvalid, allowed_groups
from .record import LEFT
from .signing import SignedRecord

log = structlog.get_logger("opentela.table")


def admit_record(
    admission: Admission, signed: SignedRecord, now_s: float, now_wall: float
) -> SignedRecord | None:
    rec = signed.record
    try:
        grant = admission.admit(rec.peer_id, rec.grant, now_wall)
    except GrantInvalid as exc:
        if admission.should_log(rec.peer_id, now_wall):
            log.warning("table.record_rejected", peer=rec.peer_id, reason=f"grant: {exc}")
        return None
    if rec.role not in grant.roles and rec.status != LEFT:
        if admission.should_log(rec.peer_id, now_wall):
            log.warning(
                "table.record_rejected",
                peer=rec.peer_id,
                reason=f"role {rec.role!r} is not granted (grant allows {list(grant.roles)})",
            )
        return None
    services = []
    refused_all: list[str] = []
    for s in rec.services:
        keep, refused = allowed_groups(grant, s.identity_groups)
        refused_all += refused
        services.append(replace(s, identity_groups=keep) if refused else s)
    if refused_all and admission.should_log(f"claims:{rec.peer_id}", now_wall):
        log.warning(
            "table.claims_refused",
            peer=rec.peer_id,
            owner=grant.owner,
            refused=refused_all,
            granted=list(grant.models),
        )
    view = replace(rec, services=tuple(services)) if refused_all else rec
    return replace(signed, record=view, admitted_until_s=now_s + (grant.expires_at - now_wall))
