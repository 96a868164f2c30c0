"""API-key and usage rows: each function is one short transaction's worth of SQL on a
connection (``store.Store`` opens the transactions).

Usage is written as additive upserts (``INSERT ... ON CONFLICT (pk) DO UPDATE SET x = x +
excluded.x``, SQLite >= 3.24 and PostgreSQL alike), summed per primary key and sorted by it
first: every writer locks rows in the same order, so two entry nodes flushing overlapping
batches wait for each other instead of deadlocking.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, case, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ..access import keys as ak
from .schema import api_keys, usage_daily, usage_minute
from .usage import UsageRow, daily_totals, minute_totals

MINUTE_KEEP = 120
"""Minutes of ``usage_minute`` kept: the rate window needs two, the rest is slack."""

_COLUMNS = (
    api_keys.c.id,
    api_keys.c.prefix,
    api_keys.c.owner,
    api_keys.c.models,
    api_keys.c.rpm,
    api_keys.c.tpm,
    api_keys.c.budget_tokens,
    api_keys.c.budget_period,
    api_keys.c.admin,
    api_keys.c.created_at,
    api_keys.c.last_used_at,
    api_keys.c.revoked_at,
)


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def _i(v: Any) -> int | None:
    return None if v is None else int(v)


def info(row: Any) -> ak.KeyInfo:
    m = row._mapping
    models = json.loads(m["models"])
    return ak.KeyInfo(
        id=m["id"],
        prefix=m["prefix"],
        owner=m["owner"],
        models=tuple(models),
        rpm=_i(m["rpm"]),
        tpm=_i(m["tpm"]),
        budget_tokens=_i(m["budget_tokens"]),
        budget_period=m["budget_period"],
        admin=bool(m["admin"]),
        created_at=float(m["created_at"]),
        last_used_at=_f(m["last_used_at"]),
        revoked_at=_f(m["revoked_at"]),
    )


def insert_key(conn: Connection, text: str, values: ak.KeyInfo) -> bool:
    """False if ``values.id`` (or, never in practice, the hash) is taken: draw another."""
    try:
        with conn.begin_nested():
            conn.execute(
                insert(api_keys).values(
                    id=values.id,
                    key_hash=ak.key_hash(text),
                    prefix=values.prefix,
                    owner=values.owner,
                    models=json.dumps(list(values.models)),
                    rpm=values.rpm,
                    tpm=values.tpm,
                    budget_tokens=values.budget_tokens,
                    budget_period=values.budget_period,
                    admin=int(values.admin),
                    created_at=values.created_at,
                )
            )
    except IntegrityError:
        return False
    return True


def list_all(conn: Connection) -> list[ak.KeyInfo]:
    rows = conn.execute(select(*_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id))
    return [info(r) for r in rows]


def find(conn: Connection, where: Any) -> ak.KeyInfo | None:
    row = conn.execute(select(*_COLUMNS).where(where)).first()
    return None if row is None else info(row)


def revoke(conn: Connection, where: Any, now: float) -> ak.KeyInfo | None:
    """Revoke the row ``where`` selects; a second revoke keeps the first time."""
    c = api_keys.c
    row = conn.execute(
        update(api_keys)
        .where(where)
        .values(revoked_at=case((c.revoked_at.is_(None), now), else_=c.revoked_at))
        .returning(*_COLUMNS)
    ).first()
    return None if row is None else info(row)


def touch(conn: Connection, last_used: dict[str, float]) -> None:
    """``last_used_at`` moved forward only (batches from several nodes commit in any order),
    keys in id order (the same lock order for every writer)."""
    c = api_keys.c
    for key_id in sorted(last_used):
        t = float(last_used[key_id])
        conn.execute(
            update(api_keys)
            .where(c.id == key_id, or_(c.last_used_at.is_(None), c.last_used_at < t))
            .values(last_used_at=t)
        )


def _insert_for(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def add_usage(conn: Connection, rows: Iterable[UsageRow]) -> None:
    rows = list(rows)
    if not rows:
        return
    ins = _insert_for(conn)
    daily = daily_totals(rows)
    stmt = ins(usage_daily)
    x = stmt.excluded
    c = usage_daily.c
    adds = ("requests", "prompt_tokens", "completion_tokens", "errors", "aborted", "estimated")
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.day, c.key_id, c.model],
        set_={
            **{f: c[f] + x[f] for f in adds},
            "last_active": case(
                (x.last_active > c.last_active, x.last_active), else_=c.last_active
            ),
        },
    )
    for r in daily:  # one statement per row, in key order: the lock order is the sort order
        conn.execute(stmt, r)
    mins = minute_totals(rows)
    stmt = ins(usage_minute)
    x, m = stmt.excluded, usage_minute.c
    stmt = stmt.on_conflict_do_update(
        index_elements=[m.key_id, m.minute],
        set_={"requests": m.requests + x.requests, "tokens": m.tokens + x.tokens},
    )
    for r in mins:
        conn.execute(stmt, r)


def prune_minutes(conn: Connection, before_minute: int) -> int:
    result = conn.execute(usage_minute.delete().where(usage_minute.c.minute < before_minute))
    return int(result.rowcount or 0)


def minute_counts(conn: Connection, key_id: str, minutes: tuple[int, int]) -> dict[int, tuple]:
    m = usage_minute.c
    rows = conn.execute(
        select(m.minute, m.requests, m.tokens).where(m.key_id == key_id, m.minute.in_(minutes))
    )
    return {int(r.minute): (int(r.requests), int(r.tokens)) for r in rows}


def tokens_since(conn: Connection, key_id: str, day: str) -> int:
    c = usage_daily.c
    total = conn.execute(
        select(func.coalesce(func.sum(c.prompt_tokens + c.completion_tokens), 0)).where(
            c.key_id == key_id, c.day >= day
        )
    ).scalar_one()
    return int(total)


_SUMS = ("requests", "prompt_tokens", "completion_tokens", "errors", "aborted", "estimated")


def by_model(
    conn: Connection, since_day: str, owner: str | None, key_id: str | None
) -> list[dict[str, Any]]:
    c = usage_daily.c
    q = select(
        c.model,
        *(func.sum(c[f]).label(f) for f in _SUMS),
        func.max(c.last_active).label("last_active"),
    ).where(c.day >= since_day)
    if owner is not None:
        q = q.where(c.owner == owner)
    if key_id is not None:
        q = q.where(c.key_id == key_id)
    out = []
    for r in conn.execute(q.group_by(c.model)):
        d: dict[str, Any] = {"model": r.model, **{f: int(getattr(r, f)) for f in _SUMS}}
        d["total_tokens"] = d["prompt_tokens"] + d["completion_tokens"]
        d["last_active"] = _f(r.last_active)
        out.append(d)
    out.sort(key=lambda d: (-d["total_tokens"], -d["requests"], d["model"]))
    return out


def by_model_and_day(conn: Connection, since_day: str) -> list[dict[str, Any]]:
    c = usage_daily.c
    q = (
        select(c.day, c.model, *(func.sum(c[f]).label(f) for f in _SUMS))
        .where(c.day >= since_day)
        .group_by(c.day, c.model)
        .order_by(c.day, c.model)
    )
    out = []
    for r in conn.execute(q):
        d: dict[str, Any] = {"day": r.day, "model": r.model}
        d.update({f: int(getattr(r, f)) for f in _SUMS})
        d["total_tokens"] = d["prompt_tokens"] + d["completion_tokens"]
        out.append(d)
    return out
