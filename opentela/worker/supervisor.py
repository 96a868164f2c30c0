"""Keep the ``--subprocess`` backend running: restart it when it exits, with backoff and a bound.

``--subprocess.restart`` chooses when an exit is followed by a restart: ``always``,
``on-failure`` (non-zero exit or death by a signal; a clean exit 0 ends it like ``never``) or
``never``. When the backend is not restarted, or the supervisor gives up, the node drains and
exits (non-zero unless the backend exited 0), so a Slurm job releases its GPUs instead of
holding them, advertising nothing, until its time limit.

Restarts back off exponentially (``FIRST_DELAY_S`` doubling). A run counts as failed unless the
backend stayed healthy for ``STABLE_S``; after ``MAX_RESTARTS`` restarts in a row of failed runs
the supervisor gives up: a backend that crashes at start (bad flags, no GPU memory) will not
heal by itself. A run that stayed healthy resets the count, so a backend that crashes once a day
is restarted every time. The decision is the pure ``decide``; ``BackendSupervisor`` runs it.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
import trio

from . import subprocess as backend_process
from .subprocess import spawn, watch

RESTART_MODES = ("always", "on-failure", "never")
FIRST_DELAY_S = 0.25  # then 0.5, 1, 2, 4: a crash loop is given up after ~8 s of waiting
MAX_RESTARTS = 5  # restarts in a row after runs that did not stay healthy
STABLE_S = 60.0  # healthy this long after start: the run was a success, the count resets
EXEC_FAILED = 127  # what a shell answers for a command it cannot run

log = structlog.get_logger("opentela.supervisor")


@dataclass(frozen=True)
class Backoff:
    failures: int = 0
    """Failed runs in a row (each followed by a restart, or by giving up)."""


@dataclass(frozen=True)
class Restart:
    delay_s: float
    attempt: int  # restarts in a row so far: 1 after a run that stayed healthy


@dataclass(frozen=True)
class Stop:
    failed: bool  # the node should exit non-zero
    gave_up: bool  # the restart bound was reached (as opposed to the policy saying no)


def decide(
    mode: str,
    state: Backoff,
    code: int,
    now: float,
    healthy_since: float | None,
    *,
    first_delay_s: float = FIRST_DELAY_S,
    max_restarts: int = MAX_RESTARTS,
    stable_s: float = STABLE_S,
) -> tuple[Backoff, Restart | Stop]:
    """What to do after the backend exited with ``code`` (``Popen``'s: negative = signal) at
    ``now``; ``healthy_since`` is when this run was first seen healthy (None: never)."""
    failed_exit = code != 0
    if mode == "never" or (mode == "on-failure" and not failed_exit):
        return state, Stop(failed=failed_exit, gave_up=False)
    stable = healthy_since is not None and now - healthy_since >= stable_s
    failures = (0 if stable else state.failures) + 1
    if failures > max_restarts:
        return Backoff(failures), Stop(failed=True, gave_up=True)
    return Backoff(failures), Restart(first_delay_s * 2 ** (failures - 1), failures)


def describe_exit(code: int) -> dict[str, Any]:
    """``code`` and ``signal`` fields for the log: ``Popen`` reports a signal as ``-N``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return {"code": None, "signal": name}
    return {"code": code, "signal": None}


class Agent(Protocol):
    """What the supervisor needs from the ``WorkerAgent``."""

    def backend_up(self) -> bool: ...

    def stopping(self) -> bool: ...

    def on_backend_exit(self, code: int) -> None: ...


class BackendSupervisor:
    """Runs the backend command for the node's lifetime (``run``); when it will not run it any
    more, sets ``stopped`` (``until_stop`` hands the reason to the node's drain) and ``failed``
    (the node's exit code)."""

    def __init__(self, command: str, mode: str, agent: Agent) -> None:
        if mode not in RESTART_MODES:
            raise ValueError(f"restart mode must be one of {', '.join(RESTART_MODES)}")
        self.command = command
        self.mode = mode
        self.agent = agent
        self.pid: int | None = None
        self.restarts = 0
        self.state = "starting"  # starting | running | restarting | stopped
        self.failed = False
        self.reason = ""
        self.stopped = trio.Event()
        self._proc: subprocess.Popen | None = None
        self._stopping = False

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "state": self.state,
            "restarts": self.restarts,
            "restart_policy": self.mode,
        }

    async def until_stop(self, start_drain: Callable[[str], None]) -> None:
        """Wait until the backend will not be run again, then ask the node to drain."""
        await self.stopped.wait()
        start_drain(self.reason)

    async def _run_once(self) -> tuple[int, float | None]:
        """One run: start, watch, and note when it was first healthy."""
        try:
            proc = spawn(self.command)
        except OSError as exc:
            log.error("backend.start_failed", command=self.command, error=str(exc))
            return EXEC_FAILED, None
        self._proc, self.pid, self.state = proc, proc.pid, "running"
        log.info("backend.started", pid=proc.pid, command=self.command)
        healthy_since: float | None = None

        def tick() -> None:
            nonlocal healthy_since
            if healthy_since is None and self.agent.backend_up():
                healthy_since = trio.current_time()

        code = await watch(proc, tick)
        level = log.info if self._stopping else log.warning  # stopped by us, or died
        level("backend.exited", pid=proc.pid, **describe_exit(code))
        return code, healthy_since

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        backoff = Backoff()
        task_status.started()
        while True:
            code, healthy_since = await self._run_once()
            self.agent.on_backend_exit(code)
            if self._node_stopping():
                return
            backoff, step = decide(self.mode, backoff, code, trio.current_time(), healthy_since)
            if isinstance(step, Stop):
                self._end(step, code)
                return
            self.state = "restarting"
            log.info("backend.restarting", attempt=step.attempt, delay_s=step.delay_s)
            await trio.sleep(step.delay_s)
            if self._node_stopping():
                return
            self.restarts += 1

    async def stop(self) -> None:
        """The node's shutdown step: stop the backend for good (SIGTERM, SIGKILL after a grace
        or when the caller's deadline cancels this) and restart nothing."""
        self._stopping = True
        if self._proc is not None:
            await backend_process.stop(self._proc)

    def _node_stopping(self) -> bool:
        """A node that drains does not restart its backend (Slurm's scancel signals the
        backend too)."""
        if self._stopping or self.agent.stopping():
            self.state = "stopped"
            return True
        return False

    def _end(self, step: Stop, code: int) -> None:
        self.state, self.failed = "stopped", step.failed
        if step.gave_up:
            self.reason = "backend gave up"
            log.error(
                "backend.gave_up",
                restarts=self.restarts,
                max_restarts=MAX_RESTARTS,
                **describe_exit(code),
            )
        else:
            self.reason = "backend exited"
            log.warning("backend.not_restarted", policy=self.mode, **describe_exit(code))
        self.stopped.set()
