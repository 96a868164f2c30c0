"""``UsageRow``: what one request (or a batch of them) adds to ``usage_daily`` and
``usage_minute``. Pure: the writer builds rows, :meth:`Store.add_usage` sums them in.

Rows are additive: two rows with the same day, key and model add up, so a writer may send
one row per request or pre-summed rows, in any order, from any entry node.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass


def utc_day(ts: float) -> str:
    """``YYYY-MM-DD`` of ``ts`` in UTC (``usage_daily.day``)."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


@dataclass(frozen=True)
class UsageRow:
    day: str
    """UTC day, ``YYYY-MM-DD``."""
    minute: int
    """Whole minutes since the epoch (``int(now // 60)``), the rate-window bucket."""
    key_id: str
    owner: str
    model: str
    requests: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    aborted: int = 0
    estimated: int = 0
    """Requests whose token counts were estimated from content (the backend sent no usage)."""
    last_active: float = 0.0

    @classmethod
    def at(cls, now: float, key_id: str, owner: str, model: str, **counts: int) -> UsageRow:
        """A row for ``now``: day and minute derived from it, ``last_active = now``."""
        return cls(utc_day(now), int(now // 60), key_id, owner, model, last_active=now, **counts)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def daily_totals(rows: Iterable[UsageRow]) -> list[dict[str, object]]:
    """Rows summed per ``(day, key_id, model)``, sorted by that primary key: one upsert per
    row of ``usage_daily``, always taken in the same order by every writer."""
    acc: dict[tuple[str, str, str], dict[str, object]] = {}
    for r in rows:
        k = (r.day, r.key_id, r.model)
        a = acc.get(k)
        if a is None:
            acc[k] = {
                "day": r.day,
                "key_id": r.key_id,
                "owner": r.owner,
                "model": r.model,
                "requests": r.requests,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "errors": r.errors,
                "aborted": r.aborted,
                "estimated": int(r.estimated),
                "last_active": r.last_active,
            }
            continue
        for f in ("requests", "prompt_tokens", "completion_tokens", "errors", "aborted"):
            a[f] = int(a[f]) + getattr(r, f)  # type: ignore[call-overload]
        a["estimated"] = int(a["estimated"]) + int(r.estimated)  # type: ignore[call-overload]
        a["last_active"] = max(float(a["last_active"]), r.last_active)  # type: ignore[arg-type]
    return [acc[k] for k in sorted(acc)]


def minute_totals(rows: Iterable[UsageRow]) -> list[dict[str, object]]:
    """Rows summed per ``(key_id, minute)``, sorted by that primary key."""
    acc: dict[tuple[str, int], list[int]] = {}
    for r in rows:
        a = acc.setdefault((r.key_id, r.minute), [0, 0])
        a[0] += r.requests
        a[1] += r.tokens
    return [
        {"key_id": k[0], "minute": k[1], "requests": v[0], "tokens": v[1]}
        for k, v in sorted(acc.items())
    ]
