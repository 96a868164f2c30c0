"""quota.py: budget periods, the sliding window, verdicts (pure, table-driven)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from opentela.access import quota


def ts(s: str) -> float:
    return datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()


@dataclass
class K:
    rpm: int | None = None
    tpm: int | None = None
    budget_tokens: int | None = None
    budget_period: str | None = None


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", "2026-12-01 21:09:07", "2026-12-01 00:00:00", "2026-12-02 00:00:00"),
        ("week", "2026-12-01 21:09:07", "2026-11-30 00:00:00", "2026-12-07 00:00:00"),  # Tue
        ("week", "2026-11-30 00:00:00", "2026-11-30 00:00:00", "2026-12-07 00:00:00"),  # Mon
        ("week", "2026-12-06 23:59:59", "2026-11-30 00:00:00", "2026-12-07 00:00:00"),  # Sun
        ("month", "2026-12-31 23:59:59", "2026-12-01 00:00:00", "2027-01-01 00:00:00"),
        ("month", "2024-02-29 12:00:00", "2024-02-01 00:00:00", "2024-03-01 00:00:00"),
        ("total", "2026-12-01 21:09:07", None, None),
        (None, "2026-12-01 21:09:07", None, None),
    ],
)
def test_period_start_and_end(period, now, start, end):
    assert quota.period_start(period, ts(now)) == (ts(start) if start else 0.0)
    assert quota.period_end(period, ts(now)) == (ts(end) if end else None)


def test_unknown_period_is_an_error():
    with pytest.raises(ValueError):
        quota.period_start("year", 0)


@pytest.mark.parametrize(
    ("prev", "cur", "secs_into_minute", "expected"),
    [
        (60, 0, 0, 60.0),  # the whole previous minute is still inside the window
        (60, 0, 30, 30.0),
        (60, 10, 45, 25.0),
        (0, 7, 59, 7.0),
    ],
)
def test_weighted_window(prev, cur, secs_into_minute, expected):
    now = 1_000_000 * 60 + secs_into_minute
    assert quota.minute(now) == 1_000_000
    assert quota.weighted(prev, cur, now) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("used", "limit", "wait"),
    [(5, 10, 0.0), (9, 10, 0.0), (10, 10, 6.0), (20, 10, 33.0), (1000, 10, 59.46), (0, 0, 60.0)],
)
def test_seconds_until_room(used, limit, wait):
    assert quota.seconds_until_room(used, limit) == pytest.approx(wait, abs=0.01)


@pytest.mark.parametrize(
    ("s", "text"), [(0.02, "20ms"), (0, "0ms"), (1.5, "1.5s"), (59, "59s"), (360, "6m0s")]
)
def test_duration(s, text):
    assert quota.duration(s) == text


NOW = ts("2026-12-01 21:09:07")


@pytest.mark.parametrize(
    ("key", "window", "budget", "status", "code", "type_"),
    [
        (K(), (10**6, 10**9), 10**9, 200, None, ""),
        (K(rpm=10), (9, 0), 0, 200, None, ""),
        (K(rpm=10), (10, 0), 0, 429, "rate_limit_exceeded", "requests"),
        (K(tpm=100), (0, 99), 0, 200, None, ""),
        (K(tpm=100), (0, 100), 0, 429, "rate_limit_exceeded", "tokens"),
        (K(budget_tokens=50, budget_period="day"), (0, 0), 49, 200, None, ""),
        (
            K(budget_tokens=50, budget_period="day"),
            (0, 0),
            50,
            429,
            "insufficient_quota",
            "insufficient_quota",
        ),
        # The budget wins over the rate limit: waiting a minute does not fix it.
        (
            K(rpm=1, budget_tokens=1, budget_period="total"),
            (5, 0),
            5,
            429,
            "insufficient_quota",
            "insufficient_quota",
        ),
    ],
)
def test_check(key, window, budget, status, code, type_):
    v = quota.check(key, window, budget, NOW)
    assert (v.ok, v.status, v.code, v.type) == (status == 200, status, code, type_)


def test_rate_limit_headers():
    v = quota.check(K(rpm=10, tpm=1000), (10, 400), 0, NOW)
    assert v.status == 429
    h = v.headers
    assert h["Retry-After"] == "6"
    assert h["X-RateLimit-Limit-Requests"] == "10"
    assert h["X-RateLimit-Remaining-Requests"] == "0"
    assert h["X-RateLimit-Reset-Requests"] == "6s"
    assert h["X-RateLimit-Limit-Tokens"] == "1000"
    assert h["X-RateLimit-Remaining-Tokens"] == "600"
    assert h["X-RateLimit-Reset-Tokens"] == "0ms"
    assert "10 requests per minute" in v.message


def test_budget_retry_after_is_the_period_end():
    v = quota.check(K(budget_tokens=1, budget_period="day"), (0, 0), 1, NOW)
    assert v.retry_after_s == pytest.approx(ts("2026-12-02 00:00:00") - NOW)
    assert v.headers["Retry-After"] == str(int(ts("2026-12-02 00:00:00") - NOW))
    lifetime = quota.check(K(budget_tokens=1, budget_period="total"), (0, 0), 1, NOW)
    assert lifetime.retry_after_s is None and "Retry-After" not in lifetime.headers


def test_refusals_for_keys_and_models():
    v = quota.invalid_key("unknown API key")
    assert (v.status, v.code, v.type) == (401, "invalid_api_key", "invalid_request_error")
    v = quota.model_not_allowed("gpt-4", ("swiss-ai/*",))
    assert (v.status, v.code, v.type) == (403, "model_not_allowed", "permission_error")
    assert "swiss-ai/*" in v.message
