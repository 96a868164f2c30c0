"""The fleet's hands on Slurm: ``sbatch --parsable``, ``squeue`` and ``scancel``, nothing else.

Blocking calls (run them in a thread). Jobs run under the account that runs the head, with the
fleet file's ``account`` / ``partition`` / ``reservation`` / ``qos``; the job's environment is
the head's minus every ``OTELA_*`` variable (the head's own settings must not configure the
worker), plus the model's ``env`` and ``OTELA_BOOTSTRAP`` (how the worker finds the pool).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping

from .spec import ModelSpec

TIMEOUT_S = 30.0
_JOB_ID = re.compile(r"\s*(\d+)")


class SlurmError(Exception):
    """A Slurm command failed; the message says which and what it printed."""


def job_name(model: str) -> str:
    """``otela-fleet-<model>`` with characters Slurm job names dislike replaced."""
    return "otela-fleet-" + re.sub(r"[^A-Za-z0-9._-]", "_", model)[:100]


def job_env(spec: ModelSpec, bootstrap: Iterable[str], base: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("OTELA_")}
    env.update(spec.env)
    env["OTELA_BOOTSTRAP"] = ",".join(bootstrap)  # also read by the worker's own config
    return env


def sbatch_argv(spec: ModelSpec) -> list[str]:
    argv = ["sbatch", "--parsable", f"--job-name={job_name(spec.id)}"]
    for flag, value in (
        ("account", spec.account),
        ("partition", spec.partition),
        ("reservation", spec.reservation),
        ("qos", spec.qos),
    ):
        if value:
            argv.append(f"--{flag}={value}")
    return [*argv, str(spec.sbatch)]


def _run(argv: list[str], env: Mapping[str, str] | None = None) -> str:
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"{argv[0]}: {exc}") from exc
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip().splitlines()
        raise SlurmError(f"{argv[0]} exited {out.returncode}: {' '.join(detail)[:300]}")
    return out.stdout


def submit(spec: ModelSpec, bootstrap: Iterable[str]) -> str:
    """Submit one job for ``spec``; returns its job id."""
    out = _run(sbatch_argv(spec), job_env(spec, bootstrap, os.environ))
    match = _JOB_ID.match(out)
    if not match:
        raise SlurmError(f"sbatch printed no job id: {out.strip()[:200]!r}")
    return match.group(1)


def cancel(job_id: str) -> None:
    """``scancel``: Slurm sends the job SIGTERM; its node drains (in-flight requests finish)."""
    _run(["scancel", job_id])


def states(job_ids: Iterable[str]) -> dict[str, str]:
    """Slurm's state of each of ``job_ids`` still known to the controller; a job missing
    from the answer is gone (ended longer ago than the controller remembers). Asks for all
    of this user's jobs (``--me``): ``-j`` with one purged id fails the whole call."""
    ids = set(job_ids)
    if not ids:
        return {}
    out = _run(["squeue", "-h", "--me", "-t", "all", "-o", "%i|%T"])
    return {job: state for job, state in parse_states(out).items() if job in ids}


def parse_states(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        job, sep, state = line.strip().partition("|")
        if sep and job:
            found[job] = state.strip().upper()
    return found
