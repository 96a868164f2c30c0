"""The arithmetic of a key's limits, pure (every function takes ``now``): budget periods, the
sliding 60-second window over minute buckets, and the verdict the entry node answers with.

Why a weighted window over minute buckets: every entry node on one database adds its counts to
``usage_minute(key_id, minute)``; two rows per key give "the last 60 s" to within one bucket
without storing every request, and the same rows serve every node. The previous minute counts
by the part of it still inside the window (``1 - seconds_into_minute / 60``), as Cloudflare's
and Redis' well-known sliding-window counters do: exact for evenly spread traffic, and never
more than one bucket's worth off for bursts.

Verdicts carry OpenAI's codes, so the official SDKs raise the right exception classes:
401 ``invalid_api_key``, 403 ``model_not_allowed``, 429 ``rate_limit_exceeded`` (rpm/tpm, with
``Retry-After`` and ``X-RateLimit-*``), 429 ``insufficient_quota`` (budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

PERIODS = ("day", "week", "month", "total")
WINDOW_S = 60.0


class Limits(Protocol):
    """What ``check`` reads of a key (``opentela.access.keys.KeyInfo`` has it)."""

    rpm: int | None
    tpm: int | None
    budget_tokens: int | None
    budget_period: str | None


def minute(now: float) -> int:
    """The bucket of ``now``: whole minutes since the epoch (``usage_minute.minute``)."""
    return int(now // 60)


def weighted(previous: float, current: float, now: float) -> float:
    """Use in the 60 s before ``now`` from two buckets: all of the current minute's, and the
    previous minute's share that is still inside the window."""
    into = (now % 60) / 60
    return previous * (1.0 - into) + current


def period_start(period: str | None, now: float) -> float:
    """Epoch seconds at which the budget period holding ``now`` began (UTC): ``day`` 00:00,
    ``week`` Monday 00:00 (ISO), ``month`` the 1st 00:00, ``total`` (or None) 0."""
    if period in (None, "total"):
        return 0.0
    t = datetime.fromtimestamp(now, UTC)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day.timestamp()
    if period == "week":
        return (day - timedelta(days=day.weekday())).timestamp()
    if period == "month":
        return day.replace(day=1).timestamp()
    raise ValueError(f"budget period must be one of {', '.join(PERIODS)}, not {period!r}")


def period_end(period: str | None, now: float) -> float | None:
    """When the period holding ``now`` ends (the budget resets); None for ``total``."""
    if period in (None, "total"):
        return None
    start = datetime.fromtimestamp(period_start(period, now), UTC)
    if period == "day":
        return (start + timedelta(days=1)).timestamp()
    if period == "week":
        return (start + timedelta(days=7)).timestamp()
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month).timestamp()


def seconds_until_room(used: float, limit: int, cost: float = 1.0) -> float:
    """Seconds until ``used + cost <= limit`` again, if nothing more is added: the window
    forgets its oldest use first; with ``used`` spread over the last 60 s that is
    ``60 * excess / used`` (at most 60: everything has left the window by then)."""
    excess = used + cost - limit
    if excess <= 0:
        return 0.0
    if used <= 0:
        return WINDOW_S
    return min(WINDOW_S, WINDOW_S * excess / used)


def duration(seconds: float) -> str:
    """OpenAI's ``X-RateLimit-Reset-*`` format: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    m, s = divmod(math.ceil(seconds), 60)
    return f"{m}m{s}s"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    status: int = 200
    code: str | None = None
    message: str = ""
    type: str = ""
    retry_after_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict)


OK = Verdict(ok=True)


def invalid_key(reason: str) -> Verdict:
    return Verdict(
        False,
        401,
        "invalid_api_key",
        f"{reason}; send 'Authorization: Bearer sk-otela-...' with a key of this pool "
        "(`opentela-node keys create`)",
        "invalid_request_error",
    )


def model_not_allowed(model: str, patterns: tuple[str, ...] | list[str]) -> Verdict:
    return Verdict(
        False,
        403,
        "model_not_allowed",
        f"this key may not use model {model!r}; it is limited to {', '.join(patterns)}",
        "permission_error",
    )


def rate_headers(key: Limits, window: tuple[float, float]) -> dict[str, str]:
    """``X-RateLimit-*`` for the limits the key has (a limit it lacks has no header)."""
    out: dict[str, str] = {}
    for limit, used, what in ((key.rpm, window[0], "Requests"), (key.tpm, window[1], "Tokens")):
        if limit is None:
            continue
        out[f"X-RateLimit-Limit-{what}"] = str(limit)
        out[f"X-RateLimit-Remaining-{what}"] = str(max(0, math.floor(limit - used)))
        out[f"X-RateLimit-Reset-{what}"] = duration(seconds_until_room(used, limit))
    return out


def check(key: Limits, window: tuple[float, float], budget_used: int, now: float) -> Verdict:
    """May ``key`` start one more request at ``now``? ``window`` = (requests, tokens) in the
    last 60 s (all entry nodes, plus this node's unflushed counts); ``budget_used`` = tokens
    since ``period_start(key.budget_period, now)``. A request is admitted while the key is
    below each limit; its own tokens are not known in advance (how overshoot is bounded:
    docs/frontend.md). The budget is checked first: waiting a minute does not fix it."""
    if key.budget_tokens is not None and budget_used >= key.budget_tokens:
        end = period_end(key.budget_period, now)
        when = (
            "it is a lifetime budget"
            if end is None
            else f"it resets at {datetime.fromtimestamp(end, UTC):%Y-%m-%d %H:%M} UTC"
        )
        retry = None if end is None else max(1.0, end - now)
        return Verdict(
            False,
            429,
            "insufficient_quota",
            f"this key used its budget of {key.budget_tokens} tokens "
            f"({key.budget_period or 'total'}); {when}",
            "insufficient_quota",
            retry,
            {"Retry-After": str(math.ceil(retry))} if retry is not None else {},
        )
    requests, tokens = window
    waits: list[tuple[float, str]] = []
    if key.rpm is not None and requests + 1 > key.rpm:
        waits.append((seconds_until_room(requests, key.rpm), f"{key.rpm} requests per minute"))
    if key.tpm is not None and tokens + 1 > key.tpm:
        waits.append((seconds_until_room(tokens, key.tpm), f"{key.tpm} tokens per minute"))
    if not waits:
        return OK
    retry = max(1.0, max(w for w, _ in waits))
    headers = rate_headers(key, window)
    headers["Retry-After"] = str(math.ceil(retry))
    what = " and ".join(m for _, m in waits)
    return Verdict(
        False,
        429,
        "rate_limit_exceeded",
        f"rate limit reached for this key: {what}; retry in {math.ceil(retry)} s",
        "requests" if key.rpm is not None and requests + 1 > key.rpm else "tokens",
        retry,
        headers,
    )
