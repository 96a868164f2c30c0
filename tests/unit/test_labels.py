"""The labels a node signs into its record (``platform/labels.py``), from settings, the Slurm
job and the machine; ``--label`` / ``--site`` as settings; the follower of a multi-node
replica advertising no service; labels in ``/v1/models_detailed`` and the table. Pure."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela import node
from opentela.cli import _fmt_table
from opentela.config import Config, ConfigError, load
from opentela.gateway.platform import models_detailed
from opentela.overlay import identity
from opentela.platform.labels import (
    AUTO_KEYS,
    MAX_USER_LABELS,
    backend_labels,
    is_follower,
    node_labels,
    parse_label,
    slurm_view,
    user_labels,
)
from opentela.platform.slurm import SlurmJob
from opentela.table.record import MAX_LABELS, NodeRecord, Service
from opentela.table.signing import sign
from opentela.table.store import ALIVE, TableStore
from opentela.worker.agent import WorkerAgent
from opentela.worker.health import Health

NOW = 1_800_000_000.9
END = 1_800_003_600.0
JOB = SlurmJob(
    job_id="4242",
    end_time=END,
    node_list="nid[001-002]",
    partition="normal",
    cluster="clariden",
    gpus="0,1,2,3",
    local_id=0,
    user="alice",
)
ENV = {"USER": "root-shell"}
WORKER = Config(service_port=8000)


def labels(cfg: Config = WORKER, job: SlurmJob | None = None, env: Any = ENV) -> dict[str, str]:
    return node_labels(cfg, job, env, NOW, hostname="nid001", arch="aarch64")


# -- node_labels ---------------------------------------------------------------------------------


def test_outside_slurm_the_machine_and_the_user() -> None:
    assert labels() == {
        "hostname": "nid001",
        "arch": "aarch64",
        "started_at": "1800000000",
        "launched_by": "root-shell",
        "status": "pending",  # a backend: pending until it answers
    }
    # A head has no backend, hence no status; LOGNAME when USER is missing.
    head = labels(Config(), env={"LOGNAME": "bob"})
    assert "status" not in head and head["launched_by"] == "bob"
    assert "launched_by" not in labels(env={})


def test_in_a_slurm_job() -> None:
    got = labels(job=JOB)
    assert got == {
        "hostname": "nid001",
        "arch": "aarch64",
        "started_at": "1800000000",
        "launched_by": "alice",  # the job's user, not the shell's
        "site": "clariden",
        "cluster": "clariden",
        "slurm_job_id": "4242",
        "slurm_partition": "normal",
        "slurm_nodelist": "nid[001-002]",
        "expires_at": "1800003600",
        "status": "pending",
    }
    assert set(got) <= set(AUTO_KEYS)
    # An unknown end time and no reservation: no label rather than an empty one.
    other = labels(job=replace(JOB, end_time=None, reservation="big-run", user=""))
    assert "expires_at" not in other
    assert other["slurm_reservation"] == "big-run" and other["launched_by"] == "root-shell"


def test_site_flag_wins_for_site_the_cluster_stays_slurms() -> None:
    got = labels(Config(service_port=8000, site="swiss-ai"), job=JOB)
    assert (got["site"], got["cluster"]) == ("swiss-ai", "clariden")
    # Outside Slurm, --site names both.
    alone = labels(Config(service_port=8000, site="k8s"))
    assert (alone["site"], alone["cluster"]) == ("k8s", "k8s")
    # A job on a cluster without a name: --site fills in.
    nameless = labels(Config(site="bristen"), job=replace(JOB, cluster=""))
    assert (nameless["site"], nameless["cluster"]) == ("bristen", "bristen")


def test_user_labels_override_and_an_empty_value_removes() -> None:
    cfg = Config(
        service_port=8000, label=("team=nlp", "hostname=gh200-a", "arch=", "launched_by=ops")
    )
    got = labels(cfg, job=JOB)
    assert got["team"] == "nlp" and got["hostname"] == "gh200-a" and got["launched_by"] == "ops"
    assert "arch" not in got
    assert labels(Config(service_port=8000, label=("site=here",), site="there"))["site"] == "here"


def test_multi_node_job_leader_and_followers() -> None:
    two = replace(JOB, num_nodes=2)
    lead = labels(job=replace(two, node_id=0))
    follow = labels(job=replace(two, node_id=1))
    assert lead["worker_group_id"] == follow["worker_group_id"] == "clariden-4242"
    assert (lead["worker_group_role"], follow["worker_group_role"]) == ("leader", "follower")
    assert not is_follower(lead) and is_follower(follow)
    # Without SLURM_NODEID the node leads (it serves rather than silently advertising nothing).
    assert labels(job=replace(two, node_id=None))["worker_group_role"] == "leader"
    # The group is named after the Slurm cluster, else --site.
    assert labels(Config(site="alps"), job=replace(two, node_id=1))["worker_group_id"] == (
        "clariden-4242"
    )
    nameless = replace(two, cluster="", node_id=1)
    assert labels(Config(site="alps"), job=nameless)["worker_group_id"] == "alps-4242"
    assert labels(job=nameless)["worker_group_id"] == "slurm-4242"
    assert "worker_group_id" not in labels(job=JOB)
    # Nodes of one job that are independent replicas: --label worker_group_role= opts out.
    opted = labels(
        Config(service_port=8000, label=("worker_group_role=",)), job=replace(two, node_id=3)
    )
    assert not is_follower(opted)
    no_group = labels(
        Config(service_port=8000, label=("worker_group_id=",)), job=replace(two, node_id=3)
    )
    assert "worker_group_role" not in no_group and not is_follower(no_group)


def test_framework_from_the_subprocess_command() -> None:
    cfg = Config(service_port=8000, subprocess="vllm serve meta-llama/Llama-3.1-8B --port 8000")
    assert labels(cfg)["framework"] == "vllm"
    assert "framework" not in labels(Config(service_port=8000, subprocess="./my-server"))


def test_an_automatic_value_too_long_is_left_out_and_all_fit_a_record() -> None:
    long_list = "nid[" + ",".join(f"{i:06d}" for i in range(60)) + "]"  # > 256 characters
    got = labels(job=replace(JOB, node_list=long_list))
    assert "slurm_nodelist" not in got and got["slurm_job_id"] == "4242"
    many = tuple(f"k{i}=v" for i in range(MAX_USER_LABELS))
    full = labels(Config(service_port=8000, label=many), job=replace(JOB, num_nodes=4))
    assert len(full) <= MAX_LABELS
    rec = NodeRecord("p", 1, 0.0, labels=full)
    assert NodeRecord.decode(rec.encode()).labels == full


def test_backend_labels_follow_the_probe_unless_the_user_set_them() -> None:
    start = {"status": "pending", "framework": "vllm", "team": "nlp"}
    up = backend_labels(start, frozenset(), up=True, framework="")
    assert up == {"status": "ready", "framework": "vllm", "team": "nlp"}  # framework kept
    assert backend_labels(up, frozenset(), up=False, framework="sglang") == {
        "status": "pending",
        "framework": "sglang",
        "team": "nlp",
    }
    mine = {"status": "maintenance", "framework": "custom"}
    assert backend_labels(mine, frozenset(mine), up=True, framework="vllm") == mine


def test_slurm_view_keeps_the_old_table_shape() -> None:
    assert slurm_view(labels(job=JOB)) == {
        "job": "4242",
        "partition": "normal",
        "cluster": "clariden",
        "nodes": "nid[001-002]",
        "end": "1800003600",
    }
    assert slurm_view(labels()) == {}


# -- --label and --site as settings --------------------------------------------------------------


def test_parse_label() -> None:
    assert parse_label("team=nlp") == ("team", "nlp")
    assert parse_label(" a.b/c-d_e = x=y ") == ("a.b/c-d_e", "x=y")
    assert parse_label("gone=") == ("gone", "")
    for bad, why in [
        ("team", "not key=value"),
        ("=x", "key ''"),
        ("-x=1", "starting with a letter or digit"),
        ("a b=1", "key 'a b'"),
        ("k" * 64 + "=1", "1-63"),
        ("k=" + "v" * 257, "at most 256"),
        ("k=a\tb", "control characters"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_label(bad)
    assert user_labels(("a=1", "a=2", "b=3")) == {"a": "2", "b": "3"}  # the last one wins
    with pytest.raises(ValueError, match=f"at most {MAX_USER_LABELS}"):
        user_labels(tuple(f"k{i}=v" for i in range(MAX_USER_LABELS + 1)))


def test_label_flag_env_and_yaml(tmp_path: Path) -> None:
    assert load(env={}, flags={"label": ("team=nlp", "tier=gold")}).label == (
        "team=nlp",
        "tier=gold",
    )
    assert load(env={"OTELA_LABEL": "team=nlp,tier=gold"}).label == ("team=nlp", "tier=gold")
    as_map = tmp_path / "map.yaml"
    as_map.write_text("site: bristen\nlabel:\n  team: nlp\n  gpu.kind: a100\n  priority: 2\n")
    cfg = load(str(as_map), env={})
    assert cfg.site == "bristen"
    assert user_labels(cfg.label) == {"team": "nlp", "gpu.kind": "a100", "priority": "2"}
    as_list = tmp_path / "list.yaml"
    as_list.write_text("label: [team=nlp, hostname=]\n")
    assert load(str(as_list), env={}).label == ("team=nlp", "hostname=")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"label": ("team",)}, "--label: 'team' is not key=value"),
        ({"label": ("bad key=1",)}, "--label: key 'bad key' must be"),
        ({"label": ("k=" + "v" * 300,)}, "at most 256"),
        ({"site": "a\nb"}, "--site must be a printable name"),
        ({"site": " "}, "--site must be a printable name"),
    ],
)
def test_bad_labels_are_config_errors(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load(env={}, flags=flags)


def test_bad_yaml_label_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("label:\n  'no good': x\n")
    with pytest.raises(ConfigError, match=r"label in .*c\.yaml: key 'no good'"):
        load(str(f), env={})


# -- a follower advertises no service -----------------------------------------------------------


class FakeHost:
    def addrs(self) -> list[str]:
        return ["/ip4/127.0.0.1/tcp/1"]


def test_own_record_of_a_follower_has_no_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "detect_gpus", lambda _log: [])
    two = replace(JOB, num_nodes=2)
    lead = node.own_record(WORKER, "p", FakeHost(), replace(two, node_id=0), {})  # type: ignore[arg-type]
    follow = node.own_record(WORKER, "p", FakeHost(), replace(two, node_id=1), {})  # type: ignore[arg-type]
    assert [s.name for s in lead.services] == ["llm"] and follow.services == ()
    assert follow.labels["worker_group_role"] == "follower"
    assert follow.labels["slurm_job_id"] == "4242" and follow.labels["status"] == "pending"
    # A single-node job and no job at all serve as before.
    assert node.own_record(WORKER, "p", FakeHost(), JOB, {}).services  # type: ignore[arg-type]


class FakeSync:
    def __init__(self, own: NodeRecord) -> None:
        self.own = own
        self.updates: list[dict[str, Any]] = []

    def update(self, **changes: Any) -> None:
        self.updates.append(changes)
        self.own = replace(self.own, **changes)


def agent_for(labels: dict[str, str], advertise: bool, fixed: frozenset[str] = frozenset()):
    sync = FakeSync(NodeRecord("p", 1, 0.0, services=(Service("llm", "down"),), labels=labels))
    server = SimpleNamespace(available=False, in_flight=0)
    backend = SimpleNamespace(framework="vllm", base_url="http://127.0.0.1:8000")
    agent = WorkerAgent(
        sync,  # type: ignore[arg-type]
        server,  # type: ignore[arg-type]
        backend,  # type: ignore[arg-type]
        "llm",
        advertise=advertise,
        fixed_labels=fixed,
    )
    return agent, sync, server


def test_a_follower_with_a_healthy_backend_advertises_nothing() -> None:
    group = {"worker_group_id": "c-1", "status": "pending"}
    follower, sync, server = agent_for({**group, "worker_group_role": "follower"}, False)
    follower.health = Health(up=True, models=("big-model",))
    follower._publish()
    assert sync.updates[-1]["services"] == () and sync.own.models == ()
    assert server.available is False  # forwarded requests are refused, never served
    assert sync.own.labels["status"] == "ready" and sync.own.labels["framework"] == "vllm"
    # The leader with the same backend state advertises its model and serves.
    leader, lsync, lserver = agent_for({**group, "worker_group_role": "leader"}, True)
    leader.health = Health(up=True, models=("big-model",))
    leader._publish()
    assert lsync.own.models == ("big-model",) and lserver.available is True
    assert lsync.own.labels["status"] == "ready"
    # Down again: pending, the last models still named so entries answer 503 not 404.
    leader.health = Health(up=False)
    leader._publish()
    assert lsync.own.labels["status"] == "pending" and lsync.own.services[0].status == "down"


def test_status_set_by_the_user_is_not_touched() -> None:
    agent, sync, _ = agent_for({"status": "maintenance"}, True, frozenset({"status"}))
    agent.health = Health(up=True, models=("m",))
    agent._publish()
    assert sync.own.labels["status"] == "maintenance"


# -- /v1/models_detailed and the table read the labels ---------------------------------------------

KEYS = [Ed25519PrivateKey.generate() for _ in range(4)]
PIDS = [identity.peer_id(k) for k in KEYS]


def snapshot(records: list[NodeRecord]) -> Any:
    store = TableStore(PIDS[0], ttl_s=30)
    store.apply([sign(r, KEYS[PIDS.index(r.peer_id)]) for r in records], 0.0)
    for r in records:
        store.set_liveness(r.peer_id, ALIVE, 0.0)
    return store.snapshot(1.0)


def test_models_detailed_from_labels_with_a_multi_node_replica() -> None:
    common = {"slurm_job_id": "77", "launched_by": "alice", "expires_at": "1800003600"}
    group = {**common, "worker_group_id": "clariden-77", "framework": "sglang"}
    leader = NodeRecord(
        PIDS[1], 1, 0.0, role="worker",
        services=(Service("llm", "ready", ("model=big",)),),
        labels={**group, "worker_group_role": "leader", "hostname": "nid001", "status": "ready"},
    )  # fmt: skip
    follower = NodeRecord(
        PIDS[2], 1, 0.0, role="worker",
        labels={**group, "worker_group_role": "follower", "hostname": "nid002"},
    )  # fmt: skip
    loading = NodeRecord(
        PIDS[3], 1, 0.0, role="worker", services=(Service("llm", "down"),),
        labels={"served_model_name": "small", "started_at": "1800000000", "status": "pending"},
    )  # fmt: skip
    got = {
        (e["peer_id"], e["id"]): e for e in models_detailed(snapshot([leader, follower, loading]))
    }
    assert set(got) == {(PIDS[1], "big"), (PIDS[2], "big"), (PIDS[3], "small")}
    lead, follow, load = got[(PIDS[1], "big")], got[(PIDS[2], "big")], got[(PIDS[3], "small")]
    assert (lead["has_service"], lead["status"], lead["service"]) == (True, "ready", "llm")
    assert (follow["has_service"], follow["status"], follow["service"]) == (False, "ready", None)
    assert lead["worker_group_id"] == follow["worker_group_id"] == "clariden-77"
    assert (lead["slurm_job_id"], lead["launched_by"], lead["expires_at"]) == (
        "77",
        "alice",
        1800003600,
    )
    assert (lead["framework"], lead["hostname"], follow["hostname"]) == (
        "sglang",
        "nid001",
        "nid002",
    )
    assert lead["labels"]["worker_group_role"] == "leader"
    assert (load["status"], load["started_at"], load["expires_at"]) == ("pending", 1800000000, None)
    # The leader not serving yet: the whole replica reads as pending.
    leader_down = replace(leader, services=(Service("llm", "down", ("model=big",)),))
    follow = {e["peer_id"]: e for e in models_detailed(snapshot([leader_down, follower]))}[PIDS[2]]
    assert follow["status"] == "pending"


def test_table_shows_site_time_left_and_labels() -> None:
    node_json = {
        "id": PIDS[1], "role": "worker", "status": "ready", "state": "alive", "self": False,
        "load": 0, "service": [], "hardware": {"gpus": [{"name": "NVIDIA GH200 120GB"}] * 4},
        "last_seen": int(NOW), "http_address": "http://x:1",
        "labels": {
            "site": "clariden", "slurm_job_id": "77", "slurm_partition": "normal",
            "expires_at": str(int(NOW) + 3 * 3600 + 5 * 60 + 30), "framework": "vllm",
            "status": "ready", "launched_by": "alice", "team": "nlp", "hostname": "nid001",
        },
    }  # fmt: skip
    lines = _fmt_table({"/a": node_json}, NOW).splitlines()
    header = lines[0].split()
    cells = [c for c in lines[1].strip().split("  ") if c.strip()]
    cells = [c.strip() for c in cells]
    assert header[-3:] == ["SITE", "EXPIRES", "LABELS"]
    assert cells[-4:] == [
        "77@normal",
        "clariden",
        "in 3h05m",
        "framework=vllm,status=ready,launched_by=alice,+1",
    ]
    assert "4x NVIDIA GH200 120GB" in cells
    wide = _fmt_table({"/a": node_json}, NOW, wide=True)
    assert "team=nlp" in wide and "hostname=nid001" in wide
    # A node from before labels: its "slurm" object still fills the Slurm columns.
    old = {**node_json, "slurm": {"job": "9", "end": str(int(NOW) + 630)}}
    del old["labels"]
    assert "9  " in _fmt_table({"/a": old}, NOW) and "in 10m" in _fmt_table({"/a": old}, NOW)
