"""Join-token rows: each function is one short transaction's worth of SQL on a connection.

Redeeming is one ``UPDATE ... WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ?
RETURNING ...``: the check and the ``last_used_at`` write are atomic, so a token revoked by
another process (or another head on the same PostgreSQL) a moment earlier is refused.
``last_used_at`` only moves forward, whatever order concurrent redeems commit in.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, case, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..access import token as tk
from .schema import join_tokens

_COLUMNS = (
    join_tokens.c.id,
    join_tokens.c.owner,
    join_tokens.c.models,
    join_tokens.c.roles,
    join_tokens.c.expires_at,
    join_tokens.c.created_at,
    join_tokens.c.last_used_at,
    join_tokens.c.revoked_at,
)


def info(row: Any) -> tk.TokenInfo:
    m = row._mapping
    return tk.TokenInfo(
        id=m["id"],
        owner=m["owner"],
        models=tk.load_list(m["models"]),
        roles=tk.load_list(m["roles"]),
        expires_at=float(m["expires_at"]),
        created_at=float(m["created_at"]),
        last_used_at=None if m["last_used_at"] is None else float(m["last_used_at"]),
        revoked_at=None if m["revoked_at"] is None else float(m["revoked_at"]),
    )


def insert_token(conn: Connection, token: str, token_id: str, values: tk.TokenInfo) -> bool:
    """False if ``token_id`` (or, never in practice, the hash) is taken: draw another."""
    try:
        with conn.begin_nested():
            conn.execute(
                insert(join_tokens).values(
                    id=token_id,
                    token_hash=tk.hash_token(token),
                    owner=values.owner,
                    models=tk.dump_list(values.models),
                    roles=tk.dump_list(values.roles),
                    expires_at=values.expires_at,
                    created_at=values.created_at,
                )
            )
    except IntegrityError:
        return False
    return True


def list_all(conn: Connection) -> list[tk.TokenInfo]:
    rows = conn.execute(select(*_COLUMNS).order_by(join_tokens.c.created_at, join_tokens.c.id))
    return [info(r) for r in rows]


def by_id(conn: Connection, token_id: str) -> tk.TokenInfo | None:
    row = conn.execute(select(*_COLUMNS).where(join_tokens.c.id == token_id)).first()
    return None if row is None else info(row)


def by_hash(conn: Connection, token_hash: str) -> tk.TokenInfo | None:
    row = conn.execute(select(*_COLUMNS).where(join_tokens.c.token_hash == token_hash)).first()
    return None if row is None else info(row)


def revoke(conn: Connection, key: Any, now: float) -> tk.TokenInfo | None:
    """Revoke the row ``key`` selects (``join_tokens.c.id == ...`` or by hash); a second
    revoke keeps the first time. None: no such token."""
    c = join_tokens.c
    row = conn.execute(
        update(join_tokens)
        .where(key)
        .values(revoked_at=case((c.revoked_at.is_(None), now), else_=c.revoked_at))
        .returning(*_COLUMNS)
    ).first()
    return None if row is None else info(row)


def redeem(conn: Connection, token_hash: str, now: float) -> tk.TokenInfo:
    c = join_tokens.c
    row = conn.execute(
        update(join_tokens)
        .where(c.token_hash == token_hash, c.revoked_at.is_(None), c.expires_at > now)
        .values(
            last_used_at=case(
                (or_(c.last_used_at.is_(None), c.last_used_at < now), now),
                else_=c.last_used_at,
            )
        )
        .returning(*_COLUMNS)
    ).first()
    if row is not None:
        return info(row)
    found = by_hash(conn, token_hash)
    reason = tk.rejection(found, now) or "expired"  # active now, so it expired at this instant
    raise tk.TokenRejected(reason, None if found is None else found.id)
