"""When a worker in a Slurm job stops taking requests, and when its replacement is submitted.

Pure: every function takes the job's end time and ``now_s`` (epoch seconds) and returns a
time; the node's timers act on it. Draining means: withdraw the service from the table (no
new requests are routed here), let in-flight requests finish, then stop the backend and
publish ``left`` before Slurm's SIGTERM.

Choosing ``--slurm.drain-before`` (``drain_before_s``) is a trade-off:

* **Generation length.** A request admitted just before draining may run as long as the
  longest generation you serve (max tokens ÷ tokens/s, plus queueing in the backend). If the
  drain window is shorter, those requests are cut by SIGTERM and the client sees a broken
  stream (the gateway retries only before the first byte). 5 minutes covers several thousand
  tokens on a loaded GPU.
* **Wasted allocation.** For the whole window the GPUs only finish old requests; a long
  window wastes allocation time that was paid for, multiplied by every job. Keep it no longer
  than your longest plausible request.
* **Slurm's enforcement slack.** Slurm kills a job at its end time or up to ~30 s after
  (the controller checks limits periodically), then sends SIGKILL ``KillWait`` seconds after
  SIGTERM. The slack is not a promise: plan as if the kill comes exactly at the end time.
* **``--signal=B:USR1@N`` arrives early.** Slurm delivers it up to a minute before the
  requested N seconds (same periodic check). Treat it as "drain no later than now"
  (:func:`drain_on_signal`), not as a precise clock; it is the backstop when the end time
  could not be read (``SlurmJob.end_time is None``) or was changed by ``scontrol update``.
"""

from __future__ import annotations

SLURM_ENFORCEMENT_SLACK_S = 30.0
"""Slurm may enforce a time limit up to this late; documented, never relied on."""


def drain_at(end_time: float | None, drain_before_s: float, now_s: float) -> float | None:
    """Epoch second at which to start draining: ``end_time - drain_before_s``, never before now.

    None when the end time is unknown or unlimited (no scheduled drain; a USR1 signal or
    SIGTERM still drains). A time already past, including an end time already past, gives
    ``now_s``: drain immediately. Raises ValueError for a negative ``drain_before_s``.
    """
    return _before(end_time, drain_before_s, now_s, "drain_before_s")


def resubmit_at(end_time: float | None, resubmit_before_s: float, now_s: float) -> float | None:
    """Epoch second at which to submit the replacement job, never before now.

    ``resubmit_before_s`` should be the expected queue wait plus the backend's start time
    (model load: 30 s to several minutes) plus ``drain_before_s``, so the new worker is serving
    before this one drains and the model never drops out of the pool. Too large and two jobs
    hold GPUs at once for longer than needed; too small and the model is missing between jobs.
    None when the end time is unknown or unlimited (nothing to replace on a schedule).
    Raises ValueError for a negative ``resubmit_before_s``.
    """
    return _before(end_time, resubmit_before_s, now_s, "resubmit_before_s")


def drain_on_signal(planned: float | None, now_s: float) -> float:
    """Drain time after Slurm's early-warning signal (``--signal=B:USR1@N``) at ``now_s``.

    The signal can arrive earlier than asked, but never means "later than planned": keep an
    earlier planned drain, otherwise drain now.
    """
    return now_s if planned is None else min(planned, now_s)


def _before(end_time: float | None, before_s: float, now_s: float, name: str) -> float | None:
    if before_s < 0:
        raise ValueError(f"{name} must be >= 0, got {before_s}")
    if end_time is None:
        return None
    return max(end_time - before_s, now_s)
