"""``opentela-node top``: the status page in a terminal (rich), from the same ``/v1/status``.

:func:`render` is pure (the answer in, a rich renderable out; times are relative to the
answer's own ``generated_at``, so a skewed local clock does not matter); :func:`fetch` and
:func:`run` do the I/O. Unknown values show as ``—``, like the page.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

UNKNOWN = "\u2014"
STYLE = {
    "ready": "green",
    "alive": "green",
    "pending": "yellow",
    "suspect": "yellow",
    "dead": "red",
    "left": "red",
}


class StatusError(Exception):
    """The node could not be read (unreachable, refused, not a status answer)."""


def fetch(url: str, api_key: str | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
    endpoint = f"{url.rstrip('/')}/v1/status"
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(endpoint, headers=headers), timeout=timeout_s
        ) as r:
            data = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        why = "an API key is needed (--api-key)" if exc.code == 401 else f"HTTP {exc.code}"
        raise StatusError(f"cannot read {endpoint}: {why}") from exc
    except (OSError, ValueError) as exc:
        raise StatusError(f"cannot read {endpoint}: {exc}") from exc
    if not isinstance(data, dict) or data.get("object") != "status":
        raise StatusError(f"{endpoint} did not answer a status object")
    return data


def _left(seconds: float) -> str:
    m = max(0, int(seconds)) // 60
    if m < 60:
        return f"{m}m"
    return f"{m // 60}h{m % 60:02d}m" if m < 1440 else f"{m // 1440}d{m % 1440 // 60:02d}h"


def _expires(end: float | None, now: float) -> str:
    if end is None:
        return UNKNOWN
    return f"in {_left(end - now)}" if end > now else "expired"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return UNKNOWN
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s ago"
    return f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def _or(v: Any, fmt: str = "{}") -> str:
    return UNKNOWN if v is None or v == "" or v == [] else fmt.format(v)


def _state(s: str) -> Text:
    return Text(f"\u25cf {s}", style=STYLE.get(s, ""))


def _peer(p: str, wide: bool) -> str:
    return p if wide or len(p) <= 14 else f"{p[:6]}\u2026{p[-6:]}"


def render(data: dict[str, Any], wide: bool = False) -> Group:
    """Two tables (models, nodes) under a one-line summary."""
    now = float(data.get("generated_at") or time.time())
    t = data.get("totals", {})
    node = data.get("node", {})
    head = Text(
        f"{t.get('ready_models', 0)}/{t.get('models', 0)} models ready · "
        f"{t.get('nodes', 0)} live nodes · {t.get('gpus', 0)} GPUs · "
        f"sites: {', '.join(data.get('sites', [])) or UNKNOWN} · "
        f"answered by {_peer(str(node.get('peer_id', '?')), wide)}",
        style="bold",
    )
    # What identifies a row never wraps; the rest wraps in a narrow terminal.
    models = Table(title="Models", title_justify="left", expand=False)
    for col in ("State", "Model", "Replicas"):
        models.add_column(col, no_wrap=True)
    for col in ("Hardware", "Site", "Slurm job", "Left"):
        models.add_column(col)
    for col in ("Load", "TTFT p50", "Tok/s"):
        models.add_column(col, justify="right")
    for m in data.get("models", []):
        pending = m["replicas"] - m["ready_replicas"]
        reps = str(m["replicas"]) + (f" ({pending} pending)" if pending else "")
        kinds = " [Slurm]" if "slurm" in m.get("kinds", []) else ""
        ttft = m.get("ttft_p50_s")
        models.add_row(
            _state(m["state"]),
            m["id"] + kinds,
            reps,
            _or(m.get("topology")),
            _or(", ".join(m.get("sites", []))),
            _or(", ".join(m.get("slurm_jobs", []))),
            _expires(m.get("expires_at"), now),
            _or(m.get("load")),
            UNKNOWN if ttft is None else f"{ttft * 1000:.0f} ms",
            _or(m.get("tokens_per_s"), "{:.1f}"),
        )
    nodes = Table(title="Nodes", title_justify="left", expand=False)
    for col in ("Peer", "Role", "State"):
        nodes.add_column(col, no_wrap=True)
    for col in ("Site", "GPUs", "Load", "Last seen", "Models", "Left"):
        nodes.add_column(col)
    for n in data.get("nodes", []):
        role = n.get("role") or UNKNOWN
        if n.get("group_role"):
            role += f" ({n['group_role']})"
        nodes.add_row(
            ("* " if n.get("self") else "") + _peer(n["peer_id"], wide),
            role,
            _state(n["state"]),
            _or(n.get("site")),
            _or(n.get("gpus")),
            _or(n.get("load")),
            "now" if n.get("self") else _ago(n.get("last_seen_s")),
            _or(", ".join(n.get("models", []))),
            _expires(n.get("expires_at"), now),
        )
    return Group(head, models, nodes, Text("* = the node that answered", style="dim"))


def run(url: str, interval_s: float, once: bool, api_key: str | None, wide: bool) -> None:
    """``once``: print one view and return (a StatusError propagates). Otherwise redraw every
    ``interval_s`` until Ctrl-C; a failed read keeps the last view and says why below it."""
    console = Console()
    if once:
        console.print(render(fetch(url, api_key), wide))
        return
    # Ctrl-C stops it even when started from a shell that ignores SIGINT in the background.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    view: Any = Text("loading…")
    with Live(view, console=console, auto_refresh=False, screen=False) as live:
        try:
            while True:
                try:
                    view = render(fetch(url, api_key), wide)
                    live.update(view, refresh=True)
                except StatusError as exc:
                    live.update(Group(view, Text(str(exc), style="bold red")), refresh=True)
                time.sleep(interval_s)
        except KeyboardInterrupt:
            pass
