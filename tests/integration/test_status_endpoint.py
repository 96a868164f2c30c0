"""``GET /v1/status`` and ``opentela-node top --once`` on a real pool: a head (``--site k8s``),
two GH200 replicas of one model (one always on at clariden, one a Slurm job at bristen) and a
worker of a second model without GPUs. After known streamed traffic the head reports its
TTFT and tokens/s; a stopped worker's model leaves and the node shows as gone. The page's
files are served at ``/`` and ``/ui``, and the auth gate keeps ``/v1/status`` as open as
``/v1/models``.

GPUs come from a fake ``nvidia-smi`` on the worker's PATH; the Slurm job is its environment
(``SLURM_JOB_END_TIME`` set, so no squeue is run)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import NODE, Cluster, http_json, wait_for

GH200 = "NVIDIA GH200 120GB, 97871, 1\n" * 4
TOKENS = 12


def nvidia_smi(tmp: Path, name: str, gpus: str) -> str:
    d = tmp / name
    d.mkdir()
    exe = d / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\nprintf '%s' '{gpus}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(d)


def status(url: str) -> dict:
    code, _, body = http_json(f"{url}/v1/status")
    assert code == 200, body
    return body


def model(url: str, mid: str) -> dict | None:
    return next((m for m in status(url)["models"] if m["id"] == mid), None)


def test_status_json_and_top(cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = os.environ.get("PATH", "")
    head = cluster.node("head", "127.0.0.2", "--site", "k8s")
    _, up_a = cluster.upstream("up-a", "m-a", "127.0.0.1", 0, "--tokens", str(TOKENS),
                               "--token-delay-ms", "5")  # fmt: skip
    _, up_b = cluster.upstream("up-b", "m-a", "127.0.0.1", 0, "--tokens", str(TOKENS),
                               "--token-delay-ms", "5")  # fmt: skip
    _, up_c = cluster.upstream("up-c", "m-b")

    monkeypatch.setenv("PATH", f"{nvidia_smi(tmp_path, 'gh200', GH200)}:{path}")
    a = cluster.node("a", "127.0.0.3", "--bootstrap", head.maddr, "--service.port", str(up_a),
                     "--site", "clariden")  # fmt: skip
    end = int(time.time()) + 3600
    slurm = {"SLURM_JOB_ID": "42", "SLURM_JOB_PARTITION": "normal", "SLURM_JOB_USER": "alice",
             "SLURM_JOB_END_TIME": str(end), "SLURM_NNODES": "1", "SLURM_NODEID": "0"}  # fmt: skip
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    b = cluster.node("b", "127.0.0.4", "--bootstrap", head.maddr, "--service.port", str(up_b),
                     "--site", "bristen")  # fmt: skip
    for k in slurm:
        monkeypatch.delenv(k)
    monkeypatch.setenv("PATH", path)
    c = cluster.node("c", "127.0.0.5", "--bootstrap", head.maddr, "--service.port", str(up_c))

    wait_for(lambda: (model(head.url, "m-a") or {}).get("ready_replicas") == 2, 30, 0.2,
             what="two replicas of m-a")  # fmt: skip
    wait_for(lambda: model(head.url, "m-b"), 30, 0.2, what="m-b")

    # Known traffic through the head: streamed, so each request has a TTFT and a decode pace.
    n = 6
    for _ in range(n):
        req = urllib.request.Request(
            f"{head.url}/v1/chat/completions",
            data=b'{"model":"m-a","stream":true,"messages":[{"role":"user","content":"hi"}]}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200 and b"[DONE]" in r.read()

    s = status(head.url)
    assert s["object"] == "status" and s["node"]["peer_id"] == head.peer_id
    assert s["sites"] == ["bristen", "clariden", "k8s"]
    ma = next(m for m in s["models"] if m["id"] == "m-a")
    assert (ma["state"], ma["replicas"], ma["ready_replicas"]) == ("ready", 2, 2)
    assert ma["topology"] == "2 replicas \u00d7 4x NVIDIA GH200 120GB"
    assert ma["sites"] == ["bristen", "clariden"] and ma["kinds"] == ["always-on", "slurm"]
    assert ma["slurm_jobs"] == ["42"] and ma["expires_at"] == end
    assert 3500 < ma["expires_in_s"] <= 3600
    assert isinstance(ma["load"], int)  # load news arrives a moment after each request
    wait_for(lambda: model(head.url, "m-a")["load"] == 0, 15, 0.2, what="nothing in flight")
    assert ma["requests_recent"] == n
    assert 0 < ma["ttft_p50_s"] < 5 and ma["tokens_per_s"] > 0
    mb = next(m for m in s["models"] if m["id"] == "m-b")
    assert (mb["state"], mb["replicas"], mb["topology"]) == ("ready", 1, "1 replica \u00d7 no GPU")
    assert mb["ttft_p50_s"] is None and mb["tokens_per_s"] is None and mb["sites"] == []
    nodes = {x["peer_id"]: x for x in s["nodes"]}
    assert set(nodes) == {head.peer_id, a.peer_id, b.peer_id, c.peer_id}
    assert nodes[head.peer_id]["self"] and nodes[head.peer_id]["role"] == "head"
    nb = nodes[b.peer_id]
    assert (nb["role"], nb["state"], nb["site"], nb["gpus"], nb["kind"], nb["models"]) == (
        "worker", "alive", "bristen", "4x NVIDIA GH200 120GB", "slurm", ["m-a"],
    )  # fmt: skip
    assert nb["last_seen_s"] is not None and nb["last_seen_s"] < 30
    # Another node has not seen the head's traffic: its figures are unknown, not zero.
    other = next(m for m in status(a.url)["models"] if m["id"] == "m-a")
    assert other["replicas"] == 2 and other["ttft_p50_s"] is None

    top = subprocess.run(
        [*NODE, "top", "--url", head.url, "--once"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert top.returncode == 0, top.stderr
    lines = top.stdout.splitlines()
    row = next(line for line in lines if "m-a" in line and "replica" in line)
    assert "ready" in row and "2 replicas" in row and "4x NVIDIA GH200 120GB" in row
    assert "42" in row and ("in 59m" in row or "in 1h00m" in row)
    assert any(b.peer_id[-6:] in line and "bristen" in line for line in lines)

    # A stopped worker: its model leaves the page, the node shows as gone.
    c.proc.stop()
    wait_for(lambda: model(head.url, "m-b") is None, 30, 0.2, what="m-b gone")
    gone = next(x for x in status(head.url)["nodes"] if x["peer_id"] == c.peer_id)
    assert gone["state"] in ("left", "dead") and gone["models"] == [] and gone["load"] is None

    # The page itself, from every node, with its own script and style only.
    for url in (f"{head.url}/", f"{head.url}/ui", f"{a.url}/"):
        with urllib.request.urlopen(url, timeout=10) as r:
            html = r.read().decode()
            assert r.headers["Content-Type"].startswith("text/html")
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert 'src="ui/app.js"' in html
    with urllib.request.urlopen(f"{head.url}/ui/app.js", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/javascript")
        assert b"v1/status" in r.read()
    assert http_json(f"{head.url}/ui/nothing")[0] == 404


def test_the_auth_gate_keeps_the_status_as_open_as_the_models(cluster: Cluster, tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    open_ = cluster.node("open", "127.0.0.2", "--auth", "required", "--db", db)
    closed = cluster.node(
        "closed", "127.0.0.3", "--auth", "required", "--auth-models", "key", "--db", db
    )
    assert http_json(f"{open_.url}/v1/status")[0] == 200
    code, _, body = http_json(f"{closed.url}/v1/status")
    assert code == 401 and body["error"]["code"] == "invalid_api_key"
    for node in (open_, closed):  # the page's files never need a key
        for path in ("/", "/ui", "/ui/app.js", "/ui/style.css"):
            with urllib.request.urlopen(f"{node.url}{path}", timeout=10) as r:
                assert r.status == 200
    top = subprocess.run(
        [*NODE, "top", "--url", closed.url, "--once"], capture_output=True, text=True, timeout=60
    )
    assert top.returncode == 1 and "an API key is needed" in top.stderr
    assert "Traceback" not in top.stderr
