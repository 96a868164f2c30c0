"""What an HTTP worker process of a node is configured with: the node's settings, as a head
of its own. Pure: the parent writes the result as the child's YAML config.

An HTTP worker is a full member (its own identity, libp2p host, table and membership) so that
it forwards over its own connections on its own core; everything the user set about the
pool, the API and the limits is the parent's, and it shares the parent's store, so keys,
quotas and usage are one.
"""

from __future__ import annotations

from typing import Any

from ..config import FIELDS, Config

# Settings that make a node a worker or a Slurm job's owner: an HTTP worker has no backend
# and never resubmits the job (the parent does), so these keep their defaults.
NOT_INHERITED = frozenset(
    {
        "home",
        "db",
        "role",
        "p2p_port",
        "public_addr",
        "bootstrap",
        "service_name",
        "service_host",
        "service_port",
        "service_identity_group",
        "service_allow_path",
        "service_api_key",
        "backend",
        "subprocess",
        "subprocess_restart",
        "slurm_resubmit",
        "fleet",  # one reconciler per node: the parent submits, its HTTP workers never do
        "join_token",  # secret: handed over in the environment, never written to a file
        "http_workers",
    }
)


def parent_maddr(cfg: Config, peer_id: str) -> str:
    """The parent's libp2p address as its children dial it (on the same machine)."""
    host = cfg.p2p_host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    proto = "ip6" if ":" in host else "ip4"
    return f"/{proto}/{host}/tcp/{cfg.p2p_port}/p2p/{peer_id}"


def child_public_addr(public_addr: str, port: int) -> str:
    """The parent's ``--public-addr`` with the child's own port where it names one."""
    if not public_addr.startswith("/"):
        return public_addr  # an IP: the port is the child's --p2p-port
    parts = public_addr.split("/")
    parts[4] = str(port)  # /PROTO/HOST/tcp/PORT (config validated the shape)
    return "/".join(parts)


def child_settings(
    cfg: Config, *, home: str, db_url: str, p2p_port: int, parent: str
) -> dict[str, Any]:
    """The child's settings, as YAML keys (only what differs from the defaults)."""
    out: dict[str, Any] = {}
    for name, field in FIELDS.items():
        if name in NOT_INHERITED:
            continue
        value = getattr(cfg, name)
        if value != field.default:
            out[name] = list(value) if isinstance(value, tuple) else value
    out.update(
        home=home,
        db=db_url,
        role="head",
        p2p_port=p2p_port,
        bootstrap=[parent, *cfg.bootstrap],
    )
    if cfg.public_addr:
        out["public_addr"] = child_public_addr(cfg.public_addr, p2p_port)
    return out
