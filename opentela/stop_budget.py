"""How long a stopping node may take: ``--drain-timeout`` bounds the whole stop, drain plus
shutdown, and a second signal cuts whatever remains to about a second.

Kubernetes sends SIGKILL ``terminationGracePeriodSeconds`` after SIGTERM and Slurm ``KillWait``
seconds after its signal; a node that overruns loses its leave announcement and leaves its
backend to the kernel. So the stop has one deadline, every step (drain, leave, HTTP shutdown,
backend stop) gets what is left of it, and a watchdog thread ends the process shortly after
the deadline if a step still hangs (a library that ignores cancellation). The arithmetic is
pure (``StopBudget``); the watchdog is the only I/O here.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

CUT_S = 1.0  # after a second signal, the rest of the stop takes this long at most
RESERVE_S = 3.0  # kept from the drain for leaving and shutting down
RESERVE_FRACTION = 0.25  # ...or this share of a short --drain-timeout
WATCHDOG_SLACK_S = 1.5  # past the deadline, the process exits whatever still runs


@dataclass
class StopBudget:
    started_s: float
    deadline_s: float
    drain_until_s: float
    cut_short: bool = False

    @classmethod
    def start(cls, timeout_s: float, now_s: float) -> StopBudget:
        reserve = min(RESERVE_S, RESERVE_FRACTION * timeout_s)
        # Even --drain-timeout 0 leaves about a second to announce the leave and close.
        return cls(now_s, now_s + max(timeout_s, CUT_S), now_s + timeout_s - reserve)

    def cut(self, now_s: float) -> None:
        """A second signal: stop draining now, finish the rest within ``CUT_S``."""
        self.cut_short = True
        self.drain_until_s = min(self.drain_until_s, now_s)
        self.deadline_s = min(self.deadline_s, now_s + CUT_S)

    def remaining(self, now_s: float) -> float:
        return max(0.0, self.deadline_s - now_s)


class Watchdog:
    """Ends the process ``WATCHDOG_SLACK_S`` after a deadline (monotonic seconds) unless
    ``disarm``ed first. A thread, not a trio task: it must fire when the loop is stuck."""

    def __init__(self) -> None:
        self._deadline = float("inf")
        self._cond = threading.Condition()
        self._armed = False

    def arm(self, deadline_monotonic: float) -> None:
        with self._cond:
            self._deadline = deadline_monotonic
            if not self._armed:
                self._armed = True
                threading.Thread(target=self._run, name="stop-watchdog", daemon=True).start()
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = float("inf")
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                left = self._deadline + WATCHDOG_SLACK_S - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(None if left == float("inf") else left)
        sys.stderr.write(
            '{"event": "node.stop_forced", "level": "error", '
            '"reason": "the stop overran --drain-timeout"}\n'
        )
        sys.stderr.flush()
        os._exit(1)
