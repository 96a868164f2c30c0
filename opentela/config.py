"""The one configuration tree. Sources, lowest precedence first: YAML file, ``OTELA_*``
environment variables, command-line flags.

A field's name is also its YAML key and its flag: ``http_port`` ↔ ``http_port:`` or
``http-port:`` ↔ ``--http-port`` ↔ ``OTELA_HTTP_PORT``; dotted flags nest in YAML
(``--service.name`` ↔ ``service: {name: ...}`` ↔ ``OTELA_SERVICE_NAME``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .platform.slurm import parse_duration
from .routing.balance import POLICIES


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    home: str = "~/.otela"
    """Directory holding ``identity.key``; one per node on a machine."""
    role: str = ""
    """``head`` or ``worker``; empty means worker if a backend is configured, else head."""
    http_host: str = "0.0.0.0"
    http_port: int = 8092
    p2p_host: str = "0.0.0.0"
    p2p_port: int = 43905
    public_addr: str = ""
    """IP or multiaddr peers should dial, when the listen address is not reachable as is."""
    bootstrap: tuple[str, ...] = ()
    """Multiaddrs ``/ip4/.../tcp/PORT/p2p/ID`` of nodes to join through."""
    bootstrap_url: str = ""
    """URL returning ``{"bootstraps": [multiaddr, ...]}`` (any node's ``/v1/dnt/bootstraps``)."""
    service_name: str = ""
    service_host: str = "127.0.0.1"
    service_port: int = 0
    service_identity_group: tuple[str, ...] = ()
    """Extra identity groups to advertise besides ``model=<id>`` for each backend model:
    ``model=*`` (serve any model name, tier 2) or ``all`` (tier 3)."""
    backend: str = ""
    """Base URL of the local OpenAI-compatible backend; alternative to service host/port."""
    subprocess: str = ""
    """Command that starts the backend; the node supervises and stops it."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Request bodies above this are refused with 413 before anything is forwarded."""
    read_timeout: float = 300.0
    """Seconds a forwarded request may wait for the next byte from the worker."""
    routing_policy: str = "affinity"
    """How an entry node picks among replicas of a tier: ``random`` (upstream's),
    ``round-robin``, ``least-loaded`` (power of two choices over gossiped load plus this
    node's own in-flight requests) or ``affinity`` (consistent hashing of the prompt prefix or
    session with bounded load: the same prefix goes to the replica that has it cached, and
    spills to the least loaded one above 1.25x the average). Default ``affinity``: at 80 % load
    it cut p99 TTFT to 0.15x of ``random`` and doubled the prefix-cache hit ratio
    (docs/benchmarks.md); without a usable prefix it behaves as ``least-loaded``."""
    probe_interval: float = 0.25
    """Seconds between failure-detector probes (SWIM). Measured on loopback with 25 nodes:
    0.25 s marks a kill -9 dead everywhere within 2.5 s (p99) for ~0.9 KB/s per node; 0.2 s
    gives 2.0 s for ~1.1 KB/s. Raise it (e.g. 1.0) for pools spread over a WAN."""
    drain_timeout: float = 30.0
    """Seconds a stopping node keeps serving its in-flight requests before it leaves."""
    slurm_drain_before: str = "5m"
    """In a Slurm job: start draining this long before the time limit (``300``, ``5m``...)."""
    slurm_resubmit: str = ""
    """In a Slurm job: ``sbatch`` this script before the limit and hand the model over to it."""
    slurm_resubmit_before: str = "15m"
    """How long before the limit the successor is submitted (queue wait + model load + drain)."""
    log_format: str = "auto"
    """``json``, ``console`` or ``auto`` (console on a TTY, JSON otherwise)."""
    log_level: str = "info"

    @property
    def backend_url(self) -> str:
        if self.backend:
            return self.backend.rstrip("/")
        if self.service_port:
            return f"http://{self.service_host}:{self.service_port}"
        return ""

    @property
    def effective_role(self) -> str:
        return self.role or ("worker" if self.backend_url else "head")

    @property
    def slurm_drain_before_s(self) -> float:
        return parse_duration(self.slurm_drain_before)

    @property
    def slurm_resubmit_before_s(self) -> float:
        return parse_duration(self.slurm_resubmit_before)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()


ALIASES = {"bootstrap_addr": "bootstrap", "bootstrap_addrs": "bootstrap"}
FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _key(name: str) -> str:
    k = name.replace("-", "_").replace(".", "_").lower()
    return ALIASES.get(k, k)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        name = f"{prefix}_{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, name))
        else:
            out[_key(name)] = v
    return out


def _coerce(name: str, value: Any) -> Any:
    f = FIELDS[name]
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if typ == "int":
            return int(value)
        if typ == "float":
            return float(value)
        if typ.startswith("tuple"):
            if isinstance(value, str):
                value = [v for v in (s.strip() for s in value.split(",")) if v]
            if not isinstance(value, list | tuple):
                value = [value]
            return tuple(str(v) for v in value)
        return "" if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot use {value!r} ({exc})") from exc


def _apply(values: dict[str, Any], source: str, into: dict[str, Any]) -> None:
    for k, v in values.items():
        if k not in FIELDS:
            raise ConfigError(f"unknown setting {k!r} in {source}")
        into[k] = _coerce(k, v)


def load(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    values: dict[str, Any] = {}
    if config_file:
        try:
            data = yaml.safe_load(Path(config_file).expanduser().read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"{config_file}: expected a mapping at the top level")
        _apply(_flatten(data), config_file, values)
    env = os.environ if env is None else env
    _apply(
        {
            _key(k.removeprefix("OTELA_")): v
            for k, v in env.items()
            if k.startswith("OTELA_") and _key(k.removeprefix("OTELA_")) in FIELDS
        },
        "environment",
        values,
    )
    _apply({_key(k): v for k, v in (flags or {}).items() if v not in (None, ())}, "flags", values)
    cfg = Config(**values)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    if cfg.role not in ("", "head", "worker"):
        raise ConfigError(f"role must be head or worker, not {cfg.role!r}")
    if cfg.service_name and not cfg.backend_url:
        raise ConfigError("--service.name needs --service.port or --backend")
    if cfg.backend_url and not cfg.backend_url.startswith(("http://", "https://")):
        raise ConfigError(f"backend must be an http(s) URL, not {cfg.backend!r}")
    if cfg.subprocess and not cfg.backend_url:
        raise ConfigError("--subprocess needs --service.port or --backend to know where it listens")
    for addr in cfg.bootstrap:
        parts = addr.split("/")
        if not addr.startswith("/") or "p2p" not in parts or parts.index("p2p") + 1 >= len(parts):
            raise ConfigError(
                f"bootstrap address {addr!r} must be a multiaddr ending in /p2p/<peer-id>, "
                "e.g. /ip4/10.0.0.5/tcp/43905/p2p/12D3KooW..."
            )
    for group in cfg.service_identity_group:
        if group not in ("model=*", "all") and not (group.startswith("model=") and len(group) > 6):
            raise ConfigError(f"identity group must be model=<id>, model=* or all, not {group!r}")
    for name in ("slurm_drain_before", "slurm_resubmit_before"):
        try:
            parse_duration(getattr(cfg, name))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from exc
    if cfg.slurm_resubmit and not Path(cfg.slurm_resubmit).expanduser().is_file():
        raise ConfigError(f"slurm.resubmit: no such script {cfg.slurm_resubmit!r}")
    if cfg.log_format not in ("auto", "json", "console"):
        raise ConfigError("log_format must be auto, json or console")
    for port_name in ("http_port", "p2p_port"):
        port = getattr(cfg, port_name)
        if not 0 < port < 65536:
            raise ConfigError(f"{port_name} must be in 1..65535")
    if cfg.routing_policy not in POLICIES:
        raise ConfigError(f"routing.policy must be one of {', '.join(POLICIES)}")
    if not 0.05 <= cfg.probe_interval <= 30:
        raise ConfigError("probe_interval must be between 0.05 and 30 seconds")
    if cfg.max_body_bytes <= 0 or cfg.read_timeout <= 0 or cfg.drain_timeout < 0:
        raise ConfigError("max_body_bytes and read_timeout must be positive")
