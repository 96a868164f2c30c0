"""A real Slurm (Debian slurm-wlm, started by scripts/slurm-up.sh): workers submitted with
sbatch join a head that runs outside the job, serve under load, and leave before their time
limit with zero failed requests; scancel leaves gracefully; with --slurm.resubmit the model
stays routable across the job boundary."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Cluster, Node, http_json, wait_for

REPO = Path(__file__).resolve().parents[2]
MODEL = "m-slurm"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test Slurm cluster needs root")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "OTELA_SLURM_DIR": str(state), "OTELA_SLURM_NODES": "2"}
    up = subprocess.run(
        ["bash", str(REPO / "scripts/slurm-up.sh")], env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stderr
    env["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield env
    finally:
        subprocess.run(["bash", str(REPO / "scripts/slurm-down.sh")], env=env, capture_output=True)


def job_script(path: Path, head: Node, host: str, *, minutes: int, extra: str = "") -> Path:
    """The worker job as a user writes it: the node starts its backend and drains itself."""
    py = sys.executable
    path.write_text(
        f"""#!/bin/bash
#SBATCH --job-name=otela-test
#SBATCH --time={minutes}
#SBATCH --output={path.parent}/job-%j.out
free() {{ {py} -c 'import socket; s=socket.socket(); s.bind(("{host}", 0)); print(s.getsockname()[1])'; }}
UP=$(free)
exec {py} -m opentela.cli start --home {path.parent}/home-$SLURM_JOB_ID \\
  --http-host {host} --http-port $(free) --p2p-host {host} --p2p-port $(free) \\
  --bootstrap {head.maddr} --service.name llm --service.port $UP \\
  --subprocess "{py} -m opentela.testing.fake_upstream --host 127.0.0.1 --port $UP --model {MODEL} --tokens 8 --token-delay-ms 5" \\
  --slurm.drain-before 50s --drain-timeout 20 --log-format json {extra}
"""
    )
    return path


def sbatch(env: dict[str, str], script: Path) -> str:
    out = subprocess.run(
        ["sbatch", "--parsable", str(script)], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().split(";")[0]


def job_field(env: dict[str, str], job: str, name: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True
    ).stdout
    m = re.search(rf"\b{name}=(\S+)", out)
    return m.group(1) if m else ""


def job_peer(head: Node, job: str) -> str | None:
    _, _, table = http_json(f"{head.url}/v1/dnt/table")
    for node in table.values():
        if (
            node.get("slurm", {}).get("job") == job
            and node["state"] == "alive"
            and node["status"] == "ready"
        ) and any(s["status"] == "ready" for s in node["service"]):
            return node["id"]
    return None


@dataclass
class Load:
    """Closed-loop non-streaming requests through the head; bounded in time and count."""

    url: str
    concurrency: int = 3
    max_s: float = 240
    max_requests: int = 100_000
    sent: int = 0
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    served_by: Counter = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        deadline = time.monotonic() + self.max_s
        while (
            not self._stop.is_set()
            and time.monotonic() < deadline
            and self.sent < self.max_requests
        ):
            with self._lock:
                self.sent += 1
                n = self.sent
            # A prompt of its own per request, as from many users: the default (affinity)
            # policy would send one repeated prompt to the same replica every time.
            body = json.dumps(
                {"model": MODEL, "messages": [{"role": "user", "content": f"hi {n}"}]}
            )
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request(
                    "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if resp.status == 200 and json.loads(data)["choices"]:
                    with self._lock:
                        self.ok += 1
                        self.served_by[resp.getheader("X-Computing-Node")] += 1
                else:
                    self.failed.append(f"{resp.status}: {data[:200]!r}")
            except Exception as exc:  # every failure counts
                self.failed.append(repr(exc))
            time.sleep(0.02)

    def __enter__(self) -> Load:
        for _ in range(self.concurrency):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(40)


@pytest.fixture
def pool(cluster: Cluster) -> tuple[Cluster, Node]:
    head = cluster.node("head", "127.0.0.2")
    return cluster, head


def test_worker_drains_before_its_time_limit(slurm: dict[str, str], pool, tmp_path: Path) -> None:
    cluster, head = pool
    _, up = cluster.upstream("steady-up", MODEL)
    steady = cluster.node(
        "steady", "127.0.0.3", "--bootstrap", head.maddr, "--service.port", str(up)
    )
    job = sbatch(slurm, job_script(tmp_path / "worker.sbatch", head, "127.0.0.4", minutes=2))
    peer = wait_for(lambda: job_peer(head, job), 60, 0.2, what="the Slurm worker serving")
    end = _epoch(job_field(slurm, job, "EndTime"))
    with Load(head.url) as load:
        wait_for(lambda: job_peer(head, job) is None, 110, 0.2, what="the Slurm worker draining")
        drained_at = time.time()
        wait_for(
            lambda: (
                job_field(slurm, job, "JobState") in ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED")
            ),
            60,
            0.5,
            what="job end",
        )
        time.sleep(1)  # a few more requests after the leave, all on the steady worker
    assert job_field(slurm, job, "JobState") == "COMPLETED", (
        tmp_path / f"job-{job}.out"
    ).read_text()[-3000:]
    assert drained_at < end - 30, "drained well before the limit"
    assert load.failed == [], load.failed[:5]
    assert load.served_by[peer] > 0 and load.served_by[steady.peer_id] > 0
    log = (tmp_path / f"job-{job}.out").read_text()
    assert '"slurm time limit"' in log and '"node.drained"' in log and '"backend.stopped"' in log


def test_scancel_leaves_gracefully(slurm: dict[str, str], pool, tmp_path: Path) -> None:
    cluster, head = pool
    _, up = cluster.upstream("steady-up", MODEL)
    steady = cluster.node(
        "steady", "127.0.0.3", "--bootstrap", head.maddr, "--service.port", str(up)
    )
    job = sbatch(slurm, job_script(tmp_path / "worker.sbatch", head, "127.0.0.5", minutes=5))
    peer = wait_for(lambda: job_peer(head, job), 60, 0.2, what="the Slurm worker serving")
    with Load(head.url) as load:
        wait_for(lambda: load.served_by[peer] >= 5, 30, what="load reaching the Slurm worker")
        subprocess.run(["scancel", job], env=slurm, check=True)
        wait_for(lambda: job_peer(head, job) is None, 10, 0.1, what="leave after scancel")
        wait_for(
            lambda: job_field(slurm, job, "JobState") == "CANCELLED", 30, 0.5, what="job cancelled"
        )
        wait_for(lambda: load.served_by[steady.peer_id] >= 5, 30, what="steady worker takes over")
    assert load.failed == [], load.failed[:5]
    assert '"node.drained"' in (tmp_path / f"job-{job}.out").read_text()


def test_successor_keeps_the_model_routable(slurm: dict[str, str], pool, tmp_path: Path) -> None:
    _, head = pool
    successor = job_script(tmp_path / "successor.sbatch", head, "127.0.0.7", minutes=3)
    first = sbatch(
        slurm,
        job_script(
            tmp_path / "worker.sbatch", head, "127.0.0.6", minutes=2,
            extra=f"--slurm.resubmit {successor} --slurm.resubmit-before 100s",
        ),
    )  # fmt: skip
    first_peer = wait_for(lambda: job_peer(head, first), 60, 0.2, what="first job serving")
    missing = []
    jobs: set[str] = set()
    peers: dict[str, str] = {}  # job -> its node's peer ID, once it serves
    with Load(head.url, concurrency=2) as load:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and job_field(slurm, first, "JobState") not in (
            "COMPLETED",
            "CANCELLED",
            "TIMEOUT",
            "FAILED",
        ):
            if head.models() != [MODEL]:
                missing.append(time.monotonic())
            _, _, table = http_json(f"{head.url}/v1/dnt/table")
            jobs |= {n["slurm"]["job"] for n in table.values() if n.get("slurm", {}).get("job")}
            for job in jobs - peers.keys():
                if (pid := job_peer(head, job)) is not None:
                    peers[job] = pid
            time.sleep(0.2)
        time.sleep(1)  # a few more requests after the first job left: the successor alone
    assert job_field(slurm, first, "JobState") == "COMPLETED"
    assert missing == [], f"model missing {len(missing)} times"
    assert load.failed == [], load.failed[:5]
    successors = jobs - {first}
    assert len(successors) == 1
    (second,) = successors
    assert second in peers, "the successor job never became routable"
    assert job_peer(head, second) == peers[second] != first_peer
    # Every request sent succeeded, and each was served by one of the two jobs (the only
    # workers in this pool): the successor took over serving, it did not merely appear.
    assert load.sent > 0 and load.ok == load.sent, (load.ok, load.sent)
    assert set(load.served_by) == {first_peer, peers[second]}, load.served_by
    assert load.served_by[first_peer] > 0 and load.served_by[peers[second]] > 0, load.served_by
    subprocess.run(["scancel", second], env=slurm, check=False)


def _epoch(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
