"""Labels end to end with real nodes: a head (``--site k8s``), a GH200 worker running its
backend as ``vllm`` (``--subprocess``) with ``--site`` and ``--label``, and the follower of a
two-node Slurm job (Slurm's environment, an A100 node) whose backend is healthy yet advertises
nothing. ``/v1/dnt/table``, ``/v1/models_detailed`` and ``opentela-node table`` all show them.

GPUs come from a fake ``nvidia-smi`` on each worker's PATH printing captured GH200 / A100
output; the Slurm job is its environment (``SLURM_JOB_END_TIME`` set, so no squeue is run)."""

from __future__ import annotations

import os
import platform
import re
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import NODE, PY, Cluster, http_json, wait_for

from opentela.testing.serving import free_port

GH200 = "NVIDIA GH200 120GB, 97871, 1\n" * 4
A100 = "NVIDIA A100-SXM4-80GB, 81920, 4\n" * 8


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fake_bin(tmp: Path, name: str, gpus: str) -> Path:
    """A directory with ``nvidia-smi`` printing ``gpus`` and ``vllm`` starting the fake server."""
    d = tmp / name
    d.mkdir()
    executable(d / "nvidia-smi", f"#!/bin/sh\nprintf '%s' '{gpus}'\n")
    executable(d / "vllm", f'#!/bin/sh\nexec {PY} -m opentela.testing.fake_upstream "$@"\n')
    return d


def table_rows(url: str) -> dict[str, dict[str, str]]:
    """``table --wide`` rows by peer ID, each as {column: cell}."""
    out = subprocess.run(
        [*NODE, "table", "--url", url, "--wide"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    lines = [line for line in out.splitlines() if not line.startswith("(")]
    # Columns start where the header's names start (two-word "SLURM JOB" included).
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S+(?: JOB)?", lines[0])]
    names = [lines[0][a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    rows = {}
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[0].removeprefix("* ")] = dict(zip(names, cells, strict=True))
    return rows


def test_labels_in_the_table_the_models_and_the_cli(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = os.environ.get("PATH", "")
    head = cluster.node("head", "127.0.0.2", "--site", "k8s")

    # A GH200 worker whose backend command is `vllm ...`, with a site and labels of its own.
    monkeypatch.setenv("PATH", f"{fake_bin(tmp_path, 'gh200', GH200)}:{path}")
    port = free_port("127.0.0.1")
    gh = cluster.node(
        "gh200", "127.0.0.3", "--bootstrap", head.maddr, "--service.port", str(port),
        "--subprocess", f"vllm --host 127.0.0.1 --port {port} --model m-gh",
        "--site", "clariden", "--label", "team=nlp", "--label", "hostname=gh200-node",
    )  # fmt: skip

    # The follower of a two-node Slurm job (node 1 of 2), on an A100 node, backend healthy.
    end = int(time.time()) + 3600
    monkeypatch.setenv("PATH", f"{fake_bin(tmp_path, 'a100', A100)}:{path}")
    slurm_env = {
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_PARTITION": "normal",
        "SLURM_CLUSTER_NAME": "bristen",
        "SLURM_JOB_USER": "alice",
        "SLURM_JOB_END_TIME": str(end),
        "SLURM_NNODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NODELIST": "nid[001-002]",
    }
    for k, v in slurm_env.items():
        monkeypatch.setenv(k, v)
    _, up = cluster.upstream("follower-up", "m-follow")
    follower = cluster.node(
        "follower", "127.0.0.4", "--bootstrap", head.maddr, "--service.port", str(up),
        "--label", "served_model_name=m-follow",
    )  # fmt: skip
    for k in slurm_env:
        monkeypatch.delenv(k)
    monkeypatch.setenv("PATH", path)

    def entries() -> dict[str, dict]:
        return {e["id"]: e for e in http_json(f"{head.url}/v1/dnt/table")[2].values()}

    def both_ready() -> dict[str, dict] | None:
        t = entries()
        labels = [t.get(p, {}).get("labels", {}) for p in (gh.peer_id, follower.peer_id)]
        return t if all(lb.get("status") == "ready" for lb in labels) else None

    t = wait_for(both_ready, 30, 0.2, what="both backends ready in their labels")
    g, f = t[gh.peer_id], t[follower.peer_id]

    assert g["labels"]["site"] == "clariden" == g["labels"]["cluster"]
    assert g["labels"]["team"] == "nlp" and g["labels"]["hostname"] == "gh200-node"
    assert g["labels"]["framework"] == "vllm"  # from the --subprocess command
    assert g["labels"]["arch"] == platform.machine()
    assert abs(int(g["labels"]["started_at"]) - time.time()) < 120
    if os.environ.get("USER"):
        assert g["labels"]["launched_by"] == os.environ["USER"]
    assert [x["name"] for x in g["hardware"]["gpus"]] == ["NVIDIA GH200 120GB"] * 4
    assert g["hardware"]["gpus"][0]["total_memory"] == 97871
    assert g["reachability"] == "public" and g["relays"] == []
    assert g["slurm"] == {}

    fl = f["labels"]
    assert (fl["slurm_job_id"], fl["slurm_partition"], fl["launched_by"]) == (
        "77",
        "normal",
        "alice",
    )
    assert fl["expires_at"] == str(end) and fl["site"] == "bristen"
    assert (fl["worker_group_id"], fl["worker_group_role"]) == ("bristen-77", "follower")
    assert fl["hostname"] == socket.gethostname()
    assert f["slurm"] == {
        "job": "77", "partition": "normal", "cluster": "bristen", "nodes": "nid[001-002]",
        "end": str(end),
    }  # fmt: skip
    assert f["service"] == []  # healthy backend, but a follower advertises nothing
    assert [x["name"] for x in f["hardware"]["gpus"]] == ["NVIDIA A100-SXM4-80GB"] * 8
    assert t[head.peer_id]["labels"]["site"] == "k8s" and "status" not in t[head.peer_id]["labels"]

    # Routing: only the GH200 worker's model exists; the follower's is never offered.
    assert head.models() == ["m-gh"]
    status, _, body = http_json(
        f"{head.url}/v1/chat/completions", "POST",
        {"model": "m-follow", "messages": [{"role": "user", "content": "hi"}]},
    )  # fmt: skip
    assert status == 404, body

    _, _, detailed = http_json(f"{head.url}/v1/models_detailed")
    by_peer = {e["peer_id"]: e for e in detailed["data"]}
    d = by_peer[gh.peer_id]
    assert (d["id"], d["has_service"], d["status"], d["framework"]) == (
        "m-gh",
        True,
        "ready",
        "vllm",
    )
    assert d["device"] == "4x NVIDIA GH200 120GB" and d["labels"]["team"] == "nlp"
    d = by_peer[follower.peer_id]
    assert (d["id"], d["has_service"], d["status"]) == ("m-follow", False, "pending")
    assert (d["worker_group_id"], d["slurm_job_id"], d["expires_at"]) == ("bristen-77", "77", end)

    rows = table_rows(head.url)
    assert rows[head.peer_id]["SITE"] == "k8s"
    r = rows[gh.peer_id]
    assert (r["SITE"], r["SLURM JOB"], r["EXPIRES"], r["GPUS"]) == (
        "clariden", "-", "-", "4x NVIDIA GH200 120GB",
    )  # fmt: skip
    assert r["LABELS"].startswith("framework=vllm,status=ready,") and "team=nlp" in r["LABELS"]
    r = rows[follower.peer_id]
    assert (r["SITE"], r["SLURM JOB"], r["GPUS"]) == (
        "bristen",
        "77@normal",
        "8x NVIDIA A100-SXM4-80GB",
    )
    assert r["EXPIRES"] in ("in 59m", "in 1h00m")
    assert "worker_group_role=follower" in r["LABELS"] and "launched_by=alice" in r["LABELS"]
