"""``opentela-node table`` as a person reads it, and the ``/v1/dnt/table`` fields behind it.

``_fmt_table`` is pure (the answer, ``now``, who answered, ``--wide``); the handler is called
directly on a real ``TableStore`` with a stub ``last_heard``, so SEEN is checked to come from
membership rather than from the last record change."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.cli import _fmt_table, main
from opentela.gateway.app import Gateway, NodeView
from opentela.overlay import identity
from opentela.routing.plan import models
from opentela.table.record import LEFT, NodeRecord, Service
from opentela.table.signing import sign
from opentela.table.store import ALIVE, DEAD, GONE, SUSPECT, TableStore

KEYS = [Ed25519PrivateKey.generate() for _ in range(6)]
PIDS = [identity.peer_id(k) for k in KEYS]
HEAD, UP, DOWN, DEADW, LEFTW, SUS = PIDS
NOW = 1_800_000_000.0

# -- _fmt_table ---------------------------------------------------------------------------------


def entry(
    pid: str,
    *,
    role: str = "worker",
    status: str = "ready",
    state: str = "alive",
    services: list[tuple[str, list[str]]] | None = None,
    seen_ago: float = 1.0,
    me: bool = False,
    load: int = 0,
) -> dict[str, Any]:
    return {
        "id": pid,
        "role": role,
        "status": status,
        "state": state,
        "self": me,
        "connected": state in ("alive", "suspect"),
        "version": 1,
        "load": load,
        "software": "opentela/test",
        "service": [
            {"name": "llm", "status": st, "host": "", "port": 0, "identity_group": groups}
            for st, groups in (services or [])
        ],
        "hardware": {"gpus": []},
        "last_seen": int(NOW - seen_ago),
        "public_address": "",
        "addrs": [],
        "http_address": f"http://127.0.0.1:{8000 + PIDS.index(pid)}",
        "slurm": {},
    }


def pool() -> dict[str, Any]:
    nodes = [
        entry(LEFTW, status=LEFT, state="left", services=[("ready", ["model=gone"])], seen_ago=40),
        entry(DEADW, state="dead", services=[("ready", ["model=lost"])], seen_ago=400),
        entry(UP, services=[("ready", ["model=a", "model=b", "model=c", "model=d"])], load=3),
        entry(DOWN, services=[("down", ["model=x"])], seen_ago=2),
        entry(HEAD, role="head", me=True, seen_ago=0),
    ]
    return {f"/{n['id']}": n for n in nodes}


def rows(text: str) -> dict[str, list[str]]:
    """Data rows by peer cell (marker stripped), split on runs of 2+ spaces."""
    out = {}
    for line in text.splitlines()[1:]:
        if line.startswith("("):
            continue
        cells = re.split(r"\s{2,}", line.strip())
        out[cells[0].removeprefix("* ")] = cells
    return out


def short(pid: str) -> str:
    return f"{pid[:6]}…{pid[-6:]}"


def test_columns_and_backend_health() -> None:
    text = _fmt_table(pool(), NOW)
    header = text.splitlines()[0].split()
    assert header == [
        "PEER", "ROLE", "STATUS", "STATE", "BACKEND", "MODELS", "GPUS", "LOAD", "SEEN", "SLURM", "JOB",
        "SITE", "EXPIRES", "LABELS",
    ]  # fmt: skip
    r = rows(text)
    assert r[short(UP)][1:6] == ["worker", "ready", "alive", "up", "a,b,+2"]
    assert r[short(DOWN)][3:6] == ["alive", "down", "-"]  # a down backend offers nothing
    assert r[short(HEAD)][4] == "-"  # a head has no backend


def test_local_row_is_marked() -> None:
    text = _fmt_table(pool(), NOW)
    marked = [line for line in text.splitlines() if line.startswith("* ")]
    assert len(marked) == 1 and marked[0].startswith(f"* {short(HEAD)}")
    assert text.splitlines()[-1] == "(* = the node that answered)"
    assert rows(text)[short(HEAD)][8] == "now"
    # The caller may name the node itself; an answer without "self" marks nobody.
    assert _fmt_table(pool(), NOW, self_id=UP).count("* ") == 2  # the row and the legend
    unmarked = {k: {**v, "self": False} for k, v in pool().items()}
    assert "*" not in _fmt_table(unmarked, NOW)


def test_seen_is_the_age_of_last_seen() -> None:
    r = rows(_fmt_table(pool(), NOW))
    assert r[short(UP)][8] == "1s ago"
    assert r[short(DOWN)][8] == "2s ago"
    assert r[short(LEFTW)][8] == "40s ago"
    assert r[short(DEADW)][8] == "6m ago"
    # A clock slightly behind the node's never shows a negative age.
    assert rows(_fmt_table(pool(), NOW - 30))[short(UP)][8] == "0s ago"


def test_departed_and_dead_nodes_show_no_models_and_sort_last() -> None:
    text = _fmt_table(pool(), NOW)
    r = rows(text)
    assert r[short(LEFTW)][2:7] == ["left", "left", "-", "-", "-"]
    assert r[short(DEADW)][2:7] == ["ready", "dead", "-", "-", "-"]
    assert "gone" not in text and "lost" not in text
    order = [line.strip().removeprefix("* ").split()[0] for line in text.splitlines()[1:-1]]
    live_workers = [short(p) for p in sorted([UP, DOWN])]
    assert order == [short(HEAD), *live_workers, short(DEADW), short(LEFTW)]  # live first


def test_a_left_tombstone_wins_over_a_stale_state() -> None:
    data = {"/x": entry(LEFTW, status=LEFT, state="alive", services=[("ready", ["model=a"])])}
    assert rows(_fmt_table(data, NOW))[short(LEFTW)][3:6] == ["left", "-", "-"]


def test_wide_prints_whole_ids_every_model_and_the_http_address() -> None:
    text = _fmt_table(pool(), NOW, wide=True)
    assert text.splitlines()[0].split()[-1] == "HTTP"
    r = rows(text)
    for pid in PIDS[:5]:
        assert pid in r
    assert r[UP][5] == "a,b,c,d"
    assert r[UP][-1] == f"http://127.0.0.1:{8000 + PIDS.index(UP)}"
    assert "…" not in text
    assert all(pid not in _fmt_table(pool(), NOW) for pid in PIDS[:5])


def test_empty_table() -> None:
    assert _fmt_table({}, NOW).split() == [
        "PEER", "ROLE", "STATUS", "STATE", "BACKEND", "MODELS", "GPUS", "LOAD", "SEEN", "SLURM", "JOB",
        "SITE", "EXPIRES", "LABELS",
    ]  # fmt: skip


# -- /v1/dnt/table ------------------------------------------------------------------------------


def rec(i: int, *, status: str = "ready", role: str = "worker", model: str = "m") -> Any:
    services = (Service("llm", "ready", (f"model={model}",)),) if role == "worker" else ()
    r = NodeRecord(PIDS[i], 1, 0.0, role=role, status=status, services=services)
    return sign(r, KEYS[i])


def store_at(mono: float) -> TableStore:
    """Self is HEAD. Records all arrived at mono=0 and never changed since."""
    store = TableStore(HEAD, ttl_s=30)
    store.apply([rec(0, role="head")], 0.0)
    store.apply([rec(1), rec(2), rec(3), rec(4, status=LEFT), rec(5)], 0.0)
    store.set_liveness(UP, ALIVE, 0.0)
    store.set_liveness(DOWN, GONE, 0.0)  # membership heard it leave; no tombstone record yet
    store.set_liveness(DEADW, DEAD, 0.0)
    store.set_liveness(SUS, SUSPECT, 0.0)
    return store


def call_table(store: TableStore, mono: float, heard: dict[str, float]) -> dict[str, Any]:
    view = NodeView(
        peer_id=HEAD,
        version="test",
        snapshot=lambda: store.snapshot(mono),
        addrs=lambda: [],
        connected=lambda: [],
        stats=dict,
        now=lambda: mono,
        joined=lambda: True,
        last_heard=heard.get,
    )
    gw = Gateway(view, None, None, 1024)  # type: ignore[arg-type]  # table needs neither
    resp = asyncio.run(gw.table(None))  # type: ignore[arg-type]
    return json.loads(resp.body)


def test_last_seen_comes_from_membership_not_the_record() -> None:
    mono = 350.0  # records unchanged for 350 s
    out = call_table(store_at(mono), mono, {UP: 349.5, DEADW: 20.0})
    wall = time.time()
    up = out[f"/{UP}"]
    assert wall - up["last_seen"] <= 2  # heard 0.5 s ago, not 350 s
    assert 325 <= wall - out[f"/{DEADW}"]["last_seen"] <= 332  # frozen at its last message
    # A peer membership never heard from falls back to its record's arrival.
    assert 345 <= wall - out[f"/{SUS}"]["last_seen"] <= 352
    assert wall - out[f"/{HEAD}"]["last_seen"] <= 1


def test_a_newer_record_counts_as_a_sign_of_life_too() -> None:
    store = store_at(10.0)
    store.apply([sign(NodeRecord(UP, 2, 0.0, role="worker"), KEYS[1])], 9.0)
    out = call_table(store, 10.0, {UP: 1.0})
    assert time.time() - out[f"/{UP}"]["last_seen"] <= 2


def test_self_flag_states_and_upstream_keys() -> None:
    out = call_table(store_at(5.0), 5.0, {})
    assert [e["id"] for e in out.values() if e["self"]] == [HEAD]
    states = {e["id"]: e["state"] for e in out.values()}
    assert states == {
        HEAD: "alive",
        UP: "alive",
        DOWN: "left",
        DEADW: "dead",
        LEFTW: "left",
        SUS: "suspect",
    }
    upstream = {
        "id", "role", "status", "state", "connected", "version", "load", "software", "service",
        "hardware", "last_seen", "public_address", "addrs", "http_address", "slurm",
    }  # fmt: skip
    for e in out.values():
        assert upstream <= set(e)
    # And the CLI reads that answer as a person should: left rows without models.
    r = rows(_fmt_table(out, out[f"/{HEAD}"]["last_seen"]))
    assert r[short(DOWN)][3:6] == ["left", "-", "-"]
    assert r[short(HEAD)][0] == f"* {short(HEAD)}"


@pytest.mark.parametrize("how", ["tombstone record", "membership says left"])
def test_a_left_node_is_never_in_v1_models(how: str) -> None:
    store = TableStore(HEAD, ttl_s=30)
    store.apply([rec(0, role="head"), rec(1, model="stays")], 0.0)
    if how == "tombstone record":
        store.apply([rec(4, status=LEFT, model="gone")], 0.0)
    else:
        store.apply([rec(4, model="gone")], 0.0)
        store.set_liveness(LEFTW, GONE, 0.0)
    snap = store.snapshot(1.0)
    assert models(snap) == {"stays": [UP]}
    assert snap.entries[LEFTW].state == "left"


# -- the command ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["not-a-url", "http://127.0.0.1:1"])
def test_unreachable_or_bad_url_is_one_line(url: str) -> None:
    result = CliRunner().invoke(main, ["table", "--url", url])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # no traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot read {url}/v1/dnt/table")
