"""Acting on a Slurm job's end time: submit a successor, then drain before the limit.

Times come from ``drain.py`` (pure); this module only sleeps until them and acts. The wall
clock is used on purpose: the end time is a wall-clock instant given by Slurm.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable

import structlog
import trio

from .drain import drain_at, resubmit_at
from .slurm import SlurmJob

HANDOFF_POLL_S = 0.5
HANDOFF_MARGIN_S = 5.0  # the drain must still fit between the hand-off wait and the end

log = structlog.get_logger("opentela.slurm")


async def _sleep_until(wall_s: float) -> None:
    await trio.sleep(max(0.0, wall_s - time.time()))


def submit(script: str) -> str | None:
    """``sbatch --parsable SCRIPT`` → the new job id, or None (logged)."""
    try:
        out = subprocess.run(
            ["sbatch", "--parsable", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("slurm.resubmit_failed", script=script, error=str(exc))
        return None
    match = re.match(r"\s*(\d+)", out.stdout)
    if out.returncode != 0 or not match:
        log.error(
            "slurm.resubmit_failed", script=script, code=out.returncode, stderr=out.stderr.strip()
        )
        return None
    return match.group(1)


async def run_walltime(
    job: SlurmJob,
    *,
    drain_before_s: float,
    drain_timeout_s: float,
    resubmit_script: str,
    resubmit_before_s: float,
    successor_ready: Callable[[], bool],
    start_drain: Callable[[str], None],
) -> None:
    """Sleep until the job's drain time and call ``start_drain``; with a resubmit script,
    submit the successor first and postpone the drain until ``successor_ready()`` (another
    node serves our models) or the last moment a drain still fits."""
    if job.end_time is None:
        log.warning("slurm.no_end_time", job=job.job_id, hint="only SIGTERM/SIGUSR1 will drain")
        return
    now = time.time()
    drain_t = drain_at(job.end_time, drain_before_s, now)
    assert drain_t is not None
    log.info(
        "slurm.schedule",
        job=job.job_id,
        ends_in_s=round(job.end_time - now, 1),
        drain_in_s=round(drain_t - now, 1),
        resubmit=resubmit_script or None,
    )
    successor: str | None = None
    if resubmit_script:
        resub_t = resubmit_at(job.end_time, resubmit_before_s, now)
        assert resub_t is not None
        await _sleep_until(resub_t)
        successor = await trio.to_thread.run_sync(submit, resubmit_script)
        if successor:
            log.info("slurm.resubmitted", job=job.job_id, successor=successor)
    await _sleep_until(drain_t)
    if successor:
        latest = max(drain_t, job.end_time - drain_timeout_s - HANDOFF_MARGIN_S)
        while not successor_ready() and time.time() < latest:
            await trio.sleep(HANDOFF_POLL_S)
        log.info("slurm.handoff", successor=successor, ready=successor_ready())
    start_drain("slurm time limit")
