"""Drain and resubmit timing: pure arithmetic, checked row by row."""

from __future__ import annotations

import pytest

from opentela.platform.drain import drain_at, drain_on_signal, resubmit_at

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("end_time", "before_s", "expected"),
    [
        (NOW + 3600, 300, NOW + 3300),  # normal: 5 min before a 1 h limit
        (NOW + 300, 300, NOW),  # exactly at the boundary
        (NOW + 100, 300, NOW),  # window already open: drain now
        (NOW - 50, 300, NOW),  # end time already past (Slurm's slack): drain now
        (NOW + 3600, 0, NOW + 3600),  # no window: drain at the end time
        (NOW + 3600, 7200, NOW),  # window longer than the job has left
        (None, 300, None),  # unknown or unlimited end: nothing scheduled
    ],
)
def test_drain_at(end_time: float | None, before_s: float, expected: float | None) -> None:
    assert drain_at(end_time, before_s, NOW) == expected


@pytest.mark.parametrize(
    ("end_time", "before_s", "expected"),
    [
        (NOW + 7200, 1200, NOW + 6000),
        (NOW + 600, 1200, NOW),
        (None, 1200, None),
    ],
)
def test_resubmit_at(end_time: float | None, before_s: float, expected: float | None) -> None:
    assert resubmit_at(end_time, before_s, NOW) == expected


def test_resubmit_precedes_drain_when_configured_larger() -> None:
    end = NOW + 7200
    r = resubmit_at(end, 900, NOW)
    d = drain_at(end, 300, NOW)
    assert r is not None and d is not None and r < d


@pytest.mark.parametrize("fn", [drain_at, resubmit_at])
def test_negative_window_is_rejected(fn: object) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        fn(NOW + 10, -1, NOW)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("planned", "expected"),
    [
        (None, NOW),  # end time unknown: the signal is the only warning
        (NOW + 60, NOW),  # signal came early: drain now, not later
        (NOW - 30, NOW - 30),  # already draining since earlier: keep it
    ],
)
def test_drain_on_signal(planned: float | None, expected: float) -> None:
    assert drain_on_signal(planned, NOW) == expected
