"""The restart policy of a --subprocess backend (pure), its settings, and the probe's log lines."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from click.testing import CliRunner

from opentela.cli import main
from opentela.config import ConfigError, load
from opentela.worker.agent import WorkerAgent
from opentela.worker.supervisor import (
    FIRST_DELAY_S,
    MAX_RESTARTS,
    STABLE_S,
    Backoff,
    Restart,
    Stop,
    decide,
    describe_exit,
)

SIGKILLED = -9


def crash_loop(mode: str, code: int, runs: int) -> list[Restart | Stop]:
    """``runs`` exits in a row, each a second after start, never healthy."""
    state, steps, now = Backoff(), [], 0.0
    for _ in range(runs):
        now += 1.0
        state, step = decide(mode, state, code, now, None)
        steps.append(step)
    return steps


@pytest.mark.parametrize(
    ("mode", "code", "expected"),
    [
        ("never", 0, Stop(failed=False, gave_up=False)),
        ("never", 3, Stop(failed=True, gave_up=False)),
        ("never", SIGKILLED, Stop(failed=True, gave_up=False)),
        ("on-failure", 0, Stop(failed=False, gave_up=False)),
        ("on-failure", 3, Restart(FIRST_DELAY_S, 1)),
        ("on-failure", SIGKILLED, Restart(FIRST_DELAY_S, 1)),
        ("always", 0, Restart(FIRST_DELAY_S, 1)),
        ("always", SIGKILLED, Restart(FIRST_DELAY_S, 1)),
    ],
)
def test_first_exit(mode: str, code: int, expected: Restart | Stop) -> None:
    assert decide(mode, Backoff(), code, 100.0, None)[1] == expected


@pytest.mark.parametrize(("mode", "code"), [("on-failure", 1), ("always", 0)])
def test_crash_loop_backs_off_then_gives_up(mode: str, code: int) -> None:
    steps = crash_loop(mode, code, MAX_RESTARTS + 1)
    assert steps[:-1] == [
        Restart(FIRST_DELAY_S * 2**i, i + 1) for i in range(MAX_RESTARTS)
    ]  # 0.25, 0.5, 1, 2, 4
    assert steps[-1] == Stop(failed=True, gave_up=True)
    # The whole schedule stays short: a backend that cannot start frees its job quickly.
    assert sum(s.delay_s for s in steps[:-1]) < 10


def test_a_run_that_stayed_healthy_resets_the_backoff() -> None:
    state = Backoff()
    for now in (1.0, 2.0, 3.0):
        state, _ = decide("on-failure", state, 1, now, None)
    assert state.failures == 3
    # Healthy from t=10 and dead at t=10+STABLE_S: a success, counted afresh.
    state, step = decide("on-failure", state, 1, 10.0 + STABLE_S, 10.0)
    assert step == Restart(FIRST_DELAY_S, 1) and state.failures == 1


@pytest.mark.parametrize(
    "healthy_since",
    [None, 100.0 - STABLE_S + 1],  # never healthy (however long it ran) / healthy too briefly
)
def test_a_run_that_did_not_stay_healthy_counts_as_failed(healthy_since: float | None) -> None:
    state, step = decide("always", Backoff(failures=2), SIGKILLED, 100.0, healthy_since)
    assert step == Restart(FIRST_DELAY_S * 4, 3) and state.failures == 3


def test_the_bound_is_on_runs_in_a_row() -> None:
    state = Backoff(failures=MAX_RESTARTS)
    assert decide("always", state, 1, 500.0, None)[1] == Stop(failed=True, gave_up=True)
    assert isinstance(decide("always", state, 1, 500.0, 500.0 - STABLE_S)[1], Restart)


def test_policy_stop_keeps_the_state() -> None:
    state = Backoff(failures=2)
    assert decide("never", state, 1, 0.0, None)[0] == state
    assert decide("on-failure", state, 0, 0.0, None)[0] == state


def test_describe_exit() -> None:
    assert describe_exit(3) == {"code": 3, "signal": None}
    assert describe_exit(0) == {"code": 0, "signal": None}
    assert describe_exit(SIGKILLED) == {"code": None, "signal": "SIGKILL"}


# --- settings: flag, YAML key, environment variable ---


def test_restart_default_and_sources(tmp_path: Path) -> None:
    base = {"service_port": 8000, "subprocess": "vllm serve m"}
    assert load(env={}, flags=base).subprocess_restart == "on-failure"
    assert load(env={}, flags={**base, "subprocess.restart": "never"}).subprocess_restart == "never"
    env = {"OTELA_SUBPROCESS_RESTART": "always"}
    assert load(env=env, flags=base).subprocess_restart == "always"
    for key in ("subprocess_restart", "subprocess.restart", "subprocess-restart"):
        f = tmp_path / f"{key}.yaml"
        f.write_text(f'service_port: 8000\nsubprocess: "vllm serve m"\n{key}: never\n')
        cfg = load(str(f), env={})
        assert (cfg.subprocess, cfg.subprocess_restart) == ("vllm serve m", "never")


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"subprocess_restart": "sometimes"}, "subprocess.restart must be one of always"),
        ({"subprocess": "vllm 'serve", "service_port": 1}, "subprocess: cannot split"),
        ({"subprocess": "   ", "service_port": 1}, "subprocess: the command is empty"),
    ],
)
def test_bad_settings(flags: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load(env={}, flags=flags)


def test_bad_restart_flag_is_one_line() -> None:
    result = CliRunner().invoke(main, ["start", "--subprocess.restart", "sometimes"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "'sometimes' is not one of" in result.output


# --- the health probe logs state changes, with the URL it asked ---


def test_probe_logs_once_per_state_change() -> None:
    agent = WorkerAgent(
        sync=None,  # type: ignore[arg-type]
        server=None,  # type: ignore[arg-type]
        backend=SimpleNamespace(base_url="http://127.0.0.1:8080"),  # type: ignore[arg-type]
        service_name="llm",
    )
    with structlog.testing.capture_logs() as logs:
        for error in ("refused", "refused", None, None, "timeout", "timeout", None):
            agent._log_probe(error)
    assert [(e["event"], e.get("error"), e["log_level"]) for e in logs] == [
        ("backend.probe_failed", "refused", "info"),  # at start: it is probably loading
        ("backend.probe_ok", None, "info"),
        ("backend.probe_failed", "timeout", "warning"),
        ("backend.probe_ok", None, "info"),
    ]
    assert {e["url"] for e in logs} == {"http://127.0.0.1:8080/v1/models"}
