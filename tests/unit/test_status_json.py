"""The status page's JSON (``gateway/status.py``) from table snapshots, and its recent
performance window; the page's static files and the auth gate's view of them. Pure: no
network, clocks passed in."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.gateway.auth import _is_open
from opentela.gateway.status import (
    MAX_SAMPLES,
    Perf,
    RecentPerf,
    Sample,
    sample_of,
    status_body,
    topology,
)
from opentela.gateway.usage import UsageRecorder
from opentela.overlay import identity
from opentela.store.usage import UsageRow
from opentela.table.record import Gpu, NodeRecord, Service
from opentela.table.signing import sign
from opentela.table.store import ALIVE, GONE, TableStore
from opentela.ui import ASSETS, _read, is_page

NOW = 1_800_000_000.0
KEYS = [Ed25519PrivateKey.generate() for _ in range(7)]
PIDS = [identity.peer_id(k) for k in KEYS]
GH200 = tuple(Gpu("NVIDIA GH200 120GB", 97871, 1) for _ in range(4))
A100 = tuple(Gpu("NVIDIA A100-SXM4-80GB", 81920, 4) for _ in range(8))
NODE = {"peer_id": PIDS[0], "version": "0.1.0", "role": "head"}


def snapshot(records: list[NodeRecord], gone: tuple[str, ...] = ()) -> Any:
    store = TableStore(PIDS[0], ttl_s=30)
    store.apply([sign(r, KEYS[PIDS.index(r.peer_id)]) for r in records], 0.0)
    for r in records:
        store.set_liveness(r.peer_id, GONE if r.peer_id in gone else ALIVE, 0.0)
    return store.snapshot(1.0)


def worker(i: int, model: str | None, gpus: tuple[Gpu, ...] = GH200, **labels: str) -> NodeRecord:
    services = (Service("llm", "ready", (f"model={model}",)),) if model else ()
    return NodeRecord(
        PIDS[i], 1, 0.0, role="worker", services=services, gpus=gpus, load=i, labels=labels
    )


def pool() -> list[NodeRecord]:
    """A head (k8s), two single-node GH200 replicas of ``small`` (one always on, one a Slurm
    job), a two-node A100 Slurm replica of ``big`` (leader + follower), and a node loading
    ``new`` (its backend not up: service pending, model named by its label)."""
    group = {"slurm_job_id": "77", "worker_group_id": "bristen-77", "site": "bristen"}
    return [
        NodeRecord(PIDS[0], 1, 0.0, role="head", labels={"site": "k8s"}),
        worker(1, "small", site="clariden", status="ready"),
        worker(2, "small", site="clariden", slurm_job_id="42", expires_at=str(int(NOW) + 3600)),
        worker(3, "big", A100, **group, worker_group_role="leader", expires_at=str(int(NOW) + 60)),
        worker(4, None, A100, **group, worker_group_role="follower"),
        NodeRecord(
            PIDS[5],
            1,
            0.0,
            role="worker",
            services=(Service("llm", "pending", ()),),
            labels={"served_model_name": "new", "site": "clariden", "status": "pending"},
        ),
    ]


def body(records: list[NodeRecord], perf: dict[str, Perf] | None = None, **kw: Any) -> Any:
    ages = {r.peer_id: 2.5 for r in records if r.peer_id != PIDS[0]}
    return status_body(snapshot(records, **kw), NOW, ages, perf or {}, NODE)


def test_models_with_replicas_state_topology_sites_and_jobs() -> None:
    b = body(pool(), {"small": Perf(3, 0.25, 41.26)})
    models = {m["id"]: m for m in b["models"]}
    assert sorted(models) == ["big", "new", "small"]

    small = models["small"]
    assert (small["state"], small["replicas"], small["ready_replicas"]) == ("ready", 2, 2)
    assert small["topology"] == "2 replicas \u00d7 4x NVIDIA GH200 120GB"
    assert small["sites"] == ["clariden"] and small["kinds"] == ["always-on", "slurm"]
    assert small["slurm_jobs"] == ["42"]
    assert small["expires_at"] == int(NOW) + 3600 and small["expires_in_s"] == 3600
    assert small["load"] == 1 + 2  # the two replicas' in-flight requests
    assert (small["ttft_p50_s"], small["tokens_per_s"], small["requests_recent"]) == (
        0.25,
        41.3,
        3,
    )

    big = models["big"]  # two nodes, one replica: counted once
    assert (big["state"], big["replicas"], big["ready_replicas"]) == ("ready", 1, 1)
    assert big["topology"] == "1 replica \u00d7 2 nodes \u00d7 8x NVIDIA A100-SXM4-80GB"
    (rep,) = big["replica_list"]
    assert rep["group"] == "bristen-77" and rep["leader"] == PIDS[3] and rep["nodes"] == 2
    assert sorted(rep["peers"]) == sorted(PIDS[3:5]) and rep["site"] == "bristen"
    assert big["slurm_jobs"] == ["77"] and big["expires_in_s"] == 60 and big["load"] == 3
    assert big["ttft_p50_s"] is None and big["tokens_per_s"] is None  # unknown, not zero

    new = models["new"]  # the backend is loading: pending, no load, no GPU known
    assert (new["state"], new["replicas"], new["ready_replicas"]) == ("pending", 1, 0)
    assert new["topology"] == "1 replica \u00d7 no GPU" and new["load"] is None
    assert new["kinds"] == ["always-on"] and new["expires_at"] is None

    assert b["sites"] == ["bristen", "clariden", "k8s"]
    assert b["totals"] == {"models": 3, "ready_models": 2, "nodes": 6, "gpus": 4 + 4 + 8 + 8}
    assert b["node"] == NODE and b["perf_scope"] == "this node" and b["refresh_s"] > 0


def test_a_multi_node_replica_whose_leader_is_not_up_is_pending() -> None:
    group = {"slurm_job_id": "9", "worker_group_id": "c-9", "served_model_name": "huge"}
    recs = [
        NodeRecord(PIDS[0], 1, 0.0, role="head"),
        worker(4, None, A100, **group, worker_group_role="follower"),
    ]
    (m,) = body(recs)["models"]
    assert (m["id"], m["state"], m["replicas"], m["ready_replicas"]) == ("huge", "pending", 1, 0)
    assert m["replica_list"][0]["leader"] is None and m["load"] is None


def test_the_node_table() -> None:
    b = body(pool())
    nodes = {n["peer_id"]: n for n in b["nodes"]}
    head = nodes[PIDS[0]]
    assert head["self"] and head["role"] == "head" and head["last_seen_s"] == 0
    assert head["gpus"] is None and head["gpu_count"] == 0 and head["site"] == "k8s"
    w = nodes[PIDS[2]]
    assert (w["role"], w["state"], w["site"], w["gpus"], w["load"]) == (
        "worker",
        "alive",
        "clariden",
        "4x NVIDIA GH200 120GB",
        2,
    )
    assert (w["kind"], w["slurm_job_id"], w["expires_in_s"], w["models"]) == (
        "slurm",
        "42",
        3600,
        ["small"],
    )
    assert w["last_seen_s"] == 2.5 and not w["self"]
    f = nodes[PIDS[4]]
    assert f["group_role"] == "follower" and f["models"] == [] and f["gpus"].startswith("8x")


def test_a_stopped_worker_leaves_its_model_and_shows_as_left() -> None:
    b = body(pool(), gone=(PIDS[1],))
    small = next(m for m in b["models"] if m["id"] == "small")
    assert (small["replicas"], small["ready_replicas"]) == (1, 1)
    assert small["topology"] == "1 replica \u00d7 4x NVIDIA GH200 120GB"
    gone = next(n for n in b["nodes"] if n["peer_id"] == PIDS[1])
    assert gone["state"] == "left" and gone["load"] is None and gone["models"] == []
    assert b["nodes"][-1]["peer_id"] == PIDS[1]  # live nodes first
    assert b["totals"]["nodes"] == 5


def test_an_empty_pool_and_unknown_ages() -> None:
    recs = [NodeRecord(PIDS[0], 1, 0.0, role="head"), worker(1, None)]
    b = status_body(snapshot(recs), NOW, {}, {}, NODE)
    assert b["models"] == [] and b["sites"] == []
    n = next(n for n in b["nodes"] if n["peer_id"] == PIDS[1])
    assert n["last_seen_s"] is None and n["site"] is None and n["expires_at"] is None


def test_topology_of_mixed_shapes() -> None:
    def rep(nodes: int, device: str) -> dict[str, Any]:
        return {"nodes": nodes, "device": device}

    reps = [rep(1, "8x A100"), rep(4, "4x GH200"), rep(4, "4x GH200")]
    assert topology(reps) == "2 replicas \u00d7 4 nodes \u00d7 4x GH200 + 1 replica \u00d7 8x A100"


# -- the recent window ------------------------------------------------------------------------------


def test_recent_perf_is_a_median_over_a_window() -> None:
    perf = RecentPerf(window_s=60)
    for i, (ttft, rate) in enumerate([(0.1, 10.0), (0.3, 30.0), (0.2, None), (None, 50.0)]):
        perf.add("m", Sample(NOW + i, ttft, rate))
    assert perf.summary(NOW + 10) == {"m": Perf(4, 0.2, 30.0)}
    perf.add("m", Sample(NOW + 50, 9.0, 1.0))
    assert perf.summary(NOW + 62)["m"] == Perf(3, (0.2 + 9.0) / 2, 25.5)  # two aged out
    assert perf.summary(NOW + 200) == {}  # all gone; the model too


def test_recent_perf_is_bounded() -> None:
    perf = RecentPerf(max_models=3)
    for _ in range(MAX_SAMPLES + 10):
        perf.add("a", Sample(NOW, 0.1, 1.0))
    for m in ("b", "c", "a", "d"):  # "a" used again: "b" is the least recent
        perf.add(m, Sample(NOW, 0.1, 1.0))
    s = perf.summary(NOW)
    assert sorted(s) == ["a", "c", "d"] and s["a"].requests == MAX_SAMPLES


def obs(**kw: Any) -> Any:
    row = UsageRow.at(NOW, "-", "anonymous", "m", completion_tokens=kw.pop("tokens", 20))
    base = {"status": 200, "complete": True, "row": row, "started": 100.0, "first_byte": 100.25}
    base.update(kw)
    o = SimpleNamespace(**base)
    o.decode_rate = lambda: kw.get("rate")
    return o


def test_sample_of_a_request() -> None:
    streamed = sample_of(obs(sse=object(), rate=40.0), 101.0, NOW)
    assert streamed == Sample(NOW, 0.25, 40.0)
    plain = sample_of(obs(sse=None), 102.0, NOW)  # no TTFT: its first byte was its last
    assert plain == Sample(NOW, None, 10.0)
    assert sample_of(obs(sse=None, status=503), 102.0, NOW) is None
    assert sample_of(obs(sse=object(), complete=False), 102.0, NOW) is None
    assert sample_of(obs(sse=None, tokens=0), 102.0, NOW) is None  # nothing generated


def test_the_usage_recorder_tells_its_listeners() -> None:
    rows: list[UsageRow] = []
    seen: list[Any] = []
    rec = UsageRecorder(rows.append, clock=lambda: NOW)
    rec.listeners.append(seen.append)
    _, o = rec.prepare({"model": "m", "messages": []}, None, "m", stream=False)
    o.on_head(200, [("Content-Type", "application/json")])
    o.on_body(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 5}}')
    o.on_end(True)
    o.done()
    o.done()  # once only
    assert seen == [o] and rows == [o.row] and o.row.completion_tokens == 5
    assert o.first_byte is not None and o.first_byte >= o.started


# -- the page and the gate ----------------------------------------------------------------------


def test_the_page_ships_in_the_package_and_is_open() -> None:
    html = _read("index.html").decode()
    assert 'src="ui/app.js"' in html and 'href="ui/style.css"' in html
    assert "http" not in html.replace("http-equiv", "")  # nothing from elsewhere (no CDN)
    assert 'aria-live="polite"' in html and "<main" in html and 'scope="col"' in html
    for name in ASSETS:
        assert _read(name)
    assert all(is_page(p) for p in ("/", "/ui", "/ui/", "/ui/app.js", "/ui/style.css"))
    assert not is_page("/ui/secret") and not is_page("/v1/status")
    for mode in ("open", "key"):
        assert _is_open("/", "GET", mode) and _is_open("/ui/app.js", "GET", mode)
        assert not _is_open("/", "POST", mode)
    assert _is_open("/v1/status", "GET", "open") and not _is_open("/v1/status", "GET", "key")


def test_the_demo_prints_the_status_page_url(tmp_path: Any) -> None:
    from opentela.demo import Demo

    demo = Demo(2, tmp_path / "m.gguf", "127.0.0.1", 8123)
    try:
        banner = demo.banner()
    finally:
        demo.tmp.rmdir()
    assert "Status:    http://127.0.0.1:8123/ " in banner
    assert "opentela-node top --url http://127.0.0.1:8123" in banner
