"""``opentela-node``: flags → Config → node.run(). No logic beyond presentation."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from typing import Any

import click

from . import __version__
from .config import ConfigError, load


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
    "--role", type=click.Choice(["head", "worker"]), help="Default: worker if a backend is set."
)
@click.option("--http-host", help="HTTP listen address. Default 0.0.0.0.")
@click.option("--http-port", type=int, help="HTTP port. Default 8092.")
@click.option("--p2p-host", help="libp2p listen address. Default 0.0.0.0.")
@click.option("--p2p-port", type=int, help="libp2p TCP port. Default 43905.")
@click.option("--public-addr", help="IP or multiaddr that peers should dial.")
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
@click.option("--backend", help="Backend base URL (alternative to --service.host/port).")
@click.option(
    "--subprocess", "subprocess_cmd", help="Command that starts the backend; stopped with the node."
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
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]))
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def start(config_file: str | None, subprocess_cmd: str | None, **kw: Any) -> None:
    """Start a node (head, or worker when a backend is configured)."""
    try:
        cfg = load(config_file, flags=_flags(subprocess=subprocess_cmd, **kw))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    from . import logs

    logs.configure(cfg.log_format, cfg.log_level)
    import trio

    from .node import StartupError, run

    try:
        trio.run(run, cfg)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from exc


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


def _slurm_txt(info: dict[str, str], now: float) -> str:
    if not info.get("job"):
        return "-"
    left = f", ends in {max(0, int(float(info['end']) - now)) // 60}m" if info.get("end") else ""
    return f"{info['job']}{'@' + info['partition'] if info.get('partition') else ''}{left}"


def _fmt_table(data: dict[str, Any]) -> str:
    rows = [("PEER", "ROLE", "STATUS", "STATE", "MODELS", "GPUS", "LOAD", "SEEN", "SLURM JOB")]
    now = time.time()
    for node in sorted(data.values(), key=lambda n: (n.get("role", ""), n.get("id", ""))):
        models = sorted(
            {
                g.removeprefix("model=")
                for s in node.get("service", [])
                if s.get("status") == "ready"
                for g in s.get("identity_group", [])
                if g.startswith("model=")
            }
        )
        gpus = node.get("hardware", {}).get("gpus", [])
        gpu_txt = f"{len(gpus)}x {gpus[0]['name']}" if gpus else "-"
        pid = node.get("id", "")
        rows.append(
            (
                pid[:6] + "…" + pid[-6:] if len(pid) > 14 else pid,
                node.get("role", ""),
                node.get("status", ""),
                node.get("state", ""),
                ",".join(models) or "-",
                gpu_txt,
                str(node.get("load", 0)),
                f"{max(0, int(now - node.get('last_seen', now)))}s ago",
                _slurm_txt(node.get("slurm") or {}, now),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


@main.command()
@click.option(
    "--url", default="http://127.0.0.1:8092", show_default=True, help="Any node's HTTP address."
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw /v1/dnt/table JSON.")
def table(url: str, as_json: bool) -> None:
    """Print the pool as a table: nodes, roles, models, GPUs, state."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/v1/dnt/table", timeout=10) as r:
            data = json.loads(r.read())
    except OSError as exc:
        raise click.ClickException(f"cannot read {url}/v1/dnt/table: {exc}") from exc
    click.echo(json.dumps(data, indent=2) if as_json else _fmt_table(data))


if __name__ == "__main__":
    sys.exit(main())
