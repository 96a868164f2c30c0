"""What a node learns about the Slurm job it runs in: the job, its node list, GPUs, owner, place
in a multi-node job and end time.

Everything here is pure except :func:`run_command`, the one function that executes
``squeue``/``scontrol``; :func:`detect` receives it (or a fake) as ``run``, so every parsing
path is tested against captured output without a cluster.

The end time is what matters: the node drains itself before Slurm kills the job (see
``drain.py``). It comes from the first source that gives a usable value:

1. ``SLURM_JOB_END_TIME`` (epoch seconds; set by newer Slurm releases, not by 22.05);
2. ``squeue --json -j ID`` → the job's ``end_time``: an int on 22.05, ``{"set": true,
   "infinite": false, "number": N}`` from 23.02 on;
3. ``squeue -h -j ID -o %e`` → local time ``2026-11-28T06:12:00`` or ``N/A``/``Unknown``;
4. ``scontrol show job -o ID`` → ``EndTime=...`` in the same format.

Odd or missing values give ``None`` ("unknown end"), never an exception: a node that cannot
tell when its job ends still serves, it just cannot drain ahead of time.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

Run = Callable[[list[str]], str | None]
"""Executes a command and returns its stdout, or None if it failed (see :func:`run_command`)."""

# Slurm encodes "no limit" as INFINITE (0xffffffff) or NO_VAL (0xfffffffe) in 32-bit fields.
_SLURM_INFINITE = 0xFFFFFFFE
_NO_END = {"", "n/a", "unknown", "none", "unlimited", "infinite", "not_set", "invalid", "(null)"}
_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
_END_TIME_RE = re.compile(r"(?:^|\s)EndTime=(\S*)")


@dataclass(frozen=True)
class SlurmJob:
    """The job this process runs in, as far as Slurm tells it."""

    job_id: str
    end_time: float | None
    """Unix epoch seconds when Slurm ends the job; None when unlimited or unknown."""
    node_list: str
    """``SLURM_JOB_NODELIST`` in Slurm's compressed form, e.g. ``nid[001-004]``."""
    partition: str
    cluster: str
    gpus: str
    """GPU indexes this step/job owns, e.g. ``0,1`` (``SLURM_STEP_GPUS``, else ``SLURM_JOB_GPUS``)."""
    local_id: int | None
    """``SLURM_LOCALID``: this task's index on its node (one worker per task), None outside srun."""
    user: str = ""
    """``SLURM_JOB_USER``: who submitted the job (the ``launched_by`` label)."""
    reservation: str = ""
    """``SLURM_JOB_RESERVATION``, empty when the job runs outside a reservation."""
    num_nodes: int = 1
    """``SLURM_NNODES`` (the step's nodes under srun; else ``SLURM_JOB_NUM_NODES``): above 1
    the nodes form one replica."""
    node_id: int | None = None
    """``SLURM_NODEID``: this node's index in the job (0 leads a multi-node replica)."""


def detect(env: Mapping[str, str], run: Run) -> SlurmJob | None:
    """The Slurm job described by ``env``, or None when not inside a job.

    ``run`` is consulted only when the environment lacks a usable end time, at most three
    times, and each command's failure just moves on to the next source.
    """
    job_id = (env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or "").strip()
    if not job_id:
        return None
    return SlurmJob(
        job_id=job_id,
        end_time=end_time(env, job_id, run),
        node_list=_first(env, "SLURM_JOB_NODELIST", "SLURM_NODELIST"),
        partition=_first(env, "SLURM_JOB_PARTITION"),
        cluster=_first(env, "SLURM_CLUSTER_NAME"),
        gpus=_first(env, "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"),
        local_id=_int_or_none(env.get("SLURM_LOCALID")),
        user=_first(env, "SLURM_JOB_USER"),
        reservation=_first(env, "SLURM_JOB_RESERVATION"),
        num_nodes=_int_or_none(_first(env, "SLURM_NNODES", "SLURM_JOB_NUM_NODES")) or 1,
        node_id=_int_or_none(env.get("SLURM_NODEID")),
    )


def end_time(env: Mapping[str, str], job_id: str, run: Run) -> float | None:
    """The job's end time from the first source that has one (order in the module doc)."""
    t = parse_epoch(env.get("SLURM_JOB_END_TIME", ""))
    if t is not None:
        return t
    out = run(["squeue", "--json", "-j", job_id])
    if out is not None:
        t = parse_squeue_json(out, job_id)
        if t is not None:
            return t
    out = run(["squeue", "-h", "-j", job_id, "-o", "%e"])
    if out is not None:
        t = parse_slurm_time(out)
        if t is not None:
            return t
    out = run(["scontrol", "show", "job", "-o", job_id])
    if out is not None:
        return parse_scontrol_end_time(out)
    return None


def parse_epoch(text: str) -> float | None:
    """``"1764310320"`` → 1764310320.0; zero, negative, "infinite" or garbage → None."""
    text = text.strip()
    if not text.isdigit():
        return None
    return _epoch_or_none(int(text))


def parse_squeue_json(text: str, job_id: str = "") -> float | None:
    """``end_time`` of ``job_id`` (else of the only/first job) in ``squeue --json`` output.

    Accepts both shapes: ``"end_time": 1764310320`` (Slurm ≤ 22.05) and
    ``"end_time": {"set": true, "infinite": false, "number": 1764310320}`` (23.02+).
    Slurm 22.05 may ignore ``-j`` with ``--json`` and list every job, hence the lookup by id.
    """
    try:
        data = json.loads(text)
    except (ValueError, TypeError):
        return None
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, list) or not jobs:
        return None
    job = _find_job(jobs, job_id)
    if not isinstance(job, dict):
        return None
    return _json_time(job.get("end_time"))


def parse_slurm_time(text: str, tz: tzinfo | None = None) -> float | None:
    """Slurm's ``YYYY-MM-DDTHH:MM:SS`` (local time of the machine running the command).

    ``tz`` defaults to this machine's local zone, which is the zone ``squeue``/``scontrol``
    printed in when run here. ``N/A``, ``Unknown``, ``None`` and anything else → None.
    """
    text = text.strip()
    if text.lower() in _NO_END or not _ISO_RE.match(text):
        return None
    try:
        dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    if tz is not None:
        dt = dt.replace(tzinfo=tz)
    try:
        return _epoch_or_none(int(dt.timestamp()))
    except (OverflowError, OSError, ValueError):
        return None


def parse_scontrol_end_time(text: str, tz: tzinfo | None = None) -> float | None:
    """The ``EndTime=`` field of ``scontrol show job -o`` output (first job line)."""
    m = _END_TIME_RE.search(text)
    return parse_slurm_time(m.group(1), tz) if m else None


def parse_time_left(text: str) -> float | None:
    """Seconds in squeue's ``%L`` / ``TimeLeft`` format; None for no limit or garbage.

    Slurm prints ``[days-]hours:minutes:seconds``, shortened to ``minutes:seconds`` under an
    hour (``4:59``), and ``UNLIMITED``, ``NOT_SET`` or ``INVALID`` when there is no value.
    """
    text = text.strip()
    if text.lower() in _NO_END:
        return None
    try:
        return _clock_seconds(text, allow_days=True)
    except ValueError:
        return None


_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_UNITS_RE = re.compile(
    r"^(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)


def parse_duration(text: str) -> float:
    """Seconds for a ``--slurm.drain-before``-style value.

    Accepted: ``300`` and ``300s`` (seconds), ``5m``, ``2h``, ``1d``, combinations in
    d→h→m→s order (``1h30m``, ``1m30s``, decimals like ``1.5m``), and clock forms ``1:30``
    (minutes:seconds), ``01:02:03`` (hours:minutes:seconds), ``1-00:00:00`` (Slurm's days).
    Raises ValueError naming the value and the accepted forms otherwise.
    """
    raw = text
    text = text.strip().lower()
    if text:
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        if ":" in text:
            try:
                return _clock_seconds(text, allow_days=True)
            except ValueError:
                pass
        else:
            m = _UNITS_RE.match(text)
            if m and any(m.groupdict().values()):
                return sum(float(v) * _UNIT_S[k] for k, v in m.groupdict().items() if v)
    raise ValueError(
        f"invalid duration {raw!r}: use seconds (300, 300s), units (5m, 1h30m, 2h, 1d) "
        "or a clock (1:30 = mm:ss, 01:02:03 = hh:mm:ss)"
    )


def run_command(argv: list[str], timeout_s: float = 5.0) -> str | None:
    """Run ``argv`` and return its stdout, or None if it is missing, fails or times out.

    The only function here that does I/O; pass it as ``run`` to :func:`detect`.
    """
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", errors="replace")


# --- helpers ----------------------------------------------------------------------------


def _first(env: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return ""


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def _epoch_or_none(value: int) -> float | None:
    if value <= 0 or value >= _SLURM_INFINITE:
        return None
    return float(value)


def _find_job(jobs: list[Any], job_id: str) -> Any:
    if job_id:
        for job in jobs:
            if isinstance(job, dict) and str(job.get("job_id", "")) == job_id:
                return job
    return jobs[0]


def _json_time(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _epoch_or_none(value)
    if isinstance(value, float) and value.is_integer():
        return _epoch_or_none(int(value))
    if isinstance(value, dict):
        if value.get("infinite") is True or value.get("set") is False:
            return None
        return _json_time(value.get("number"))
    return None


def _clock_seconds(text: str, *, allow_days: bool) -> float:
    """``[D-]H:MM:SS`` or ``M:SS`` → seconds; raises ValueError on anything else."""
    days = 0
    if allow_days and "-" in text:
        d, _, text = text.partition("-")
        if not d.isdigit():
            raise ValueError(text)
        days = int(d)
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(text)
    if days and len(parts) != 3:
        raise ValueError(text)
    nums = [int(p) for p in parts]
    if any(n >= 60 for n in nums[1:]):
        raise ValueError(text)
    if len(nums) == 2:
        nums.insert(0, 0)
    h, m, s = nums
    return float(days * 86400 + h * 3600 + m * 60 + s)
