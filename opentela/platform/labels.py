"""The labels a node signs into its record: what runs where, for people and routing.

Pure: :func:`node_labels` takes the settings, the Slurm job, the environment, the clock and
the machine's facts as arguments and returns the map; the node calls it once, when it builds
its first record (``node.py`` ``own_record``). What changes later (``status``, ``framework``
once the backend answers) goes through :func:`backend_labels`, called by the worker agent.

Precedence, lowest first: labels computed from facts (:data:`AUTO_KEYS`), then ``--label
key=value``. A ``--label`` with an empty value removes the automatic label of that name
(``--label worker_group_id=`` for a multi-node job whose nodes are independent replicas).
``--site`` wins over the Slurm cluster name for ``site``.

Multi-node replicas: in a Slurm job on several nodes (``SLURM_NNODES`` > 1) every node gets
``worker_group_id = <Slurm cluster, else --site>-<job id>``; the node with ``SLURM_NODEID`` 0
is the group's ``leader``, the others are ``follower`` and advertise no service
(:func:`is_follower`), so the replica counts once and only its leader is routed to. Without
its group (``--label worker_group_id=``) a node has no automatic role either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..table.record import MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS
from ..worker.framework import framework_of_command
from .slurm import SlurmJob

if TYPE_CHECKING:
    from ..config import Config

AUTO_KEYS = (
    "site",
    "cluster",
    "hostname",
    "arch",
    "slurm_job_id",
    "slurm_partition",
    "slurm_reservation",
    "slurm_nodelist",
    "launched_by",
    "started_at",
    "expires_at",
    "framework",
    "worker_group_id",
    "worker_group_role",
    "status",
)
"""Every label the node may set by itself; the record's :data:`MAX_LABELS` keeps room for them."""

MAX_USER_LABELS = MAX_LABELS - len(AUTO_KEYS)
"""``--label`` entries a node may give: together with every automatic one they still fit
the record's bound, which peers enforce when they decode it."""

PENDING = "pending"
READY = "ready"
LEADER = "leader"
FOLLOWER = "follower"

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$")


def label_problem(key: str, value: str) -> str | None:
    """Why ``key=value`` cannot be a label, or None. Keys: letters, digits, ``_ . - /``,
    starting with a letter or digit, 1-63 characters; values: printable, at most 256."""
    if not 0 < len(key) <= MAX_LABEL_KEY or not _KEY_RE.match(key):
        return (
            f"key {key[:MAX_LABEL_KEY]!r} must be 1-{MAX_LABEL_KEY} letters, digits or _ . - /, "
            "starting with a letter or digit"
        )
    if len(value) > MAX_LABEL_VALUE:
        return f"value of {key!r} is {len(value)} characters (at most {MAX_LABEL_VALUE})"
    if not value.isprintable():
        return f"value of {key!r} has control characters"
    return None


def parse_label(text: str) -> tuple[str, str]:
    """``"team=nlp"`` → ``("team", "nlp")``; raises ValueError saying what is wrong."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r} is not key=value")
    key, value = key.strip(), value.strip()
    problem = label_problem(key, value)
    if problem:
        raise ValueError(problem)
    return key, value


def user_labels(items: tuple[str, ...]) -> dict[str, str]:
    """The ``--label`` entries as a map (a later entry for the same key wins); raises
    ValueError for a malformed entry or too many of them."""
    out: dict[str, str] = {}
    for item in items:
        key, value = parse_label(item)
        out[key] = value
    if len(out) > MAX_USER_LABELS:
        raise ValueError(f"{len(out)} labels given, at most {MAX_USER_LABELS}")
    return out


def node_labels(
    cfg: Config,
    job: SlurmJob | None,
    env: Mapping[str, str],
    now: float,
    *,
    hostname: str,
    arch: str,
) -> dict[str, str]:
    """The node's labels at start: facts of the machine, the Slurm job and the backend
    command, then ``--label`` on top (module doc). ``now``: wall-clock seconds."""
    auto: dict[str, str] = {
        "hostname": hostname,
        "arch": arch,
        "started_at": str(int(now)),
        "launched_by": (job.user if job is not None else "")
        or env.get("USER", "")
        or env.get("LOGNAME", ""),
    }
    place = cfg.site or (job.cluster if job is not None else "")
    auto["site"] = place
    if job is not None:
        auto.update(
            cluster=job.cluster or cfg.site,
            slurm_job_id=job.job_id,
            slurm_partition=job.partition,
            slurm_reservation=job.reservation,
            slurm_nodelist=job.node_list,
            expires_at=str(int(job.end_time)) if job.end_time is not None else "",
        )
        if job.num_nodes > 1:
            auto["worker_group_id"] = f"{job.cluster or cfg.site or 'slurm'}-{job.job_id}"
            auto["worker_group_role"] = LEADER if job.node_id in (None, 0) else FOLLOWER
    elif cfg.site:
        auto["cluster"] = cfg.site
    if cfg.backend_url:
        auto["status"] = PENDING
        auto["framework"] = framework_of_command(cfg.subprocess)
    # Automatic values that do not fit the record's bounds are left out (a long node list).
    merged = {k: v for k, v in auto.items() if v and label_problem(k, v) is None}
    given = user_labels(cfg.label)
    merged.update(given)
    if not merged.get("worker_group_id") and "worker_group_role" not in given:
        merged.pop("worker_group_role", None)
    return {k: v for k, v in merged.items() if v}


def backend_labels(
    labels: Mapping[str, str], fixed: frozenset[str], *, up: bool, framework: str
) -> dict[str, str]:
    """``labels`` with the backend's current state: ``status`` ready or pending, and the
    ``framework`` it answered as (kept as it was when it does not say). Keys the user set
    (``fixed``) are never changed."""
    out = dict(labels)
    if "status" not in fixed:
        out["status"] = READY if up else PENDING
    if framework and "framework" not in fixed:
        out["framework"] = framework
    return out


def is_follower(labels: Mapping[str, str]) -> bool:
    """A follower of a multi-node replica: it advertises no service (only its leader serves)."""
    return labels.get("worker_group_role") == FOLLOWER


def slurm_view(labels: Mapping[str, str]) -> dict[str, str]:
    """The ``slurm`` object of ``/v1/dnt/table`` as before labels (``job``, ``partition``,
    ``cluster``, ``nodes``, ``end``), read from the labels; empty outside a Slurm job."""
    if not labels.get("slurm_job_id"):
        return {}
    names = {
        "job": "slurm_job_id",
        "partition": "slurm_partition",
        "cluster": "cluster",
        "nodes": "slurm_nodelist",
        "end": "expires_at",
    }
    return {short: labels[key] for short, key in names.items() if labels.get(key)}
