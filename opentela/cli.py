"""``opentela-node``: flags → Config → node.run(). No logic beyond presentation."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import click

from . import __version__
from .config import Config, ConfigError, load, notes


class ConfigProblem(click.ClickException):
    """A mistake in the settings: one ``Error: ...`` line, exit code 2 (as for a bad flag)."""

    exit_code = 2


def _flags(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None and v != ()}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """One OpenAI-compatible pool out of LLM servers on many machines."""


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML config file.",
)
@click.option("--home", help="Node directory (identity.key lives here). Default ~/.otela.")
@click.option(
    "--db",
    help="The node's store: postgresql://user@host/dbname (shared by several heads). "
    "Default: SQLite at HOME/opentela.db.",
)
@click.option(
    "--auth",
    type=click.Choice(["off", "required"]),
    help="required: requests need an API key (keys create); its limits are enforced. Default off.",
)
@click.option(
    "--auth-models",
    "auth_models",
    type=click.Choice(["open", "key"]),
    help="With --auth required: whether GET /v1/models needs a key. Default open.",
)
@click.option(
    "--role",
    type=click.Choice(["head", "relay", "worker"]),
    help="head: no model (a backend is an error); relay: a head that carries traffic for "
    "private nodes; worker: needs a backend. Default: worker if a backend is set.",
)
@click.option("--http-host", help="HTTP listen address. Default 0.0.0.0.")
@click.option("--http-port", type=int, help="HTTP port. Default 8092.")
@click.option(
    "--http-workers",
    type=int,
    help="Processes serving the HTTP port, up to one per core (extra ones are heads). Default 1.",
)
@click.option("--p2p-host", help="libp2p listen address. Default 0.0.0.0.")
@click.option("--p2p-port", type=int, help="libp2p TCP port. Default 43905.")
@click.option(
    "--p2p-max-connections",
    "--p2p.max-connections",
    "p2p_max_connections",
    type=int,
    help="libp2p connections kept open; idle ones above it are closed (min 4). Default 64.",
)
@click.option("--public-addr", help="IP or multiaddr that peers should dial.")
@click.option(
    "--reachability",
    type=click.Choice(["auto", "public", "private"]),
    help="Can peers dial this node? private: reached through a head or relay it connects "
    "to. Default auto: private in a Slurm job without --public-addr, else public unless "
    "peers cannot dial it back.",
)
@click.option(
    "--bootstrap",
    "--bootstrap.addr",
    "bootstrap",
    multiple=True,
    help="Multiaddr of a node to join (repeatable).",
)
@click.option("--bootstrap-url", help='URL returning {"bootstraps": [multiaddr, ...]}.')
@click.option("--service.name", "service_name", help="Service name to advertise (e.g. llm).")
@click.option("--service.host", "service_host", help="Backend host. Default 127.0.0.1.")
@click.option("--service.port", "service_port", type=int, help="Backend port.")
@click.option(
    "--service.identity-group",
    "service_identity_group",
    multiple=True,
    help="Extra identity group to advertise: model=* or all (repeatable).",
)
@click.option(
    "--service.allow-path",
    "service_allow_path",
    multiple=True,
    help="Backend route to forward beyond the inference/model/health ones, as a glob on the "
    "path (repeatable), e.g. /slots/*. Admin routes are refused otherwise.",
)
@click.option(
    "--service.api-key",
    "service_api_key",
    help="Key the backend needs (sent as Authorization: Bearer); clients' keys never reach it.",
)
@click.option("--backend", help="Backend base URL (alternative to --service.host/port).")
@click.option(
    "--subprocess", "subprocess_cmd", help="Command that starts the backend; stopped with the node."
)
@click.option(
    "--subprocess.restart",
    "subprocess_restart",
    type=click.Choice(["always", "on-failure", "never"]),
    help="Restart the backend when it exits; not restarted, the node exits. Default on-failure.",
)
@click.option("--max-body-bytes", type=int, help="Request body limit (413 above). Default 16 MiB.")
@click.option(
    "--read-timeout",
    type=float,
    help="Seconds to wait for the next byte from a worker. Default 300.",
)
@click.option(
    "--routing.policy",
    "routing_policy",
    type=click.Choice(["random", "round-robin", "least-loaded", "affinity"]),
    help="How to pick among replicas. Default affinity.",
)
@click.option(
    "--probe-interval", type=float, help="Failure-detector probe period, seconds. Default 0.25."
)
@click.option(
    "--drain-timeout", type=float, help="Seconds to finish in-flight requests on stop. Default 30."
)
@click.option(
    "--slurm.drain-before",
    "slurm_drain_before",
    help="In a Slurm job: drain this long before the time limit (300, 5m). Default 5m.",
)
@click.option(
    "--slurm.resubmit",
    "slurm_resubmit",
    type=click.Path(exists=True, dir_okay=False),
    help="In a Slurm job: sbatch this script before the limit; drain once it serves.",
)
@click.option(
    "--slurm.resubmit-before",
    "slurm_resubmit_before",
    help="How long before the limit to submit the successor. Default 15m.",
)
@click.option(
    "--fleet",
    "fleet",
    type=click.Path(exists=True, dir_okay=False),
    help="Fleet file: start, hand over and stop Slurm jobs for its models (docs/fleet.md).",
)
@click.option(
    "--fleet.hold-timeout",
    "fleet_hold_timeout",
    help="How long a request for a starting model waits for a replica. Default 10m.",
)
@click.option(
    "--authority",
    help="Public key (ed25519:...) of the authority that admits members: a closed pool.",
)
@click.option(
    "--authority-key",
    help="The authority's key file: this node grants (issues grants, redeems join tokens).",
)
@click.option(
    "--join-token", help="Join token to trade for this node's grant (or OTELA_JOIN_TOKEN)."
)
@click.option("--grant-ttl", help="Validity of the grants this node issues (1h, 30m). Default 1h.")
@click.option(
    "--swarm-key",
    help="Private-network key file (swarm.key of go/js-libp2p, kubo): only holders connect.",
)
@click.option(
    "--site",
    help="Where this node runs (its site label). Default: the Slurm cluster name in a job.",
)
@click.option(
    "--label",
    multiple=True,
    help="key=value label in this node's record (repeatable); overrides the automatic ones "
    "(hostname, arch, slurm_job_id, expires_at, framework, status...), KEY= removes one.",
)
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]))
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def start(config_file: str | None, subprocess_cmd: str | None, **kw: Any) -> None:
    """Start a node (head, or worker when a backend is configured)."""
    try:
        cfg = load(config_file, flags=_flags(subprocess=subprocess_cmd, **kw))
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from exc
    _run_node(cfg)


@main.command("http-worker", hidden=True)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False))
def http_worker(config_file: str) -> None:
    """An extra HTTP process of a node started with --http-workers (the node starts it)."""
    try:
        cfg = load(config_file)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from exc
    _run_node(cfg, http_worker=True)


def _run_node(cfg: Config, http_worker: bool = False) -> None:
    import structlog

    from . import logs

    logs.configure(cfg.log_format, cfg.log_level)
    for note in notes(cfg):
        structlog.get_logger("opentela.config").info("config.note", note=note)
    import trio

    from .node import StartupError, run
    from .overlay.pnet import SwarmKeyError

    try:
        code = trio.run(run, cfg, http_worker)
    except (StartupError, SwarmKeyError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


@main.command()
@click.option("--home", default="~/.otela", show_default=True)
def init(home: str) -> None:
    """Create the node identity (Ed25519, mode 0600) and print its peer ID."""
    from .config import Config
    from .overlay import identity

    path = Config(home=home).home_path
    try:
        key = identity.create(path)
    except identity.IdentityError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(identity.peer_id(key))


@main.command("peer-id")
@click.option("--home", default="~/.otela", show_default=True)
def peer_id(home: str) -> None:
    """Print the peer ID of the node in HOME."""
    from .config import Config
    from .overlay import identity

    try:
        click.echo(identity.peer_id(identity.load(Config(home=home).home_path)))
    except identity.IdentityError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command("swarm-key")
@click.argument("file", type=click.Path(dir_okay=False))
def swarm_key(file: str) -> None:
    """Write a new private-network key to FILE (mode 0600; never overwrites) and print the
    path. Give every member a copy and start each with --swarm-key FILE."""
    from .overlay import pnet

    try:
        path = pnet.write_swarm_key(file)
    except pnet.SwarmKeyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"fingerprint {pnet.fingerprint(pnet.load_swarm_key(path))}", err=True)
    click.echo(str(path))


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"opentela {__version__}")


@main.command()
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16))
@click.option(
    "--model", type=click.Path(dir_okay=False), help="A GGUF file (default: bundled SmolLM2-135M)."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the nodes listen on.")
@click.option(
    "--http-port", default=8092, show_default=True, type=int, help="The head's HTTP port."
)
@click.option(
    "--ready-timeout", default=300.0, show_default=True, help="Seconds to wait for backends."
)
def demo(workers: int, model: str | None, host: str, http_port: int, ready_timeout: float) -> None:
    """Run a head and WORKERS llama.cpp workers on this machine until Ctrl-C."""
    from .demo import DemoError, run

    try:
        code = run(workers, model, host, http_port, ready_timeout)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


# -- authority and join tokens (issue 9) ----------------------------------------------------------
#
# A command that prints a key or a token prints it as the LAST line of stdout (scripts capture
# it with `| tail -1`); everything else goes to stderr.

DB_HELP = "The store's database URL (as `start --db`; or OTELA_DB). Default: HOME/opentela.db."


@main.group()
def authority() -> None:
    """The pool's authority key: it signs the grants that admit members."""


@authority.command("init")
@click.option(
    "--home", default="~/.otela/authority", show_default=True, help="Directory for authority.key."
)
def authority_init(home: str) -> None:
    """Create HOME/authority.key (Ed25519, mode 0600) and print its public key."""
    from .access import authority as auth

    try:
        key = auth.create(home)
    except auth.AuthorityError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"wrote {auth.key_path(home)} (mode 0600): keep it secret, it admits members. "
        "Nodes take the public key below as --authority; granting nodes also take "
        "--authority-key with this file.",
        err=True,
    )
    click.echo(auth.public_key_text(key))


@authority.command("show")
@click.option(
    "--home",
    default="~/.otela/authority",
    show_default=True,
    help="Directory holding authority.key (or the key file).",
)
def authority_show(home: str) -> None:
    """Print the public key of HOME/authority.key (what --authority takes)."""
    from .access import authority as auth

    try:
        click.echo(auth.public_key_text(auth.load(home)))
    except auth.AuthorityError as exc:
        raise click.ClickException(str(exc)) from exc


def _utc(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(ts))


def _fmt_tokens(infos: list[Any], now: float) -> str:
    """``token list`` as columns. Pure; never shows a token or its hash (the store has no
    token, and ``TokenInfo`` carries no hash)."""
    head = ["ID", "OWNER", "STATUS", "MODELS", "ROLES", "EXPIRES", "CREATED", "LAST USED"]
    rows = [[*head, "REVOKED"]]
    for t in infos:
        rows.append(
            [
                t.id,
                t.owner,
                t.status(now),
                ",".join(t.models),
                ",".join(t.roles),
                _utc(t.expires_at),
                _utc(t.created_at),
                _utc(t.last_used_at),
                _utc(t.revoked_at),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _open_store(home: str, db: str | None, create: bool) -> Any:
    """The store the node in HOME uses; a missing SQLite file is an error unless ``create``
    (a typo in --home must not answer "no tokens")."""
    from pathlib import Path

    from .store import StoreError, open_store
    from .store.url import DB_FILE

    if not db:
        path = Path(home).expanduser() / DB_FILE
        if not create and not path.is_file():
            raise click.ClickException(
                f"no store at {path} (no token was created with this --home; or give --db)"
            )
    try:
        return open_store(db or Path(home).expanduser())
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def _store_call(fn: Any, *args: Any, **kw: Any) -> Any:
    from .store import StoreError

    try:
        return fn(*args, **kw)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


_home_opt = click.option(
    "--home",
    default="~/.otela",
    show_default=True,
    envvar="OTELA_HOME",
    help="The node's home (its store is HOME/opentela.db); or OTELA_HOME.",
)
_db_opt = click.option("--db", envvar="OTELA_DB", help=DB_HELP)


@main.group()
def token() -> None:
    """Join tokens: a node started with --join-token trades one for its grant."""


@token.command("create")
@_home_opt
@_db_opt
@click.option("--owner", required=True, help="Who the members admitted by this token belong to.")
@click.option(
    "--models",
    multiple=True,
    required=True,
    help="Model ids the members may advertise: a glob ('alice/*') or an exact id (repeatable).",
)
@click.option(
    "--roles",
    multiple=True,
    type=click.Choice(["worker", "head", "relay"]),
    help="Roles the members may take (repeatable). Default worker.",
)
@click.option("--ttl", default="30d", show_default=True, help="How long the token can be redeemed.")
def token_create(
    home: str, db: str | None, owner: str, models: tuple[str, ...], roles: tuple[str, ...], ttl: str
) -> None:
    """Create a join token and print it (once: only its hash is stored)."""
    from .access import token as tk

    try:
        ttl_s = tk.parse_ttl(ttl)
        owner, models, roles = (
            tk.parse_owner(owner),
            tk.parse_patterns(models),
            tk.parse_roles(roles),
        )
    except ValueError as exc:
        raise ConfigProblem(str(exc)) from exc
    store = _open_store(home, db, create=True)
    with store:
        secret, info = _store_call(store.create_token, owner, models, roles, ttl_s)
    click.echo(
        f"token {info.id} for {info.owner}, models {', '.join(info.models)}, roles "
        f"{', '.join(info.roles)}, expires {_utc(info.expires_at)} (stored in {store.where}; "
        "this is the only time the token is shown)",
        err=True,
    )
    click.echo(secret)


@token.command("list")
@_home_opt
@_db_opt
@click.option("--json", "as_json", is_flag=True, help="One JSON list of the tokens.")
def token_list(home: str, db: str | None, as_json: bool) -> None:
    """List join tokens: id, owner, models, roles, expiry, last use, revocation."""
    store = _open_store(home, db, create=False)
    with store:
        infos = _store_call(store.list_tokens)
    if as_json:
        click.echo(json.dumps([t.to_json() for t in infos], indent=2))
    elif not infos:
        click.echo(f"no join tokens in {store.where}", err=True)
    else:
        click.echo(_fmt_tokens(infos, time.time()))


@token.command("revoke")
@_home_opt
@_db_opt
@click.argument("id_or_token")
def token_revoke(home: str, db: str | None, id_or_token: str) -> None:
    """Revoke a join token by its id (tok_...) or by the token itself (otj_...): it cannot be
    redeemed again and grants issued from it are not renewed."""
    store = _open_store(home, db, create=False)
    now = time.time()
    with store:
        info = _store_call(store.revoke_token, id_or_token, now=now)
    if info.revoked_at != now:
        click.echo(
            f"token {info.id} ({info.owner}) was already revoked at {_utc(info.revoked_at)}",
            err=True,
        )
    else:
        click.echo(f"revoked token {info.id} ({info.owner})", err=True)


# -- API keys and usage (issue 11) ----------------------------------------------------------------


def _open_key_store(home: str, db: str | None) -> Any:
    """The store, which must exist already (a typo in --home must not answer "no keys")."""
    from pathlib import Path

    from .store.url import DB_FILE

    path = Path(home).expanduser() / DB_FILE
    if not db and not path.is_file():
        raise click.ClickException(
            f"no store at {path} (no key was created with this --home; or give --db)"
        )
    return _open_store(home, db, create=True)


def _limit_txt(n: int | None) -> str:
    return "-" if n is None else str(n)


def _budget_txt(k: Any) -> str:
    return "-" if k.budget_tokens is None else f"{k.budget_tokens}/{k.budget_period}"


def _used_this_period(store: Any, keys: list[Any], now: float) -> dict[str, int | None]:
    """Tokens each budgeted key used in its current period (None: the key has no budget)."""
    from .access.quota import period_start

    return {
        k.id: (
            None
            if k.budget_tokens is None
            else store.budget_used(k.id, period_start(k.budget_period, now))
        )
        for k in keys
    }


def _fmt_keys(infos: list[Any], used: dict[str, int | None]) -> str:
    """``keys list`` as columns. Pure; never shows a key or its hash (``KeyInfo`` has neither;
    the prefix is the display part)."""
    head = ["ID", "PREFIX", "OWNER", "STATUS", "ADMIN", "MODELS", "RPM", "TPM", "BUDGET"]
    rows = [[*head, "USED", "CREATED", "LAST USED", "REVOKED"]]
    for k in infos:
        u = used.get(k.id)
        rows.append(
            [
                k.id,
                k.prefix + "...",
                k.owner,
                k.status(),
                "yes" if k.admin else "no",
                ",".join(k.models) or "*",
                _limit_txt(k.rpm),
                _limit_txt(k.tpm),
                _budget_txt(k),
                "-" if u is None else str(u),
                _utc(k.created_at),
                _utc(k.last_used_at),
                _utc(k.revoked_at),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _key_summary(k: Any) -> str:
    limits = ", ".join(
        [
            f"models {', '.join(k.models) if k.models else 'all'}",
            f"rpm {_limit_txt(k.rpm)}",
            f"tpm {_limit_txt(k.tpm)}",
            f"budget {_budget_txt(k)}",
        ]
    )
    return f"key {k.id} ({k.prefix}...) for {k.owner}{' (admin)' if k.admin else ''}, {limits}"


@main.group()
def keys() -> None:
    """API keys: with `start --auth required`, clients send one as their OpenAI api_key."""


@keys.command("create")
@_home_opt
@_db_opt
@click.option("--owner", required=True, help="Whose key it is (usage is reported per owner).")
@click.option(
    "--models",
    multiple=True,
    help="Model ids the key may use: a glob ('swiss-ai/*') or an exact id (repeatable). "
    "Default: every model.",
)
@click.option("--rpm", type=int, help="Requests per minute (a sliding 60 s window).")
@click.option("--tpm", type=int, help="Prompt + completion tokens per minute, streams included.")
@click.option("--budget-tokens", type=int, help="Tokens per budget period (429 once used up).")
@click.option(
    "--budget-period",
    help="day, week, month or total: UTC day, ISO week, calendar month, or the key's whole "
    "life. Default total.",
)
@click.option("--admin", is_flag=True, help="The key may use the admin API (/v1/admin/keys).")
def keys_create(
    home: str,
    db: str | None,
    owner: str,
    models: tuple[str, ...],
    rpm: int | None,
    tpm: int | None,
    budget_tokens: int | None,
    budget_period: str | None,
    admin: bool,
) -> None:
    """Create an API key and print it (once: only its hash is stored)."""
    from .access import keys as ak

    try:
        owner, models = ak.parse_owner(owner), ak.parse_models(models)
        rpm, tpm, budget_tokens, budget_period = ak.parse_limits(
            rpm, tpm, budget_tokens, budget_period
        )
    except ValueError as exc:
        raise ConfigProblem(str(exc)) from exc
    store = _open_store(home, db, create=True)
    with store:
        secret, info = _store_call(
            store.create_key, owner, models, rpm, tpm, budget_tokens, budget_period, admin
        )
    click.echo(
        f"{_key_summary(info)} (stored in {store.where}; this is the only time the key is shown)",
        err=True,
    )
    click.echo(secret)


@keys.command("list")
@_home_opt
@_db_opt
@click.option("--json", "as_json", is_flag=True, help="One JSON list of the keys.")
def keys_list(home: str, db: str | None, as_json: bool) -> None:
    """List API keys: id, prefix, owner, models, limits, used this period, last use."""
    store = _open_key_store(home, db)
    now = time.time()
    with store:
        infos = _store_call(store.list_keys)
        used = _store_call(_used_this_period, store, infos, now)
    if as_json:
        click.echo(json.dumps([{**k.to_json(), "used": used[k.id]} for k in infos], indent=2))
    elif not infos:
        click.echo(f"no API keys in {store.where}", err=True)
    else:
        click.echo(_fmt_keys(infos, used))


@keys.command("show")
@_home_opt
@_db_opt
@click.option("--json", "as_json", is_flag=True, help="The key as one JSON object.")
@click.argument("id_or_key")
def keys_show(home: str, db: str | None, as_json: bool, id_or_key: str) -> None:
    """Show one API key (by id, key_..., or by the key itself)."""
    store = _open_key_store(home, db)
    with store:
        info = _store_call(store.get_key, id_or_key)
        used = _store_call(_used_this_period, store, [info], time.time())[info.id]
    if as_json:
        click.echo(json.dumps({**info.to_json(), "used": used}, indent=2))
    else:
        click.echo(_fmt_keys([info], {info.id: used}))


@keys.command("revoke")
@_home_opt
@_db_opt
@click.argument("id_or_key")
def keys_revoke(home: str, db: str | None, id_or_key: str) -> None:
    """Revoke an API key by its id (key_...) or by the key itself (sk-otela-...): every entry
    node on this store refuses it within a second."""
    store = _open_key_store(home, db)
    now = time.time()
    with store:
        info = _store_call(store.revoke_key, id_or_key, now=now)
    if info.revoked_at != now:
        click.echo(
            f"key {info.id} ({info.owner}) was already revoked at {_utc(info.revoked_at)}",
            err=True,
        )
    else:
        click.echo(f"revoked key {info.id} ({info.owner})", err=True)


@keys.command("rotate")
@_home_opt
@_db_opt
@click.argument("id_or_key")
def keys_rotate(home: str, db: str | None, id_or_key: str) -> None:
    """Replace an API key: a new key with the same owner and limits is printed (once), the old
    one is revoked. Its budget starts afresh (usage is per key)."""
    store = _open_key_store(home, db)
    with store:
        old = _store_call(store.get_key, id_or_key)
        secret, info = _store_call(store.rotate_key, old.id)
    click.echo(
        f"revoked key {old.id}; new {_key_summary(info)} (this is the only time it is shown)",
        err=True,
    )
    click.echo(secret)


_USAGE_SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens")


def _usage_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {
        f: sum(int(r[f]) for r in rows) for f in (*_USAGE_SUMS, "errors", "aborted", "estimated")
    }
    active = [r["last_active"] for r in rows if r.get("last_active") is not None]
    totals["last_active"] = max(active) if active else None
    return totals


def _fmt_usage(rows: list[dict[str, Any]]) -> str:
    """``usage`` as columns: one row per model, then the totals. Pure."""
    head = ["MODEL", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL", "ERRORS", "ABORTED"]
    table = [[*head, "ESTIMATED", "LAST ACTIVE"]]
    for r in [*rows, {"model": "(all models)", **_usage_totals(rows)}]:
        table.append(
            [
                str(r["model"]),
                *(str(r[f]) for f in _USAGE_SUMS),
                str(r["errors"]),
                str(r["aborted"]),
                str(r["estimated"]),
                _utc(r["last_active"]),
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(
            (c.ljust(w) if i == 0 else c.rjust(w))
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in table
    )


@main.command()
@_home_opt
@_db_opt
@click.option("--owner", help="Only this owner's usage. Default: everyone's.")
@click.option("--days", default=30, show_default=True, type=int, help="UTC days, today included.")
@click.option("--json", "as_json", is_flag=True, help='{"models": [...], "totals": {...}}.')
def usage(home: str, db: str | None, owner: str | None, days: int, as_json: bool) -> None:
    """Usage per model (requests, prompt and completion tokens, errors, aborted streams)."""
    if days < 1:
        raise ConfigProblem(f"invalid --days {days}: a whole number of days, at least 1")
    store = _open_key_store(home, db)
    with store:
        rows = _store_call(store.usage_by_model, days, time.time(), owner=owner)
    if as_json:
        click.echo(json.dumps({"models": rows, "totals": _usage_totals(rows)}, indent=2))
    elif not rows:
        who = f" for {owner}" if owner else ""
        click.echo(f"no usage{who} in the last {days} days in {store.where}", err=True)
    else:
        click.echo(_fmt_usage(rows))


# -- table ----------------------------------------------------------------------------------------

STATE_ORDER = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}  # live rows first
SHORT_MODELS = 2  # models listed per row before "+N" (all of them with --wide)


IN_COLUMNS = ("site", "slurm_job_id", "slurm_partition", "expires_at")  # labels shown as columns
LABELS_FIRST = ("framework", "status", "worker_group_role", "launched_by")
LABELS_WIDE_ONLY = frozenset(
    {"hostname", "arch", "cluster", "started_at", "slurm_nodelist", "worker_group_id"}
)
SHORT_LABELS = 3  # labels listed per row before "+N" (all of them with --wide)


def _labels(node: dict[str, Any]) -> dict[str, str]:
    """The node's labels; a node from before labels has its Slurm facts under "slurm"."""
    labels = node.get("labels")
    if isinstance(labels, dict):
        return {str(k): str(v) for k, v in labels.items()}
    old = node.get("slurm") or {}
    names = {"job": "slurm_job_id", "partition": "slurm_partition", "end": "expires_at"}
    return {names[k]: str(v) for k, v in old.items() if k in names}


def _slurm_txt(labels: dict[str, str]) -> str:
    job = labels.get("slurm_job_id")
    if not job:
        return "-"
    part = labels.get("slurm_partition")
    return f"{job}@{part}" if part else job


def _left(seconds: float) -> str:
    """Time left as a person reads it: ``45m``, ``3h05m``, ``2d04h``."""
    m = max(0, int(seconds)) // 60
    if m < 60:
        return f"{m}m"
    return f"{m // 60}h{m % 60:02d}m" if m < 1440 else f"{m // 1440}d{m % 1440 // 60:02d}h"


def _expires_txt(labels: dict[str, str], now: float) -> str:
    try:
        end = float(labels["expires_at"])
    except (KeyError, ValueError):
        return "-"
    return f"in {_left(end - now)}" if end > now else "expired"


def _labels_txt(labels: dict[str, str], wide: bool) -> str:
    """The labels no other column shows, as ``k=v``: the framework, status, group role and
    owner first; with ``--wide`` every one (hostname, arch, start...)."""
    rest = {k: v for k, v in labels.items() if k not in IN_COLUMNS}
    if not wide:
        rest = {k: v for k, v in rest.items() if k not in LABELS_WIDE_ONLY}
    keys = [k for k in LABELS_FIRST if k in rest] + sorted(k for k in rest if k not in LABELS_FIRST)
    if not keys:
        return "-"
    shown = keys if wide or len(keys) <= SHORT_LABELS else keys[:SHORT_LABELS]
    more = f",+{len(keys) - len(shown)}" if len(shown) < len(keys) else ""
    return ",".join(f"{k}={rest[k]}" for k in shown) + more


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s ago"
    return f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def _state(node: dict[str, Any]) -> str:
    # A tombstone record ("status": "left") is final even if an old node reports it otherwise.
    return "left" if node.get("status") == "left" else str(node.get("state") or "?")


def _backend_txt(services: list[dict[str, Any]]) -> str:
    """up / down from the advertised service status; "-" for a node with no backend (a head)."""
    if not services:
        return "-"
    up = sum(1 for s in services if s.get("status") == "ready")
    if up == len(services):
        return "up"
    return "down" if up == 0 else f"{up}/{len(services)} up"


def _models_txt(node: dict[str, Any], wide: bool) -> str:
    models = sorted(
        {
            g.removeprefix("model=")
            for s in node.get("service", [])
            if s.get("status") == "ready"
            for g in s.get("identity_group", [])
            if g.startswith("model=")
        }
    )
    if not models:
        return "-"
    if wide or len(models) <= SHORT_MODELS:
        return ",".join(models)
    return ",".join(models[:SHORT_MODELS]) + f",+{len(models) - SHORT_MODELS}"


def _fmt_table(
    data: dict[str, Any], now: float, self_id: str | None = None, wide: bool = False
) -> str:
    """The ``/v1/dnt/table`` answer as columns. Pure: ``now`` is wall-clock seconds (as
    ``last_seen``); ``self_id`` is the node that answered (default: the entry marked
    ``"self": true``), shown with ``*``. Only live nodes show models, backend and load: what a
    dead or departed node last advertised is not in the pool (nor in ``/v1/models``)."""
    nodes = [n for n in data.values() if isinstance(n, dict)]
    if self_id is None:
        self_id = next((str(n.get("id")) for n in nodes if n.get("self") is True), None)
    head = ["  PEER", "ROLE", "STATUS", "STATE", "BACKEND", "MODELS", "GPUS", "LOAD", "SEEN"]
    rows = [[*head, "SLURM JOB", "SITE", "EXPIRES", "LABELS", *(["HTTP"] if wide else [])]]
    nodes.sort(
        key=lambda n: (STATE_ORDER.get(_state(n), 9), str(n.get("role", "")), str(n.get("id")))
    )
    for node in nodes:
        pid = str(node.get("id", ""))
        state = _state(node)
        live = state in ("alive", "suspect")
        gpus = node.get("hardware", {}).get("gpus", [])
        mine = pid == self_id
        labels = _labels(node)
        shown = pid if wide or len(pid) <= 14 else f"{pid[:6]}…{pid[-6:]}"
        rows.append(
            [
                ("* " if mine else "  ") + shown,
                str(node.get("role", "")),
                str(node.get("status", "")),
                state,
                _backend_txt(node.get("service", [])) if live else "-",
                _models_txt(node, wide) if live else "-",
                f"{len(gpus)}x {gpus[0]['name']}" if gpus else "-",
                str(node.get("load", 0)) if live else "-",
                "now" if mine else _ago(now - float(node.get("last_seen", now))),
                _slurm_txt(labels),
                labels.get("site") or "-",
                _expires_txt(labels, now),
                _labels_txt(labels, wide),
                *([str(node.get("http_address") or "-")] if wide else []),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if self_id is not None and any(n.get("id") == self_id for n in nodes):
        lines.append("(* = the node that answered)")
    return "\n".join(lines)


@main.command()
@click.option(
    "--url", default="http://127.0.0.1:8092", show_default=True, help="Any node's HTTP address."
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw /v1/dnt/table JSON.")
@click.option(
    "--wide", is_flag=True, help="Whole peer IDs, every model and label, each node's HTTP address."
)
def table(url: str, as_json: bool, wide: bool) -> None:
    """Print the pool as a table: nodes, roles, state, backend, models, GPUs, last seen, Slurm
    job, site, time left and labels.

    The node asked is marked with *; SEEN is when it last heard from each node; EXPIRES is the
    time left before the node's job ends (its expires_at label)."""
    endpoint = f"{url.rstrip('/')}/v1/dnt/table"
    try:
        with urllib.request.urlopen(endpoint, timeout=10) as r:
            data = json.loads(r.read())
    except (OSError, ValueError) as exc:  # unreachable, HTTP error, bad URL, not JSON
        raise click.ClickException(f"cannot read {endpoint}: {exc}") from exc
    if not isinstance(data, dict):
        raise click.ClickException(f"{endpoint} did not answer a table (a JSON object)")
    click.echo(json.dumps(data, indent=2) if as_json else _fmt_table(data, time.time(), wide=wide))


@main.group()
def fleet() -> None:
    """The replicas a head keeps running with --fleet (docs/fleet.md)."""


@fleet.command("status")
@click.option(
    "--url", default="http://127.0.0.1:8092", show_default=True, help="The head's HTTP address."
)
@click.option("--json", "as_json", is_flag=True, help="The head's /v1/fleet as JSON.")
def fleet_status(url: str, as_json: bool) -> None:
    """Desired against running replicas per catalogued model, its jobs, the caps' use and
    the last events."""
    from .fleet.show import format_status

    endpoint = f"{url.rstrip('/')}/v1/fleet"
    try:
        with urllib.request.urlopen(endpoint, timeout=10) as r:
            data = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise click.ClickException(f"{url} runs no fleet (start it with --fleet FILE)") from exc
        raise click.ClickException(f"cannot read {endpoint}: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {endpoint}: {exc}") from exc
    click.echo(json.dumps(data, indent=2) if as_json else format_status(data))


@main.command()
@click.option(
    "--url", default="http://127.0.0.1:8092", show_default=True, help="Any node's HTTP address."
)
@click.option(
    "--interval", default=2.0, show_default=True, type=click.FloatRange(0.2, 3600),
    help="Seconds between refreshes.",
)  # fmt: skip
@click.option("--once", is_flag=True, help="Print the view once and exit (scripts, tests).")
@click.option("--api-key", help="A key, for a node with --auth required --auth-models key.")
@click.option("--wide", is_flag=True, help="Whole peer IDs.")
def top(url: str, interval: float, once: bool, api_key: str | None, wide: bool) -> None:
    """A live view of the pool's models and nodes (the status page, in the terminal),
    refreshed until Ctrl-C: per model its state, replicas, hardware, sites, Slurm job, time
    left, load, recent TTFT and tokens/s; per node its role, state, site, GPUs, load and
    when it was last seen. Reads the node's /v1/status."""
    from .top import StatusError, run

    try:
        run(url, interval, once, api_key, wide)
    except StatusError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    sys.exit(main())
