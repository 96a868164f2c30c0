"""The one configuration tree. Sources, lowest precedence first: YAML file, ``OTELA_*``
environment variables, command-line flags.

A field's name is also its YAML key and its flag: ``http_port`` ↔ ``http_port:`` or
``http-port:`` ↔ ``--http-port`` ↔ ``OTELA_HTTP_PORT``; dotted flags nest in YAML
(``--service.name`` ↔ ``service: {name: ...}`` ↔ ``OTELA_SERVICE_NAME``).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import shlex
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import base58
import yaml

from .platform.labels import label_problem, user_labels
from .platform.slurm import parse_duration
from .routing.balance import POLICIES
from .worker.supervisor import RESTART_MODES


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    home: str = "~/.otela"
    """Directory holding ``identity.key``; one per node on a machine."""
    db: str = ""
    """The node's store (join tokens; later API keys and usage): a database URL,
    ``postgresql://user@host/dbname`` for several heads sharing one authority, or
    ``sqlite:////path/opentela.db``. Empty: SQLite at ``<home>/opentela.db``."""
    auth: str = "off"
    """``required``: every request but ``/v1/health*`` (and ``GET /v1/models`` with
    ``auth_models: open``) needs an API key of the store (``opentela-node keys create``); the
    key's model patterns, rpm/tpm and budget are enforced here, before forwarding. ``off``: no
    key is asked for."""
    auth_models: str = "open"
    """With ``auth: required``, whether ``GET /v1/models`` needs a key too (``key``) or
    answers anyone (``open``)."""
    role: str = ""
    """``head`` (a node without a model: a backend is an error), ``relay`` (a head that mainly
    carries traffic for private nodes) or ``worker`` (needs a backend); empty means worker if a
    backend is configured, else head. Reachable heads and relays relay for private nodes."""
    http_host: str = "0.0.0.0"
    http_port: int = 8092
    http_workers: int = 1
    """Processes serving the HTTP port (SO_REUSEPORT spreads connections over them): up to
    one per core for an entry that carries a busy pool. Each extra one is a head of its own
    (identity under ``<home>/http-workers/K``, same settings and store, no backend), started,
    restarted and stopped with the node."""
    p2p_host: str = "0.0.0.0"
    p2p_port: int = 43905
    p2p_max_connections: int = 64
    """libp2p connections this node keeps open: above it, the least recently used idle ones
    are closed (not bootstrap peers, not peers with requests in flight); they reopen on
    demand (~8 ms of CPU per dial on loopback, both ends). SWIM still probes every member."""
    public_addr: str = ""
    """IP or multiaddr peers should dial, when the listen address is not reachable as is."""
    reachability: str = "auto"
    """Whether other nodes can dial this one: ``public``, ``private`` (it holds connections to
    reachable heads or relays and is reached through them, ``docs/deploy-multisite.md``), or
    ``auto``: private inside a Slurm job unless ``--public-addr`` is set, else public, turned
    private when peers cannot dial it back."""
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
    service_allow_path: tuple[str, ...] = ()
    """Backend routes forwarded beyond the default inference, model and health routes:
    fnmatch globs on the path without query (``/slots/*``). Administration routes (vLLM
    ``/sleep``, SGLang ``/flush_cache``...) are refused unless allowed here."""
    service_api_key: str = dataclasses.field(default="", repr=False)  # never in a repr or log
    """Key the backend wants: sent as ``Authorization: Bearer KEY`` on every backend request
    (clients' own credentials never leave the entry node). Never logged."""
    backend: str = ""
    """Base URL of the local OpenAI-compatible backend; alternative to service host/port. A
    trailing ``/v1`` (as OpenAI clients take it) is dropped, with an info line."""
    subprocess: str = ""
    """Command that starts the backend; the node supervises and stops it."""
    subprocess_restart: str = "on-failure"
    """When the ``subprocess`` backend is restarted after it exits: ``always``, ``on-failure``
    (non-zero exit or a signal) or ``never``. Restarts back off from 0.25 s, doubling, and
    stop after 5 in a row whose run did not stay healthy for a minute. A backend that is not
    restarted makes the node drain and exit, non-zero unless the backend exited 0."""
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
    fleet: str = ""
    """A fleet file (``fleet.yaml``, docs/fleet.md): this node (a head that can run
    ``sbatch``) keeps each catalogued model at the replicas its demand needs by submitting
    and cancelling Slurm jobs, and holds requests for a model that is starting."""
    fleet_hold_timeout: str = "10m"
    """How long a request for a catalogued model with no replica waits for one to start
    (then 503 with ``Retry-After``)."""
    authority: str = ""
    """Public key (``ed25519:...``, from ``opentela-node authority init``) of the authority
    that admits members: with it the pool is closed, and only peers holding a grant it signed
    join, each claiming only the models its grant covers. Empty: an open pool."""
    authority_key: str = ""
    """The authority's private key file: this node grants (issues its own grant and redeems
    join tokens for others); typically the head. Needs ``authority``."""
    join_token: str = ""
    """A join token (``opentela-node token create``) this node trades for its grant at a
    granting node; kept in memory only, to renew the grant. Needs ``authority``."""
    grant_ttl: str = "1h"
    """How long a grant this node issues is valid (renewed at half-life while its member can
    reach a granting node): the time a revoked token's member may stay in the pool."""
    swarm_key: str = ""
    """A private-network key file (``swarm.key``, from ``opentela-node swarm-key FILE``; the
    format and cipher of go-libp2p, kubo and js-libp2p): every libp2p connection is encrypted
    with it before anything else, so a node without the same key cannot even negotiate. Mode
    0600 (a key readable by others is refused)."""
    site: str = ""
    """Where this node runs (``bristen``, ``clariden``, ``k8s``): its ``site`` label. Empty: the
    Slurm cluster name inside a job, else no site."""
    label: tuple[str, ...] = ()
    """``key=value`` labels signed into this node's record, shown by ``/v1/dnt/table``,
    ``table`` and ``/v1/models_detailed``. They override the automatic ones (``hostname``,
    ``slurm_job_id``...: ``platform/labels.py``); an empty value removes one. YAML: a mapping
    ``label: {team: nlp}`` or a list of ``key=value``."""
    log_format: str = "auto"
    """``json``, ``console`` or ``auto`` (console on a TTY, JSON otherwise)."""
    log_level: str = "info"

    @property
    def backend_url(self) -> str:
        if self.backend:
            return _base_url(self.backend)
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
    def fleet_hold_timeout_s(self) -> float:
        return parse_duration(self.fleet_hold_timeout)

    @property
    def grant_ttl_s(self) -> float:
        return parse_duration(self.grant_ttl)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()


ALIASES = {"bootstrap_addr": "bootstrap", "bootstrap_addrs": "bootstrap"}
FIELDS = {f.name: f for f in dataclasses.fields(Config)}

NOT_CONFIG_ENV = frozenset(
    {
        "OTELA_SLURM_DIR",
        "OTELA_SLURM_NODES",
        "OTELA_SLURM_GPUS",
        "OTELA_SLURM_CPUS",
        "OTELA_SLURM_MEM_MB",
        "OTELA_SLURM_PORT",
        "OTELA_SLURM_PARTITION",
    }
)
"""``OTELA_*`` variables that are not node settings (scripts/slurm-up.sh's); every other
``OTELA_*`` variable must name a setting, so a typo is an error instead of a silent default."""

# Settings whose flag is dotted: service_name ↔ --service.name.
_DOTTED = ("service_", "routing_", "slurm_", "subprocess_")
_DIAL_PROTOCOLS = ("ip4", "ip6", "dns", "dns4", "dns6")
_WILDCARDS = ("0.0.0.0", "::", "")
LOG_LEVELS = ("debug", "info", "warning", "error")


def flag_name(field: str) -> str:
    for prefix in _DOTTED:
        if field.startswith(prefix):
            return f"--{prefix[:-1]}.{field[len(prefix) :].replace('_', '-')}"
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    return "OTELA_" + field.upper()


def _key(name: str) -> str:
    k = name.replace("-", "_").replace(".", "_").lower()
    return ALIASES.get(k, k)


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str, Any]]:
    """(field key, the key as written, value) for every leaf of a YAML mapping."""
    out: list[tuple[str, str, Any]] = []
    for k, v in data.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and _key(name) == "label":
            # ``label: {team: nlp}``: a leaf whose keys are the labels' (dots and all).
            out.append(
                ("label", name, [f"{lk}={'' if lv is None else lv}" for lk, lv in v.items()])
            )
        elif isinstance(v, Mapping):
            out.extend(_flatten(v, name))
        else:
            out.append((_key(name), name, v))
    return out


def _coerce(name: str, value: Any, label: str) -> Any:
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
        kind = "a whole number" if typ == "int" else "a number"
        raise ConfigError(f"{label} must be {kind}, not {value!r}") from exc


def _apply(
    items: list[tuple[str, str, Any]],
    into: dict[str, Any],
    sources: dict[str, str],
) -> None:
    """``items``: (field key, label naming where it was set, value)."""
    for k, label, v in items:
        into[k] = _coerce(k, v, label)
        sources[k] = label


def _from_yaml(config_file: str) -> list[tuple[str, str, Any]]:
    try:
        data = yaml.safe_load(Path(config_file).expanduser().read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{config_file}: expected a mapping at the top level")
    items = []
    options = [flag_name(f)[2:] for f in FIELDS]
    for k, written, v in _flatten(data):
        if k not in FIELDS:
            raise ConfigError(f"unknown setting {k!r} in {config_file}{_suggest(written, options)}")
        items.append((k, f"{written} in {config_file}", v))
    return items


def _from_env(env: Mapping[str, str]) -> list[tuple[str, str, Any]]:
    items = []
    options = [env_name(f) for f in FIELDS] + [env_name(a) for a in ALIASES]
    for var, v in sorted(env.items()):
        if not var.startswith("OTELA_") or var in NOT_CONFIG_ENV:
            continue
        k = _key(var.removeprefix("OTELA_"))
        if k not in FIELDS:
            raise ConfigError(f"unknown environment variable {var}{_suggest(var, options)}")
        items.append((k, var, v))
    return items


def _from_flags(flags: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    items = []
    for name, v in flags.items():
        if v in (None, ()):
            continue
        k = _key(name)
        if k not in FIELDS:
            raise ConfigError(f"unknown setting {name!r} in flags{_suggest(k, list(FIELDS))}")
        items.append((k, flag_name(k), v))
    return items


def load(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file:
        _apply(_from_yaml(config_file), values, sources)
    _apply(_from_env(os.environ if env is None else env), values, sources)
    _apply(_from_flags(flags or {}), values, sources)
    cfg = Config(**values)
    validate(cfg, sources)
    return cfg


def notes(cfg: Config) -> list[str]:
    """What the node will do differently from what was written, worth one info line."""
    out = []
    if cfg.backend and cfg.backend.rstrip("/") != cfg.backend_url:
        out.append(
            f"backend {cfg.backend} ends in /v1: using {cfg.backend_url} as its base URL "
            "(the node adds /v1/... itself)"
        )
    return out


def _base_url(url: str) -> str:
    """A backend's base URL; ``http://h:8000/v1`` (the form OpenAI clients take) is accepted,
    else every probe would go to ``/v1/v1/models``."""
    return url.rstrip("/").removesuffix("/v1").rstrip("/")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _port_ok(text: str) -> bool:
    return text.isdigit() and 0 < int(text) < 65536


def peer_id_problem(pid: str) -> str | None:
    """Why ``pid`` is not a libp2p peer ID (base58btc of an identity or sha2-256 multihash,
    e.g. ``12D3KooW...`` for Ed25519 keys), or None."""
    try:
        raw = base58.b58decode(pid)
    except ValueError:
        return "is not base58"
    if len(raw) < 3 or raw[1] != len(raw) - 2:
        return "is not a multihash (truncated or padded?)"
    if raw[0] == 0x12 and raw[1] == 32:
        return None
    if raw[0] == 0x00 and raw[1] <= 42:
        return None
    return "is not an identity or sha2-256 multihash"


def _host_problem(proto: str, host: str) -> str | None:
    if proto == "ip4":
        ip = _ip(host)
        return None if isinstance(ip, ipaddress.IPv4Address) else f"{host!r} is not an IPv4 address"
    if proto == "ip6":
        ip = _ip(host)
        return None if isinstance(ip, ipaddress.IPv6Address) else f"{host!r} is not an IPv6 address"
    return None if host else "the host name is empty"


def bootstrap_problem(addr: str) -> str | None:
    """Why py-libp2p could not dial ``addr``, or None. Dialable is exactly
    ``/ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT/p2p/PEER-ID``."""
    example = "e.g. /ip4/10.0.0.5/tcp/43905/p2p/12D3KooW..."
    if not addr.startswith("/"):
        host, sep, port = addr.rpartition(":")
        if sep and _port_ok(port) and host:
            proto = "ip6" if ":" in host else ("ip4" if _ip(host) else "dns4")
            return (
                f"is not a multiaddr; write /{proto}/{host.strip('[]')}/tcp/{port}/p2p/<peer-id> "
                "(the peer ID is printed by `opentela-node peer-id` on that node)"
            )
        return f"must be a multiaddr ending in /p2p/<peer-id>, {example}"
    parts = addr.split("/")[1:]
    for bad in ("udp", "quic", "quic-v1", "ws", "wss", "webtransport", "p2p-circuit"):
        if bad in parts:
            return f"uses /{bad}: only TCP can be dialed, {example}"
    if not parts or parts[0] not in _DIAL_PROTOCOLS:
        return f"must start with /ip4, /ip6, /dns4, /dns6 or /dns, {example}"
    if len(parts) != 6 or parts[2] != "tcp" or parts[4] not in ("p2p", "ipfs"):
        return f"must be /{parts[0]}/HOST/tcp/PORT/p2p/<peer-id>, {example}"
    problem = _host_problem(parts[0], parts[1])
    if problem:
        return problem
    if not _port_ok(parts[3]):
        return f"port {parts[3]!r} is not in 1..65535"
    pid_problem = peer_id_problem(parts[5])
    if pid_problem:
        return (
            f"peer ID {parts[5]!r} {pid_problem}; copy it from `opentela-node peer-id` on "
            "that node (it starts with 12D3KooW)"
        )
    return None


def public_addr_problem(value: str, p2p_port: int) -> str | None:
    """Why ``value`` is not an IP literal or a dialable ``/ip4|ip6|dns*/HOST/tcp/PORT``."""
    if value.startswith("/"):
        parts = value.split("/")[1:]
        if len(parts) == 4 and parts[0] in _DIAL_PROTOCOLS and parts[2] == "tcp":
            problem = _host_problem(parts[0], parts[1])
            if problem:
                return problem
            return None if _port_ok(parts[3]) else f"port {parts[3]!r} is not in 1..65535"
        return f"must be a multiaddr like /ip4/203.0.113.10/tcp/{p2p_port} (no /p2p part)"
    if _ip(value) is not None:
        return None
    host, sep, port = value.rpartition(":")
    bare = host.strip("[]")
    if sep and _port_ok(port) and _ip(bare) is not None:
        proto = "ip6" if ":" in bare else "ip4"
        return (
            f"is IP:port; give the IP alone ({bare}, the port is --p2p-port) "
            f"or the multiaddr /{proto}/{bare}/tcp/{port}"
        )
    return (
        f"is a host name, not an IP address; give its IP, or the multiaddr "
        f"/dns4/{value.split(':')[0]}/tcp/{p2p_port}"
    )


def validate(cfg: Config, sources: Mapping[str, str] | None = None) -> None:
    """Every check names the setting as the user wrote it: ``--drain-timeout``,
    ``OTELA_DRAIN_TIMEOUT`` or ``drain_timeout in FILE``."""
    sources = sources or {}

    def s(name: str) -> str:
        return sources.get(name, flag_name(name))

    def given(name: str) -> bool:
        return name in sources or getattr(cfg, name) != FIELDS[name].default

    if cfg.role not in ("", "head", "relay", "worker"):
        raise ConfigError(f"{s('role')} must be head, relay or worker, not {cfg.role!r}")
    if cfg.reachability not in ("auto", "public", "private"):
        raise ConfigError(
            f"{s('reachability')} must be auto, public or private, not {cfg.reachability!r}"
        )
    if cfg.role == "relay" and cfg.reachability == "private":
        raise ConfigError(f"{s('role')} relay must be reachable; drop {s('reachability')} private")
    if cfg.backend and not cfg.backend.startswith(("http://", "https://")):
        raise ConfigError(f"{s('backend')} must be an http(s) URL, not {cfg.backend!r}")
    if cfg.backend and not urllib.parse.urlsplit(cfg.backend).hostname:
        raise ConfigError(f"{s('backend')} has no host: {cfg.backend!r}")
    if given("service_host") and not cfg.service_port:
        raise ConfigError(
            f"{s('service_host')} needs --service.port (the backend's port); "
            "or give the whole URL with --backend"
        )
    if cfg.role == "worker" and not cfg.backend_url:
        raise ConfigError(f"{s('role')} worker needs a backend: --service.port or --backend")
    if cfg.role in ("head", "relay") and cfg.backend_url:
        what = s("backend") if cfg.backend else s("service_port")
        raise ConfigError(
            f"{s('role')} {cfg.role} is a node without a model, but {what} gives it a backend; "
            "drop --role (a node with a backend is a worker) or the backend"
        )
    if cfg.service_name and not cfg.backend_url:
        raise ConfigError(f"{s('service_name')} needs --service.port or --backend")
    if cfg.subprocess and not cfg.backend_url:
        raise ConfigError(
            f"{s('subprocess')} needs --service.port or --backend to know where it listens"
        )
    if cfg.subprocess:
        try:
            argv = shlex.split(cfg.subprocess)
        except ValueError as exc:
            raise ConfigError(f"subprocess: cannot split {cfg.subprocess!r}: {exc}") from exc
        if not argv:
            raise ConfigError("subprocess: the command is empty")
    if cfg.subprocess_restart not in RESTART_MODES:
        raise ConfigError(
            f"subprocess.restart must be one of {', '.join(RESTART_MODES)}, "
            f"not {cfg.subprocess_restart!r}"
        )
    for addr in cfg.bootstrap:
        problem = bootstrap_problem(addr)
        if problem:
            raise ConfigError(f"{s('bootstrap')} {addr!r} {problem}")
    if cfg.bootstrap_url and not (
        cfg.bootstrap_url.startswith(("http://", "https://"))
        and urllib.parse.urlsplit(cfg.bootstrap_url).hostname
    ):
        raise ConfigError(
            f"{s('bootstrap_url')} must be an http(s) URL such as "
            f"http://head:8092/v1/dnt/bootstraps, not {cfg.bootstrap_url!r}"
        )
    if cfg.public_addr:
        problem = public_addr_problem(cfg.public_addr, cfg.p2p_port)
        if problem:
            raise ConfigError(f"{s('public_addr')} {cfg.public_addr!r} {problem}")
    if _ip(cfg.p2p_host) is None:
        raise ConfigError(
            f"{s('p2p_host')} must be an IP address (py-libp2p listens on an IP), "
            f"not {cfg.p2p_host!r}; 0.0.0.0 listens on all of them"
        )
    for group in cfg.service_identity_group:
        if group not in ("model=*", "all") and not (group.startswith("model=") and len(group) > 6):
            raise ConfigError(
                f"{s('service_identity_group')} must be model=<id>, model=* or all, not {group!r}"
            )
    for pattern in cfg.service_allow_path:
        if not pattern.startswith(("/", "*")):
            raise ConfigError(
                f"{s('service_allow_path')} must be a glob on a path (/slots/*), not {pattern!r}"
            )
    if cfg.service_api_key and not all("!" <= c <= "~" for c in cfg.service_api_key):
        # Never echo the key, not even in an error.
        raise ConfigError(f"{s('service_api_key')} must be printable ASCII without spaces")
    if cfg.authority:
        from .access.authority import parse_public_key

        try:
            parse_public_key(cfg.authority)
        except ValueError as exc:
            raise ConfigError(f"{s('authority')}: {exc}") from exc
        if not (cfg.authority_key or cfg.join_token):
            raise ConfigError(
                f"{s('authority')} closes the pool, so this node needs a grant: give it "
                "--join-token (from `opentela-node token create`) or, on a granting node, "
                "--authority-key"
            )
    else:
        for name in ("authority_key", "join_token"):
            if getattr(cfg, name):
                raise ConfigError(f"{s(name)} needs --authority (the pool's public key)")
    if cfg.authority_key and not Path(cfg.authority_key).expanduser().is_file():
        raise ConfigError(f"{s('authority_key')}: no such file {cfg.authority_key!r}")
    if cfg.join_token and not cfg.join_token.startswith("otj_"):
        raise ConfigError(f"{s('join_token')} is not a join token (they start with otj_)")
    if cfg.fleet and not Path(cfg.fleet).expanduser().is_file():
        raise ConfigError(f"{s('fleet')}: no such file {cfg.fleet!r}")
    for name in ("slurm_drain_before", "slurm_resubmit_before", "grant_ttl", "fleet_hold_timeout"):
        try:
            parse_duration(getattr(cfg, name))
        except ValueError as exc:
            raise ConfigError(f"{s(name)}: {exc}") from exc
    if cfg.slurm_resubmit and not Path(cfg.slurm_resubmit).expanduser().is_file():
        raise ConfigError(f"{s('slurm_resubmit')}: no such script {cfg.slurm_resubmit!r}")
    try:
        user_labels(cfg.label)
    except ValueError as exc:
        raise ConfigError(f"{s('label')}: {exc}") from exc
    if cfg.site and (label_problem("site", cfg.site) or not cfg.site.strip()):
        raise ConfigError(
            f"{s('site')} must be a printable name of at most 256 characters, not {cfg.site!r}"
        )
    if cfg.log_format not in ("auto", "json", "console"):
        raise ConfigError(f"{s('log_format')} must be auto, json or console")
    if cfg.db:
        from .store.url import db_url_problem, redact

        problem = db_url_problem(cfg.db)
        if problem:
            raise ConfigError(f"{s('db')} {redact(cfg.db)} {problem}")
    if cfg.swarm_key:
        from .overlay.pnet import SwarmKeyError, load_swarm_key

        try:
            load_swarm_key(cfg.swarm_key)
        except SwarmKeyError as exc:
            raise ConfigError(f"{s('swarm_key')}: {exc}") from exc
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"{s('log_level')} must be one of {', '.join(LOG_LEVELS)}")
    if not 1 <= cfg.http_workers <= 64:
        raise ConfigError(f"{s('http_workers')} must be between 1 and 64, not {cfg.http_workers}")
    if cfg.p2p_max_connections < 4:
        raise ConfigError(
            f"{s('p2p_max_connections')} must be at least 4, not {cfg.p2p_max_connections}"
        )
    for port_name in ("http_port", "p2p_port"):
        port = getattr(cfg, port_name)
        if not 0 < port < 65536:
            raise ConfigError(f"{s(port_name)} must be in 1..65535, not {port}")
    if cfg.http_port == cfg.p2p_port and (
        cfg.http_host == cfg.p2p_host or {cfg.http_host, cfg.p2p_host} & set(_WILDCARDS)
    ):
        raise ConfigError(
            f"{s('http_port')} and {s('p2p_port')} are both {cfg.http_port} on the same "
            "address: the HTTP API and libp2p each need their own port"
        )
    if cfg.auth not in ("off", "required"):
        raise ConfigError(f"{s('auth')} must be off or required, not {cfg.auth!r}")
    if cfg.auth_models not in ("open", "key"):
        raise ConfigError(f"{s('auth_models')} must be open or key, not {cfg.auth_models!r}")
    if cfg.routing_policy not in POLICIES:
        raise ConfigError(f"{s('routing_policy')} must be one of {', '.join(POLICIES)}")
    if not 0.05 <= cfg.probe_interval <= 30:
        raise ConfigError(
            f"{s('probe_interval')} must be between 0.05 and 30 seconds, not {cfg.probe_interval:g}"
        )
    if cfg.max_body_bytes <= 0:
        raise ConfigError(f"{s('max_body_bytes')} must be positive, not {cfg.max_body_bytes}")
    if cfg.read_timeout <= 0:
        raise ConfigError(f"{s('read_timeout')} must be positive seconds, not {cfg.read_timeout:g}")
    if cfg.drain_timeout < 0:
        raise ConfigError(
            f"{s('drain_timeout')} must be 0 or more seconds, not {cfg.drain_timeout:g}"
        )
