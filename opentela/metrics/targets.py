"""Prometheus HTTP service discovery (``/metrics/targets``): every live member's HTTP address.

One head is enough for Prometheus to find the whole pool: workers come and go with their
Slurm jobs, and the table already knows them. The ``__meta_opentela_*`` labels are for
relabelling (deploy/prometheus/prometheus.yml); Prometheus drops them unless a rule keeps them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..table.store import Snapshot

# Record label -> discovery label (only those with a small, stable set of values per node).
META_LABELS = ("site", "hostname", "slurm_job_id", "slurm_partition")


def host_port(http_addr: str) -> str | None:
    """``host:port`` of a record's ``http_addr`` (``http://10.0.0.5:8092``), None if unusable."""
    try:
        parts = urlsplit(http_addr)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def http_sd(snap: Snapshot) -> list[dict[str, Any]]:
    """One target group per live member (this node included), sorted by peer ID. An address
    is listed once: the HTTP processes of one node (``--http-workers``) share it."""
    groups = []
    seen: set[str] = set()
    for pid, e in sorted(snap.entries.items()):
        if not e.alive and pid != snap.self_id:
            continue
        r = e.record
        target = host_port(r.http_addr)
        if target is None or target in seen:
            continue
        seen.add(target)
        labels = {
            "__meta_opentela_peer_id": pid,
            "__meta_opentela_role": r.role,
            "__meta_opentela_reachability": r.reachability,
        }
        for key in META_LABELS:
            value = r.labels.get(key)
            if value:
                labels[f"__meta_opentela_{key}"] = value
        groups.append({"targets": [target], "labels": labels})
    return groups
